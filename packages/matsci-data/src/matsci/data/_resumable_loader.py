"""A PyG ``DataLoader`` whose place in the epoch travels in Lightning checkpoints.

Lightning saves the ``state_dict()`` of every training loader that has one and, on resume,
calls ``load_state_dict()`` before the loader is iterated again. This loader stores the epoch
of its sampler and how many batches it has handed out, and on resume skips those batches in
index space (no structure is read twice), so a run killed mid-epoch continues with exactly the
batches the uninterrupted run would have seen. Only public ``DataLoader`` API is used: the
resumed pass is a one-off loader with the same settings whose batch sampler leaves the seen
batches out. The shuffled order depends only on ``seed`` and the epoch
(:class:`SeededRandomSampler`), never on the global random state.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sequence, Sized
from typing import Any

import torch
from torch.utils.data import DataLoader as TorchDataLoader
from torch.utils.data import RandomSampler, Sampler
from torch_geometric.loader import DataLoader

__all__ = ["ResumableDataLoader", "SeededRandomSampler"]

_CHUNK = 1 << 16
"""Indices turned into Python ints at a time by :class:`SeededRandomSampler`."""


class SeededRandomSampler(RandomSampler):
    """A random permutation of the dataset that depends only on ``seed`` and the epoch.

    Lightning calls :meth:`set_epoch` before every training epoch, so each epoch gets a new
    order, and a resumed run gets the same order as the uninterrupted one. It is a
    :class:`~torch.utils.data.RandomSampler`, so under DDP Lightning replaces it by its
    :class:`~torch.utils.data.distributed.DistributedSampler` (which also shuffles by seed and
    epoch, with the seed of ``seed_everything``).

    Parameters
    ----------
    data_source
        The dataset (anything with a length).
    seed
        Seed of the permutations.

    Examples
    --------
    >>> sampler = SeededRandomSampler(range(5), seed=3)
    >>> first = list(sampler)
    >>> first == list(SeededRandomSampler(range(5), seed=3)), sorted(first)
    (True, [0, 1, 2, 3, 4])
    >>> sampler.set_epoch(1)
    >>> list(sampler) != first
    True
    """

    def __init__(self, data_source: Sized, seed: int = 0) -> None:
        super().__init__(data_source)
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Use the permutation of ``epoch`` from the next iteration on."""
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        # A private generator per epoch: the order never depends on the global random state.
        generator = torch.Generator().manual_seed(_epoch_seed(self.seed, self.epoch))
        order = torch.randperm(len(self.data_source), generator=generator)
        # In chunks: a whole list of Python ints costs 40 bytes per structure (4 GB at 10^8).
        for start in range(0, len(order), _CHUNK):
            yield from order[start : start + _CHUNK].tolist()


class ResumableDataLoader(DataLoader):  # type: ignore[misc]  # PyG ships no type hints
    """A :class:`torch_geometric.loader.DataLoader` that resumes mid-epoch from a checkpoint.

    It implements Lightning's stateful-loader protocol: :meth:`state_dict` records the
    sampler's epoch and the number of batches handed out in the current pass;
    :meth:`load_state_dict` sets the epoch back and makes the next pass skip those batches
    (their indices only; nothing is read). With ``shuffle=True`` the order comes from a
    :class:`SeededRandomSampler`; DataLoader worker seeds come from ``seed`` and the epoch too,
    so nothing here draws from the global random state.

    Exact continuation needs a deterministic order for the epoch (this sampler, Lightning's
    ``DistributedSampler``, a :class:`~matsci.data.BudgetBatchSampler` given as
    ``batch_sampler``, or no shuffling) and a sized dataset. The epoch is read from the batch
    sampler when it has one (``batch_sampler.epoch``), else from the sampler. Random
    transforms that run in worker processes (``num_workers > 0``) draw new numbers after a
    resume. The resumed pass starts worker processes of its own, even with
    ``persistent_workers``; later passes use the loader's.

    Batches by atom budget: give ``batch_sampler=BudgetBatchSampler(...)``. The loader's
    :attr:`sampler` is then the batch sampler's own, a ``DistributedSampler`` of this rank's
    structures, so under DDP Lightning uses the loader as given with the default
    ``Trainer(use_distributed_sampler=True)``, and its ``set_epoch`` reaches the batch sampler.

    Parameters
    ----------
    dataset
        A dataset of ``Data`` objects (or a list of them).
    batch_size
        Structures per batch.
    shuffle
        Shuffle with a :class:`SeededRandomSampler` (unless ``sampler`` is given).
    follow_batch
        As for :class:`torch_geometric.loader.DataLoader`.
    exclude_keys
        As for :class:`torch_geometric.loader.DataLoader`.
    seed
        Seed of the shuffled order and, unless a ``generator`` is given, of the workers' seeds.
    **kwargs
        Other arguments of :class:`torch.utils.data.DataLoader` (``num_workers``,
        ``sampler``, ...).

    Examples
    --------
    >>> import torch
    >>> from torch_geometric.data import Data
    >>> structures = [Data(pos=torch.zeros(1, 3), number=torch.tensor([i])) for i in range(10)]
    >>> loader = ResumableDataLoader(structures, batch_size=3, shuffle=True, seed=0)
    >>> full = [batch.number.tolist() for batch in loader]
    >>> iterator = iter(loader)
    >>> _ = next(iterator), next(iterator)
    >>> state = loader.state_dict()
    >>> state
    {'epoch': 0, 'batches': 2}
    >>> resumed = ResumableDataLoader(structures, batch_size=3, shuffle=True, seed=0)
    >>> resumed.load_state_dict(state)
    >>> [batch.number.tolist() for batch in resumed] == full[2:]
    True
    """

    def __init__(
        self,
        dataset: Any,
        batch_size: int = 1,
        shuffle: bool = False,
        follow_batch: Sequence[str] | None = None,
        exclude_keys: Sequence[str] | None = None,
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        if shuffle and kwargs.get("sampler") is None and kwargs.get("batch_sampler") is None:
            kwargs["sampler"] = SeededRandomSampler(dataset, seed=seed)
            shuffle = False
        self._own_generator = kwargs.get("generator") is None
        if self._own_generator:
            kwargs["generator"] = torch.Generator().manual_seed(int(seed))
        super().__init__(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            follow_batch=None if follow_batch is None else list(follow_batch),
            exclude_keys=None if exclude_keys is None else list(exclude_keys),
            **kwargs,
        )
        self.seed = int(seed)
        self._served = 0  # batches handed out (or skipped) in the current pass
        self._skip = 0  # batches the next pass skips, set by load_state_dict

    def state_dict(self) -> dict[str, int]:
        """The sampler's epoch and the batches handed out so far in this pass.

        A pass that has handed out every batch is recorded as the start of the next epoch.

        Returns
        -------
        dict
            ``{"epoch": int, "batches": int}``.
        """
        epoch, served = self._epoch(), self._served
        if served >= len(self):
            epoch, served = epoch + 1, 0
        return {"epoch": epoch, "batches": served}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        """Set the sampler's epoch and make the next pass skip the batches already seen.

        Parameters
        ----------
        state_dict
            From :meth:`state_dict`.

        Raises
        ------
        ValueError
            If the state is not ``{"epoch", "batches"}`` with non-negative counts, or skips
            more batches than the loader has.
        """
        if set(state_dict) != {"epoch", "batches"} or min(state_dict.values()) < 0:
            raise ValueError(
                f"ResumableDataLoader.load_state_dict: expected {{'epoch': int >= 0, "
                f"'batches': int >= 0}}, got {state_dict!r}"
            )
        batches = int(state_dict["batches"])
        if batches > len(self):
            raise ValueError(
                f"ResumableDataLoader.load_state_dict: the state skips {batches} batches but "
                f"the loader has {len(self)}; was the checkpoint made with other data or "
                "another batch size?"
            )
        for sampler in {id(s): s for s in (self.sampler, self.batch_sampler)}.values():
            set_epoch = getattr(sampler, "set_epoch", None)
            if callable(set_epoch):
                set_epoch(int(state_dict["epoch"]))
        self._skip = batches

    def __iter__(self) -> Any:
        skip, self._skip = self._skip, 0
        self._served = skip
        if self._own_generator:  # worker seeds from (seed, epoch), not from the global state
            self.generator = torch.Generator().manual_seed(_epoch_seed(self.seed, self._epoch()))
        batches = super().__iter__() if skip == 0 else iter(self._resumed_pass(skip))
        return self._counting(batches)

    def _counting(self, batches: Iterator[Any]) -> Iterator[Any]:
        for batch in batches:
            self._served += 1
            yield batch

    @property
    def sampler(self) -> Any:
        """The sampler: the batch sampler's own ``sampler`` when it has one.

        For ``DataLoader``'s own batching this is the sampler given (or the default one).
        A custom batch sampler that exposes a ``sampler`` (as
        :class:`~matsci.data.BudgetBatchSampler` does, a ``DistributedSampler`` of this rank's
        structures) is represented by it; so Lightning sees a distributed loader and uses it
        as given under DDP, and calls ``set_epoch`` on it once per epoch.
        """
        inner = getattr(self.batch_sampler, "sampler", None)
        return inner if isinstance(inner, Sampler) else self._given_sampler

    @sampler.setter
    def sampler(self, value: Any) -> None:
        # Set once, by DataLoader.__init__ (which forbids setting it later).
        self._given_sampler = value

    def _epoch(self) -> int:
        owner = self.batch_sampler if hasattr(self.batch_sampler, "epoch") else self.sampler
        return int(getattr(owner, "epoch", 0))

    def _resumed_pass(self, skip: int) -> TorchDataLoader[Any]:
        """A one-pass loader with this loader's settings that leaves out the first batches.

        Its batch sampler wraps this loader's (or, without automatic batching, its sampler),
        so the skipped batches are dropped as indices, before anything is read. The pass runs
        its own worker processes (never persistent ones); the worker seeds come from this
        loader's generator as in an uninterrupted pass.
        """
        options: dict[str, Any] = {
            "num_workers": self.num_workers,
            "collate_fn": self.collate_fn,
            "pin_memory": self.pin_memory,
            "timeout": self.timeout,
            "worker_init_fn": self.worker_init_fn,
            "multiprocessing_context": self.multiprocessing_context,
            "generator": self.generator,
            "prefetch_factor": self.prefetch_factor,
            "pin_memory_device": self.pin_memory_device,
        }
        if hasattr(self, "in_order"):  # torch >= 2.6
            options["in_order"] = self.in_order
        if self.batch_sampler is not None:
            batches = _SkipFirst(self.batch_sampler, skip)
            return TorchDataLoader(self.dataset, batch_sampler=batches, **options)
        items = _SkipFirst(self.sampler, skip)  # batch_size=None: one item per batch
        return TorchDataLoader(self.dataset, batch_size=None, sampler=items, **options)


class _SkipFirst(Sampler[Any]):
    """Iterates a (batch) sampler without its first ``skip`` entries."""

    def __init__(self, sampler: Iterable[Any], skip: int) -> None:
        self.sampler = sampler
        self.skip = skip

    def __iter__(self) -> Iterator[Any]:
        return itertools.islice(iter(self.sampler), self.skip, None)

    def __len__(self) -> int:
        return max(len(self.sampler) - self.skip, 0)  # type: ignore[arg-type]


def _epoch_seed(seed: int, epoch: int) -> int:
    """One seed per (seed, epoch): seeds a million epochs apart never share a permutation."""
    return (seed * 1_000_003 + epoch) % 2**63
