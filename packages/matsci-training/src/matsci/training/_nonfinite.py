"""Skip optimizer steps whose loss or gradients are NaN or infinite; stop when they persist."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl
import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from torch_geometric.data import Batch
from typing_extensions import override

from matsci.contract import keys
from matsci.tasks.core import TaskEngine

__all__ = ["NonFiniteGuard"]

_MAX_NAMES = 5
"""Parameters named in a message before the rest are counted."""


class NonFiniteGuard(Callback):
    """Keep NaN and infinite losses and gradients away from the weights.

    After the backward pass of each optimizer step (in ``on_before_optimizer_step``, before
    gradient clipping and the update) the guard checks the loss and every gradient. If any is
    NaN or infinite, the gradients are dropped (set to ``None``), so the optimizer leaves the
    weights and its own state (Adam's moments) untouched; the step still counts for
    ``global_step``, learning-rate and loss-weight schedules. The step is counted in
    :attr:`skipped_steps`, logged as ``train/skipped_steps`` and reported with the ids of the
    batch's structures (``structure_id``; the batch index when the data have none). After
    ``max_consecutive`` skipped steps in a row training stops with a ``FloatingPointError``
    that names the batch, the non-finite loss terms (recomputed once, for the message) and the
    parameters with non-finite gradients.

    Cost: one fused reduction over all gradients (:func:`torch.nn.utils.get_total_norm`) and
    one device to host synchronization per optimizer step; under DDP one all-reduce of a
    single number, so that every rank takes the same decision (the loss is per rank; the
    gradients are already averaged). With fp16 mixed precision the gradient scaler's own
    overflow steps count as skipped too; allow for them in ``max_consecutive``.

    Parameters
    ----------
    max_consecutive
        Skipped steps in a row after which training stops.

    Raises
    ------
    ValueError
        If ``max_consecutive`` is below 1.

    Examples
    --------
    >>> from matsci.training import NonFiniteGuard
    >>> guard = NonFiniteGuard(max_consecutive=3)
    >>> guard.skipped_steps, guard.consecutive_skips
    (0, 0)
    >>> NonFiniteGuard(max_consecutive=0)
    Traceback (most recent call last):
    ...
    ValueError: NonFiniteGuard(max_consecutive=0): expected an int >= 1
    """

    def __init__(self, max_consecutive: int = 10) -> None:
        if isinstance(max_consecutive, bool) or not isinstance(max_consecutive, int):
            raise ValueError(
                f"NonFiniteGuard(max_consecutive={max_consecutive!r}): expected an int >= 1"
            )
        if max_consecutive < 1:
            raise ValueError(
                f"NonFiniteGuard(max_consecutive={max_consecutive}): expected an int >= 1"
            )
        self.max_consecutive = max_consecutive
        self.skipped_steps = 0
        self.consecutive_skips = 0
        self._loss_finite: Tensor | None = None  # over the micro-batches of this step
        self._batch: Any = None
        self._batch_idx = -1

    @override
    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._batch, self._batch_idx = batch, batch_idx

    @override
    def on_before_backward(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: Tensor
    ) -> None:
        finite = torch.isfinite(loss.detach()).all()
        self._loss_finite = finite if self._loss_finite is None else self._loss_finite & finite

    @override
    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        parameters = [p for group in optimizer.param_groups for p in group["params"]]
        gradients = [p.grad for p in parameters if p.grad is not None]
        loss_finite, self._loss_finite = self._loss_finite, None
        finite = _all_finite(gradients, loss_finite)
        if finite is None or _agree_on_all_ranks(finite, trainer.world_size):
            self.consecutive_skips = 0
            return
        bad_parameters = _names_with_non_finite_gradients(pl_module, parameters)
        for parameter in parameters:
            parameter.grad = None  # the optimizer skips parameters without a gradient
        self.skipped_steps += 1
        self.consecutive_skips += 1
        pl_module.log(
            "train/skipped_steps", float(self.skipped_steps), on_step=True, on_epoch=False
        )
        where = _describe_batch(self._batch, self._batch_idx, trainer.current_epoch)
        gradients_text = _names_text(bad_parameters)
        if self.consecutive_skips < self.max_consecutive:
            rank_zero_warn(
                f"NonFiniteGuard: skipped optimizer step {trainer.global_step} "
                f"({self.consecutive_skips} in a row, {self.skipped_steps} in all): non-finite "
                f"loss or gradient for {where}; non-finite gradients: {gradients_text}"
            )
            return
        terms = _loss_terms(pl_module, self._batch)
        raise FloatingPointError(
            f"NonFiniteGuard: {self.consecutive_skips} optimizer steps in a row had a NaN or "
            f"infinite loss or gradient (max_consecutive={self.max_consecutive}); stopping at "
            f"step {trainer.global_step}. Last batch: {where}. Loss terms: {terms}. "
            f"Non-finite gradients: {gradients_text}."
        )

    @override
    def state_dict(self) -> dict[str, Any]:
        """The counters, so a resumed run keeps counting."""
        return {"skipped_steps": self.skipped_steps, "consecutive_skips": self.consecutive_skips}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the counters saved by :meth:`state_dict`."""
        self.skipped_steps = int(state_dict["skipped_steps"])
        self.consecutive_skips = int(state_dict["consecutive_skips"])


def _all_finite(gradients: list[Tensor], loss_finite: Tensor | None) -> Tensor | None:
    """A 0-dim bool tensor: every gradient (and the loss) finite; ``None`` if nothing to check."""
    checks: list[Tensor] = []
    if gradients:
        by_device: dict[torch.device, list[Tensor]] = {}
        for gradient in gradients:
            by_device.setdefault(gradient.device, []).append(gradient)
        device = gradients[0].device
        for group in by_device.values():
            # The largest |value| per tensor is NaN or inf exactly when the tensor has one.
            largest = torch.nn.utils.get_total_norm(group, norm_type=math.inf)
            checks.append(torch.isfinite(largest).to(device))
    if loss_finite is not None:
        checks.append(loss_finite.to(checks[0].device) if checks else loss_finite)
    if not checks:
        return None
    return torch.stack(checks).all()


def _agree_on_all_ranks(finite: Tensor, world_size: int) -> bool:
    """The flag, made the same on every rank (finite only if finite everywhere): one sync."""
    if world_size > 1 and dist.is_available() and dist.is_initialized():
        flag = finite.to(torch.float32)
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        return bool(flag.item() > 0.5)
    return bool(finite.item())


def _names_with_non_finite_gradients(
    module: torch.nn.Module, parameters: list[torch.nn.Parameter]
) -> list[str]:
    names = {id(p): name for name, p in module.named_parameters()}
    return [
        names.get(id(p), "<unnamed>")
        for p in parameters
        if p.grad is not None and not bool(torch.isfinite(p.grad).all())
    ]


def _names_text(names: list[str]) -> str:
    if not names:
        return "none"
    shown = ", ".join(names[:_MAX_NAMES])
    return shown if len(names) <= _MAX_NAMES else f"{shown} and {len(names) - _MAX_NAMES} more"


def _describe_batch(batch: Any, batch_idx: int, epoch: int) -> str:
    """The structures of a batch by ``structure_id`` (per dataset for multi-task batches)."""
    if isinstance(batch, Mapping):
        parts = [
            f"{name}: {_structure_ids(data)}" for name, data in batch.items() if data is not None
        ]
        return f"batch {batch_idx} of epoch {epoch} ({'; '.join(parts)})"
    return f"batch {batch_idx} of epoch {epoch} ({_structure_ids(batch)})"


def _structure_ids(batch: Any) -> str:
    ids = getattr(batch, keys.STRUCTURE_ID, None) if isinstance(batch, Batch) else None
    if isinstance(ids, Tensor):
        return f"{keys.STRUCTURE_ID} {ids.reshape(-1).tolist()}"
    return f"no {keys.STRUCTURE_ID!r} attribute"


def _loss_terms(module: pl.LightningModule, batch: Any) -> str:
    """Each loss term of the batch, recomputed once for the error message.

    Named as logged: ``<key>`` for a single task, ``<dataset>/<task>/<key>`` in multi-task
    training.
    """
    if not isinstance(module, TaskEngine):
        return f"unknown (a {type(module).__name__} is not a matsci task module)"
    terms: dict[str, float] = {}
    try:
        with torch.enable_grad():
            batches = module.batches_by_dataset(batch, None, "train")
            for name, outputs in module.task_outputs(batches).items():
                entry = module.entry(name)
                _, losses = entry.task.compute_losses(outputs, batches[entry.dataset])
                terms.update(
                    {f"{entry.log_prefix}{key}": float(v.detach()) for key, v in losses.items()}
                )
    except (RuntimeError, ValueError) as error:
        return f"could not be recomputed ({type(error).__name__}: {error})"
    bad = {key: value for key, value in terms.items() if not math.isfinite(value)}
    if bad:
        return "non-finite " + ", ".join(f"{key}={value}" for key, value in bad.items())
    finite = ", ".join(f"{key}={value:.4g}" for key, value in terms.items())
    return f"all finite ({finite}): the gradient itself is NaN or infinite"
