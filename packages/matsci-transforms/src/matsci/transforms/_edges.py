"""Edge vectors and lengths recomputed from positions, so autograd reaches ``pos`` and ``cell``."""

from __future__ import annotations

from torch import Tensor

__all__ = ["edge_vectors"]


def edge_vectors(
    pos: Tensor,
    edge_index: Tensor,
    cell: Tensor | None = None,
    cell_offsets: Tensor | None = None,
    batch: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    r"""Vectors and lengths of the edges, from positions and periodic image shifts.

    .. math:: \mathbf{r}_{ij} = \mathbf{x}_j - \mathbf{x}_i + \mathbf{S}_{ij}\,\mathbf{C}_{b(i)},
              \qquad d_{ij} = |\mathbf{r}_{ij}|,

    where ``i = edge_index[0]`` (source), ``j = edge_index[1]`` (target), ``S`` the integer
    ``cell_offsets`` of the edge and ``C_b`` the cell (lattice vectors as rows) of the structure
    ``b(i) = batch[i]`` that the edge belongs to. Everything is differentiable: gradients reach
    ``pos`` and ``cell`` (for stress, scale both by a strain before calling). The code is
    straight-line tensor arithmetic without host synchronisation; the only checks are on shapes.

    Parameters
    ----------
    pos
        [N, 3] Cartesian positions in Å (or noisy positions of the same atoms).
    edge_index
        [2, E] long, source and target atom of every edge.
    cell
        [B, 3, 3] lattice vectors as rows (``[1, 3, 3]`` or ``[3, 3]`` for one structure);
        needed when ``cell_offsets`` is given, ignored otherwise.
    cell_offsets
        [E, 3] integer-valued image shifts; ``None`` for non-periodic graphs.
    batch
        [N] long, structure index of every atom; needed when ``cell`` holds ``B > 1`` cells.

    Returns
    -------
    tuple[Tensor, Tensor]
        ``vectors`` [E, 3] in the dtype of ``pos`` and ``distances`` [E].

    Raises
    ------
    ValueError
        If a shape is wrong, ``cell_offsets`` is given without ``cell``, or ``cell`` holds
        several structures but ``batch`` is missing.

    Examples
    --------
    >>> import torch
    >>> from matsci.transforms import edge_vectors
    >>> pos = torch.tensor([[0.0, 0.0, 0.0], [1.5, 0.0, 0.0]], requires_grad=True)
    >>> edge_index = torch.tensor([[0, 1], [1, 0]])
    >>> cell = 2.0 * torch.eye(3).unsqueeze(0)
    >>> offsets = torch.tensor([[-1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    >>> vectors, distances = edge_vectors(pos, edge_index, cell, offsets)
    >>> vectors
    tensor([[-0.5000,  0.0000,  0.0000],
            [ 0.5000,  0.0000,  0.0000]], grad_fn=<AddBackward0>)
    >>> distances[0].backward()  # moving atom 1 along +x shortens the first edge
    >>> pos.grad
    tensor([[ 1.,  0.,  0.],
            [-1.,  0.,  0.]])
    """
    if pos.dim() != 2 or pos.shape[1] != 3:
        raise ValueError(f"edge_vectors: pos must have shape [N, 3], got {tuple(pos.shape)}")
    if edge_index.dim() != 2 or edge_index.shape[0] != 2:
        raise ValueError(
            f"edge_vectors: edge_index must have shape [2, E], got {tuple(edge_index.shape)}"
        )
    source, target = edge_index[0], edge_index[1]  # [E], [E]
    vectors = pos[target] - pos[source]  # [E, 3]
    if cell_offsets is not None:
        if cell is None:
            raise ValueError("edge_vectors: cell_offsets given without cell")
        if cell_offsets.shape != (edge_index.shape[1], 3):
            raise ValueError(
                f"edge_vectors: cell_offsets must have shape [E, 3] = "
                f"[{edge_index.shape[1]}, 3], got {tuple(cell_offsets.shape)}"
            )
        if cell.shape[-2:] != (3, 3) or cell.dim() not in (2, 3):
            raise ValueError(
                f"edge_vectors: cell must have shape [B, 3, 3] or [3, 3], got {tuple(cell.shape)}"
            )
        cells = cell.reshape(-1, 3, 3)  # [B, 3, 3]
        offsets = cell_offsets.to(cells.dtype)  # [E, 3]
        if batch is None:
            if cells.shape[0] != 1:
                raise ValueError(
                    f"edge_vectors: cell holds {cells.shape[0]} structures, pass batch [N] "
                    "to assign atoms to them"
                )
            shifts = offsets @ cells[0]  # [E, 3]
        else:
            edge_cells = cells[batch[source]]  # [E, 3, 3]
            shifts = (offsets.unsqueeze(1) @ edge_cells).squeeze(1)  # [E, 3]
        vectors = vectors + shifts.to(vectors.dtype)
    return vectors, vectors.norm(dim=-1)
