"""What a task's heads read and how they are built: embedding widths, point heads, pooling.

The task's public methods (``embedding_width``, ``point_head``, ``system_embedding``) stay the
overridable API; the work behind them lives here, as plain functions of the encoder and batch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn
from torch_geometric.data import Batch
from torch_geometric.utils import scatter

from matsci.contract import keys
from matsci.heads import OutputHead
from matsci.tasks.core._task_arguments import Reduction

__all__ = ["embedding_width", "point_head", "pool_atoms"]


def embedding_width(encoder: nn.Module) -> int:
    """Width ``D`` of the structure embedding an encoder gives its task's heads.

    The encoder's ``system_embedding_dim`` if it has one, else ``embedding_dim``; for irreps,
    the number of even scalars (``0e``), which is what pooling keeps invariant.

    Examples
    --------
    >>> from torch import nn
    >>> encoder = nn.Identity()
    >>> encoder.embedding_dim = 8
    >>> embedding_width(encoder)
    8
    """
    width: Any = getattr(encoder, "system_embedding_dim", None)
    width = width if width is not None else encoder.embedding_dim
    if isinstance(width, int):
        return width
    return int(sum(mul for mul, ir in width if str(ir) == "0e"))


def point_head(
    name: str, encoder: nn.Module, output_dim: int, output_kwargs: Mapping[str, Any]
) -> nn.Module:
    """A head on an encoder's atom embeddings with ``output_dim`` outputs per atom (1 or 3).

    Dense for an ``int`` ``embedding_dim``; for irreps, equivariant (a ``0e`` scalar or a
    ``1o`` vector) and without norm unless ``norm`` is given. See
    :meth:`~matsci.tasks.core.BaseTaskModule.point_head`.

    Raises
    ------
    ValueError
        If irreps heads are asked for another ``output_dim``, naming the task ``name``.
    """
    width: Any = encoder.embedding_dim
    if isinstance(width, int):
        return OutputHead(output_dim, input_dim=width, **output_kwargs)
    if output_dim not in (1, 3):
        raise ValueError(
            f"{name}: irreps heads give 1 scalar or 3 vector components per atom, not {output_dim}"
        )
    options = dict(output_kwargs)
    # No norm unless asked for: e3nn's batch norm in training mode normalizes per-atom
    # energies across the batch, which makes forces (their gradients) vanish.
    if options.get("norm") is None:
        options["norm"] = False
    hidden = int(options.pop("hidden_dim", 128))
    hidden_irreps = options.pop("hidden_irreps", f"{hidden}x0e+{max(hidden // 4, 1)}x1o")
    head = OutputHead(
        "1x0e" if output_dim == 1 else "1x1o", hidden_irreps, input_dim=width,
        block_type="IrrepOutputBlock", **options,
    )  # fmt: skip
    return head


def pool_atoms(point_embedding: Tensor, batch: Batch, reduction: Reduction) -> Tensor:
    """Pool atom embeddings ``[N, D]`` into structure embeddings ``[B, D]``.

    Atoms are assigned to structures by the batch's ``batch`` vector; without one, all atoms
    form one structure (``[1, D]``).

    Examples
    --------
    >>> import torch
    >>> from torch_geometric.data import Batch, Data
    >>> batch = Batch.from_data_list([Data(num_nodes=2), Data(num_nodes=1)])
    >>> pool_atoms(torch.tensor([[1.0], [3.0], [5.0]]), batch, "mean").flatten().tolist()
    [2.0, 5.0]
    """
    index = getattr(batch, keys.BATCH, None)
    if index is None:
        return _reduce_all(point_embedding, reduction)
    pooled: Tensor = scatter(
        point_embedding, index, dim=0, dim_size=batch.num_graphs, reduce=reduction
    )
    return pooled


def _reduce_all(values: Tensor, reduction: Reduction) -> Tensor:
    if reduction == "mean":
        return values.mean(dim=0, keepdim=True)
    if reduction == "sum":
        return values.sum(dim=0, keepdim=True)
    return values.amax(dim=0, keepdim=True)
