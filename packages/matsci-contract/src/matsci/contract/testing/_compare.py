"""Comparing outputs up to a tolerance per dtype: the bound every check of the package applies.

A model's result (a ``Tensor``, a mapping of names to tensors, or
:class:`~matsci.contract.Embeddings`) becomes a dict of named outputs (``_as_dict``), and two
such dicts are compared output by output (``_compare``) with :func:`assert_close_relative`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Final, TypeAlias

import torch
from torch import Tensor

from matsci.contract._embeddings import Embeddings

__all__ = ["TOLERANCES", "assert_close_relative", "tolerance"]

TOLERANCES: Final[Mapping[torch.dtype, float]] = MappingProxyType(
    {torch.float32: 1e-5, torch.float64: 1e-10}
)
"""Relative tolerance of the checks per floating dtype (integer outputs must match exactly)."""

_Model: TypeAlias = Callable[[Any], Any]
"""A model under test: returns a Tensor, a mapping of names to tensors, or Embeddings."""


def tolerance(dtype: torch.dtype) -> float:
    """The relative tolerance of ``dtype``: ``TOLERANCES[dtype]``, 0 for integer and bool dtypes.

    Raises
    ------
    ValueError
        For floating dtypes without an entry in :data:`TOLERANCES` (float16, bfloat16).
    """
    if not (dtype.is_floating_point or dtype.is_complex):
        return 0.0
    if dtype not in TOLERANCES:
        raise ValueError(
            f"tolerance(dtype={dtype}): no tolerance for this dtype; expected one of "
            f"{list(TOLERANCES)} or pass rtol/atol"
        )
    return TOLERANCES[dtype]


def assert_close_relative(
    actual: Tensor,
    expected: Tensor,
    *,
    what: str = "values",
    factor: float = 1.0,
    floor: float = 1e-3,
    rtol: float | None = None,
    atol: float | None = None,
) -> None:
    r"""Assert ``actual`` equals ``expected`` up to the tolerance of ``expected``'s dtype.

    .. math:: \max |a - e| \le \mathrm{tol}(\mathrm{dtype}) \cdot \mathrm{factor} \cdot
              \max(\max |e|, \mathrm{floor})

    ``floor`` keeps the bound meaningful when the values happen to be small: energies are sums
    of terms that may cancel, so energy checks use ``floor=1`` (eV). With ``rtol`` or ``atol``,
    every element is bounded instead: ``|a - e| <= atol + rtol * |e|`` (missing ones are 0).
    NaN never compares equal.

    Parameters
    ----------
    actual, expected
        Tensors of the same shape, on any device.
    what
        Names the values in the error message.
    factor, floor
        Scale of the dtype's tolerance, and the smallest magnitude it is relative to.
    rtol, atol
        Element-wise bounds that replace the dtype's tolerance.

    Raises
    ------
    AssertionError
        When shapes differ or an error exceeds the bound.

    Examples
    --------
    >>> import torch
    >>> from matsci.contract.testing import assert_close_relative
    >>> assert_close_relative(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 2.00001]))
    >>> assert_close_relative(torch.tensor([1.0]), torch.tensor([1.1]), what="energy")
    Traceback (most recent call last):
    ...
    AssertionError: energy: max error 0.1 > 1.1e-05 (1e-05 of scale 1.1)
    """
    if actual.shape != expected.shape:
        raise AssertionError(
            f"{what}: shape {tuple(actual.shape)} != expected {tuple(expected.shape)}"
        )
    if expected.numel() == 0:
        return
    a = actual.detach().to("cpu", torch.float64)
    e = expected.detach().to("cpu", torch.float64)
    error = (a - e).abs()
    if rtol is not None or atol is not None:
        bound = (0.0 if atol is None else atol) + (0.0 if rtol is None else rtol) * e.abs()
        excess = error - bound
        worst = int(torch.nan_to_num(excess, nan=math.inf).argmax())
        if not bool((error <= bound).all()):
            raise AssertionError(
                f"{what}: error {float(error.reshape(-1)[worst]):.3g} at flat index {worst} > "
                f"{float(bound.reshape(-1)[worst]):.3g} (atol {atol}, rtol {rtol})"
            )
        return
    relative = tolerance(expected.dtype) * factor
    scale = max(float(e.abs().max()), floor)
    largest = float(error.max())
    if not largest <= relative * scale:  # also fails on NaN
        raise AssertionError(
            f"{what}: max error {largest:.3g} > {relative * scale:.3g} "
            f"({relative:.3g} of scale {scale:.3g})"
        )


def _as_dict(result: object) -> dict[str, Tensor]:
    if isinstance(result, Tensor):
        return {"output": result}
    if isinstance(result, Embeddings):
        fields = {"system_embedding": result.system_embedding,
                  "point_embedding": result.point_embedding}  # fmt: skip
        return {name: value for name, value in fields.items() if value is not None}
    if isinstance(result, Mapping):
        outputs = {str(name): value for name, value in result.items() if value is not None}
        if all(isinstance(value, Tensor) for value in outputs.values()):
            return outputs
    raise TypeError(
        f"the model returned {type(result).__name__}; expected a Tensor, a mapping of names to "
        "tensors, or Embeddings"
    )


def _floor(floor: float | Mapping[str, float], name: str) -> float:
    return floor if isinstance(floor, int | float) else float(floor.get(name, 1e-3))


def _compare(
    actual: Mapping[str, Tensor],
    expected: Mapping[str, Tensor],
    what: str,
    *,
    factor: float,
    floor: float | Mapping[str, float],
    rtol: float | None,
    atol: float | None,
) -> None:
    if actual.keys() != expected.keys():
        raise AssertionError(f"outputs {what}: {sorted(actual)} != expected {sorted(expected)}")
    for name, value in expected.items():
        assert_close_relative(actual[name], value, what=f"{name} {what}", factor=factor,
                              floor=_floor(floor, name), rtol=rtol, atol=atol)  # fmt: skip
