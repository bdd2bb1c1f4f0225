"""A small smooth encoder and random periodic structures for the physics tests.

The checks themselves (finite differences, symmetries, batching) and the quiet trainer are the
shared ones of :mod:`matsci.contract.testing`.
"""

import math

import torch
from torch import nn
from torch_geometric.data import Batch, Data

from matsci.contract import Embeddings
from matsci.transforms import PeriodicRadiusGraph, edge_vectors

CUTOFF = 3.5


class SmoothEncoder(nn.Module):
    """Atom type embedding plus a sum of Gaussian radial features with a smooth cosine cutoff.

    Smooth in the positions (twice differentiable), so finite differences check autograd. With
    ``vector_channels > 0`` each atom also gets radially weighted sums of its bond vectors
    (``3 * vector_channels`` more features): directions that a direct force head can use.
    """

    def __init__(
        self,
        embedding_dim: int = 16,
        num_basis: int = 8,
        cutoff: float = CUTOFF,
        vector_channels: int = 0,
    ) -> None:
        super().__init__()
        self.embedding_dim = embedding_dim + 3 * vector_channels
        self.vector_channels = vector_channels
        self.cutoff = cutoff
        self.vector_radial = nn.Linear(num_basis, vector_channels)
        self.register_buffer("centres", torch.linspace(0.5, cutoff, num_basis))
        self.atom_types = nn.Embedding(100, embedding_dim)
        self.radial = nn.Sequential(nn.Linear(num_basis, embedding_dim), nn.Tanh())

    def forward(self, batch: Batch) -> Embeddings:
        vectors, distance = edge_vectors(
            batch.pos, batch.edge_index, batch.cell, batch.cell_offsets, batch.batch
        )
        envelope = 0.5 * (torch.cos(math.pi * distance / self.cutoff) + 1.0)
        basis = torch.exp(-4.0 * (distance.unsqueeze(-1) - self.centres) ** 2)
        messages = self.radial(basis) * envelope.unsqueeze(-1)
        messages = messages * self.atom_types(batch.atomic_numbers)[batch.edge_index[1]]
        point = self.atom_types(batch.atomic_numbers).index_add(0, batch.edge_index[0], messages)
        if self.vector_channels:
            weights = self.vector_radial(basis) * envelope.unsqueeze(-1)  # [E, C]
            directed = (weights.unsqueeze(-1) * vectors.unsqueeze(1)).flatten(1)  # [E, 3C]
            summed = torch.zeros(len(point), directed.shape[1], dtype=directed.dtype)
            point = torch.cat([point, summed.index_add(0, batch.edge_index[0], directed)], dim=-1)
        return Embeddings(point_embedding=point)


def random_crystal(
    seed: int,
    n_atoms: int = 4,
    box: float = 3.2,
    skew: float = 0.3,
    dtype: torch.dtype = torch.float64,
) -> Data:
    """A random periodic structure (skewed cell) with its radius graph."""
    generator = torch.Generator().manual_seed(seed)
    cell = box * torch.eye(3, dtype=dtype) + skew * torch.rand(
        3, 3, generator=generator, dtype=dtype
    )
    fractional = torch.rand(n_atoms, 3, generator=generator, dtype=dtype)
    data = Data(
        pos=fractional @ cell,
        atomic_numbers=torch.randint(1, 4, (n_atoms,), generator=generator),
        natoms=torch.tensor([n_atoms]),
        cell=cell.unsqueeze(0),
        pbc=torch.ones(1, 3, dtype=torch.bool),
    )
    return PeriodicRadiusGraph(cutoff=CUTOFF)(data)


def with_targets(data: Data, energy: float = 0.0) -> Data:
    """Attach zero-ish targets so tasks accept the structure."""
    data.energy = torch.tensor([energy], dtype=data.pos.dtype)
    data.force = torch.zeros_like(data.pos)
    data.stress = torch.zeros(1, 3, 3, dtype=data.pos.dtype)
    return data
