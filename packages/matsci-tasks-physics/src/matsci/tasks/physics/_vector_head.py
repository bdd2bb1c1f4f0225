"""The head of a task with one vector per atom (forces, noise): equivariant on every encoder."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any, Literal, get_args

from torch import Tensor, nn
from torch_geometric.data import Batch

from matsci.contract import keys
from matsci.heads import EdgeVectorReadout
from matsci.tasks.core import BaseTaskModule
from matsci.transforms import edge_vectors

VectorHead = Literal["auto", "edge", "dense"]
"""Which head predicts a vector per atom.

``"auto"``: :class:`~matsci.heads.EdgeVectorReadout` on encoders whose ``embedding_dim`` is an
int (invariant features), an equivariant ``1o`` irreps head on irreps encoders. ``"edge"``: the
edge readout (invariant encoders only). ``"dense"``: a dense :class:`~matsci.heads.OutputHead`
with 3 outputs, which on invariant features does not rotate with the structure (a warning says
so).
"""


class NotEquivariantWarning(UserWarning):
    """A vector target is predicted by a head that does not rotate with the structure."""


def check_vector_head(task: str, value: object) -> VectorHead:
    """``value`` if it names a :data:`VectorHead`, else a ``ValueError`` naming the choices."""
    choices: tuple[VectorHead, ...] = get_args(VectorHead)
    for choice in choices:
        if value == choice:
            return choice
    raise ValueError(f"{task}(vector_head={value!r}): expected one of {list(choices)}")


def build_vector_head(
    task: BaseTaskModule, choice: VectorHead, output_kwargs: Mapping[str, Any]
) -> nn.Module:
    """The head of a per-atom vector target for ``task``'s encoder.

    Parameters
    ----------
    task
        The task (its encoder decides between invariant and irreps heads).
    choice
        See :data:`VectorHead`.
    output_kwargs
        Head settings; ``cutoff`` (Å) sets the edge readout's radius, which is otherwise the
        encoder's ``cutoff``.

    Returns
    -------
    torch.nn.Module
        An :class:`~matsci.heads.EdgeVectorReadout` or a head on the atom embeddings.

    Raises
    ------
    ValueError
        If the edge readout is asked for on an irreps encoder, or has no cutoff.
    """
    name = type(task).__name__
    width: Any = task.encoder.embedding_dim
    invariant = isinstance(width, int)
    options = dict(output_kwargs)
    cutoff = options.pop("cutoff", None)
    if choice == "dense" or not invariant:
        if choice == "edge":
            raise ValueError(
                f"{name}(vector_head='edge'): the encoder's features are irreps "
                f"({width}); its equivariant 1o head is used with vector_head='auto'"
            )
        if invariant:
            warnings.warn(
                f"{name}(vector_head='dense'): a dense head on rotation-invariant atom "
                "features cannot predict a vector: rotating the structure leaves its output "
                "unchanged instead of rotating it. Use vector_head='auto' for an equivariant "
                "EdgeVectorReadout.",
                NotEquivariantWarning,
                stacklevel=5,  # the line that built the task
            )
        return task.point_head(3, options)
    if cutoff is None:
        cutoff = getattr(task.encoder, "cutoff", None)
    if cutoff is None:
        raise ValueError(
            f"{name}: the equivariant vector head (EdgeVectorReadout) needs a cutoff radius; "
            f"{type(task.encoder).__name__} has no 'cutoff' attribute, so give "
            "output_kwargs={'cutoff': ...} in Å (the graph's cutoff)"
        )
    return EdgeVectorReadout(width, float(cutoff), **options)


def vector_outputs(
    task: BaseTaskModule, head: nn.Module, embedding: Tensor, batch: Batch
) -> Tensor:
    """The vector per atom ``[N, 3]`` predicted by ``head`` for the batch the encoder saw.

    Parameters
    ----------
    task
        The task (for error messages).
    head
        What :func:`build_vector_head` returned.
    embedding
        The atom embeddings ``[N, D]``.
    batch
        The batch the encoder ran on (for the denoising task, the noisy positions); the edge
        readout recomputes the edge vectors from its ``pos``, ``cell`` and ``cell_offsets``.

    Returns
    -------
    Tensor
        ``[N, 3]``.

    Raises
    ------
    ValueError
        If the edge readout finds no ``edge_index`` in the batch.
    """
    if not isinstance(head, EdgeVectorReadout):
        out: Tensor = head(embedding)
        return out
    edge_index = getattr(batch, keys.EDGE_INDEX, None)
    if edge_index is None:
        raise ValueError(
            f"{type(task).__name__}: the equivariant vector head needs the batch's neighbour "
            "graph ('edge_index', with 'cell_offsets' for periodic structures); add "
            "matsci.transforms.PeriodicRadiusGraph(cutoff=...) to the dataset's transforms"
        )
    cell = getattr(batch, keys.CELL, None)
    # Molecules have no cell; their zero cell_offsets, if any, are not needed.
    offsets = getattr(batch, keys.CELL_OFFSETS, None) if cell is not None else None
    vectors, _ = edge_vectors(
        batch[keys.POS], edge_index, cell, offsets, getattr(batch, keys.BATCH, None)
    )
    return head(embedding, edge_index, vectors)  # type: ignore[no-any-return]
