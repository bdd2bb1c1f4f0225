"""A learning-rate schedule that ends with the run: linear warm-up, then cosine decay."""

from __future__ import annotations

import math

from torch import Tensor
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler
from typing_extensions import override

__all__ = ["WarmupCosineLR"]


class WarmupCosineLR(LRScheduler):
    r"""Linear warm-up, then a cosine decay that reaches its end at the last training step.

    Meant to step once per optimizer step (``"interval": "step"``). With ``W`` warm-up steps
    out of ``T`` and peak rate ``η`` (each parameter group's own ``lr``), step ``t`` uses

    .. math:: \eta_t = \eta \cdot \frac{t + 1}{W} \quad (t < W), \qquad
              \eta_t = \eta \left( f + (1 - f)\, \tfrac{1}{2}
              \left(1 + \cos \pi \tfrac{t - W}{T - W}\right) \right) \quad (t \ge W),

    with ``f = final_factor``; past ``T`` the rate stays at ``f η``. Unlike
    ``CosineAnnealingLR`` over a hand-set ``T_max``, the length comes from the run: a task's
    ``scheduler_kwargs`` that leaves ``total_steps`` out gets the trainer's
    ``estimated_stepping_batches`` (every optimizer step of the whole fit, across epochs,
    ``limit_train_batches`` and gradient accumulation included), so the decay follows
    ``max_epochs``, the batch size and the data without editing the config.

    Parameters
    ----------
    optimizer
        The optimizer to schedule.
    total_steps
        Optimizer steps of the whole run, warm-up included.
    warmup_fraction
        Fraction of ``total_steps`` spent warming up linearly from ``η / W`` to ``η``
        (``0`` for none).
    final_factor
        The last learning rate as a fraction of the peak (``0 <= final_factor <= 1``).
    last_epoch
        Index of the last step taken, for resuming (``-1`` for a new run).

    Raises
    ------
    ValueError
        If ``total_steps`` is not a positive integer, ``warmup_fraction`` is outside
        ``[0, 1)`` or ``final_factor`` outside ``[0, 1]``.

    Examples
    --------
    >>> import torch
    >>> from matsci.tasks.core import WarmupCosineLR
    >>> optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    >>> schedule = WarmupCosineLR(optimizer, total_steps=10, warmup_fraction=0.2,
    ...                           final_factor=0.1)
    >>> rates = []
    >>> for _ in range(11):
    ...     rates.append(round(schedule.get_last_lr()[0], 3))
    ...     optimizer.step()
    ...     schedule.step()
    >>> rates
    [0.5, 1.0, 1.0, 0.966, 0.868, 0.722, 0.55, 0.378, 0.232, 0.134, 0.1]
    """

    def __init__(
        self,
        optimizer: Optimizer,
        total_steps: int,
        warmup_fraction: float = 0.0,
        final_factor: float = 0.02,
        last_epoch: int = -1,
    ) -> None:
        if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1:
            raise ValueError(
                f"WarmupCosineLR: total_steps must be a positive integer, got {total_steps!r}"
            )
        if not 0.0 <= warmup_fraction < 1.0:
            raise ValueError(
                f"WarmupCosineLR: warmup_fraction must be in [0, 1), got {warmup_fraction}"
            )
        if not 0.0 <= final_factor <= 1.0:
            raise ValueError(f"WarmupCosineLR: final_factor must be in [0, 1], got {final_factor}")
        self.total_steps = total_steps
        self.warmup_steps = round(warmup_fraction * total_steps)
        self.final_factor = final_factor
        super().__init__(optimizer, last_epoch)

    def factor(self, step: int) -> float:
        """The learning rate of step ``step`` (0-based) as a fraction of the peak.

        Parameters
        ----------
        step
            Number of optimizer steps taken before this one.

        Returns
        -------
        float
            The multiplier of each group's peak learning rate.
        """
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        progress = min(1.0, (step - self.warmup_steps) / (self.total_steps - self.warmup_steps))
        cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
        return self.final_factor + (1.0 - self.final_factor) * cosine

    @override
    def get_lr(self) -> list[float | Tensor]:
        """The learning rate of every parameter group at the current step."""
        factor = self.factor(self.last_epoch)
        return [base * factor for base in self.base_lrs]
