"""A small force field trained in seconds, for the simulation examples (not an example itself).

``train_quick`` trains a small SchNet on the bundled EMT metals for two epochs: rough, but its
forces and stresses are exact derivatives of its energy, which is all a simulator needs.
"""

from pathlib import Path

import lightning.pytorch as pl
import torch

from matsci.data import AtomsDataModule
from matsci.data.examples import bundled_dataset_path
from matsci.tasks.physics import ForceRegressionTask
from matsci.transforms import PeriodicRadiusGraph

CUTOFF = 4.0  # Å


def train_quick(path: Path) -> Path:
    """Train a small energy/force/stress SchNet on the bundled EMT metals; save a checkpoint."""
    torch.manual_seed(0)
    data = AtomsDataModule(
        bundled_dataset_path("emt"),  # Al, Ni, Cu, Pd, Ag, Pt, Au cells with EMT labels
        keys=["energy", "force", "stress"],
        transform=PeriodicRadiusGraph(cutoff=CUTOFF),
        batch_size=16,
    )
    data.setup("fit")
    task = ForceRegressionTask(
        encoder_class="matsci.encoders.SchNetEncoder",
        encoder_kwargs={"hidden_channels": 16, "num_filters": 16, "num_interactions": 2,
                        "num_gaussians": 16, "cutoff": CUTOFF},
        compute_stress=True,
        lr=5e-3,
        output_kwargs={"hidden_dim": 16},
    )  # fmt: skip
    task.fit_normalizers(data.train_dataloader())  # per-element reference energies
    trainer = pl.Trainer(
        max_epochs=2,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(task, datamodule=data)  # the data module records its neighbour graph
    trainer.save_checkpoint(path)
    return path
