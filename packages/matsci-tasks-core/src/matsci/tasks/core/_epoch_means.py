"""Cheap per-step logging: epoch means accumulated on the device, step values on logging steps.

Lightning's ``self.log`` costs about half a millisecond of Python per call and per step, more
than a small model's whole step. Tasks therefore call it only where a value is read: on the
steps whose metrics go to the loggers (every ``log_every_n_steps``), for the progress bar, and
once per epoch for the means that :class:`EpochMeans` accumulates with one tensor operation per
step and no host synchronization.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

import lightning.pytorch as pl
import torch
from torch import Tensor
from torchmetrics import MetricCollection


class EpochMeans:
    """Batch-size weighted means of a fixed list of scalar tensors over one epoch.

    ``update`` stacks the values and adds them, times the batch size, to a running sum on the
    values' device (no ``.item()``); ``compute`` divides by the summed batch sizes, after an
    optional reduction over processes (a sum, so means over DDP ranks are weighted exactly).

    Parameters
    ----------
    names
        One name per value, in the order ``update`` receives them.
    """

    def __init__(self, names: Sequence[str]) -> None:
        self.names = list(names)
        self._sums: Tensor | None = None
        self._weights = [0.0] * len(self.names)

    @property
    def updated(self) -> bool:
        """Whether any step was added since the last :meth:`reset`."""
        return self._sums is not None

    def update(self, values: Sequence[Tensor | None], weights: Sequence[float]) -> None:
        """Add one step's values (detached), each weighted by its batch size.

        A value of ``None`` (a task without a batch this step) is added with weight 0.
        """
        with torch.no_grad():  # cheaper than detaching each value
            present = [value for value in values if value is not None]
            zero = present[0].new_zeros(())
            stacked = torch.stack([zero if value is None else value for value in values])
            # Sums stay on the device in at least single precision (bf16 losses would round).
            wide = torch.promote_types(stacked.dtype, torch.float32)
            stacked = stacked if stacked.dtype == wide else stacked.to(wide)
            if len(set(weights)) == 1:
                stacked = stacked * weights[0]  # the usual case: no weight tensor to build
            else:
                stacked = stacked * stacked.new_tensor(weights)
            self._sums = stacked if self._sums is None else self._sums + stacked
        self._weights = [a + b for a, b in zip(self._weights, weights, strict=True)]

    def compute(
        self,
        device: torch.device | None = None,
        reduce: Callable[[Tensor], Tensor] | None = None,
    ) -> dict[str, Tensor]:
        """The means, ``{name: scalar tensor}``, reduced with ``reduce`` (e.g. a DDP sum).

        With ``reduce``, a process that saw no step still takes part (with zeros on ``device``).
        """
        sums = self._sums
        if sums is None:
            sums = torch.zeros(len(self.names), device=device)
        count = len(self.names)
        totals = torch.cat([sums, sums.new_tensor(self._weights)])
        if reduce is not None:
            totals = reduce(totals)
        means = totals[:count] / totals[count:].clamp_min(1e-12)
        return dict(zip(self.names, means.unbind(), strict=True))

    def reset(self) -> None:
        """Forget the epoch's steps."""
        self._sums = None
        self._weights = [0.0] * len(self.names)


class PendingMetricInputs:
    """Metric predictions and targets of the last few training steps, fed to the metrics together.

    A torchmetrics update costs tens of microseconds of Python per metric, whatever the batch
    size; feeding ``every`` steps at once (concatenated along the first dimension) gives the
    same metric values for a fraction of the cost. The inputs are detached and small
    (predictions and targets), so holding a few steps costs little memory.

    Parameters
    ----------
    every
        Steps gathered before :meth:`add` says to flush.
    """

    def __init__(self, every: int = 16) -> None:
        self.every = every
        self._steps: list[tuple[dict[str, Tensor], dict[str, Tensor]]] = []

    def add(self, predictions: Mapping[str, Tensor], targets: Mapping[str, Tensor]) -> bool:
        """Keep one step's inputs (detached); ``True`` when ``every`` steps are waiting."""
        self._steps.append((_detached(predictions), _detached(targets)))
        return len(self._steps) >= self.every

    def pop(self) -> tuple[dict[str, Tensor], dict[str, Tensor]] | None:
        """The waiting inputs concatenated per key, ``(predictions, targets)``, or ``None``."""
        if not self._steps:
            return None
        steps, self._steps = self._steps, []
        keys = list(steps[0][1])
        predictions = {key: torch.cat([step[0][key] for step in steps]) for key in keys}
        targets = {key: torch.cat([step[1][key] for step in steps]) for key in keys}
        return predictions, targets

    def clear(self) -> None:
        """Drop the waiting inputs."""
        self._steps = []


def _detached(values: Mapping[str, Tensor]) -> dict[str, Tensor]:
    # A tensor that does not require grad has no graph to drop: no detach needed.
    return {key: value.detach() if value.requires_grad else value for key, value in values.items()}


def attached_trainer(module: pl.LightningModule) -> pl.Trainer | None:
    """The Trainer the module is attached to, or ``None`` when it is used on its own."""
    try:
        return module.trainer
    except RuntimeError:  # Lightning's public property raises when no Trainer is attached
        return None


def is_logging_step(module: pl.LightningModule) -> bool:
    """Whether this training step's logged values reach the loggers.

    Lightning sends step values to the loggers every ``log_every_n_steps`` optimizer steps
    and when training is about to stop; calling ``self.log`` on the other steps only costs
    time. This reads the same public Trainer attributes Lightning's rule reads
    (``log_every_n_steps``, ``global_step``, ``should_stop``); there is no public hook that
    tells a module whether the current step logs. Never true without a Trainer.
    """
    trainer = attached_trainer(module)
    if trainer is None:
        return False
    # Set by the Trainer from its log_every_n_steps argument (not declared on the class).
    every = int(getattr(trainer, "log_every_n_steps", 0))
    if every <= 0:
        return False
    return (trainer.global_step + 1) % every == 0 or bool(trainer.should_stop)


def shows_progress_bar(module: pl.LightningModule) -> bool:
    """Whether a progress bar reads the module's metrics at every step."""
    trainer = attached_trainer(module)
    return trainer is not None and trainer.progress_bar_callback is not None


def sum_over_processes(module: pl.LightningModule) -> Callable[[Tensor], Tensor] | None:
    """A sum over DDP ranks through the module's Trainer strategy, or ``None`` when alone."""
    trainer = attached_trainer(module)
    if trainer is None or trainer.world_size <= 1:
        return None
    strategy = trainer.strategy

    def reduce(tensor: Tensor) -> Tensor:
        reduced: Tensor = strategy.reduce(tensor, reduce_op="sum")
        return reduced

    return reduce


def log_epoch_metrics(module: pl.LightningModule, collections: Iterable[MetricCollection]) -> None:
    """Compute, log and reset metric collections at the end of an epoch.

    Logging the metric objects at every step instead costs ``self.log`` per metric and step.
    ``compute`` gathers the states of every DDP rank (torchmetrics), so the values are already
    global. Under DDP the ranks first agree (one small all-reduce) on which collections any of
    them updated, so that all take part in the same ``compute`` calls; the logged values are
    synced again (a mean of equal numbers) only to keep Lightning from warning.
    """
    collections = list(collections)
    updated = [float(any(m.update_called for m in c.values())) for c in collections]
    reduce = sum_over_processes(module)
    if reduce is not None and collections:
        updated = reduce(torch.tensor(updated, device=module.device)).tolist()
    for collection, flag in zip(collections, updated, strict=True):
        if flag > 0:
            module.log_dict(collection.compute(), sync_dist=reduce is not None)
        collection.reset()


def log_training_step(
    module: pl.LightningModule,
    means: EpochMeans,
    values: Sequence[Tensor | None],
    weights: Sequence[float],
) -> None:
    """Log one training step's values (``means.names`` order, the total loss first) cheaply.

    Adds them to ``means``; logs the first (``train/loss``) for the progress bar when one is
    shown, and every present value as ``<name>_step`` on logging steps. With
    :func:`log_training_epoch` the names are those Lightning gives ``on_step=True,
    on_epoch=True`` values: ``<name>_step`` and ``<name>_epoch`` for the loggers, ``<name>`` in
    ``callback_metrics``. ``None`` marks a value absent from this step (weight 0).
    """
    means.update(values, weights)
    total, size = values[0], int(weights[0])
    assert total is not None, "the total loss is present at every step"
    if shows_progress_bar(module):
        module.log(means.names[0], total, prog_bar=True, logger=False, batch_size=size,
                   on_step=True, on_epoch=False)  # fmt: skip
    if is_logging_step(module):
        for name, value, weight in zip(means.names, values, weights, strict=True):
            if value is not None:
                module.log(f"{name}_step", value, batch_size=int(weight), on_step=True,
                           on_epoch=False)  # fmt: skip


def log_training_epoch(module: pl.LightningModule, means: EpochMeans) -> None:
    """Log the epoch means of :func:`log_training_step` (``<name>_epoch`` and ``<name>``)."""
    if means.updated:
        for name, mean in means.compute().items():
            module.log(f"{name}_epoch", mean)
            module.log(name, mean, logger=False, prog_bar=name == means.names[0])
    means.reset()
