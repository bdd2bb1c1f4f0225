"""Evaluation shards for distributed runs: every structure exactly once, none repeated."""

from __future__ import annotations

from collections.abc import Iterator, Sized

import torch.distributed as dist
from torch.utils.data.distributed import DistributedSampler

__all__ = ["UnpaddedDistributedSampler"]


class UnpaddedDistributedSampler(DistributedSampler[int]):
    """Give rank ``r`` of ``W`` the indices ``r, r + W, r + 2W, ...``, in order, without padding.

    Lightning's default :class:`~torch.utils.data.distributed.DistributedSampler` pads the
    dataset with repeated structures so that every rank gets as many; for evaluation those
    repeats count twice in the reduced metrics. This sampler gives each structure to exactly
    one rank, so metrics reduced over ranks (torchmetrics, ``self.log(sync_dist=True)``) equal
    a single-process evaluation. Ranks may get one structure more or less, hence a different
    number of batches; evaluation runs no collective per batch, so this does not hang.

    The world size and rank are read when iterating (from ``torch.distributed`` once it is
    initialized; one process otherwise), so the sampler can be built before the process group
    exists, as Lightning's launchers do. Being a ``DistributedSampler``, Lightning uses it as
    given instead of injecting its own. Use it for validation, test and prediction; training
    wants equal batch counts on every rank (Lightning's padded sampler).

    Parameters
    ----------
    dataset
        The dataset (anything with a length).
    num_replicas
        World size; read from ``torch.distributed`` when ``None``.
    rank
        This process's rank; read from ``torch.distributed`` when ``None``.

    Raises
    ------
    ValueError
        When iterated, if a rank would get no structure (fewer structures than ranks): its
        metrics could not take part in the reduction.

    Examples
    --------
    >>> sampler = UnpaddedDistributedSampler(range(5), num_replicas=2, rank=1)
    >>> list(sampler), len(sampler)
    ([1, 3], 2)
    >>> list(UnpaddedDistributedSampler(range(5)))  # one process
    [0, 1, 2, 3, 4]
    """

    def __init__(
        self, dataset: Sized, num_replicas: int | None = None, rank: int | None = None
    ) -> None:
        super().__init__(dataset, num_replicas=1, rank=0, shuffle=False)  # type: ignore[arg-type]
        self._given = (num_replicas, rank)
        self._resolve()

    def _resolve(self) -> tuple[int, int]:
        num_replicas, rank = self._given
        initialized = dist.is_available() and dist.is_initialized()
        if num_replicas is None:
            num_replicas = dist.get_world_size() if initialized else 1
        if rank is None:
            rank = dist.get_rank() if initialized else 0
        if not 0 <= rank < num_replicas:
            raise ValueError(
                f"UnpaddedDistributedSampler: rank {rank} is not in [0, {num_replicas})"
            )
        size = len(self.dataset)  # type: ignore[arg-type]
        self.num_replicas, self.rank = num_replicas, rank
        self.num_samples = len(range(rank, size, num_replicas))
        self.total_size = size
        return num_replicas, rank

    def __iter__(self) -> Iterator[int]:
        num_replicas, rank = self._resolve()
        if self.num_samples == 0 and self.total_size > 0:
            raise ValueError(
                f"UnpaddedDistributedSampler: {self.total_size} structures for {num_replicas} "
                f"ranks leave rank {rank} without any; evaluate on at least {num_replicas} "
                "structures (or on fewer ranks)"
            )
        return iter(range(rank, self.total_size, num_replicas))

    def __len__(self) -> int:
        self._resolve()
        return self.num_samples
