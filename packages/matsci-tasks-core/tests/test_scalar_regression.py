import pytest
import torch
from tasks_core_helpers import encoder_kwargs, loader, make_structures, trainer
from torch_geometric.data import Batch

from matsci.tasks.core import ScalarRegressionTask


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
