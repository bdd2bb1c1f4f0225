"""Trained models shared by the tests of matsci.simulate: one checkpoint per encoder."""

from pathlib import Path
from typing import Any

import pytest
import torch

from matsci.contract.testing import quiet_trainer
from matsci.data import AtomsDataModule
from matsci.data.examples import bundled_dataset_path
from matsci.tasks.physics import ForceRegressionTask
from matsci.transforms import PeriodicRadiusGraph

CUTOFF = 4.0
"""Å, the neighbour graph and encoder cutoff of the trained models."""

ENCODERS: dict[str, tuple[str, dict[str, Any]]] = {
    "schnet": (
        "matsci.encoders.SchNetEncoder",
        {"hidden_channels": 16, "num_filters": 16, "num_interactions": 2, "num_gaussians": 16,
         "cutoff": CUTOFF},
    ),
    "equivariant": (
        "matsci.encoders.EquivariantEncoder",
        {"num_channels": 8, "lmax": 1, "num_layers": 2, "cutoff": CUTOFF, "radial_hidden": 16},
    ),
}  # fmt: skip
"""Small versions of both shipped encoders."""


def train_force_field(encoder: str, path: Path, *, epochs: int = 2) -> Path:
    """Train a small energy/force/stress model on the bundled EMT metals and save it.

    A few epochs only: rough, but its forces and stresses are exact derivatives of its energy,
    which is all a simulator needs; every test compares two ways of evaluating the same model.
    """
    torch.manual_seed(0)
    data = AtomsDataModule(
        bundled_dataset_path("emt"),
        keys=["energy", "force", "stress"],
        transform=PeriodicRadiusGraph(cutoff=CUTOFF),
        batch_size=16,
    )
    data.setup("fit")
    encoder_class, encoder_kwargs = ENCODERS[encoder]
    task = ForceRegressionTask(
        encoder_class=encoder_class,
        encoder_kwargs=encoder_kwargs,
        compute_stress=True,
        lr=5e-3,
        output_kwargs={"hidden_dim": 16},
    )
    task.fit_normalizers(data.train_dataloader())
    trainer = quiet_trainer(max_epochs=epochs, limit_val_batches=0)
    trainer.fit(task, datamodule=data)
    trainer.save_checkpoint(path)
    return path


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small SchNet force field (energy, forces, stress) trained briefly on the EMT metals."""
    return train_force_field("schnet", tmp_path_factory.mktemp("schnet") / "schnet.ckpt")


@pytest.fixture(scope="session")
def equivariant_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small equivariant force field trained briefly on the EMT metals."""
    return train_force_field(
        "equivariant", tmp_path_factory.mktemp("equivariant") / "equivariant.ckpt"
    )
