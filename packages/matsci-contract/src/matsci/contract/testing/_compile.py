"""Compilation check: ``torch.compile`` gives the outputs and gradients of eager mode."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from matsci.contract.testing._compare import _as_dict, _compare, _Model

__all__ = ["assert_compile_matches_eager"]


def _run(module: _Model, value: Any, gradients: bool) -> dict[str, Tensor]:
    """The outputs of ``module(value)`` and, with ``gradients``, d(sum of outputs)/d(input)."""
    if isinstance(value, Tensor):
        work: Any = value.detach().clone().requires_grad_(gradients)
        leaf: Tensor = work
    else:
        work = value.clone()
        work.pos = value.pos.detach().clone().requires_grad_(gradients)
        leaf = work.pos
    outputs = _as_dict(module(work))
    result = {name: tensor.detach() for name, tensor in outputs.items()}
    if gradients:
        total = sum((t.sum() for t in outputs.values() if t.is_floating_point()),
                    torch.zeros((), dtype=leaf.dtype, device=leaf.device))  # fmt: skip
        (result["d(sum)/d(input)"],) = torch.autograd.grad(total, leaf)
    return result


def assert_compile_matches_eager(
    module: _Model,
    inputs: Sequence[Any],
    *,
    dynamic: bool = True,
    recompile: bool = False,
    gradients: bool = False,
    backend: str = "inductor",
    factor: float = 10.0,
    floor: float | Mapping[str, float] = 1e-3,
    rtol: float | None = None,
    atol: float | None = None,
) -> None:
    """Assert ``torch.compile(module)`` gives the outputs (and gradients) of eager mode.

    Every input after the first must reuse the compiled graph unless ``recompile``: give
    inputs of other sizes to check that shapes are dynamic. Dynamic shapes "duck-size"
    dimensions of equal value, so avoid sizes that equal others (3 structures make
    ``cell`` [3, 3, 3], which would be specialized).

    Parameters
    ----------
    module
        An ``nn.Module`` (or function) of a tensor or a ``Data``/``Batch``.
    inputs
        One or more inputs; not modified.
    dynamic
        Passed to ``torch.compile``.
    recompile
        Allow recompiling for later inputs.
    gradients
        Also compare the gradient of the sum of all outputs with respect to the input (a
        tensor) or its ``pos`` (what forces are made of).
    backend
        Passed to ``torch.compile``; ``"eager"`` or ``"aot_eager"`` trace without generating
        kernels (fast, for checks of tracing and guards only).
    factor, floor, rtol, atol
        The tolerance, as in :func:`assert_equivariant`; ``factor`` defaults to 10, since
        compiled kernels fuse and reorder sums.

    Raises
    ------
    AssertionError
        When an output or gradient differs, or a later input recompiles the module.
    """
    compiled = torch.compile(module, dynamic=dynamic, backend=backend)
    for index, value in enumerate(inputs):
        eager = _run(module, value, gradients)
        first = index == 0 or recompile
        try:
            with torch.compiler.set_stance("default" if first else "fail_on_recompile"):
                result = _run(compiled, value, gradients)
        except RuntimeError as error:
            if "fail_on_recompile" not in str(error):
                raise
            raise AssertionError(f"compiled: input {index} recompiled the module: "
                                 f"{str(error).splitlines()[0]}") from error  # fmt: skip
        _compare(result, eager, f"compiled (input {index})", factor=factor, floor=floor,
                 rtol=rtol, atol=atol)  # fmt: skip
