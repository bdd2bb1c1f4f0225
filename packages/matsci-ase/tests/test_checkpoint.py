from pathlib import Path
from typing import Any

import lightning
import numpy as np
import pytest
import torch
from calculator_helpers import CUTOFF, SMALL_SCHNET, mixed_structures, rattled_copper
from torch_geometric.data import Batch

from matsci.ase import MatsciCalculator
from matsci.contract import class_path
from matsci.contract.testing import quiet_trainer
from matsci.data import AtomsDataModule, atoms_to_data
from matsci.data.examples import bundled_dataset_path
from matsci.tasks.core import CHECKPOINT_RECORD, MultiTaskLitModule, ScalarRegressionTask
from matsci.tasks.physics import ForceRegressionTask
from matsci.transforms import PeriodicRadiusGraph


def _rewrite(checkpoint: Path, target: Path, **changes: Any) -> Path:
    """A copy of ``checkpoint`` with top-level entries replaced (``None`` removes one)."""
    contents = torch.load(checkpoint, map_location="cpu", weights_only=True)
    for key, value in changes.items():
        if value is None:
            contents.pop(key, None)
        else:
            contents[key] = value
    torch.save(contents, target)
    return target


def _save(task: torch.nn.Module, path: Path, **entries: Any) -> Path:
    """A checkpoint of an untrained task (or multi-task module), as Lightning writes one."""
    torch.save(
        {
            "state_dict": task.state_dict(),
            "hyper_parameters": dict(task.hparams),  # type: ignore[arg-type]
            "pytorch-lightning_version": lightning.__version__,
            CHECKPOINT_RECORD: {"model_class": class_path(type(task))},
            **entries,
        },
        path,
    )
    return path


def test_graph_settings_come_from_the_data_module(checkpoint: Path, tmp_path: Path) -> None:
    recorded = torch.load(checkpoint, weights_only=True)["datamodule_hyper_parameters"]
    assert recorded["radius_graph"] == {"cutoff": CUTOFF, "max_neighbors": None}
    calc = MatsciCalculator.from_checkpoint(checkpoint)
    assert (calc.graph.cutoff, calc.graph.max_neighbors) == (CUTOFF, None)
    assert calc.task.compute_stress
    assert not calc.task.training
    # What the data module recorded wins over the encoder's cutoff ...
    other = {**recorded, "radius_graph": {"cutoff": 4.5, "max_neighbors": 20}}
    path = _rewrite(checkpoint, tmp_path / "other.ckpt", datamodule_hyper_parameters=other)
    calc = MatsciCalculator.from_checkpoint(path)
    assert (calc.graph.cutoff, calc.graph.max_neighbors) == (4.5, 20)
    # ... and explicit arguments win over both.
    calc = MatsciCalculator.from_checkpoint(path, cutoff=5.0, max_neighbors=8)
    assert (calc.graph.cutoff, calc.graph.max_neighbors) == (5.0, 8)
    calc = MatsciCalculator.from_checkpoint(path, cutoff=5.0)
    assert (calc.graph.cutoff, calc.graph.max_neighbors) == (5.0, None)


def test_without_a_recorded_graph_the_encoder_cutoff_is_used(
    checkpoint: Path, tmp_path: Path
) -> None:
    path = _rewrite(checkpoint, tmp_path / "bare.ckpt", datamodule_hyper_parameters=None)
    calc = MatsciCalculator.from_checkpoint(path)
    assert (calc.graph.cutoff, calc.graph.max_neighbors) == (CUTOFF, None)


def test_an_encoder_without_cutoff_needs_one(tmp_path: Path) -> None:
    task = ForceRegressionTask(
        encoder_class="calculator_helpers.PairEncoder",
        output_kwargs={"hidden_dim": 4},
        reference_energies={29: -1.0},
    )
    path = _save(task, tmp_path / "pair.ckpt")
    with pytest.raises(ValueError, match=r"records no neighbour graph .* give cutoff="):
        MatsciCalculator.from_checkpoint(path)
    calc = MatsciCalculator.from_checkpoint(path, cutoff=3.0)
    assert calc.calculate_many([rattled_copper(repeat=1)])[0]["forces"].shape == (4, 3)


def test_loading_errors_say_what_is_wrong(checkpoint: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"checkpoint '.*absent.ckpt' does not exist"):
        MatsciCalculator.from_checkpoint(tmp_path / "absent.ckpt")
    text = tmp_path / "notes.ckpt"
    text.write_text("not a checkpoint")
    with pytest.raises(ValueError, match=r"'.*notes.ckpt' is not a readable checkpoint"):
        MatsciCalculator.from_checkpoint(text)
    scalar = ScalarRegressionTask(
        encoder_class="calculator_helpers.PairEncoder", task_keys=["band_gap"]
    )
    path = _save(scalar, tmp_path / "scalar.ckpt")
    with pytest.raises(ValueError, match=r"the task is a ScalarRegressionTask, not a ForceRegr"):
        MatsciCalculator.from_checkpoint(path)
    with pytest.raises(ValueError, match=r"task='emt/forces'\): task= picks one task of a multi"):
        MatsciCalculator.from_checkpoint(checkpoint, task="emt/forces")
    with pytest.raises(ValueError, match=r"max_neighbors=12\): give cutoff= too"):
        MatsciCalculator.from_checkpoint(checkpoint, max_neighbors=12)
    old = tmp_path / "old.ckpt"
    contents = torch.load(checkpoint, weights_only=True)
    del contents[CHECKPOINT_RECORD]
    torch.save(contents, old)
    with pytest.raises(ValueError, match=r"without a 'matsci' record naming its model class"):
        MatsciCalculator.from_checkpoint(old)


def test_a_multi_task_checkpoint_needs_the_task_named(checkpoint: Path, tmp_path: Path) -> None:
    forces = ForceRegressionTask.load_from_checkpoint(checkpoint)
    gap = ScalarRegressionTask(encoder=forces.encoder, task_keys=["band_gap"])
    module = MultiTaskLitModule(("emt", forces, "forces"), ("emt", gap, "band_gap"))
    # A MultiDataModule keeps each dataset's module's hyperparameters.
    recorded = {"cutoff": 4.5, "max_neighbors": None}
    datasets = {"datasets": {"emt": {"init_args": {"radius_graph": recorded}}}}
    path = _save(module, tmp_path / "multi.ckpt", datamodule_hyper_parameters=datasets)
    choices = r"\['emt/forces', 'emt/band_gap'\]"
    with pytest.raises(ValueError, match=rf"choose the task with task=, one of {choices}"):
        MatsciCalculator.from_checkpoint(path)
    with pytest.raises(ValueError, match=rf"task='emt/gap'\): no such task; expected .*{choices}"):
        MatsciCalculator.from_checkpoint(path, task="emt/gap")
    with pytest.raises(ValueError, match=r"task=2\): index out of range for the 2 tasks"):
        MatsciCalculator.from_checkpoint(path, task=2)
    with pytest.raises(ValueError, match=r"task is a ScalarRegressionTask, not a ForceRegression"):
        MatsciCalculator.from_checkpoint(path, task="emt/band_gap")

    single = MatsciCalculator.from_checkpoint(checkpoint, cutoff=4.5)
    for task in ("emt/forces", 0, -2):
        multi = MatsciCalculator.from_checkpoint(path, task=task)
        assert multi.graph.cutoff == 4.5
        for expected, result in zip(
            single.calculate_many(mixed_structures()),
            multi.calculate_many(mixed_structures()),
            strict=True,
        ):
            np.testing.assert_allclose(result["forces"], expected["forces"])


def test_a_trained_multi_task_checkpoint(tmp_path: Path) -> None:
    from matsci.data import MultiDataModule

    torch.manual_seed(0)
    emt = AtomsDataModule(
        bundled_dataset_path("emt"),
        keys=["energy", "force", "stress"],
        transform=PeriodicRadiusGraph(cutoff=3.5, max_neighbors=16),
        batch_size=8,
    )
    forces = ForceRegressionTask(
        encoder_class="matsci.encoders.SchNetEncoder",
        encoder_kwargs=SMALL_SCHNET,
        compute_stress=True,
        output_kwargs={"hidden_dim": 8},
    )
    energy = ScalarRegressionTask(encoder=forces.encoder, task_keys=["energy"])
    module = MultiTaskLitModule(("emt", forces, "forces"), ("emt", energy, "energy"))
    data = MultiDataModule({"emt": emt})
    data.setup("fit")
    module.fit_normalizers({"emt": emt.train_dataloader()})
    trainer = quiet_trainer(max_steps=2, limit_val_batches=0)
    trainer.fit(module, datamodule=data)
    path = tmp_path / "multi.ckpt"
    trainer.save_checkpoint(path)

    with pytest.raises(ValueError, match=r"one of \['emt/forces', 'emt/energy'\]"):
        MatsciCalculator.from_checkpoint(path)
    with pytest.raises(ValueError, match=r"the task is a ScalarRegressionTask"):
        MatsciCalculator.from_checkpoint(path, task="emt/energy")
    calc = MatsciCalculator.from_checkpoint(path, task="emt/forces")
    assert (calc.graph.cutoff, calc.graph.max_neighbors) == (3.5, 16)
    structures = mixed_structures()
    graph = PeriodicRadiusGraph(cutoff=3.5, max_neighbors=16)
    batch = Batch.from_data_list([graph(atoms_to_data(atoms, keys=[])) for atoms in structures])
    expected = module.extract_task("emt/forces").predict(batch)
    results = calc.calculate_many(structures)
    np.testing.assert_allclose(
        [result["energy"] for result in results], expected["energy"].numpy(), rtol=1e-6
    )
    np.testing.assert_allclose(
        np.concatenate([result["forces"] for result in results]),
        expected["force"].numpy(),
        atol=1e-5,
    )
