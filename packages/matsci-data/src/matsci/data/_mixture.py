r"""Several datasets in one task: how often each source is drawn, and a sampler that draws so.

Foundation-model training mixes sources of very different sizes (a few thousand molecules
beside 10^8 bulk cells). :class:`DatasetMixture` says how many structures of each source one
epoch holds — fixed weights, every source equally often, or temperature sampling
:math:`p_s \propto n_s^{1/T}` — and :class:`MixtureSampler` draws them, deterministically per
seed and epoch and split evenly over DDP ranks. The sources are concatenated in order (as
:class:`torch.utils.data.ConcatDataset` does): source ``s`` holds the indices
``offsets[s] .. offsets[s] + sizes[s] - 1``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Literal

import numpy as np
import torch.distributed as dist
from numpy.typing import NDArray
from torch.utils.data.distributed import DistributedSampler

__all__ = [
    "DatasetMixture",
    "MixtureSampler",
    "allocate_shares",
    "draw_positions",
    "epoch_generator",
    "replica_world",
]

IntArray = NDArray[np.int64]


class DatasetMixture:
    r"""How many structures of each source one epoch of a mixture holds.

    The probability of source :math:`s` (with :math:`n_s` structures) is

    - ``weights=[w_0, w_1, ...]``: :math:`p_s = w_s / \sum_t w_t` (fixed weights);
    - ``weights="balanced"``: :math:`p_s = 1 / S` (every source equally often);
    - ``temperature=T``: :math:`p_s = n_s^{1/T} / \sum_t n_t^{1/T}`; :math:`T = 1` is
      proportional to size (the default when neither is given), :math:`T \to \infty`
      (``float("inf")``) is balanced, and values in between upsample the small sources.

    An epoch holds ``num_samples`` structures, source ``s`` exactly :meth:`counts` ``[s]`` of
    them: :math:`\mathrm{num\_samples} \cdot p_s` rounded by largest remainder, so the counts
    sum to ``num_samples`` and do not vary between epochs. Which structures are drawn varies
    (see :class:`MixtureSampler`). With the default (proportional, ``num_samples`` = the
    total size) an epoch is every structure once.

    Parameters
    ----------
    sizes
        Structures per source, in the order the sources are concatenated (each at least 1).
    weights
        Fixed non-negative weights per source (normalized here), or ``"balanced"``.
    temperature
        Temperature :math:`T > 0` of size-based sampling; not together with ``weights``.
    num_samples
        Structures per epoch (over all ranks); default: the total size.

    Attributes
    ----------
    sizes : tuple of int
        Structures per source.
    offsets : tuple of int
        Index of each source's first structure in the concatenation.
    probabilities : numpy.ndarray
        :math:`p_s`, shape ``[S]``, summing to 1.
    num_samples : int
        Structures per epoch.

    Raises
    ------
    ValueError
        If a size is not positive, the weights do not match the sources or are negative or
        all zero, the temperature is not positive, both weights and a temperature are given,
        or ``num_samples`` is not positive.

    Examples
    --------
    >>> mixture = DatasetMixture([100, 10_000], temperature=2.0, num_samples=1_000)
    >>> mixture.probabilities.round(4).tolist()
    [0.0909, 0.9091]
    >>> mixture.counts().tolist(), mixture.offsets
    ([91, 909], (0, 100))
    >>> DatasetMixture([100, 10_000], weights="balanced", num_samples=1_000).counts().tolist()
    [500, 500]
    """

    def __init__(
        self,
        sizes: Sequence[int],
        *,
        weights: Sequence[float] | Literal["balanced"] | None = None,
        temperature: float | None = None,
        num_samples: int | None = None,
    ) -> None:
        name = "DatasetMixture"
        self.sizes = tuple(_positive_int(f"{name}: sizes[{s}]", n) for s, n in enumerate(sizes))
        if not self.sizes:
            raise ValueError(f"{name}: sizes is empty; give the size of each source")
        self.offsets = tuple(int(o) for o in np.cumsum((0, *self.sizes[:-1])))
        if weights is not None and temperature is not None:
            raise ValueError(
                f"{name}: give weights={weights!r} or temperature={temperature!r}, not both"
            )
        self.probabilities = _probabilities(self.sizes, weights, temperature)
        total = sum(self.sizes) if num_samples is None else num_samples
        self.num_samples = _positive_int(f"{name}: num_samples", total)
        self._weights, self._temperature = weights, temperature

    def counts(self, total: int | None = None) -> IntArray:
        """Structures drawn from each source in an epoch of ``total`` (default ``num_samples``).

        Largest-remainder rounding of ``total * probabilities`` (ties to the earlier source):
        the counts sum to ``total`` exactly.

        Parameters
        ----------
        total
            Structures in the epoch.

        Returns
        -------
        numpy.ndarray
            Shape ``[S]``, int64.
        """
        total = self.num_samples if total is None else total
        return allocate_shares(
            _positive_int("DatasetMixture.counts: total", total), self.probabilities
        )

    def __repr__(self) -> str:
        how = (
            f"weights={self._weights!r}"
            if self._weights is not None
            else f"temperature={1.0 if self._temperature is None else self._temperature}"
        )
        return f"DatasetMixture(sizes={list(self.sizes)}, {how}, num_samples={self.num_samples})"


class MixtureSampler(DistributedSampler[int]):
    """Draw an epoch of a :class:`DatasetMixture`, deterministic per seed and epoch, per rank.

    Each epoch draws exactly ``mixture.counts(total)[s]`` structures from source ``s``, where
    ``total`` is ``num_samples`` rounded up to a multiple of the world size. Within a source
    the draws go without replacement: a source drawn less often than its size shows a new
    random subset each epoch, one drawn more often shows every structure ``k`` or ``k + 1``
    times. The draws are shuffled together and rank ``r`` of ``W`` takes every ``W``-th one
    from position ``r``, so every rank gets ``ceil(num_samples / W)`` indices. The order depends
    only on ``seed`` and the epoch (Lightning calls :meth:`set_epoch` before each epoch), never
    on the global random state.

    Being a :class:`~torch.utils.data.distributed.DistributedSampler`, Lightning uses it under
    DDP as given (with the default ``use_distributed_sampler=True``) instead of injecting its
    own. The world size and rank are read when iterating, from ``torch.distributed`` once it is
    initialized (one process otherwise). To batch a mixture by an atom budget with a fixed
    number of batches per epoch, give the mixture to
    :class:`~matsci.data.BudgetBatchSampler` instead.

    Parameters
    ----------
    mixture
        What an epoch holds.
    seed
        Seed of the draws.
    num_replicas
        World size; read from ``torch.distributed`` when ``None``.
    rank
        This process's rank; read from ``torch.distributed`` when ``None``.

    Examples
    --------
    >>> mixture = DatasetMixture([3, 100], weights="balanced", num_samples=8)
    >>> draws = list(MixtureSampler(mixture, seed=0))
    >>> sum(i < 3 for i in draws), sum(i >= 3 for i in draws)  # 4 from each source
    (4, 4)
    >>> sorted(set(i for i in draws if i < 3))  # source 0: all 3 structures, one twice
    [0, 1, 2]
    >>> len(MixtureSampler(mixture, num_replicas=3, rank=2))  # ceil(8 / 3)
    3
    """

    def __init__(
        self,
        mixture: DatasetMixture,
        *,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        if not isinstance(mixture, DatasetMixture):
            raise TypeError(
                f"MixtureSampler(mixture=...): expected a DatasetMixture, "
                f"got {type(mixture).__name__}"
            )
        super().__init__(range(mixture.num_samples), num_replicas=1, rank=0, seed=int(seed))  # type: ignore[arg-type]
        self.mixture = mixture
        self._given = (num_replicas, rank)
        self._resolve()

    def _resolve(self) -> tuple[int, int]:
        self.num_replicas, self.rank = replica_world("MixtureSampler", *self._given)
        self.num_samples = math.ceil(self.mixture.num_samples / self.num_replicas)
        self.total_size = self.num_samples * self.num_replicas
        return self.num_replicas, self.rank

    def __iter__(self) -> Iterator[int]:
        num_replicas, rank = self._resolve()
        rng = epoch_generator(self.seed, self.epoch)
        counts = self.mixture.counts(self.total_size)
        draws = [
            offset + draw_positions(size, count, rng)
            for offset, size, count in zip(
                self.mixture.offsets, self.mixture.sizes, counts.tolist(), strict=True
            )
        ]
        order = rng.permutation(np.concatenate(draws))
        return iter(order[rank::num_replicas].tolist())

    def __len__(self) -> int:
        self._resolve()
        return self.num_samples

    def __repr__(self) -> str:
        return f"MixtureSampler({self.mixture!r}, seed={self.seed})"


# -- shared with the budget sampler ----------------------------------------------------------------


def allocate_shares(total: int, weights: NDArray[np.float64] | NDArray[np.int64]) -> IntArray:
    """Split ``total`` into integer shares proportional to ``weights`` (largest remainder).

    The shares sum to ``total``; remainders are given to the largest fractional parts, ties to
    the earlier entry. All-zero weights give all-zero shares (only allowed for ``total = 0``).
    """
    weights = np.asarray(weights, dtype=np.float64)
    norm = weights.sum()
    if norm <= 0:
        assert total == 0, "allocate: positive total over zero weights"
        return np.zeros(len(weights), dtype=np.int64)
    quotas: NDArray[np.float64] = total * weights / norm
    shares: IntArray = np.floor(quotas).astype(np.int64)
    left = total - int(shares.sum())
    if left > 0:
        order = np.lexsort((np.arange(len(weights)), -(quotas - shares)))
        shares[order[:left]] += 1
    return shares


def draw_positions(size: int, count: int, rng: np.random.Generator) -> IntArray:
    """``count`` positions in ``range(size)``: whole permutations, then a random subset.

    Without replacement up to ``size``; beyond it every position appears ``count // size`` or
    one more times.
    """
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    full, rest = divmod(count, size)
    parts = [rng.permutation(size) for _ in range(full)]
    if rest:
        parts.append(rng.choice(size, size=rest, replace=False))
    return np.concatenate(parts).astype(np.int64, copy=False)


def epoch_generator(seed: int, epoch: int) -> np.random.Generator:
    """A private generator per (seed, epoch), independent of the global random state."""
    return np.random.default_rng([int(seed) % 2**64, int(epoch) % 2**64])


def replica_world(name: str, num_replicas: int | None, rank: int | None) -> tuple[int, int]:
    """The world size and rank given, or read from ``torch.distributed`` (one process if off)."""
    initialized = dist.is_available() and dist.is_initialized()
    if num_replicas is None:
        num_replicas = dist.get_world_size() if initialized else 1
    if rank is None:
        rank = dist.get_rank() if initialized else 0
    if num_replicas < 1 or not 0 <= rank < num_replicas:
        raise ValueError(f"{name}: rank {rank} is not in [0, num_replicas={num_replicas})")
    return num_replicas, rank


def _positive_int(what: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{what}: expected a positive int, got {value!r}")
    if value < 1:
        raise ValueError(f"{what}: expected a positive int, got {value!r}")
    return int(value)


def _probabilities(
    sizes: tuple[int, ...],
    weights: Sequence[float] | Literal["balanced"] | None,
    temperature: float | None,
) -> NDArray[np.float64]:
    name = "DatasetMixture"
    if isinstance(weights, str):
        if weights != "balanced":
            raise ValueError(
                f"{name}: weights={weights!r}; expected 'balanced' or one weight per source"
            )
        return np.full(len(sizes), 1.0 / len(sizes))
    if weights is not None:
        values = np.asarray(weights, dtype=np.float64)
        if values.shape != (len(sizes),):
            raise ValueError(
                f"{name}: {len(values)} weights for {len(sizes)} sources; give one per source"
            )
        if not np.all(np.isfinite(values)) or np.any(values < 0) or values.sum() <= 0:
            raise ValueError(
                f"{name}: weights={list(weights)!r}; expected finite non-negative weights, "
                "not all zero"
            )
        return np.asarray(values / values.sum(), dtype=np.float64)
    temperature = 1.0 if temperature is None else float(temperature)
    if not temperature > 0:  # also rejects NaN
        raise ValueError(f"{name}: temperature={temperature!r}; expected T > 0")
    # log p_s = log(n_s) / T - logsumexp: no overflow for large sizes and small T.
    logits = np.log(np.asarray(sizes, dtype=np.float64)) / temperature
    logits -= logits.max()
    probabilities = np.exp(logits)
    return np.asarray(probabilities / probabilities.sum(), dtype=np.float64)
