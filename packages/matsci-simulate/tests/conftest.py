"""Trained models shared by the tests of matsci.simulate: one checkpoint per encoder.

Energy models (``checkpoint``, ``equivariant_checkpoint``) and direct-force models
(``direct_checkpoint``, one per encoder), all trained by :func:`train_force_field`.
"""

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

# The shared helpers (`simulate_helpers`) live beside the tests as a plain module.
sys.path.insert(0, str(Path(__file__).parent))

from simulate_helpers import CUTOFF

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
"""Small versions of both shipped encoders: a direct-force SchNet model's forces come from an
EdgeVectorReadout, an equivariant one's from a 1o irreps head."""

_TASKS: dict[type[ForceRegressionTask | GradFreeForceRegression], tuple[list[str], dict[str, Any]]]
_TASKS = {
    ForceRegressionTask: (["energy", "force", "stress"], {"compute_stress": True}),
    GradFreeForceRegression: (["force"], {}),
}
"""The data keys and task arguments of each kind of force field."""


def train_force_field(
    encoder: str,
    path: Path,
    *,
    task_class: type[ForceRegressionTask | GradFreeForceRegression] = ForceRegressionTask,
    epochs: int = 2,
    max_steps: int = -1,
) -> Path:
    """Train a small force field on the bundled EMT metals and save it.

    An energy/force/stress ``ForceRegressionTask`` (normalizers fitted first), or a
    ``GradFreeForceRegression`` on the forces. A few epochs (or ``max_steps`` optimizer
    steps) only: rough, but an energy model's forces and stresses are exact derivatives of its
    energy, which is all a simulator needs; every test compares two ways of evaluating the
    same model.
    """
    torch.manual_seed(0)
    data_keys, task_kwargs = _TASKS[task_class]
    data = AtomsDataModule(
        bundled_dataset_path("emt"),
        keys=data_keys,
        transform=PeriodicRadiusGraph(cutoff=CUTOFF),
        batch_size=16,
    )
    encoder_class, encoder_kwargs = ENCODERS[encoder]
    task = task_class(
        encoder_class=encoder_class,
        encoder_kwargs=encoder_kwargs,
        lr=5e-3,
        output_kwargs={"hidden_dim": 16},
        **task_kwargs,
    )
    if isinstance(task, ForceRegressionTask):  # a direct-force task has no normalizer to fit
        data.setup("fit")
        task.fit_normalizers(data.train_dataloader())
    trainer = quiet_trainer(max_epochs=epochs, max_steps=max_steps, limit_val_batches=0)
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


@pytest.fixture(scope="session", params=list(ENCODERS))
def direct_checkpoint(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A direct-force model (GradFreeForceRegression) trained for 4 steps, one per encoder."""
    name: str = request.param
    return train_force_field(
        name,
        tmp_path_factory.mktemp(f"direct-{name}") / f"{name}.ckpt",
        task_class=GradFreeForceRegression,
        max_steps=4,
    )
