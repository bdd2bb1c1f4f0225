"""Fixtures of the matsci-transforms tests: dtypes, a seed, random structures."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch_geometric.data import Data

STRUCTURE_KINDS = ["cubic", "triclinic", "small_cell", "molecule", "slab", "unwrapped"]
"""Kinds of random structures: ``make_structure(kind, seed, dtype)`` builds one."""
SEEDS = [0, 1, 2]

CUTOFFS = {
    "cubic": 4.0,
    "triclinic": 4.5,
    "small_cell": 5.0,  # cell vectors of about 2 Å: atoms neighbour their own images
    "molecule": 2.5,
    "slab": 4.0,
    "unwrapped": 4.0,
}


def _structure(kind: str, seed: int, dtype: torch.dtype) -> Data:
    g = torch.Generator().manual_seed(seed)

    def uniform(*shape: int, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
        return low + (high - low) * torch.rand(*shape, generator=g, dtype=torch.float64)

    pbc = [True, True, True]
    if kind == "cubic":
        cell, n_atoms, frac_range = 5.0 * torch.eye(3, dtype=torch.float64), 12, (0.0, 1.0)
    elif kind == "triclinic":
        base = torch.tensor([[4.0, 0.0, 0.0], [2.5, 3.5, 0.0], [-1.5, 1.2, 3.2]])
        cell, n_atoms, frac_range = base.double() + uniform(3, 3, low=-0.3, high=0.3), 8, (0, 1)
    elif kind == "small_cell":
        base = torch.tensor([[2.0, 0.0, 0.0], [1.3, 1.9, 0.0], [0.6, -0.8, 2.1]])
        cell, n_atoms, frac_range = base.double() + uniform(3, 3, low=-0.2, high=0.2), 2, (0, 1)
    elif kind == "slab":
        base = torch.tensor([[3.0, 0.0, 0.0], [1.0, 3.2, 0.0], [0.3, 0.2, 8.0]])
        cell, n_atoms, frac_range = base.double(), 6, (0.0, 1.0)
        pbc = [True, True, False]
    elif kind == "unwrapped":
        base = torch.tensor([[3.5, 0.0, 0.0], [-1.0, 3.3, 0.0], [0.8, 0.5, 3.6]])
        cell, n_atoms, frac_range = base.double(), 4, (-2.0, 3.0)
    elif kind == "molecule":
        pos = uniform(10, 3, high=4.0)
        return Data(pos=pos.to(dtype), natoms=torch.tensor([10]))
    else:
        raise AssertionError(kind)
    frac = uniform(n_atoms, 3, low=frac_range[0], high=frac_range[1])
    return Data(
        pos=(frac @ cell).to(dtype),
        cell=cell.to(dtype).unsqueeze(0),
        pbc=torch.tensor([pbc]),
        natoms=torch.tensor([n_atoms]),
    )


@pytest.fixture
def make_structure() -> Callable[[str, int, torch.dtype], Data]:
    """``make_structure(kind, seed, dtype)``: a random structure of one of ``STRUCTURE_KINDS``."""
    return _structure


@pytest.fixture(
    params=[(kind, seed) for kind in STRUCTURE_KINDS for seed in SEEDS],
    ids=[f"{kind}-{seed}" for kind in STRUCTURE_KINDS for seed in SEEDS],
)
def structure(request: pytest.FixtureRequest, dtype: torch.dtype) -> tuple[Data, float]:
    """A random structure of every kind and seed in ``dtype``, with the cutoff to use on it."""
    kind, seed = request.param
    return _structure(kind, seed, dtype), CUTOFFS[kind]


@pytest.fixture(params=[torch.float32, torch.float64], ids=["float32", "float64"])
def dtype(request: pytest.FixtureRequest) -> torch.dtype:
    value: torch.dtype = request.param
    return value


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
