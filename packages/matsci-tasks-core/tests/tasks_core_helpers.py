"""A small encoder written for the tests: atom-type embedding plus a distance-aware message pass.

Defined at module level so that checkpoints can name it by its dotted path.
"""

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch_geometric.data import Batch, Data
from torch_geometric.loader import DataLoader
from torch_geometric.utils import scatter

from matsci.contract import Embeddings
from matsci.contract.testing import quiet_trainer
from matsci.tasks.core import ScalarRegressionTask


class TinyEncoder(nn.Module):
    """Embeds atom types and mixes in each structure's mean position-derived features."""

    def __init__(self, embedding_dim: int = 16, num_elements: int = 20) -> None:
        super().__init__()
        self.embedding_dim = embedding_dim
        self.atom_types = nn.Embedding(num_elements, embedding_dim)
        self.geometry = nn.Sequential(nn.Linear(4, embedding_dim), nn.SiLU())
        self.mix = nn.Linear(2 * embedding_dim, embedding_dim)

    def forward(self, batch: Batch) -> Embeddings:
        pos: Tensor = batch.pos
        index: Tensor = batch.batch
        centre = scatter(pos, index, dim=0, dim_size=batch.num_graphs, reduce="mean")
        relative = pos - centre[index]
        radius = relative.norm(dim=-1, keepdim=True)
        geometry = self.geometry(torch.cat([relative, radius], dim=-1))
        atoms = self.atom_types(batch.atomic_numbers)
        point = self.mix(torch.cat([atoms, geometry], dim=-1))
        system = scatter(point, index, dim=0, dim_size=batch.num_graphs, reduce="mean")
        return Embeddings(system_embedding=system, point_embedding=point)


ELEMENT_VALUES = torch.tensor([0.0, -1.0, 0.5, 2.0, -0.3, 1.2])
"""A per-element contribution (index Z) used by the synthetic regression rule."""


def make_structures(count: int, seed: int) -> list[Data]:
    """Random small structures with targets that follow learnable rules.

    - ``energy`` (regression): sum of per-element values plus a spread term, ``[1]``.
    - ``properties`` (two-column regression): ``[mean Z, mean radius]``, ``[1, 2]``.
    - ``stable`` (binary): whether element 1 outnumbers element 2, ``[1]``.
    - ``spacegroup``: 225, 194 or 1 by which of elements 1, 2, 3+ dominates, ``[1]``.
    """
    generator = torch.Generator().manual_seed(seed)
    structures = []
    for _ in range(count):
        n = int(torch.randint(3, 9, (1,), generator=generator))
        numbers = torch.randint(1, 6, (n,), generator=generator)
        pos = torch.rand(n, 3, generator=generator) * 3.0
        radius = (pos - pos.mean(0)).norm(dim=-1).mean()
        counts = torch.bincount(numbers, minlength=6)
        dominant = int(torch.argmax(torch.stack([counts[1], counts[2], counts[3:].sum()])))
        structures.append(
            Data(
                pos=pos,
                atomic_numbers=numbers,
                natoms=torch.tensor([n]),
                cell=torch.eye(3).unsqueeze(0) * 6.0,
                pbc=torch.zeros(1, 3, dtype=torch.bool),
                energy=(ELEMENT_VALUES[numbers].sum() + 0.5 * radius).reshape(1),
                properties=torch.stack([numbers.float().mean(), radius]).reshape(1, 2),
                stable=(counts[1] > counts[2]).float().reshape(1),
                spacegroup=torch.tensor([(225, 194, 1)[dominant]]),
            )
        )
    return structures


def loader(structures: list[Data], batch_size: int = 16, shuffle: bool = False) -> DataLoader:
    """A PyG DataLoader over the structures."""
    return DataLoader(structures, batch_size=batch_size, shuffle=shuffle)


trainer = quiet_trainer
"""A quiet CPU trainer for tests: the shared :func:`matsci.contract.testing.quiet_trainer`."""


def truncated_checkpoint(tmp_path: Path) -> Path:
    """A real task checkpoint, cut to half its size (a save that was interrupted)."""
    task = ScalarRegressionTask(**encoder_kwargs(), task_keys=["energy"])
    run = trainer(max_steps=1, default_root_dir=tmp_path)
    run.fit(task, loader(make_structures(8, 0), batch_size=8))
    path = tmp_path / "task.ckpt"
    run.save_checkpoint(path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def encoder_kwargs() -> dict[str, Any]:
    """How tests build every task's encoder (by dotted path, so checkpoints can rebuild it)."""
    return {"encoder_class": TinyEncoder, "encoder_kwargs": {"embedding_dim": 16}}


class SizedEncoder(nn.Module):
    """An encoder whose constructor arguments are kept as attributes (so tasks record them)."""

    def __init__(self, width: int = 16, scale: float = 1.0) -> None:
        super().__init__()
        self.width = width
        self.scale = scale
        self.embedding_dim = width
        self.atom_types = nn.Embedding(20, width)

    def forward(self, batch: Batch) -> Embeddings:
        point = (
            self.scale
            * self.atom_types(batch.atomic_numbers)
            * batch.pos.norm(dim=-1, keepdim=True)
        )
        return Embeddings(point_embedding=point)
