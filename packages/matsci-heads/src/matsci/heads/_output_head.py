"""A stack of output blocks mapping an embedding to predictions."""

from __future__ import annotations

import copy
from typing import Any

from torch import Tensor, nn

from matsci.contract import import_class
from matsci.heads._irrep_output_block import IrrepOutputBlock
from matsci.heads._output_block import OutputBlock
from matsci.heads._resolve import ModuleSpec

BLOCK_TYPES: dict[str, type[nn.Module]] = {
    "OutputBlock": OutputBlock,
    "IrrepOutputBlock": IrrepOutputBlock,
}
"""Block classes that ``OutputHead(block_type=...)`` accepts by name (for YAML configurations)."""


def _resolve_block_type(block_type: type[nn.Module] | str) -> type[nn.Module]:
    if isinstance(block_type, str):
        # Bare names are the shipped blocks; dotted paths name a user's block class.
        try:
            return import_class(
                block_type, nn.Module, argument="OutputHead", default_module="matsci.heads"
            )
        except ValueError as error:
            raise ValueError(
                f"OutputHead(block_type={block_type!r}): unknown block type; expected one of "
                f"{sorted(BLOCK_TYPES)}, the dotted path of a block class, or a block class"
            ) from error
    if isinstance(block_type, type) and issubclass(block_type, nn.Module):
        return block_type
    raise TypeError(
        f"OutputHead(block_type=...): expected a block class or one of {sorted(BLOCK_TYPES)}, "
        f"got {type(block_type).__name__}"
    )


class OutputHead(nn.Module):
    """A stack of blocks that maps an embedding to ``output_dim`` outputs.

    The stack is ``input_dim → hidden_dim``, then ``num_hidden`` blocks
    ``hidden_dim → hidden_dim``, then ``hidden_dim → output_dim``. The first block is residual
    only when ``input_dim == hidden_dim``, so embeddings of any size work; the last block has
    neither residual nor norm, and its activation is ``act_last`` (none by default).

    Inputs may have any leading shape: ``[B, D]`` (structures), ``[N, D]`` (atoms) or
    ``[B, frames, D]``.

    Parameters
    ----------
    output_dim
        Number of outputs (an int), or output irreps such as ``"1x1o"`` for irreps blocks.
    hidden_dim
        Width of the hidden blocks (int or irreps).
    num_hidden
        Number of ``hidden_dim → hidden_dim`` blocks between the first and the last block.
    activation
        Activation of every block but the last (instance, class or dotted name such as
        ``"torch.nn.SiLU"``). An instance is copied into each block.
    norm
        Norm of every block but the last; for :class:`OutputBlock` an instance, class or dotted
        name, for :class:`IrrepOutputBlock` a bool or instance. ``None`` means the block's own
        default for irreps blocks and no norm for dense blocks.
    act_last
        Activation of the last block, e.g. ``"torch.nn.Sigmoid"``; ``None`` for none.
    input_dim
        Embedding size (int or irreps). For dense blocks ``None`` makes the first block lazy.
    block_type
        :class:`OutputBlock`, :class:`IrrepOutputBlock`, another block class with the same
        constructor, or the registered name of one (see :data:`BLOCK_TYPES`).
    **block_kwargs
        Passed to every block (for example ``dropout=0.1`` or ``bias=False``); ``residual=False``
        turns residual connections off everywhere.

    Raises
    ------
    ValueError
        If ``num_hidden`` is negative, ``block_type`` is unknown, or a block refuses its sizes.

    Examples
    --------
    >>> import torch
    >>> from matsci.heads import OutputHead
    >>> head = OutputHead(output_dim=3, hidden_dim=64, num_hidden=2, input_dim=48,
    ...                   activation="torch.nn.SiLU")
    >>> head(torch.randn(10, 48)).shape
    torch.Size([10, 3])
    >>> vector_head = OutputHead("1x1o", "16x0e+8x1o", input_dim="32x0e+8x1o",
    ...                          activation="torch.nn.SiLU", block_type="IrrepOutputBlock")
    >>> vector_head(torch.randn(10, 56)).shape
    torch.Size([10, 3])
    """

    def __init__(
        self,
        output_dim: Any,
        hidden_dim: Any,
        num_hidden: int = 1,
        activation: ModuleSpec | None = None,
        norm: Any = None,
        act_last: ModuleSpec | None = None,
        input_dim: Any = None,
        block_type: type[nn.Module] | str = OutputBlock,
        **block_kwargs: Any,
    ) -> None:
        super().__init__()
        if isinstance(num_hidden, bool) or not isinstance(num_hidden, int) or num_hidden < 0:
            raise ValueError(f"OutputHead(num_hidden={num_hidden!r}): expected an int >= 0")
        block_class = _resolve_block_type(block_type)
        residual = bool(block_kwargs.pop("residual", True))
        is_irrep = issubclass(block_class, IrrepOutputBlock)
        hidden_norm = norm if (norm is not None or not is_irrep) else True
        last_norm: Any = False if is_irrep else None
        first_residual = (
            residual and input_dim is not None and _dims_match(block_class, input_dim, hidden_dim)
        )
        lazy_first = {} if (is_irrep or input_dim is not None) else {"lazy": True}
        sizes = [(input_dim, hidden_dim, first_residual)] + [
            (hidden_dim, hidden_dim, residual) for _ in range(num_hidden)
        ]
        blocks: list[nn.Module] = []
        for index, (size_in, size_out, block_residual) in enumerate(sizes):
            blocks.append(
                block_class(
                    output_dim=size_out,
                    input_dim=size_in,
                    activation=_fresh(activation),
                    norm=_fresh(hidden_norm),
                    residual=block_residual,
                    **(lazy_first if index == 0 else {}),
                    **block_kwargs,
                )
            )
        blocks.append(
            block_class(
                output_dim=output_dim,
                input_dim=hidden_dim,
                activation=_fresh(act_last),
                norm=last_norm,
                residual=False,
                **block_kwargs,
            )
        )
        self.blocks = nn.Sequential(*blocks)
        self.input_dim = input_dim
        self.hidden_dim = hidden_dim
        self.output_dim = output_dim
        self.num_hidden = num_hidden

    def reset_parameters(self) -> None:
        """Re-initialize every block."""
        for block in self.blocks:
            reset = getattr(block, "reset_parameters", None)
            if callable(reset):
                reset()

    def forward(self, embedding: Tensor) -> Tensor:
        """Map ``[..., input_dim]`` embeddings to ``[..., output_dim]`` outputs.

        Parameters
        ----------
        embedding
            Shape ``[..., input_dim]`` (for irreps, ``[..., input_dim.dim]``).

        Returns
        -------
        Tensor
            Shape ``[..., output_dim]`` (for irreps, ``[..., output_dim.dim]``).
        """
        out: Tensor = self.blocks(embedding)
        return out

    def extra_repr(self) -> str:
        return (
            f"input_dim={self.input_dim}, hidden_dim={self.hidden_dim}, "
            f"output_dim={self.output_dim}, num_hidden={self.num_hidden}"
        )


def _dims_match(block_class: type[nn.Module], first: Any, second: Any) -> bool:
    check = getattr(block_class, "dims_match", None)
    return bool(check(first, second)) if callable(check) else bool(first == second)


def _fresh(spec: Any) -> Any:
    # An instance given once must not be shared between blocks (a norm would share weights).
    return copy.deepcopy(spec) if isinstance(spec, nn.Module) else spec
