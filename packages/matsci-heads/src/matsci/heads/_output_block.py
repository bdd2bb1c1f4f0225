"""A dense block: linear map, activation, normalization, dropout and optional residual."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from matsci.heads._resolve import ModuleSpec, build_module


class OutputBlock(nn.Module):
    r"""Linear → activation → norm → dropout, with an optional residual connection.

    .. math:: y = \mathrm{dropout}(\mathrm{norm}(\sigma(W x + b))) \; [+\, x]

    Inputs may have any leading shape: ``[B, D]``, ``[N, D]`` or ``[B, frames, D]`` give
    ``[B, output_dim]``, ``[N, output_dim]`` or ``[B, frames, output_dim]``. Norms that expect a
    2-D input (such as :class:`torch.nn.BatchNorm1d`) see the leading dimensions flattened.

    Parameters
    ----------
    output_dim
        Output feature size.
    activation
        Activation: an ``nn.Module`` instance, a module class (built with no arguments), a dotted
        name such as ``"torch.nn.SiLU"``, or ``None`` for no activation.
    norm
        Normalization: an instance, a class or dotted name (built as ``norm(output_dim)``, e.g.
        ``"torch.nn.LayerNorm"``), or ``None``.
    input_dim
        Input feature size. Required unless ``lazy=True``.
    lazy
        Infer ``input_dim`` at the first forward pass with :class:`torch.nn.LazyLinear`. Lazy
        parameters do not exist until then, so optimizers, EMA and DDP must be set up after a
        first forward; prefer giving ``input_dim``.
    bias
        Whether the linear map has a bias.
    dropout
        Dropout probability applied after the norm, in ``[0, 1)``.
    residual
        Add the input to the output. Needs ``input_dim == output_dim``.

    Raises
    ------
    ValueError
        If sizes are not positive, ``dropout`` is outside ``[0, 1)``, ``input_dim`` is missing
        without ``lazy=True``, or ``residual=True`` with ``input_dim != output_dim``.

    Examples
    --------
    >>> import torch
    >>> from matsci.heads import OutputBlock
    >>> block = OutputBlock(16, activation="torch.nn.SiLU", norm="torch.nn.LayerNorm",
    ...                     input_dim=16)
    >>> block(torch.randn(5, 16)).shape
    torch.Size([5, 16])
    >>> OutputBlock(16, input_dim=8)
    Traceback (most recent call last):
    ...
    ValueError: OutputBlock(residual=True): input_dim 8 != output_dim 16; ...
    """

    def __init__(
        self,
        output_dim: int,
        activation: ModuleSpec | None = None,
        norm: ModuleSpec | None = None,
        input_dim: int | None = None,
        lazy: bool = False,
        bias: bool = True,
        dropout: float = 0.0,
        residual: bool = True,
    ) -> None:
        super().__init__()
        _check_positive("output_dim", output_dim)
        if input_dim is None and not lazy:
            raise ValueError(
                "OutputBlock: input_dim is required; pass input_dim=<int> or lazy=True to infer it "
                "at the first forward pass"
            )
        if input_dim is not None:
            _check_positive("input_dim", input_dim)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"OutputBlock(dropout={dropout}): expected a probability in [0, 1)")
        if residual and input_dim is not None and input_dim != output_dim:
            raise ValueError(
                f"OutputBlock(residual=True): input_dim {input_dim} != output_dim {output_dim}; "
                "a residual connection needs equal sizes (set residual=False)"
            )
        self.output_dim = output_dim
        self.input_dim = input_dim
        self.residual = residual
        self.linear: nn.Linear = (
            nn.LazyLinear(output_dim, bias=bias)
            if input_dim is None
            else nn.Linear(input_dim, output_dim, bias=bias)
        )
        self.activation = build_module(activation, argument="OutputBlock(activation)")
        self.norm = build_module(norm, output_dim, argument="OutputBlock(norm)")
        self.dropout = nn.Dropout(dropout) if dropout > 0.0 else nn.Identity()
        if input_dim is None and residual:
            # The sizes are known only once the lazy layer sees data: check them then, once.
            self._lazy_check = self.register_forward_pre_hook(_check_lazy_residual)

    def reset_parameters(self) -> None:
        """Re-initialize the linear map and the norm (if it has parameters)."""
        if not isinstance(self.linear, nn.modules.lazy.LazyModuleMixin):
            self.linear.reset_parameters()
        reset = getattr(self.norm, "reset_parameters", None)
        if callable(reset):
            reset()

    def forward(self, features: Tensor) -> Tensor:
        """Map ``[..., input_dim]`` features to ``[..., output_dim]``.

        Parameters
        ----------
        features
            Input of shape ``[..., input_dim]``.

        Returns
        -------
        Tensor
            Output of shape ``[..., output_dim]``.
        """
        out: Tensor = self.activation(self.linear(features))
        out = self.norm(out.reshape(-1, self.output_dim)).reshape(out.shape)
        out = self.dropout(out)
        if self.residual:
            out = out + features
        return out

    def extra_repr(self) -> str:
        return f"input_dim={self.input_dim}, output_dim={self.output_dim}, residual={self.residual}"

    @staticmethod
    def dims_match(first: Any, second: Any) -> bool:
        """Whether a block from ``first`` to ``second`` features can be residual."""
        return bool(first == second)


def _check_positive(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"OutputBlock({name}={value!r}): expected a positive int")


def _check_lazy_residual(block: nn.Module, inputs: tuple[Tensor, ...]) -> None:
    assert isinstance(block, OutputBlock)
    found = inputs[0].shape[-1]
    if found != block.output_dim:
        raise ValueError(
            f"OutputBlock(residual=True, lazy=True): input_dim {found} != output_dim "
            f"{block.output_dim}; a residual connection needs equal sizes (set residual=False)"
        )
    block.input_dim = int(found)
    block._lazy_check.remove()
