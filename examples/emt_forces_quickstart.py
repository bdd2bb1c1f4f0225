"""Train energies, forces and stresses on the bundled EMT metals, then test on held-out cells.

`uv run python examples/emt_forces_quickstart.py` (under a minute on two CPU cores).
"""

import math

import lightning.pytorch as pl
import torch
from torch_geometric.data import Batch

from matsci.data import AtomsDataModule
from matsci.data.examples import bundled_dataset_path
from matsci.tasks.core import Embeddings
from matsci.tasks.physics import ForceRegressionTask
from matsci.training import AtomThroughputMonitor
from matsci.transforms import PeriodicRadiusGraph, edge_vectors


class RadialEncoder(torch.nn.Module):
    """Element vectors plus Gaussian distance features under a smooth cosine cutoff."""

    def __init__(self, embedding_dim: int = 32, cutoff: float = 4.0) -> None:
        super().__init__()
        self.embedding_dim, self.cutoff = embedding_dim, cutoff
        self.register_buffer("centres", torch.linspace(0.5, cutoff, 8))
        self.elements = torch.nn.Embedding(100, embedding_dim)
        self.radial = torch.nn.Sequential(torch.nn.Linear(8, embedding_dim), torch.nn.Tanh())

    def forward(self, batch: Batch) -> Embeddings:
        """Atom embeddings [N, D]; distances come from pos and cell, so autograd reaches them."""
        _, r = edge_vectors(
            batch.pos, batch.edge_index, batch.cell, batch.cell_offsets, batch.batch
        )
        envelope = 0.5 * (torch.cos(math.pi * r / self.cutoff) + 1.0)  # [E], 0 at the cutoff
        radial = self.radial(torch.exp(-4.0 * (r.unsqueeze(-1) - self.centres) ** 2))  # [E, D]
        atoms = self.elements(batch.atomic_numbers)  # [N, D]
        messages = radial * envelope.unsqueeze(-1) * atoms[batch.edge_index[1]]  # [E, D]
        return Embeddings(point_embedding=atoms.index_add(0, batch.edge_index[0], messages))


torch.manual_seed(0)
data = AtomsDataModule(
    bundled_dataset_path("emt"),  # 300 EMT metal cells, 8 to 32 atoms each
    keys=["energy", "force", "stress"],  # eV, eV/Å, eV/Å³
    pre_transform=PeriodicRadiusGraph(cutoff=4.0),  # the neighbour graph, built once
    in_memory=True,  # read every structure in setup(), so the loop never waits for the file
    batch_size=8,
)
data.setup("fit")  # random 80/10/10 split
task = ForceRegressionTask(
    encoder_class=RadialEncoder, compute_stress=True, lr=3e-3, task_loss_scaling={"force": 10.0}
)
task.fit_normalizers(data.train_dataloader())  # per-element reference energies, force RMS
throughput = AtomThroughputMonitor()  # logs atoms/s, structures/s, data-wait fraction
trainer = pl.Trainer(max_epochs=6, logger=False, enable_checkpointing=False, callbacks=[throughput])
trainer.fit(task, datamodule=data)
metrics = trainer.test(task, datamodule=data, verbose=False)[0]
print(f"test force MAE: {metrics['test/force/mae']:.3f} eV/Å")
print(f"test energy MAE: {metrics['test/energy/mae_per_atom']:.4f} eV/atom")
total = throughput.total
print(
    f"training: {total.atoms_per_second:,.0f} atoms/s, {total.structures_per_second:.0f} "
    f"structures/s, {100 * total.data_wait_fraction:.0f}% of the time waiting for data"
)
