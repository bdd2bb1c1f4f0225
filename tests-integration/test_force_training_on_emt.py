"""Energy/force/stress training on the bundled EMT data, through the data module."""

import torch
from physics_helpers import SmoothEncoder
from torch_geometric.data import Batch

from matsci.contract.testing import quiet_trainer
from matsci.data import AtomsDataModule
from matsci.data.examples import bundled_dataset_path
from matsci.tasks.physics import ForceRegressionTask
from matsci.transforms import PeriodicRadiusGraph


def test_training_on_emt_beats_the_zero_force_predictor() -> None:
    torch.manual_seed(0)
    data = AtomsDataModule(
        bundled_dataset_path("emt"), keys=["energy", "force", "stress"],
        transform=PeriodicRadiusGraph(cutoff=4.0), batch_size=8, seed=0,
    )  # fmt: skip
    data.setup("fit")
    task = ForceRegressionTask(
        encoder_class=SmoothEncoder,
        encoder_kwargs={"embedding_dim": 32, "cutoff": 4.0},
        compute_stress=True,
        lr=3e-3,
        task_loss_scaling={"energy": 1.0, "force": 10.0, "stress": 1.0},
    )
    task.fit_normalizers(data.train_dataloader())
    quiet_trainer(max_epochs=6).fit(task, datamodule=data)
    metrics = quiet_trainer().test(task, datamodule=data, verbose=False)[0]
    forces = torch.cat([batch.force for batch in data.test_dataloader()])
    zero_predictor_mae = float(forces.abs().mean())
    assert metrics["test/force/mae"] < 0.5 * zero_predictor_mae, (metrics, zero_predictor_mae)
    # Energies come out in eV: within a fraction of an eV per atom of EMT's (0.05-0.13 over
    # seeds and batch orders after six epochs; the force term dominates the loss).
    assert metrics["test/energy/mae_per_atom"] < 0.15
    batch: Batch = next(iter(data.test_dataloader()))
    out = task.predict(batch)
    assert out["stress"].shape == (batch.num_graphs, 3, 3)
