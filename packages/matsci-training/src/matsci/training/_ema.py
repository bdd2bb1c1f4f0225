"""An exponential moving average of the weights, in Lightning's ``WeightAveraging`` layout."""

from __future__ import annotations

import math
import weakref
from typing import Any, Final

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import WeightAveraging
from lightning.pytorch.trainer.states import TrainerFn
from torch import Tensor, nn
from typing_extensions import override

__all__ = ["ExponentialMovingAverage"]

_WARMUP_OFFSET: Final = 10
"""The warm-up decay is ``(1 + n) / (10 + n)``."""

_PREFIX: Final = "module."
"""What ``AveragedModel.state_dict()`` puts before the names of the averaged module."""


class ExponentialMovingAverage(WeightAveraging):
    r"""Keep an exponential moving average of the weights; validate, save and end with it.

    Lightning's :class:`~lightning.pytorch.callbacks.WeightAveraging` with an exponential
    average and a warm-up. After optimizer step :math:`n + 1` (``n`` earlier updates) the
    average moves towards the weights,

    .. math::

        \bar\theta \leftarrow d_n\,\bar\theta + (1 - d_n)\,\theta, \qquad
        d_n = \min\!\left(d, \frac{1 + n}{10 + n}\right),

    starting from the weights when the fit starts (after normalizers are fitted and a
    pretrained encoder is loaded). The warm-up keeps the average from holding on to the
    random initial weights: without it, after 300 steps at :math:`d = 0.999` they would still
    make up :math:`0.999^{300} \approx 74\%` of it. Trainable floating-point parameters are
    averaged in one fused ``torch._foreach_lerp_`` per step, with no host synchronization;
    buffers (normalizer statistics) and frozen parameters are the raw model's.

    The layout is Lightning's: validation during training runs with the average swapped in;
    a checkpoint's ``state_dict`` holds the **averaged** weights, ``checkpoint[
    "current_model_state"]`` the raw ones and ``checkpoint["averaging_state"]`` the number of
    updates. So a plain ``load_from_checkpoint`` gives the averaged model, and
    ``load_from_checkpoint(path, weights="raw")`` the raw one; a fit resumed from the
    checkpoint continues both exactly. When training ends the module holds the averaged
    weights (as with Lightning's own callback), so testing or predicting right after ``fit``
    uses them too; the raw ones are kept aside, so a checkpoint saved after ``fit`` still has
    both. Testing, validating or predicting from a checkpoint (``ckpt_path=``) uses its
    ``state_dict``, the average. Under DDP every rank holds the same weights, hence the same
    average.

    Parameters
    ----------
    decay
        :math:`d` in [0, 1): after the warm-up, an average over roughly :math:`1 / (1 - d)`
        steps.
    warmup
        Use :math:`d_n` above (default); ``False`` uses :math:`d` from the first step.

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

    # WeightAveraging keeps its averaged copy (``_average_model``), the step of the last update
    # (``_latest_update_step``, in its state_dict) and its swap (``_swap_models``) without a
    # public accessor; this subclass uses them. Its own update (``AveragedModel.
    # update_parameters``) reads ``n_averaged`` on the host twice per step, hence the update
    # in ``on_train_batch_end`` here.

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
        # Buffers are copied from the raw model, not averaged (see _sync_rest).
        super().__init__(use_buffers=False)
        self.decay = float(decay)
        self.warmup = warmup
        self._num_updates = 0  # the average's ``n_averaged``, kept on the host
        # The module holds the average and the averaged copy the raw weights: during validation
        # and after training (swapped, so that the raw weights stay at hand for a checkpoint).
        self._holds_average = False
        self._validating = False  # swapped for this validation epoch: swap back at its end
        self._tensors: _Tensors | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(decay={self.decay}, warmup={self.warmup})"

    @property
    def num_updates(self) -> int:
        """Updates of the average so far (restored on resume)."""
        return self._num_updates

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

    def averaged_state_dict(self) -> dict[str, Tensor]:
        """The averaged model's state dict: what a checkpoint saved now holds as ``state_dict``.

        Returns
        -------
        dict
            Copies of the averaged weights (and the raw model's buffers) by state-dict name;
            empty before a fit has started.
        """
        if self._average_model is None:
            return {}
        if self._holds_average:
            module = self._tensors.module() if self._tensors is not None else None
            source = module.state_dict() if module is not None else {}
        else:
            source = self._average_model.module.state_dict()
        return {name: value.detach().clone() for name, value in source.items()}

    # -- training ------------------------------------------------------------------------------

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if stage == TrainerFn.FITTING:  # a new averaged copy of the module
            self._num_updates = self._latest_update_step = 0  # a resume restores both
            self._holds_average = self._validating = False
            self._tensors = None

    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # After every `setup` (normalizers, pretrained encoder) and a checkpoint's restore: a
        # fresh average starts from the weights as they are now.
        if self._average_model is not None and self._num_updates == 0:
            tensors = self._tensors_of(pl_module)
            if tensors.averaged:
                with torch.no_grad():
                    torch._foreach_copy_(tensors.averaged, tensors.raw)
            self._sync_rest(pl_module)

    @override
    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        """Move the average after each optimizer step (one fused update, no host sync)."""
        # global_step counts optimizer steps: with gradient accumulation it moves every k batches.
        step = trainer.global_step
        if step <= self._latest_update_step or not self.should_update(step_idx=step - 1):
            return
        assert self._average_model is not None
        tensors = self._tensors_of(pl_module)
        weight = 1.0 - self.decay_at(self._num_updates)
        with torch.no_grad():
            if tensors.averaged:
                torch._foreach_lerp_(tensors.averaged, tensors.raw, weight)
            self._average_model.n_averaged.add_(1)  # on the device: no synchronization
        self._num_updates += 1
        self._latest_update_step = step

    @override
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Leave the averaged weights in the module (the raw ones stay for a checkpoint)."""
        if self._average_model is None or self._holds_average:
            return
        self._sync_rest(pl_module)
        self._swap_models(pl_module)
        self._holds_average = True

    # -- validation ----------------------------------------------------------------------------

    @override
    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._average_model is None or self._holds_average:
            return
        self._sync_rest(pl_module)
        super().on_validation_epoch_start(trainer, pl_module)  # swaps the average in
        self._holds_average = self._validating = True

    @override
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._average_model is None or not self._validating:
            return
        super().on_validation_epoch_end(trainer, pl_module)  # swaps the raw weights back
        self._holds_average = self._validating = False

    @override
    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        # An error during validation leaves the raw weights in the module, as after any step.
        self.on_validation_epoch_end(trainer, pl_module)

    # -- checkpoints ---------------------------------------------------------------------------

    @override
    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """Put the averaged weights in ``state_dict`` and the raw ones beside them."""
        if self._average_model is None:
            super().on_save_checkpoint(trainer, pl_module, checkpoint)
            return
        if not self._holds_average:
            self._sync_rest(pl_module)
            super().on_save_checkpoint(trainer, pl_module, checkpoint)
            return
        # Saved during validation or after training: the module (so ``state_dict``) holds the
        # average already and the averaged copy the raw weights; copies, as they may swap back.
        state = self._average_model.state_dict()
        checkpoint["state_dict"] = {k: v.clone() for k, v in checkpoint["state_dict"].items()}
        checkpoint["current_model_state"] = {
            name.removeprefix(_PREFIX): value.clone()
            for name, value in state.items()
            if name.startswith(_PREFIX)
        }
        checkpoint["averaging_state"] = {
            name: value.clone() for name, value in state.items() if not name.startswith(_PREFIX)
        }

    @override
    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """On resuming a fit, restore the raw weights into the module and the average beside.

        Outside a fit (``validate``, ``test``, ``predict`` with ``ckpt_path``) nothing is done:
        the module evaluates with the checkpoint's ``state_dict``, the averaged weights.
        """
        if trainer.state.fn != TrainerFn.FITTING or self._average_model is None:
            return
        super().on_load_checkpoint(trainer, pl_module, checkpoint)
        self._num_updates = int(self._average_model.n_averaged)  # once per resume

    # -- helpers -------------------------------------------------------------------------------

    def _tensors_of(self, module: nn.Module) -> _Tensors:
        """The averaged and raw tensors, looked up once per module and averaged copy."""
        assert self._average_model is not None
        average = self._average_model.module
        cached = self._tensors
        if cached is None or cached.module() is not module or cached.average() is not average:
            cached = self._tensors = _Tensors(module, average)
        return cached

    def _sync_rest(self, module: nn.Module) -> None:
        """Copy the buffers and frozen parameters of the raw model into the averaged copy.

        Looked up afresh (a buffer may be replaced, not changed in place); called only before
        a swap, a save and at the end of training, not at every step.
        """
        if self._average_model is None:
            return
        average, raw = _rest(self._average_model.module), _rest(module)
        if average:
            with torch.no_grad():
                torch._foreach_copy_(average, raw)


class _Tensors:
    """The trainable floating-point parameters of a module and of its averaged copy, paired.

    The parameters themselves are kept (not detached views), so they stay valid when the
    module's tensors are moved or cast in place.
    """

    def __init__(self, module: nn.Module, average: nn.Module) -> None:
        self.module = weakref.ref(module)
        self.average = weakref.ref(average)
        self.averaged: list[Tensor] = []
        self.raw: list[Tensor] = []
        for (name, copy), (raw_name, raw) in zip(
            average.named_parameters(), module.named_parameters(), strict=True
        ):
            if name != raw_name:  # the averaged copy is a deepcopy: same names, same order
                raise RuntimeError(
                    f"ExponentialMovingAverage: the averaged copy has {name!r} where the module "
                    f"has {raw_name!r}; was the module changed after the fit started?"
                )
            if _is_averaged(raw):
                self.averaged.append(copy)
                self.raw.append(raw)


def _is_averaged(parameter: nn.Parameter) -> bool:
    return parameter.requires_grad and parameter.is_floating_point()


def _rest(module: nn.Module) -> list[Tensor]:
    """What is copied, not averaged: frozen or non-float parameters, then every buffer."""
    frozen = [p.detach() for p in module.parameters() if not _is_averaged(p)]
    return frozen + [b.detach() for b in module.buffers()]
