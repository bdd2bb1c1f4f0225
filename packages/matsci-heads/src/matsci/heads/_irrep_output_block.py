"""An E(3)-equivariant block on e3nn irreducible representations."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from matsci.heads._e3nn import require_e3nn
from matsci.heads._resolve import ModuleSpec, build_module


class IrrepOutputBlock(nn.Module):
    r"""An equivariant linear map between irreps, with equivariant activation, norm and residual.

    The block applies :class:`e3nn.o3.Linear` from ``input_dim`` to ``output_dim`` irreps, then an
    optional activation, then an optional equivariant norm, then adds the input if ``residual``.

    Activations never touch the components of a non-scalar irrep directly, which would break
    rotation equivariance. Even scalars (``0e``) get the activation. With ``gated=True`` (the
    default) every non-scalar irrep is multiplied by a sigmoid gate computed from extra scalars
    that the linear map also produces (:class:`e3nn.nn.Gate`, as in NequIP); with
    ``gated=False`` non-scalar irreps pass through unchanged (:class:`e3nn.nn.Activation`).

    Inputs may have any leading shape, ``[..., input_dim.dim]``. Needs the ``[e3nn]`` extra.

    Parameters
    ----------
    output_dim
        Output irreps, e.g. ``"16x0e+8x1o"`` or an :class:`e3nn.o3.Irreps`.
    input_dim
        Input irreps.
    activation
        Activation for the scalar channels: an instance, class or dotted name (e.g.
        ``"torch.nn.SiLU"``), or ``None``.
    norm
        ``True`` for e3nn's equivariant :class:`e3nn.nn.BatchNorm` over ``output_dim``, ``False``
        for none, or a module instance used as it is (it must map ``[M, output_dim.dim]`` to the
        same shape and keep equivariance).
    residual
        Add the input to the output; needs ``input_dim == output_dim``.
    gated
        Gate non-scalar irreps when ``activation`` is given (see above).
    **linear_kwargs
        Passed to :class:`e3nn.o3.Linear` (for example ``biases=True``).

    Raises
    ------
    ValueError
        If the irreps cannot be parsed, or ``residual=True`` with different input and output irreps.
    ImportError
        If e3nn is not installed; the message names the extra ``matsci-heads[e3nn]``.

    Examples
    --------
    >>> import torch
    >>> from matsci.heads import IrrepOutputBlock
    >>> block = IrrepOutputBlock("8x0e+4x1o", "8x0e+4x1o", activation="torch.nn.SiLU")
    >>> block(torch.randn(5, 20)).shape
    torch.Size([5, 20])
    >>> IrrepOutputBlock("1x1o", "8x0e+4x1o", residual=False).output_dim
    1x1o
    """

    def __init__(
        self,
        output_dim: Any,
        input_dim: Any,
        activation: ModuleSpec | None = None,
        norm: bool | nn.Module = True,
        residual: bool = True,
        gated: bool = True,
        **linear_kwargs: Any,
    ) -> None:
        super().__init__()
        e3nn = require_e3nn("IrrepOutputBlock")
        self.input_dim = _parse_irreps("input_dim", input_dim)
        self.output_dim = _parse_irreps("output_dim", output_dim)
        if residual and self.input_dim != self.output_dim:
            raise ValueError(
                f"IrrepOutputBlock(residual=True): input_dim {self.input_dim} != output_dim "
                f"{self.output_dim}; a residual connection needs equal irreps (set residual=False)"
            )
        self.residual = residual
        if activation is None:
            self.linear = e3nn.o3.Linear(self.input_dim, self.output_dim, **linear_kwargs)
            self.activation: nn.Module = nn.Identity()
        else:
            act = build_module(activation, argument="IrrepOutputBlock(activation)")
            self.linear, self.activation = _linear_with_activation(
                e3nn, self.input_dim, self.output_dim, act, gated, linear_kwargs
            )
        if isinstance(norm, nn.Module):
            self.norm: nn.Module = norm
        elif norm:
            self.norm = e3nn.nn.BatchNorm(self.output_dim)
        else:
            self.norm = nn.Identity()

    def reset_parameters(self) -> None:
        """Draw new weights for the linear map (standard normal, as e3nn does)."""
        for parameter in self.linear.parameters():
            nn.init.normal_(parameter)

    def forward(self, features: Tensor) -> Tensor:
        """Map ``[..., input_dim.dim]`` features to ``[..., output_dim.dim]``.

        Parameters
        ----------
        features
            Irreps features in e3nn's layout, shape ``[..., input_dim.dim]``.

        Returns
        -------
        Tensor
            Shape ``[..., output_dim.dim]``.
        """
        out: Tensor = self.activation(self.linear(features))
        width = out.shape[-1]
        out = self.norm(out.reshape(-1, width)).reshape(out.shape)
        if self.residual:
            out = out + features
        return out

    def extra_repr(self) -> str:
        return f"input_dim={self.input_dim}, output_dim={self.output_dim}, residual={self.residual}"

    @staticmethod
    def dims_match(first: Any, second: Any) -> bool:
        """Whether a block from ``first`` to ``second`` irreps can be residual."""
        return bool(_parse_irreps("input_dim", first) == _parse_irreps("output_dim", second))


def _parse_irreps(name: str, value: Any) -> Any:
    o3 = require_e3nn("IrrepOutputBlock").o3
    try:
        return o3.Irreps(value).simplify()
    except (ValueError, AssertionError, TypeError) as error:
        raise ValueError(
            f"IrrepOutputBlock({name}={value!r}): expected irreps such as '16x0e+8x1o'"
        ) from error


def _linear_with_activation(
    e3nn: Any,
    irreps_in: Any,
    irreps_out: Any,
    act: nn.Module,
    gated: bool,
    linear_kwargs: dict[str, Any],
) -> tuple[nn.Module, nn.Module]:
    o3 = e3nn.o3
    scalars = o3.Irreps([(mul, ir) for mul, ir in irreps_out if ir.l == 0 and ir.p == 1])
    others = o3.Irreps([(mul, ir) for mul, ir in irreps_out if not (ir.l == 0 and ir.p == 1)])
    if gated and others.num_irreps > 0:
        # One extra 0e scalar per non-scalar irrep; the gate keeps e3nn's output order
        # (scalars first, then gated irreps), which equals irreps_out once sorted by simplify().
        gates = o3.Irreps(f"{others.num_irreps}x0e")
        gate = e3nn.nn.Gate(scalars, [act] * len(scalars), gates, [nn.Sigmoid()], others)
        linear = o3.Linear(irreps_in, gate.irreps_in, **linear_kwargs)
        return linear, _Reorder(gate, gate.irreps_out, irreps_out)
    linear = o3.Linear(irreps_in, irreps_out, **linear_kwargs)
    acts = [act if (ir.l == 0 and ir.p == 1) else None for _, ir in irreps_out]
    return linear, e3nn.nn.Activation(irreps_out, acts)


class _Reorder(nn.Module):
    """Run ``module`` and permute its output irreps into the order of ``target``."""

    index: Tensor

    def __init__(self, module: nn.Module, produced: Any, target: Any) -> None:
        super().__init__()
        self.module = module
        index = _irreps_permutation(produced, target)
        self.register_buffer("index", index, persistent=False)
        self.identity = bool(torch.equal(index, torch.arange(len(index))))

    def forward(self, features: Tensor) -> Tensor:
        out: Tensor = self.module(features)
        if self.identity:
            return out
        return out.index_select(-1, self.index)


def _irreps_permutation(produced: Any, target: Any) -> Tensor:
    """Column index that rearranges features laid out as ``produced`` into ``target``'s layout."""
    columns: dict[tuple[int, int], list[Tensor]] = {}
    start = 0
    for mul, ir in produced:
        block = torch.arange(start, start + mul * ir.dim).reshape(mul, ir.dim)
        columns.setdefault((ir.l, ir.p), []).extend(block.unbind(0))
        start += mul * ir.dim
    picked: list[Tensor] = []
    for mul, ir in target:
        rows = columns[(ir.l, ir.p)]
        picked.extend(rows[:mul])
        del rows[:mul]
    return torch.cat(picked)
