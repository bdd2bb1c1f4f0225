r"""Batches by an atom (and edge) budget, with the same number of batches every epoch.

A batch of a fixed number of structures holds 16 atoms or 1,600 when sizes vary from 4 to 400:
its memory is unbounded, and the epoch runs out of memory when the large ones meet.
:class:`BudgetBatchSampler` packs batches under ``max_atoms`` and/or ``max_edges`` instead.

How batches are packed, and why the count is fixed. Each structure ``i`` has a *capacity*
:math:`c_i = \min(\lfloor A / a_i \rfloor, \lfloor E / e_i \rfloor, S)` (atoms :math:`a_i`,
edges :math:`e_i`, budgets :math:`A, E`, ``max_structures`` :math:`S`): how many structures
as large as it fit in one batch. The structures are sorted by capacity and cut into buckets;
a bucket's capacity :math:`C_b` is the smallest of its members', so any :math:`C_b` of its
members fit the budget, whichever they are. An epoch shuffles each bucket, cuts it into
batches of :math:`C_b` and shuffles the batches: bucket ``b`` of :math:`n_b` structures always
gives :math:`\lceil n_b / C_b \rceil` batches, so the epoch length never changes (Lightning
reads ``len(train_dataloader)`` once per fit and cuts longer epochs short).

The bucket boundaries are chosen by dynamic programming over the distinct capacities to
minimize the number of batches, which is the same as minimizing the padding (the budget left
unused, summed over batches): a wide bucket wastes space in batches of small members held to
the capacity of its largest; a narrow one adds a partly filled last batch. Among partitions
with the fewest batches the one with the fewest buckets is taken (larger buckets mix better).

Under DDP (``W`` ranks) batches are split in two, largest first, until their number divides
by ``W``, and rank ``r`` takes every ``W``-th batch from position ``r``: every rank gets the
same number of batches and every structure goes to exactly one rank, once. Only when there
are too few structures to split further (nearly every batch a single structure) are some
repeated, as few as needed. For evaluation, ``even_batches=False`` splits only until every
rank has a batch and never repeats.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray
from torch.utils.data import Sampler
from torch.utils.data.distributed import DistributedSampler

from matsci.data._mixture import (
    DatasetMixture,
    allocate_shares,
    draw_positions,
    epoch_generator,
    replica_world,
)

__all__ = ["BudgetBatchSampler", "edge_counts"]

IntArray = NDArray[np.int64]


class BudgetBatchSampler(Sampler[list[int]]):
    r"""Batches of structure indices under an atom and/or edge budget, fixed in number per epoch.

    See the module notes for how buckets are chosen and packed. Every batch holds at most
    ``max_atoms`` atoms, ``max_edges`` edges and ``max_structures`` structures; a structure
    larger than the budget on its own is an error (raised here, before training starts).
    The order depends only on ``seed`` and the epoch (:meth:`set_epoch`; Lightning calls it
    through :attr:`sampler`), never on the global random state. The number of batches per rank,
    ``len(self)``, is the same in every epoch.

    Under DDP every rank gets the same number of batches (unless ``even_batches=False``) and
    the union over ranks is the epoch, each structure once. With the default
    ``Trainer(use_distributed_sampler=True)`` give it to
    :class:`~matsci.data.ResumableDataLoader` (``batch_sampler=...``): that loader shows
    :attr:`sampler` (a :class:`~torch.utils.data.distributed.DistributedSampler`) as its
    sampler, so Lightning leaves it alone. With a plain ``DataLoader`` Lightning would try to
    inject its own sampler and fails; set ``use_distributed_sampler=False`` there.

    With a ``mixture``, an epoch draws ``mixture.num_samples`` structures instead of each
    once: source ``s`` gets ``mixture.counts()[s]`` of them, split over the buckets in
    proportion to the source's structures in each (largest remainder), and drawn within each
    (source, bucket) cell without replacement (a cell drawn more often than its size repeats
    every structure ``k`` or ``k + 1`` times). The draws per bucket are fixed, hence the
    number of batches; which structures are drawn changes with the epoch.

    Parameters
    ----------
    atom_counts
        Atoms per structure, shape ``[N]`` (each at least 1); from a dataset's
        ``atom_counts()``.
    edge_counts
        Edges per structure, shape ``[N]``; needed for (and only with) ``max_edges``. See
        :func:`edge_counts` for one pass over a dataset that counts them.
    max_atoms
        Atoms per batch at most.
    max_edges
        Edges per batch at most.
    max_structures
        Structures per batch at most.
    shuffle
        Shuffle within buckets and the order of batches each epoch; otherwise batches come
        bucket by bucket (small structures first), each bucket sorted by capacity, then index
        (a mixture's draws change with the epoch either way).
    seed
        Seed of the shuffles and of a mixture's draws.
    mixture
        Draw an epoch of this mixture of the concatenated sources (``atom_counts`` then covers
        the concatenation, ``sum(mixture.sizes)`` structures).
    num_replicas
        World size; read from ``torch.distributed`` when ``None``.
    rank
        This process's rank; read from ``torch.distributed`` when ``None``.
    even_batches
        Give every rank the same number of batches (training: a rank with fewer would leave
        the others waiting in the gradient all-reduce). ``False`` for evaluation: batches are
        split only until every rank has one, never repeated, and ranks may differ by one
        batch (as :class:`~matsci.data.UnpaddedDistributedSampler` does for structures).

    Attributes
    ----------
    epoch : int
        The epoch whose batches the next iteration gives.
    sampler : torch.utils.data.distributed.DistributedSampler
        This rank's structures of the epoch, batch after batch. Its ``set_epoch`` sets the
        epoch here too: Lightning calls it on ``batch_sampler.sampler`` before every epoch.
    capacities : tuple of int
        Structures per batch in each bucket (its capacity), smallest structures first.
    bucket_sizes : tuple of int
        Structures per epoch in each bucket, same order.

    Raises
    ------
    ValueError
        If neither budget is given, ``max_edges`` comes without ``edge_counts`` (or the
        reverse), counts are not non-negative integers of matching length, a structure exceeds
        the budget alone (naming its index and size), the mixture does not cover
        ``atom_counts``; when iterated or sized, if there are fewer structures than ranks.

    Examples
    --------
    >>> sampler = BudgetBatchSampler([4, 4, 4, 4, 4, 400, 380], max_atoms=800, seed=0)
    >>> sampler.capacities, sampler.bucket_sizes, len(sampler)
    ((200, 2), (5, 2), 2)
    >>> sorted(sorted(batch) for batch in sampler)
    [[0, 1, 2, 3, 4], [5, 6]]
    >>> [len(BudgetBatchSampler([4] * 5, max_atoms=8, num_replicas=2, rank=r)) for r in (0, 1)]
    [2, 2]
    """

    def __init__(
        self,
        atom_counts: Sequence[int] | NDArray[np.integer[Any]],
        *,
        edge_counts: Sequence[int] | NDArray[np.integer[Any]] | None = None,
        max_atoms: int | None = None,
        max_edges: int | None = None,
        max_structures: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        mixture: DatasetMixture | None = None,
        num_replicas: int | None = None,
        rank: int | None = None,
        even_batches: bool = True,
    ) -> None:
        name = "BudgetBatchSampler"
        atoms = _counts(f"{name}: atom_counts", atom_counts, minimum=1)
        self.max_atoms = _budget(f"{name}: max_atoms", max_atoms)
        self.max_edges = _budget(f"{name}: max_edges", max_edges)
        self.max_structures = _budget(f"{name}: max_structures", max_structures)
        if self.max_atoms is None and self.max_edges is None:
            raise ValueError(f"{name}: give max_atoms and/or max_edges (the budget per batch)")
        if (edge_counts is None) != (self.max_edges is None):
            raise ValueError(
                f"{name}: edge_counts and max_edges go together; got "
                f"edge_counts {'None' if edge_counts is None else 'given'}, "
                f"max_edges={max_edges!r}"
            )
        edges = None
        if edge_counts is not None:
            edges = _counts(f"{name}: edge_counts", edge_counts, minimum=0)
            if len(edges) != len(atoms):
                raise ValueError(
                    f"{name}: {len(edges)} edge_counts for {len(atoms)} atom_counts; give one "
                    "of each per structure"
                )
        if mixture is not None and sum(mixture.sizes) != len(atoms):
            raise ValueError(
                f"{name}: the mixture's sources hold {sum(mixture.sizes)} structures "
                f"(sizes {list(mixture.sizes)}) but atom_counts has {len(atoms)}; give the "
                "atom counts of the concatenated sources"
            )
        self.atom_counts, self.edge_counts = atoms, edges
        self.shuffle, self.seed, self.mixture = bool(shuffle), int(seed), mixture
        self.epoch = 0
        self._given = (num_replicas, rank)
        self.even_batches = bool(even_batches)
        limit = len(atoms) if mixture is None else mixture.num_samples
        capacity = _capacities(
            atoms, edges, self.max_atoms, self.max_edges, self.max_structures, limit
        )
        self._plan(capacity)
        self.sampler = _RankIndices(self)
        self._resolve()

    # -- the fixed part: buckets, cells and the number of batches ---------------------------

    def _plan(self, capacity: IntArray) -> None:
        levels, level_of = np.unique(-capacity, return_inverse=True)  # largest capacity first
        level_capacity = -levels
        sizes = (1,) if self.mixture is None else self.mixture.sizes
        sources = len(sizes)
        source_of = np.repeat(np.arange(sources), sizes)
        cell_of = level_of.reshape(-1) * sources + source_of
        # Indices grouped by (level, source) cell, each cell in index order.
        self._order = np.argsort(cell_of, kind="stable").astype(np.int64)
        cell_sizes = np.bincount(cell_of, minlength=len(levels) * sources)
        self._cell_starts = np.concatenate(([0], np.cumsum(cell_sizes))).astype(np.int64)
        if self.mixture is None:
            draws = cell_sizes.astype(np.int64)
        else:  # each source's draws spread over its cells in proportion to their sizes
            per_source = cell_sizes.reshape(len(levels), sources)
            draws = np.stack(
                [
                    allocate_shares(int(count), per_source[:, s])
                    for s, count in enumerate(self.mixture.counts().tolist())
                ],
                axis=1,
            ).reshape(-1)
        self._cell_draws = draws
        level_draws = draws.reshape(len(levels), sources).sum(axis=1)
        ends = _bucket_ends(level_capacity, level_draws)
        starts = [0, *ends[:-1]]
        self._buckets = [(s * sources, e * sources) for s, e in zip(starts, ends, strict=True)]
        self.capacities = tuple(int(level_capacity[e - 1]) for e in ends)
        self.bucket_sizes = tuple(
            int(level_draws[s:e].sum()) for s, e in zip(starts, ends, strict=True)
        )
        self._structures = sum(self.bucket_sizes)
        self._batches = sum(
            math.ceil(n / c) for n, c in zip(self.bucket_sizes, self.capacities, strict=True)
        )

    def _resolve(self) -> tuple[int, int]:
        num_replicas, rank = replica_world("BudgetBatchSampler", *self._given)
        if self._structures < num_replicas:
            raise ValueError(
                f"BudgetBatchSampler: {self._structures} structures per epoch for "
                f"{num_replicas} ranks leave a rank without any; use at least {num_replicas} "
                "structures (or fewer ranks)"
            )
        self.sampler.num_replicas, self.sampler.rank = num_replicas, rank
        return num_replicas, rank

    # -- per epoch -------------------------------------------------------------------------

    def set_epoch(self, epoch: int) -> None:
        """Give the batches of ``epoch`` from the next iteration on."""
        self.epoch = int(epoch)
        self.sampler.epoch = self.epoch

    def epoch_batches(self) -> list[list[int]]:
        """All batches of the current epoch, over all ranks, in order.

        Rank ``r`` of ``W`` gets ``batches[r::W]``. Mostly for inspection and benchmarks.

        Returns
        -------
        list of list of int
            Structure indices per batch.
        """
        return [batch.tolist() for batch in self._epoch_arrays(self._resolve()[0])]

    def _epoch_arrays(self, num_replicas: int) -> list[IntArray]:
        rng = epoch_generator(self.seed, self.epoch)
        batches: list[IntArray] = []
        for (first, last), capacity in zip(self._buckets, self.capacities, strict=True):
            members = self._draw_cells(first, last, rng)
            if self.shuffle:
                members = rng.permutation(members)
            batches += [members[i : i + capacity] for i in range(0, len(members), capacity)]
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        target = self._total(num_replicas)
        _split_to(batches, target)
        if len(batches) < target:  # every batch a single structure: repeat as few as needed
            pool = np.concatenate(batches)
            batches += [pool[[i]] for i in rng.choice(len(pool), target - len(batches), False)]
        return batches

    def _draw_cells(self, first: int, last: int, rng: np.random.Generator) -> IntArray:
        parts = []
        for cell in range(first, last):
            start, stop = self._cell_starts[cell], self._cell_starts[cell + 1]
            members = self._order[start:stop]
            count = int(self._cell_draws[cell])
            parts.append(
                members
                if count == len(members)
                else members[draw_positions(len(members), count, rng)]
            )
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    def __iter__(self) -> Iterator[list[int]]:
        num_replicas, rank = self._resolve()
        batches = self._epoch_arrays(num_replicas)[rank::num_replicas]
        return iter([batch.tolist() for batch in batches])

    def __len__(self) -> int:
        num_replicas, rank = self._resolve()
        return len(range(rank, self._total(num_replicas), num_replicas))

    def _total(self, num_replicas: int) -> int:
        """Batches of an epoch over all ranks: a multiple of the world size if even."""
        if self.even_batches:
            return math.ceil(self._batches / num_replicas) * num_replicas
        return max(self._batches, num_replicas)  # every rank at least one batch

    def __repr__(self) -> str:
        budget = ", ".join(
            f"{key}={value}"
            for key, value in (
                ("max_atoms", self.max_atoms),
                ("max_edges", self.max_edges),
                ("max_structures", self.max_structures),
            )
            if value is not None
        )
        return (
            f"BudgetBatchSampler({self._structures} structures, {budget}, "
            f"{len(self.capacities)} buckets, {self._batches} batches, seed={self.seed})"
        )


class _RankIndices(DistributedSampler[int]):
    """The structures of one rank in a :class:`BudgetBatchSampler` epoch, batch after batch.

    A ``DistributedSampler``, so that Lightning recognizes the loader as already distributed,
    and the object Lightning calls ``set_epoch`` on (``batch_sampler.sampler``).
    """

    def __init__(self, owner: BudgetBatchSampler) -> None:
        super().__init__(
            range(len(owner.atom_counts)),  # type: ignore[arg-type]
            num_replicas=1,
            rank=0,
            shuffle=owner.shuffle,
            seed=owner.seed,
        )
        self.owner = owner

    def set_epoch(self, epoch: int) -> None:
        self.owner.set_epoch(epoch)

    def __iter__(self) -> Iterator[int]:
        for batch in self.owner:
            yield from batch

    def __len__(self) -> int:
        return sum(len(batch) for batch in self.owner)


def edge_counts(dataset: Iterable[Any], cutoff: float | None = None) -> IntArray:
    """Edges of every structure of a dataset, in one pass (for ``max_edges``).

    Parameters
    ----------
    dataset
        ``Data`` objects (a dataset or any iterable of them). Without ``cutoff`` each must hold
        an ``edge_index`` (e.g. a dataset whose transform builds the graph).
    cutoff
        Build each graph with :class:`~matsci.transforms.PeriodicRadiusGraph` at this cutoff
        (Å) and count its edges; use the model's cutoff.

    Returns
    -------
    numpy.ndarray
        Edges per structure, shape ``[N]``, int64.

    Raises
    ------
    ValueError
        If a structure has no ``edge_index`` and no ``cutoff`` is given (naming its position).

    Examples
    --------
    >>> import torch
    >>> from torch_geometric.data import Data
    >>> edge_counts([Data(edge_index=torch.zeros(2, 5, dtype=torch.long))]).tolist()
    [5]
    """
    graph = None
    if cutoff is not None:
        from matsci.transforms import PeriodicRadiusGraph

        graph = PeriodicRadiusGraph(cutoff=cutoff)
    counts = []
    for position, data in enumerate(dataset):
        item = data if graph is None else graph(data.clone())
        edge_index = getattr(item, "edge_index", None)
        if edge_index is None:
            raise ValueError(
                f"edge_counts: structure {position} has no edge_index; give cutoff= to build "
                "the radius graphs, or a dataset whose transform builds them"
            )
        counts.append(int(edge_index.shape[1]))
    return np.asarray(counts, dtype=np.int64)


# -- helpers ---------------------------------------------------------------------------------------


def _counts(what: str, values: Sequence[int] | NDArray[np.integer[Any]], minimum: int) -> IntArray:
    array = np.asarray(values)
    if array.ndim != 1 or len(array) == 0:
        raise ValueError(
            f"{what}: expected a non-empty 1-D sequence of ints, got shape {array.shape}"
        )
    if not np.issubdtype(array.dtype, np.integer):
        raise TypeError(f"{what}: expected integers, got dtype {array.dtype}")
    bad = np.flatnonzero(array < minimum)
    if len(bad):
        raise ValueError(
            f"{what}: structure {int(bad[0])} has {int(array[bad[0]])}; expected at least "
            f"{minimum} ({len(bad)} such structures)"
        )
    return array.astype(np.int64)


def _budget(what: str, value: int | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{what}: expected a positive int or None, got {value!r}")
    if value < 1:
        raise ValueError(f"{what}: expected a positive int or None, got {value!r}")
    return int(value)


def _capacities(
    atoms: IntArray,
    edges: IntArray | None,
    max_atoms: int | None,
    max_edges: int | None,
    max_structures: int | None,
    limit: int,
) -> IntArray:
    """How many structures as large as each one fit a batch.

    ``limit`` (the structures per epoch) stands for "any number": the capacity of a structure
    no budget bounds (no edges under an edge-only budget, no ``max_structures``).
    """
    unbounded = np.iinfo(np.int64).max
    capacity = np.full(len(atoms), unbounded if max_structures is None else max_structures)
    checks = [("atoms", atoms, max_atoms)]
    if edges is not None:
        checks.append(("edges", edges, max_edges))
    for unit, counts, budget in checks:
        if budget is None:
            continue
        too_big = np.flatnonzero(counts > budget)
        if len(too_big):
            first = int(too_big[0])
            raise ValueError(
                f"BudgetBatchSampler: structure {first} has {int(counts[first])} {unit}, more "
                f"than max_{unit}={budget} allows in one batch ({len(too_big)} such "
                f"structures); raise max_{unit} or leave them out"
            )
        fits = np.where(counts > 0, budget // np.maximum(counts, 1), capacity)
        capacity = np.minimum(capacity, fits)
    return np.where(capacity == unbounded, limit, capacity).astype(np.int64)


def _bucket_ends(capacity: IntArray, draws: IntArray) -> list[int]:
    """Cut levels (capacities in decreasing order) into buckets with the fewest batches.

    ``best[j]``: cost of the levels ``0 .. j-1`` cut into buckets, the last ending at ``j``;
    a bucket ``i .. j-1`` costs ``ceil(draws / capacity[j-1])`` batches. Batches count
    ``levels + 1`` times a bucket, so the fewest batches win and, among those, the fewest
    buckets. O(levels²), and there are at most a few thousand distinct capacities.
    """
    levels = len(capacity)
    prefix = np.concatenate(([0], np.cumsum(draws))).astype(np.int64)
    best = np.zeros(levels + 1, dtype=np.int64)
    cut = np.zeros(levels + 1, dtype=np.int64)
    for j in range(1, levels + 1):
        batches = -(-(prefix[j] - prefix[:j]) // capacity[j - 1])  # ceil division
        costs = best[:j] + batches * (levels + 1) + 1
        cut[j] = int(np.argmin(costs))
        best[j] = costs[cut[j]]
    ends = []
    j = levels
    while j > 0:
        ends.append(j)
        j = int(cut[j])
    return ends[::-1]


def _split_to(batches: list[IntArray], target: int) -> None:
    """Split the batch with the most structures in two, in place, until there are ``target``."""
    while len(batches) < target:
        sizes = [len(batch) for batch in batches]
        largest = int(np.argmax(sizes))
        if sizes[largest] < 2:
            return
        half = sizes[largest] // 2
        batch = batches[largest]
        batches[largest : largest + 1] = [batch[:half], batch[half:]]
