"""Training throughput in atoms and structures per second, and how long the loop waits for data."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from typing_extensions import override

__all__ = ["AtomThroughputMonitor", "Throughput", "count_atoms_and_structures"]


@dataclass(frozen=True)
class Throughput:
    """Throughput over a span of training steps.

    Attributes
    ----------
    steps
        Training steps in the span.
    atoms
        Atoms in their batches.
    structures
        Structures in their batches.
    step_seconds
        Time inside the steps (from ``on_train_batch_start`` to ``on_train_batch_end``).
    wait_seconds
        Time between steps: fetching and collating the next batch, moving it to the device and
        the loop's own bookkeeping (validation runs excluded).
    """

    steps: int
    atoms: int
    structures: int
    step_seconds: float
    wait_seconds: float

    @property
    def seconds(self) -> float:
        """Wall time of the span, steps plus waits."""
        return self.step_seconds + self.wait_seconds

    @property
    def atoms_per_second(self) -> float:
        """Atoms processed per second of wall time."""
        return self.atoms / self.seconds if self.seconds > 0 else 0.0

    @property
    def structures_per_second(self) -> float:
        """Structures processed per second of wall time."""
        return self.structures / self.seconds if self.seconds > 0 else 0.0

    @property
    def data_wait_fraction(self) -> float:
        """Share of the wall time spent between steps, waiting for the next batch."""
        return self.wait_seconds / self.seconds if self.seconds > 0 else 0.0


def count_atoms_and_structures(batch: Any) -> tuple[int, int]:
    """Atoms and structures in a batch, read from Python-side sizes (no device synchronization).

    Handles a PyG ``Batch`` or ``Data``, and mappings, lists and tuples of them (the
    ``{dataset: batch}`` steps of :class:`MultiTaskLitModule`); ``None`` counts as empty.

    Parameters
    ----------
    batch
        What the training loader yields.

    Returns
    -------
    tuple of int
        ``(atoms, structures)``.

    Examples
    --------
    >>> import torch
    >>> from torch_geometric.data import Batch, Data
    >>> from matsci.training import count_atoms_and_structures
    >>> pair = Data(pos=torch.zeros(2, 3))
    >>> count_atoms_and_structures({"bulk": Batch.from_data_list([pair, pair]), "other": None})
    (4, 2)
    """
    if batch is None:
        return 0, 0
    if isinstance(batch, Mapping):
        batch = list(batch.values())
    if isinstance(batch, list | tuple):
        counts = [count_atoms_and_structures(item) for item in batch]
        return sum(c[0] for c in counts), sum(c[1] for c in counts)
    atoms = int(getattr(batch, "num_nodes", 0) or 0)
    structures = int(getattr(batch, "num_graphs", 1))
    return atoms, structures


class AtomThroughputMonitor(Callback):
    """Log atoms per second, structures per second and the data-wait fraction while training.

    Every ``log_every_n_steps`` optimizer steps (the Trainer's setting by default), and for the
    remaining steps when training ends, it logs for the steps since the last log
    ``throughput/atoms_per_s``, ``throughput/structures_per_s`` and
    ``throughput/data_wait_fraction``: the share of wall time spent between training steps
    (fetching and collating the next batch, moving it to the device, the loop's bookkeeping)
    rather than inside them. Validation runs are left out of the spans. The values go straight
    to the Trainer's loggers (``logger.log_metrics`` at ``step=global_step``, rank zero), on
    this schedule of its own. Lightning's own
    :class:`~lightning.pytorch.callbacks.ThroughputMonitor` counts samples of a fixed size and
    needs FLOPs; structures differ in size, so this one counts atoms and adds the data wait.

    Cost: two clock readings and a size lookup per step (no device synchronization). On a GPU
    the device is synchronized on logging steps only, so each span's total is exact; the split
    between waiting and computing is what the host saw (the host may queue work ahead of the
    device). Figures are per process.

    Parameters
    ----------
    log_every_n_steps
        Steps between logs; ``None`` uses the Trainer's ``log_every_n_steps``.
    count
        ``batch -> (atoms, structures)``; :func:`count_atoms_and_structures` by default.
    clock
        Seconds as a float (``time.perf_counter`` by default; tests pass a fake clock).

    Attributes
    ----------
    last : Throughput or None
        The span of the latest log (``None`` before the first).

    Raises
    ------
    ValueError
        If ``log_every_n_steps`` is below 1.

    Examples
    --------
    >>> from matsci.training import AtomThroughputMonitor
    >>> monitor = AtomThroughputMonitor(log_every_n_steps=10)
    >>> monitor.total.steps, monitor.last is None
    (0, True)

    Give it to the Trainer (``pl.Trainer(callbacks=[monitor])``); after training,
    ``monitor.total.atoms_per_second`` and ``monitor.total.data_wait_fraction`` summarize the
    run.
    """

    def __init__(
        self,
        log_every_n_steps: int | None = None,
        count: Callable[[Any], tuple[int, int]] | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if log_every_n_steps is not None and (
            isinstance(log_every_n_steps, bool)
            or not isinstance(log_every_n_steps, int)
            or log_every_n_steps < 1
        ):
            raise ValueError(
                f"AtomThroughputMonitor(log_every_n_steps={log_every_n_steps!r}): expected an "
                "int >= 1 or None"
            )
        self.log_every_n_steps = log_every_n_steps
        self.count = count if count is not None else count_atoms_and_structures
        self.clock = clock if clock is not None else time.perf_counter
        self.last: Throughput | None = None
        self._total = _Span()
        self._window = _Span()
        self._mark: float | None = None  # end of the previous step (or the epoch's start)
        self._step_start = 0.0
        self._paused_at: float | None = None
        self._last_logged_step = 0

    @property
    def total(self) -> Throughput:
        """Throughput over every training step seen so far."""
        return self._total.freeze()

    # -- hooks ------------------------------------------------------------------------------

    @override
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # The wait for the first batch (starting workers, prefetching) counts.
        self._mark = self.clock()

    @override
    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        now = self.clock()
        if self._mark is not None:
            self._add(wait=now - self._mark)
        atoms, structures = self.count(batch)
        self._add(atoms=atoms, structures=structures)
        self._step_start = now

    @override
    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        step = trainer.global_step
        # Under gradient accumulation global_step stays put until the optimizer steps.
        every = self._every(trainer)
        logging = every is not None and step - self._last_logged_step >= every
        if logging and trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize(trainer.strategy.root_device)
        now = self.clock()
        self._add(busy=now - self._step_start, steps=1)
        self._mark = now
        if logging:
            self._last_logged_step = step
            self._log(trainer)

    @override
    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._paused_at = self.clock()

    @override
    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Validation inside a training epoch is not time spent waiting for training data.
        if self._paused_at is not None and self._mark is not None:
            self._mark += self.clock() - self._paused_at
        self._paused_at = None

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._mark = None

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # A resumed fit starts counting at its first step, not at step 0.
        self._last_logged_step = trainer.global_step

    @override
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._window.steps:  # the steps since the last log
            self._log(trainer)

    # -- helpers ----------------------------------------------------------------------------

    def _every(self, trainer: pl.Trainer) -> int | None:
        """Steps between logs; ``None`` when the Trainer logs no steps (``log_every_n_steps=0``)."""
        if self.log_every_n_steps is not None:
            return self.log_every_n_steps
        # The Trainer's setting (set by its logger connector; not in the class's annotations).
        every = int(getattr(trainer, "log_every_n_steps", 50))
        return every if every > 0 else None

    def _log(self, trainer: pl.Trainer) -> None:
        """Close the current span, keep it as :attr:`last` and send it to the loggers."""
        self.last = self._window.freeze()
        self._window = _Span()
        if not trainer.is_global_zero:
            return
        metrics = {
            "throughput/atoms_per_s": self.last.atoms_per_second,
            "throughput/structures_per_s": self.last.structures_per_second,
            "throughput/data_wait_fraction": self.last.data_wait_fraction,
        }
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)

    def _add(
        self,
        wait: float = 0.0,
        busy: float = 0.0,
        atoms: int = 0,
        structures: int = 0,
        steps: int = 0,
    ) -> None:
        for span in (self._window, self._total):
            span.wait_seconds += wait
            span.step_seconds += busy
            span.atoms += atoms
            span.structures += structures
            span.steps += steps


class _Span:
    """Mutable running totals behind :class:`Throughput`."""

    def __init__(self) -> None:
        self.steps = 0
        self.atoms = 0
        self.structures = 0
        self.step_seconds = 0.0
        self.wait_seconds = 0.0

    def freeze(self) -> Throughput:
        return Throughput(self.steps, self.atoms, self.structures, self.step_seconds,
                          self.wait_seconds)  # fmt: skip
