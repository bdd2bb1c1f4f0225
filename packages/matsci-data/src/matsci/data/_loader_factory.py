"""How :class:`~matsci.data.AtomsDataModule` builds its loaders: by count, by budget, mixed.

Every loader is a :class:`~matsci.data.ResumableDataLoader` (seeded; it resumes mid-epoch from a
checkpoint). The training loader shuffles, draws a mixture of named sources
(:class:`~matsci.data.MixtureSampler`), or packs batches by an atom/edge budget
(:class:`~matsci.data.BudgetBatchSampler`, which draws the mixture itself); evaluation loaders
keep file order (or the budget sampler's bucket order) and give each structure to one DDP rank.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from functools import partial
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from torch.utils.data import ConcatDataset, Dataset
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader

from matsci.data._budget_sampler import BudgetBatchSampler
from matsci.data._distributed_sampler import UnpaddedDistributedSampler
from matsci.data._mixture import DatasetMixture, MixtureSampler
from matsci.data._resumable_loader import ResumableDataLoader

__all__ = [
    "atom_counts_of",
    "check_loader_arguments",
    "evaluation_loader",
    "resumable_loader",
    "training_loader",
    "training_mixture",
]


def check_loader_arguments(
    *,
    batch_size: int | None,
    max_atoms: int | None,
    max_edges: int | None,
    mixture_samples: int | None,
    num_workers: int,
    radius_graph: object,
) -> None:
    """Positive sizes and budgets; ``max_edges`` only with a neighbour graph to count on."""
    for name, value in (
        ("batch_size", batch_size),
        ("max_atoms", max_atoms),
        ("max_edges", max_edges),
        ("mixture_samples", mixture_samples),
    ):
        if value is not None and value < 1:
            raise ValueError(f"AtomsDataModule({name}={value}): must be at least 1")
    if num_workers < 0:
        raise ValueError(f"AtomsDataModule(num_workers={num_workers}): must be at least 0")
    if max_edges is not None and radius_graph is None:
        raise ValueError(
            f"AtomsDataModule(max_edges={max_edges}): edges are counted on the neighbour "
            "graph; add a PeriodicRadiusGraph to transform or pre_transform (or give "
            "max_atoms instead)"
        )


def atom_counts_of(dataset: Any) -> NDArray[np.int64]:
    """Atoms per structure of an opened source, or of several concatenated (a mixture)."""
    if isinstance(dataset, ConcatDataset):
        return np.concatenate([atom_counts_of(part) for part in dataset.datasets])
    counts: NDArray[np.int64] = np.asarray(dataset.atom_counts(), dtype=np.int64)
    return counts


def training_mixture(
    train: Dataset[Data],
    names: Iterable[str],
    weights: Mapping[str, float] | str,
    *,
    temperature: float | None,
    samples: int | None,
) -> DatasetMixture:
    """The mixture over the concatenated sources ``names`` of ``train={name: source}``."""
    assert isinstance(train, ConcatDataset)
    sizes = [len(part) for part in train.datasets]  # type: ignore[arg-type]
    by_name: Sequence[float] | Literal["balanced"] | None = None
    if isinstance(weights, Mapping):
        by_name = [float(weights[name]) for name in names]
    elif weights == "balanced":
        by_name = "balanced"
    return DatasetMixture(sizes, weights=by_name, temperature=temperature, num_samples=samples)


def resumable_loader(
    dataset: Dataset[Data], *, seed: int, num_workers: int, pin_memory: bool, **options: Any
) -> DataLoader:
    """A :class:`~matsci.data.ResumableDataLoader`; ``options`` choose how it batches."""
    return ResumableDataLoader(
        dataset,
        seed=seed,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0,
        **options,
    )


def training_loader(
    dataset: Dataset[Data],
    budget: BudgetBatchSampler | None,
    mixture: DatasetMixture | None,
    *,
    batch_size: int | None,
    seed: int,
    num_workers: int,
    pin_memory: bool,
) -> DataLoader:
    """Batches by ``budget`` if given, else ``batch_size`` drawn by ``mixture`` or shuffled."""
    loader = partial(
        resumable_loader, dataset, seed=seed, num_workers=num_workers, pin_memory=pin_memory
    )
    if budget is not None:
        return loader(batch_sampler=budget)
    if mixture is not None:
        sampler = MixtureSampler(mixture, seed=seed)
        return loader(batch_size=batch_size, sampler=sampler)
    return loader(batch_size=batch_size, shuffle=True)


def evaluation_loader(
    dataset: Dataset[Data],
    budget: BudgetBatchSampler | None,
    *,
    batch_size: int | None,
    seed: int,
    num_workers: int,
    pin_memory: bool,
) -> DataLoader:
    """Batches by ``budget`` if given, else ``batch_size`` in file order, one rank each."""
    # Each structure goes to one DDP rank, without padded repeats, in file order (or in the
    # budget sampler's bucket order).
    loader = partial(
        resumable_loader, dataset, seed=seed, num_workers=num_workers, pin_memory=pin_memory
    )
    if budget is not None:
        return loader(batch_sampler=budget)
    return loader(
        batch_size=batch_size,
        shuffle=False,
        sampler=UnpaddedDistributedSampler(dataset),  # type: ignore[arg-type]
    )
