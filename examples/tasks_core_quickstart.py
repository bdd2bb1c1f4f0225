"""Train a ScalarRegressionTask on toy structures with your own encoder, then predict.

`uv run python examples/tasks_core_quickstart.py` (a few seconds on a CPU).
"""

import lightning.pytorch as pl
import torch
from torch_geometric.data import Batch, Data
from torch_geometric.loader import DataLoader
from torch_geometric.utils import scatter

from matsci.tasks.core import Embeddings, ScalarRegressionTask


class ElementEncoder(torch.nn.Module):
    """Any module with `embedding_dim` and `forward(batch) -> Embeddings` is an encoder."""

    def __init__(self, embedding_dim: int = 32) -> None:
        super().__init__()
        self.embedding_dim = embedding_dim
        self.elements = torch.nn.Embedding(100, embedding_dim)

    def forward(self, batch: Batch) -> Embeddings:
        """One vector per atom from its element, summed per structure."""
        atoms = self.elements(batch.atomic_numbers)  # [N, D]
        structures = scatter(atoms, batch.batch, dim=0, dim_size=batch.num_graphs)  # [B, D]
        return Embeddings(system_embedding=structures, point_embedding=atoms)


def structure(seed: int) -> Data:
    """Random atoms whose energy (eV) is a sum of per-element contributions."""
    numbers = torch.randint(1, 5, (2 + seed % 7,), generator=torch.Generator().manual_seed(seed))
    energy = torch.tensor([0.0, -3.4, -1.2, -5.1, -7.3])[numbers].sum().view(1)
    pos = 4.0 * torch.rand(len(numbers), 3)
    return Data(pos=pos, atomic_numbers=numbers, natoms=torch.tensor([len(numbers)]), energy=energy)


torch.manual_seed(0)
train = DataLoader([structure(seed) for seed in range(240)], batch_size=20, shuffle=True)
val = DataLoader([structure(seed) for seed in range(240, 300)], batch_size=20)
task = ScalarRegressionTask(
    encoder_class=ElementEncoder,
    encoder_kwargs={"embedding_dim": 32},
    task_keys=["energy"],
    lr=5e-3,
)
task.fit_normalizers(train)  # target mean and std, stored as buffers in the checkpoint
trainer = pl.Trainer(max_epochs=20, logger=False, enable_checkpointing=False)
trainer.fit(task, train, val)
print(f"validation MAE: {float(trainer.callback_metrics['val/energy/mae']):.3f} eV")

predicted = torch.cat([out["energy"] for out in trainer.predict(task, val)])  # [60, 1], eV
print(predicted[:3].flatten(), torch.cat([batch.energy for batch in val])[:3])
