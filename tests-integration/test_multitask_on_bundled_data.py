"""Multi-task training over the two bundled datasets through MultiDataModule."""

import pytest
import torch
from physics_helpers import SmoothEncoder
from torch_geometric.data import Batch

from matsci.contract.testing import quiet_trainer
from matsci.data import AtomsDataModule, MultiDataModule
from matsci.data.examples import bundled_dataset_path
from matsci.tasks.core import MultiTaskLitModule
from matsci.transforms import PeriodicRadiusGraph

CUTOFF = 4.0


def _data() -> MultiDataModule:
    graph = PeriodicRadiusGraph(cutoff=CUTOFF)
    return MultiDataModule(
        {
            "emt": AtomsDataModule(bundled_dataset_path("emt"), keys=["energy", "force"],
                                   transform=graph, batch_size=32, seed=0),
            "symmetry": AtomsDataModule(bundled_dataset_path("spacegroup"), keys=["spacegroup"],
                                        transform=graph, batch_size=16, seed=0),
        }
    )  # fmt: skip


@pytest.mark.slow
def test_energy_forces_direct_forces_and_space_groups_train_below_their_baselines() -> None:
    torch.manual_seed(0)
    data = _data()
    data.setup("fit")
    module = MultiTaskLitModule(
        task_configs=[
            {"dataset": "emt", "class_path": "matsci.tasks.physics.ForceRegressionTask"},
            {"dataset": "emt", "class_path": "matsci.tasks.physics.GradFreeForceRegression"},
            {"dataset": "symmetry",
             "class_path": "matsci.tasks.core.CrystalSymmetryClassificationTask"},
        ],
        encoder_class=SmoothEncoder,
        encoder_kwargs={"embedding_dim": 32, "cutoff": CUTOFF, "vector_channels": 4},
        task_scaling={"emt/GradFreeForceRegression": 10.0},
        lr=3e-3,
    )  # fmt: skip
    module.fit_normalizers({"emt": data.datasets["emt"].train_dataloader()})
    run = quiet_trainer(max_epochs=8)
    run.fit(module, datamodule=data)
    # Validation ran over both datasets, one after the other, each logged under its own name.
    assert "val/emt/GradFreeForceRegression/force/mae" in run.callback_metrics
    assert "val/symmetry/CrystalSymmetryClassificationTask/spacegroup/top1" in run.callback_metrics
    metrics = quiet_trainer().test(module, datamodule=data, verbose=False)
    merged = {name: value for per_loader in metrics for name, value in per_loader.items()}

    emt = data.datasets["emt"]
    tests = list(emt.test_dataloader())
    forces = torch.cat([batch.force for batch in tests])
    per_atom = torch.cat([batch.energy / batch.natoms for batch in tests])
    train_per_atom = torch.cat([b.energy / b.natoms for b in emt.train_dataloader()]).mean()
    mean_per_atom = float((per_atom - train_per_atom).abs().mean())
    # Per-atom EMT energies vary little (a mean predictor is already within 0.05 eV/atom); the
    # energy is asked to stay as close as the single-task test asks.
    assert merged["test/emt/ForceRegressionTask/energy/mae_per_atom"] < max(0.1, mean_per_atom)
    assert merged["test/emt/ForceRegressionTask/force/mae"] < 0.5 * float(forces.abs().mean())
    assert merged["test/emt/GradFreeForceRegression/force/mae"] < 0.8 * float(forces.abs().mean())
    # Space-group accuracy is not asserted here: the small invariant test encoder does not
    # separate these groups within 8 epochs; tasks-core's test_multitask asserts it.
    # Each dataset's predictions keep its own batch size.
    batches = {"emt": tests[0], "symmetry": next(iter(data.datasets["symmetry"].test_dataloader()))}
    predictions = module.predict(batches)
    emt_batch: Batch = batches["emt"]
    assert predictions["emt"]["ForceRegressionTask"]["energy"].shape == (emt_batch.num_graphs,)
    assert predictions["emt"]["GradFreeForceRegression"]["force"].shape == emt_batch.pos.shape
    symmetry_size = batches["symmetry"].num_graphs
    assert predictions["symmetry"]["CrystalSymmetryClassificationTask"]["spacegroup"].shape == (
        symmetry_size,
    )
