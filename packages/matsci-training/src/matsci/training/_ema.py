"""An exponential moving average of the weights, in Lightning's ``WeightAveraging`` layout."""

from __future__ import annotations

import math
from typing import Any, Final

import lightning.pytorch as pl
from lightning.pytorch.callbacks import WeightAveraging
from lightning.pytorch.trainer.states import TrainerFn
from torch import Tensor
from torch.optim.swa_utils import get_ema_multi_avg_fn
from typing_extensions import override

__all__ = ["ExponentialMovingAverage"]

_WARMUP_OFFSET: Final = 10
"""The warm-up decay is ``(1 + n) / (10 + n)``."""


class ExponentialMovingAverage(WeightAveraging):
    r"""Keep an exponential moving average of the weights; validate, save and end with it.

    Lightning's :class:`~lightning.pytorch.callbacks.WeightAveraging` with an exponential
    average and a warm-up, built only from its public arguments and hooks. The average starts
    as a copy of the weights after the first optimizer step; after each later step, with
    ``n`` updates before it, it moves towards the weights,

    .. math::

        \bar\theta \leftarrow d_n\,\bar\theta + (1 - d_n)\,\theta, \qquad
        d_n = \min\!\left(d, \frac{1 + n}{10 + n}\right).

    The warm-up keeps the average from holding on to the early, barely trained weights:
    without it, after 300 steps at :math:`d = 0.999` they would still make up
    :math:`0.999^{299} \approx 74\%` of it. The update is torch's fused EMA
    (:func:`torch.optim.swa_utils.get_ema_multi_avg_fn`); buffers (normalizer statistics) are
    averaged alongside, as Lightning's ``use_buffers=True`` does.

    The layout is Lightning's: validation during training runs with the average swapped in;
    a checkpoint's ``state_dict`` holds the **averaged** weights, ``checkpoint[
    "current_model_state"]`` the raw ones and ``checkpoint["averaging_state"]`` the number of
    averages. So a plain ``load_from_checkpoint`` gives the averaged model, and
    ``load_from_checkpoint(path, weights="raw")`` the raw one; a fit resumed from the
    checkpoint continues both. When training ends the module holds the averaged weights, so
    testing or predicting right after ``fit`` uses them. Testing, validating or predicting
    from a checkpoint (``ckpt_path=``) uses its ``state_dict``, the average. Under DDP every
    rank holds the same weights, hence the same average.

    Lightning's ``AveragedModel`` reads its update count on the host once per step (a device
    synchronization on GPU); ``WeightAveraging`` has no public hook to update without it.

    Parameters
    ----------
    decay
        :math:`d` in [0, 1): after the warm-up, an average over roughly :math:`1 / (1 - d)`
        steps.
    warmup
        Use :math:`d_n` above (default); ``False`` uses :math:`d` from the first update.

    Raises
    ------
    ValueError
        If ``decay`` is not in [0, 1) or ``warmup`` is not a bool.

    Examples
    --------
    >>> from matsci.training import ExponentialMovingAverage
    >>> ema = ExponentialMovingAverage(decay=0.999)
    >>> [round(ema.decay_at(n), 4) for n in (0, 1, 90, 10_000)]
    [0.1, 0.1818, 0.91, 0.999]
    >>> ExponentialMovingAverage(decay=0.5, warmup=False).decay_at(0)
    0.5

    Give it to the Trainer: ``pl.Trainer(callbacks=[ExponentialMovingAverage(0.999)])``.
    """

    def __init__(self, decay: float = 0.999, *, warmup: bool = True) -> None:
        if (
            isinstance(decay, bool)
            or not isinstance(decay, int | float)
            or not math.isfinite(decay)
            or not 0.0 <= decay < 1.0
        ):
            raise ValueError(
                f"ExponentialMovingAverage(decay={decay!r}): expected a number in [0, 1)"
            )
        if not isinstance(warmup, bool):
            raise ValueError(f"ExponentialMovingAverage(warmup={warmup!r}): expected a bool")
        super().__init__(use_buffers=True, multi_avg_fn=self._update)
        self.decay = float(decay)
        self.warmup = warmup
        # Averaging steps so far, the first (a copy of the weights) included; counted on the
        # host once per optimizer step (AveragedModel calls the update once per dtype group).
        self._steps = 0

    def __repr__(self) -> str:
        return f"{type(self).__name__}(decay={self.decay}, warmup={self.warmup})"

    @property
    def num_updates(self) -> int:
        """Updates of the average after its first copy (restored on resume)."""
        return max(self._steps - 1, 0)

    @override
    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        """Update after every optimizer step (Lightning calls this once per step)."""
        if step_idx is None:
            return False
        self._steps += 1
        return True

    def decay_at(self, num_updates: int) -> float:
        r"""The decay :math:`d_n` of the update that follows ``num_updates`` earlier ones.

        Parameters
        ----------
        num_updates
            :math:`n`, the updates before this one.

        Returns
        -------
        float
            :math:`\min(d, (1 + n) / (10 + n))` with warm-up, else :math:`d`.
        """
        if not self.warmup:
            return self.decay
        return min(self.decay, (1 + num_updates) / (_WARMUP_OFFSET + num_updates))

    def _update(self, averaged: list[Tensor], current: list[Tensor], num_averaged: Tensor) -> None:
        # AveragedModel calls this for every update after its first copy of the weights, once
        # per group of tensors of one device and dtype: the count comes from should_update.
        decay = self.decay_at(self._steps - 2)
        get_ema_multi_avg_fn(decay)(averaged, current, num_averaged)  # type: ignore[no-untyped-call]

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Start a new average for a new fit (a resumed one restores its count afterwards)."""
        super().setup(trainer, pl_module, stage)
        if stage == "fit":
            # Lightning's own count of the last averaged step survives a finished fit; a new
            # fit with this callback would skip its first steps without this reset.
            self.load_state_dict({"latest_update_step": 0, "steps": 0})

    @override
    def state_dict(self) -> dict[str, Any]:
        """Lightning's state plus the number of updates (for the warm-up of a resumed fit)."""
        return {**super().state_dict(), "steps": self._steps}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved."""
        super().load_state_dict(state_dict)
        self._steps = int(state_dict.get("steps", 0))

    @override
    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """Restore the average only to resume a fit.

        Lightning's callback would also load the checkpoint's raw weights into the module when
        a checkpoint is tested or validated after a fit (``trainer.test(ckpt_path=...)``, as
        ``matsci fit`` does with its best checkpoint); evaluation must use the ``state_dict``,
        the average, which Lightning has already loaded.
        """
        if trainer.state.fn == TrainerFn.FITTING:
            super().on_load_checkpoint(trainer, pl_module, checkpoint)
