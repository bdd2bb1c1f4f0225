"""Loss weights: a task's weight in the multi-task loss as a function of the step, and the sum.

:class:`LossWeightSchedule` gives a weight per step; :func:`weighted_sum` adds weighted losses.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor

__all__ = ["LossWeightSchedule", "ScheduleKind", "weighted_sum"]

ScheduleKind = Literal["constant", "linear", "cosine", "step"]
_KINDS = ("constant", "linear", "cosine", "step")
_FIELDS: dict[str, set[str]] = {
    "constant": {"value"},
    "linear": {"start", "end", "steps"},
    "cosine": {"start", "end", "steps"},
    "step": {"milestones", "values"},
}


@dataclass(frozen=True)
class LossWeightSchedule:
    """A multiplier of one task's loss weight that changes with the optimizer step.

    It depends on the global step only, so a resumed run continues the schedule exactly.

    - ``constant``: ``value`` at every step.
    - ``linear``: from ``start`` at step 0 to ``end`` at step ``steps``, then ``end``.
    - ``cosine``: half a cosine from ``start`` to ``end`` over ``steps``, then ``end``.
    - ``step``: ``values[i]`` from milestone ``i`` on (``values[0]`` before the first
      milestone; ``len(values) == len(milestones) + 1``).

    Parameters
    ----------
    kind
        ``"constant"``, ``"linear"``, ``"cosine"`` or ``"step"``.
    value
        The constant value.
    start, end
        First and last value of ``linear`` and ``cosine``.
    steps
        Length of the ramp (``linear``, ``cosine``), > 0.
    milestones
        Increasing steps where a ``step`` schedule changes value.
    values
        The values of a ``step`` schedule.

    Raises
    ------
    ValueError
        On an unknown kind, a non-positive ramp, unsorted milestones or a wrong number of values.

    Examples
    --------
    >>> from matsci.tasks.core import LossWeightSchedule
    >>> ramp = LossWeightSchedule("linear", start=0.0, end=1.0, steps=100)
    >>> ramp(0), ramp(50), ramp(1000)
    (0.0, 0.5, 1.0)
    >>> LossWeightSchedule("step", milestones=(10,), values=(1.0, 0.1))(10)
    0.1
    """

    kind: ScheduleKind
    value: float = 1.0
    start: float = 1.0
    end: float = 1.0
    steps: int = 1
    milestones: tuple[int, ...] = field(default=())
    values: tuple[float, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"LossWeightSchedule(kind={self.kind!r}): expected one of {_KINDS}")
        if self.kind in ("linear", "cosine") and self.steps <= 0:
            raise ValueError(f"LossWeightSchedule({self.kind}): steps={self.steps}, expected > 0")
        if self.kind == "step":
            if list(self.milestones) != sorted(self.milestones):
                raise ValueError(
                    f"LossWeightSchedule(step): milestones {list(self.milestones)} must increase"
                )
            if len(self.values) != len(self.milestones) + 1:
                raise ValueError(
                    f"LossWeightSchedule(step): {len(self.values)} values for "
                    f"{len(self.milestones)} milestones; expected one more value than milestones"
                )

    def __call__(self, step: int) -> float:
        """The multiplier at optimizer step ``step``."""
        if self.kind == "constant":
            return self.value
        if self.kind == "step":
            return self.values[bisect.bisect_right(self.milestones, step)]
        progress = min(max(step, 0) / self.steps, 1.0)
        if self.kind == "cosine":
            progress = 0.5 * (1.0 - math.cos(math.pi * progress))
        return self.start + (self.end - self.start) * progress

    @classmethod
    def from_config(cls, config: Mapping[str, Any], *, argument: str) -> LossWeightSchedule:
        """Build a schedule from plain data such as ``{"kind": "linear", "start": 0, ...}``.

        Parameters
        ----------
        config
            ``kind`` and that kind's fields.
        argument
            Name of the argument, for error messages.

        Returns
        -------
        LossWeightSchedule
            The schedule.

        Raises
        ------
        ValueError
            On an unknown kind or a field that kind does not have.
        """
        options = dict(config)
        kind = options.pop("kind", None)
        if kind not in _KINDS:
            raise ValueError(f"{argument}: 'kind' is {kind!r}; expected one of {_KINDS}")
        unknown = set(options) - _FIELDS[kind]
        if unknown:
            raise ValueError(
                f"{argument}: {sorted(unknown)} are not fields of a {kind!r} schedule; "
                f"expected {sorted(_FIELDS[kind])}"
            )
        for name in ("milestones", "values"):
            if name in options:
                options[name] = tuple(_sequence(options[name], f"{argument}[{name!r}]"))
        return cls(kind=kind, **options)

    def to_config(self) -> dict[str, Any]:
        """The schedule as plain data (the inverse of :meth:`from_config`)."""
        config: dict[str, Any] = {"kind": self.kind}
        for name in sorted(_FIELDS[self.kind]):
            value = getattr(self, name)
            config[name] = list(value) if isinstance(value, tuple) else value
        return config


def _sequence(value: Any, argument: str) -> Sequence[Any]:
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise ValueError(f"{argument}: expected a list, got {value!r}")
    return value


def weighted_sum(terms: Sequence[tuple[float, Tensor]]) -> Tensor:
    """``sum(weight * value)``, without the operations that cannot change it.

    A weight of exactly 1 is not multiplied and a single term is not stacked and summed; both
    give the same number bit for bit (a weight of 0 is kept: it turns NaN into NaN, not 0).

    Parameters
    ----------
    terms
        ``(weight, value)`` pairs, each value a scalar tensor.

    Returns
    -------
    Tensor
        The weighted sum, a scalar.

    Examples
    --------
    >>> import torch
    >>> weighted_sum([(1.0, torch.tensor(2.0)), (0.5, torch.tensor(4.0))])
    tensor(4.)
    """
    values = [value if weight == 1.0 else weight * value for weight, value in terms]
    if len(values) == 1:
        return values[0]
    return torch.stack(values).sum()
