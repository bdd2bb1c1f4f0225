from pathlib import Path

import pytest
import torch
from tasks_core_helpers import encoder_kwargs, loader, make_structures, trainer
from torch_geometric.data import Batch, Data

from matsci.contract import DatasetStatistics
from matsci.tasks.core import Embeddings, ScalarRegressionTask


def _mae(prediction: torch.Tensor, target: torch.Tensor) -> float:
    return float((prediction - target).abs().mean())


def test_trains_and_beats_the_mean_predictor() -> None:
    train, held_out = make_structures(384, seed=0), make_structures(96, seed=1)
    task = ScalarRegressionTask(
        **encoder_kwargs(), task_keys=["energy", "properties"], output_dims={"properties": 2},
        lr=5e-3, output_kwargs={"hidden_dim": 32},
    )  # fmt: skip
    task.fit_normalizers(loader(train))
    trainer(max_epochs=8).fit(task, loader(train, shuffle=True))
    batch = Batch.from_data_list(held_out)
    predicted = task.predict(batch)
    for key in ("energy", "properties"):
        target = batch[key].reshape(len(held_out), -1)
        train_mean = torch.cat([d[key].reshape(1, -1) for d in train]).mean(0)
        baseline = _mae(train_mean.expand_as(target), target)
        assert _mae(predicted[key], target) < 0.5 * baseline, key


def test_outputs_have_the_declared_widths() -> None:
    task = ScalarRegressionTask(
        **encoder_kwargs(), task_keys=["energy", "properties"], output_dims={"properties": 2}
    )
    out = task.predict(Batch.from_data_list(make_structures(5, seed=0)))
    assert out["energy"].shape == (5, 1)
    assert out["properties"].shape == (5, 2)


def test_targets_of_shape_b_and_b1_give_the_same_loss() -> None:
    task = ScalarRegressionTask(**encoder_kwargs(), task_keys=["energy"])
    batch = Batch.from_data_list(make_structures(6, seed=0))
    assert batch.energy.shape == (6,)
    task.check_batch(batch)
    loss_b, _ = task.compute_losses(task(batch), batch)
    batch.energy = batch.energy.reshape(6, 1)
    task.check_batch(batch)
    torch.testing.assert_close(task.compute_losses(task(batch), batch)[0], loss_b)


def test_wrong_target_width_is_a_clear_error() -> None:
    task = ScalarRegressionTask(**encoder_kwargs(), task_keys=["energy"])
    batch = Batch.from_data_list(make_structures(4, seed=0))
    batch.energy = torch.randn(4, 3)
    with pytest.raises(
        ValueError, match=r"'energy' has shape \[4, 3\], expected \[B\] or \[B, 1\]"
    ):
        task.check_batch(batch)


def test_missing_target_is_a_clear_error() -> None:
    task = ScalarRegressionTask(**encoder_kwargs(), task_keys=["band_gap"])
    with pytest.raises(ValueError, match="band_gap"):
        task.check_batch(Batch.from_data_list(make_structures(4, seed=0)))


@pytest.mark.parametrize(
    ("output_dims", "match"),
    [({"forces": 3}, r"keys \['forces'\] are not task keys"), ({"energy": 0}, "expected int >= 1")],
)
def test_bad_output_dims(output_dims: dict[str, int], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ScalarRegressionTask(**encoder_kwargs(), task_keys=["energy"], output_dims=output_dims)


# --- extensive keys: a sum of atom contributions ------------------------------------------------


def _cells(*compositions: list[int], energies: list[float]) -> Batch:
    """Structures of the given atomic numbers (random positions) with the given energies."""
    generator = torch.Generator().manual_seed(0)
    return Batch.from_data_list([
        Data(pos=torch.rand(len(numbers), 3, generator=generator) * 3.0,
             atomic_numbers=torch.tensor(numbers), natoms=torch.tensor([len(numbers)]),
             energy=torch.tensor([energy]))
        for numbers, energy in zip(compositions, energies, strict=True)
    ])  # fmt: skip


def test_energy_is_extensive_by_default_and_other_keys_are_not() -> None:
    task = ScalarRegressionTask(**encoder_kwargs(), task_keys=["band_gap", "energy"])
    assert task.extensive_keys == ["energy"]
    assert list(task.element_references) == ["energy"]
    assert ScalarRegressionTask(**encoder_kwargs(), task_keys=["energy"],
                                extensive_keys=[]).extensive_keys == []  # fmt: skip
    custom = ScalarRegressionTask(**encoder_kwargs(), task_keys=["volume", "energy"],
                                  extensive_keys=["volume"])  # fmt: skip
    assert custom.extensive_keys == ["volume"]
    assert custom.hparams["extensive_keys"] == ["volume"]


def test_fit_normalizers_gives_least_squares_references_and_the_residual_scale() -> None:
    # E = 2 n_1 - 1 n_2, plus a per-atom residual of +0.1 / -0.1 eV.
    batch = _cells([1, 1], [2, 2], [1, 2, 2], [1, 1, 2],
                   energies=[4.2, -2.2, 0.3, 2.7])  # fmt: skip
    task = ScalarRegressionTask(**encoder_kwargs(), task_keys=["energy"])
    task.fit_normalizers([batch])
    references = task.element_references["energy"].values
    assert references.shape == (119, 1)
    assert references.dtype == torch.float64
    expected = torch.tensor([2.0, -1.0], dtype=torch.float64)
    torch.testing.assert_close(references[[1, 2], 0], expected, atol=0.05, rtol=0)
    normalizer = task.normalizers["energy"]
    assert float(normalizer.mean) == 0.0
    assert 0.05 < float(normalizer.std) < 0.15  # about the 0.1 eV/atom residual


def test_an_untrained_head_predicts_about_the_reference_energies() -> None:
    batch = _cells([1, 1], [2, 2], [1, 2, 2], [1, 1, 2], energies=[4.0, -2.0, 0.0, 3.0])
    task = ScalarRegressionTask(**encoder_kwargs(), task_keys=["energy"])
    task.fit_normalizers([batch])  # an exact fit: the scale becomes 1
    assert float(task.normalizers["energy"].std) == 1.0
    with torch.no_grad():
        for parameter in task.output_heads.parameters():
            parameter.zero_()
    torch.testing.assert_close(task.predict(batch)["energy"].reshape(-1),
                               torch.tensor([4.0, -2.0, 0.0, 3.0]), atol=1e-5, rtol=0)  # fmt: skip


class AtomTypeEncoder(torch.nn.Module):
    """Atom features from the element alone: a local encoder in its simplest form."""

    embedding_dim = 8

    def __init__(self) -> None:
        super().__init__()
        self.types = torch.nn.Embedding(10, 8)

    def forward(self, batch: Batch) -> Embeddings:
        return Embeddings(point_embedding=self.types(batch.atomic_numbers))


def test_extensive_predictions_add_up_and_intensive_ones_do_not() -> None:
    single = _cells([1, 2, 3], energies=[0.0])
    doubled = _cells([1, 2, 3, 1, 2, 3], energies=[0.0])
    extensive = ScalarRegressionTask(encoder=AtomTypeEncoder(), task_keys=["energy"]).eval()
    extensive.element_references["energy"].values[1:4, 0] = torch.tensor([1.0, 2.0, 3.0])
    torch.testing.assert_close(extensive.predict(doubled)["energy"],
                               2 * extensive.predict(single)["energy"])  # fmt: skip
    intensive = ScalarRegressionTask(encoder=AtomTypeEncoder(), task_keys=["energy"],
                                     extensive_keys=[]).eval()  # fmt: skip
    torch.testing.assert_close(intensive.predict(doubled)["energy"],
                               intensive.predict(single)["energy"])  # mean pooling  # fmt: skip


def test_the_loss_compares_energies_per_atom_in_units_of_the_scale() -> None:
    task = ScalarRegressionTask(**encoder_kwargs(), task_keys=["energy"],
                                loss_func="torch.nn.L1Loss")  # fmt: skip
    batch = _cells([1, 1], [2, 2, 2, 2], energies=[1.0, 4.0])
    task.element_references["energy"].values[1] = 0.5
    task.normalizers["energy"].load_statistics(torch.tensor([0.0]), torch.tensor([0.25]))
    # Each structure's prediction is 1 eV per atom too high: 1 / 0.25 = 4 per structure.
    too_high = batch.energy.reshape(-1, 1) + batch.natoms.reshape(-1, 1).float()
    outputs = {"energy": task.loss_target("energy", too_high, batch)}
    # (E - sum of references) / N / 0.25: (1 - 1) / 2 and 4 / 4 eV per atom, plus 4.
    torch.testing.assert_close(outputs["energy"], torch.tensor([[0.0], [4.0]]) + 4.0)
    total, losses = task.compute_losses(outputs, batch)
    torch.testing.assert_close(losses["energy"], torch.tensor(4.0))
    torch.testing.assert_close(total, torch.tensor(4.0))
    # The raw output maps back to the total (what the metrics and predictions see).
    physical = task.to_physical("energy", outputs["energy"], batch)
    torch.testing.assert_close(physical, too_high)


def test_apply_statistics_takes_the_reference_energies_of_dataset_statistics() -> None:
    task = ScalarRegressionTask(**encoder_kwargs(), task_keys=["energy", "band_gap"])
    references = torch.zeros(119, dtype=torch.float64)
    references[29] = -3.5
    statistics = DatasetStatistics(
        num_structures=4, num_atoms=16, reference_energies=references,
        reference_residual_rms=0.02, mean={"band_gap": torch.tensor([1.0])},
        std={"band_gap": torch.tensor([0.5])},
    )  # fmt: skip
    task.apply_statistics(statistics)
    assert float(task.element_references["energy"].values[29, 0]) == -3.5
    assert float(task.normalizers["energy"].std) == pytest.approx(0.02)
    assert float(task.normalizers["band_gap"].mean) == 1.0
    other = ScalarRegressionTask(**encoder_kwargs(), task_keys=["volume"],
                                 extensive_keys=["volume"])  # fmt: skip
    with pytest.raises(ValueError, match="'volume' needs per-element references"):
        other.apply_statistics(statistics)


def test_extensive_training_beats_the_mean_and_reloads(tmp_path: Path) -> None:
    train, held_out = make_structures(256, seed=0), make_structures(64, seed=1)
    task = ScalarRegressionTask(**encoder_kwargs(), task_keys=["energy"], lr=5e-3,
                                output_kwargs={"hidden_dim": 32})  # fmt: skip
    task.fit_normalizers(loader(train))
    run = trainer(max_epochs=4, default_root_dir=tmp_path)
    run.fit(task, loader(train, shuffle=True))
    batch = Batch.from_data_list(held_out)
    target = batch.energy.reshape(-1, 1)
    mean = torch.cat([d.energy for d in train]).mean()
    assert _mae(task.predict(batch)["energy"], target) < 0.5 * _mae(mean.expand_as(target), target)
    path = tmp_path / "task.ckpt"
    run.save_checkpoint(path)
    reloaded = ScalarRegressionTask.load_from_checkpoint(path)
    torch.testing.assert_close(reloaded.eval().predict(batch)["energy"],
                               task.eval().predict(batch)["energy"])  # fmt: skip


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"extensive_keys": ["volume"]}, r"extensive_keys\): keys \['volume'\] are not task keys"),
        ({"extensive_keys": "energy"}, "expected a list of keys"),
    ],
)
def test_bad_extensive_keys(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ScalarRegressionTask(**encoder_kwargs(), task_keys=["energy"], **kwargs)


def test_an_encoder_without_atom_embeddings_is_told_what_to_do() -> None:
    class SystemOnly(torch.nn.Module):
        embedding_dim = 4

        def forward(self, batch: Batch) -> Embeddings:
            return Embeddings(system_embedding=torch.zeros(batch.num_graphs, 4))

    batch = _cells([1, 2], energies=[0.0])
    with pytest.raises(
        ValueError, match=r"needs the encoder's point_embedding.*extensive_keys=\[\]"
    ):
        ScalarRegressionTask(encoder=SystemOnly(), task_keys=["energy"]).predict(batch)
    intensive = ScalarRegressionTask(encoder=SystemOnly(), task_keys=["energy"], extensive_keys=[])
    assert intensive.predict(batch)["energy"].shape == (1, 1)
