import sys
from pathlib import Path

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


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small SchNet force field (energy, forces, stress) trained briefly on the EMT metals.

    Three epochs on the bundled EMT data (about 5 s on two cores): rough, but its forces and
    stresses are exact derivatives of its energy, which is all MD and relaxations need.
    """
    torch.manual_seed(0)
    data = AtomsDataModule(
        bundled_dataset_path("emt"),
        keys=["energy", "force", "stress"],
        transform=PeriodicRadiusGraph(cutoff=CUTOFF),
        batch_size=16,
    )
    data.setup("fit")
    task = ForceRegressionTask(
        encoder_class="matsci.encoders.SchNetEncoder",
        encoder_kwargs=SMALL_SCHNET,
        compute_stress=True,
        lr=5e-3,
        output_kwargs={"hidden_dim": 16},
        task_loss_scaling={"force": 10.0},
    )
    task.fit_normalizers(data.train_dataloader())
    trainer = quiet_trainer(max_epochs=3, limit_val_batches=0)
    trainer.fit(task, datamodule=data)
    path = tmp_path_factory.mktemp("model") / "emt.ckpt"
    trainer.save_checkpoint(path)
    return path


@pytest.fixture(scope="session")
def direct_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small SchNet direct-force model (a force head, no energy) trained briefly on EMT.

    Three epochs on the bundled EMT data, with the same encoder and graph as ``checkpoint``.
    """
    torch.manual_seed(0)
    data = AtomsDataModule(
        bundled_dataset_path("emt"),
        keys=["force"],
        transform=PeriodicRadiusGraph(cutoff=CUTOFF),
        batch_size=16,
    )
    data.setup("fit")
    task = GradFreeForceRegression(
        encoder_class="matsci.encoders.SchNetEncoder", encoder_kwargs=SMALL_SCHNET, lr=5e-3
    )
    trainer = quiet_trainer(max_epochs=3, limit_val_batches=0)
    trainer.fit(task, datamodule=data)
    path = tmp_path_factory.mktemp("direct") / "emt-direct.ckpt"
    trainer.save_checkpoint(path)
    return path
