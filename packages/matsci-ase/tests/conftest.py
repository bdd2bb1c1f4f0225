import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from matsci.contract.testing import quiet_trainer
from matsci.data import AtomsDataModule
from matsci.data.examples import bundled_dataset_path
from matsci.tasks.physics import ForceRegressionTask, GradFreeForceRegression
from matsci.transforms import PeriodicRadiusGraph

# The shared helpers (`calculator_helpers`) live beside the tests as a plain module.
sys.path.insert(0, str(Path(__file__).parent))

from calculator_helpers import CUTOFF, SMALL_SCHNET


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _train_on_emt(
    path: Path,
    task_class: type[ForceRegressionTask | GradFreeForceRegression],
    data_keys: list[str],
    task_kwargs: dict[str, Any],
) -> Path:
    """A small SchNet ``task_class`` trained three epochs on the bundled EMT metals, saved.

    An energy model's normalizers are fitted first (a direct-force model has none).
    """
    torch.manual_seed(0)
    data = AtomsDataModule(
        bundled_dataset_path("emt"),
        keys=data_keys,
        transform=PeriodicRadiusGraph(cutoff=CUTOFF),
        batch_size=16,
    )
    data.setup("fit")
    task = task_class(
        encoder_class="matsci.encoders.SchNetEncoder",
        encoder_kwargs=SMALL_SCHNET,
        lr=5e-3,
        **task_kwargs,
    )
    if isinstance(task, ForceRegressionTask):
        task.fit_normalizers(data.train_dataloader())
    trainer = quiet_trainer(max_epochs=3, limit_val_batches=0)
    trainer.fit(task, datamodule=data)
    trainer.save_checkpoint(path)
    return path


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small SchNet force field (energy, forces, stress) trained briefly on the EMT metals.

    Three epochs on the bundled EMT data (about 5 s on two cores): rough, but its forces and
    stresses are exact derivatives of its energy, which is all MD and relaxations need.
    """
    return _train_on_emt(
        tmp_path_factory.mktemp("model") / "emt.ckpt",
        ForceRegressionTask,
        ["energy", "force", "stress"],
        {
            "compute_stress": True,
            "output_kwargs": {"hidden_dim": 16},
            "task_loss_scaling": {"force": 10.0},
        },
    )


@pytest.fixture(scope="session")
def direct_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small SchNet direct-force model (a force head, no energy) trained briefly on EMT.

    Three epochs on the bundled EMT data, with the same encoder and graph as ``checkpoint``.
    """
    return _train_on_emt(
        tmp_path_factory.mktemp("direct") / "emt-direct.ckpt",
        GradFreeForceRegression,
        ["force"],
        {},
    )
