"""Losses that leave out missing targets (NaN) instead of letting them poison the batch."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class MaskedLoss(nn.Module):
    """Apply a loss only where the target is present.

    Losses with a ``reduction`` argument (every ``torch.nn`` loss) are run element-wise and
    reduced here over the present entries, so the mean is over present entries only; other
    losses receive just the present entries.

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
        # Missing entries get a harmless stand-in target; their loss terms are masked to zero.
        filled = torch.where(present, target, torch.zeros_like(target))
        values: Tensor = self.loss(prediction, filled)
        mask = present.reshape(values.shape) if values.shape != present.shape else present
        total = (values * mask).sum()
        if self.reduction == "sum":
            return total
        return total / mask.sum().clamp_min(1)
