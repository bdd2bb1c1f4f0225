"""Losses that leave out missing targets (NaN) instead of letting them poison the batch.

:func:`present_mask` and :func:`any_missing` say which targets are present, for the losses and
for the metrics (which see only the rows whose target is present).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import Tensor, nn
from torch.nn import functional

__all__ = ["MaskedLoss", "any_missing", "present_mask"]

_SummedLoss = Callable[[nn.Module, Tensor, Tensor], Tensor]


def _mse_sum(loss: nn.Module, prediction: Tensor, target: Tensor) -> Tensor:
    return functional.mse_loss(prediction, target, reduction="sum")


def _l1_sum(loss: nn.Module, prediction: Tensor, target: Tensor) -> Tensor:
    return functional.l1_loss(prediction, target, reduction="sum")


def _huber_sum(loss: nn.Module, prediction: Tensor, target: Tensor) -> Tensor:
    delta: float = loss.delta  # type: ignore[assignment]
    return functional.huber_loss(prediction, target, reduction="sum", delta=delta)


def _smooth_l1_sum(loss: nn.Module, prediction: Tensor, target: Tensor) -> Tensor:
    beta: float = loss.beta  # type: ignore[assignment]
    return functional.smooth_l1_loss(prediction, target, reduction="sum", beta=beta)


# Losses that are exactly zero, with a zero gradient, where prediction and target are equal:
# a missing target can stand in as the prediction itself, and the loss is summed in one call.
# Named functions, not lambdas: a task is pickled for spawned processes (DDP spawn).
_SUMMED_LOSSES: dict[type[nn.Module], _SummedLoss] = {
    nn.MSELoss: _mse_sum,
    nn.L1Loss: _l1_sum,
    nn.HuberLoss: _huber_sum,
    nn.SmoothL1Loss: _smooth_l1_sum,
}


class MaskedLoss(nn.Module):
    """Apply a loss only where the target is present.

    Losses with a ``reduction`` argument (every ``torch.nn`` loss) are run element-wise and
    reduced here over the present entries, so the mean is over present entries only; other
    losses receive just the present entries.

    ``MSELoss``, ``L1Loss``, ``HuberLoss`` and ``SmoothL1Loss`` take a shorter path with the
    same result: they are zero, with a zero gradient, where prediction and target agree, so a
    missing target is replaced by the (detached) prediction and the loss summed in one call,
    without an element-wise loss tensor and mask product (half the tensor operations, which
    is what a small model's step pays for).

    Parameters
    ----------
    loss
        The loss module; its ``reduction`` (``"mean"`` or ``"sum"``) is kept.

    Raises
    ------
    ValueError
        If the loss's reduction is ``"none"`` (a task needs one number per key).

    Examples
    --------
    >>> import torch
    >>> from matsci.tasks.core import MaskedLoss
    >>> loss = MaskedLoss(torch.nn.MSELoss())
    >>> target = torch.tensor([1.0, float("nan"), 3.0])
    >>> loss(torch.tensor([2.0, 100.0, 3.0]), target, target.isfinite())
    tensor(0.5000)
    """

    def __init__(self, loss: nn.Module) -> None:
        super().__init__()
        reduction = getattr(loss, "reduction", None)
        if reduction == "none":
            raise ValueError(
                f"MaskedLoss: {type(loss).__name__}(reduction='none') gives no single loss value; "
                "use 'mean' or 'sum'"
            )
        self.reduction: str | None = reduction
        if reduction is not None:
            setattr(loss, "reduction", "none")  # noqa: B010 (a str attribute, not a submodule)
        self.loss = loss
        # Exact types only: a subclass may change what the loss computes.
        self._summed: _SummedLoss | None = _SUMMED_LOSSES.get(type(loss))

    def forward(self, prediction: Tensor, target: Tensor, present: Tensor) -> Tensor:
        """Loss over the entries where ``present`` is true.

        Parameters
        ----------
        prediction
            Model output, e.g. ``[B, k]`` (or ``[B, C]`` logits for classification).
        target
            Target of the loss's expected shape, possibly NaN where missing.
        present
            Boolean mask of the target's shape; ``False`` marks missing entries.

        Returns
        -------
        Tensor
            A scalar; zero when nothing is present.
        """
        if self.reduction is None:
            return self.loss(prediction[present], target[present])  # type: ignore[no-any-return]
        summed = self._summed
        if summed is not None and prediction.shape == target.shape == present.shape:
            # loss(p, p) = 0 with zero gradient: the missing entries add exact zeros.
            total = summed(self.loss, prediction, torch.where(present, target, prediction.detach()))
        else:
            # Missing entries get a harmless stand-in target; their loss terms are masked to zero.
            zero = 0.0 if target.is_floating_point() else torch.zeros_like(target)
            values: Tensor = self.loss(prediction, torch.where(present, target, zero))
            mask = present.reshape(values.shape) if values.shape != present.shape else present
            total = (values * mask).sum()
        if self.reduction == "sum":
            return total
        return total / present.sum().clamp_min(1)


def present_mask(target: Tensor) -> Tensor:
    """Boolean mask of the entries of ``target`` that are present (not NaN).

    Integer targets are always present.

    Examples
    --------
    >>> import torch
    >>> present_mask(torch.tensor([1.0, float("nan")])).tolist()
    [True, False]
    """
    if target.is_floating_point():
        return target == target  # False exactly at NaN; one operation instead of ~isnan
    return torch.ones_like(target, dtype=torch.bool)


def any_missing(targets: Mapping[str, Tensor]) -> dict[str, bool]:
    """Whether each float target has a NaN, read from the device in one transfer.

    Integer targets are never missing and cost nothing; float targets cost one host
    synchronization per step in all (metrics need the present rows, whose number is data).

    Examples
    --------
    >>> import torch
    >>> any_missing({"a": torch.tensor([float("nan")]), "b": torch.tensor([1])})
    {'a': True}
    """
    floats = [key for key, target in targets.items() if target.is_floating_point()]
    if not floats:
        return {}
    flags = torch.stack([torch.isnan(targets[key]).any() for key in floats]).tolist()
    return dict(zip(floats, flags, strict=True))
