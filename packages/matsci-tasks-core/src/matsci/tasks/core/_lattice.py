"""Invariants of a crystal's lattice: what its metric says about symmetry, in any basis."""

from __future__ import annotations

from typing import Final

import torch
from torch import Tensor

LATTICE_FEATURES: Final = 15
"""Number of features :func:`lattice_invariants` gives per structure."""

SYMMETRY_FEATURES: Final = 2 * LATTICE_FEATURES + 1
"""Number of features :func:`symmetry_features` gives per structure."""

_SWEEPS: Final = 8
_TOLERANCE: Final = 0.01


def reduced_basis(cell: Tensor, sweeps: int = _SWEEPS) -> Tensor:
    """A short, nearly orthogonal basis of the same lattice (greedy pairwise reduction).

    Each sweep subtracts from every lattice vector the integer multiple of every other vector
    that shortens it most (Lagrange-Gauss reduction applied pairwise), so sheared bases of one
    lattice end in the same basis up to order and sign. Runs on whole batches with tensor
    operations only (no host synchronisation).

    Parameters
    ----------
    cell
        ``[B, 3, 3]`` lattice vectors as rows.
    sweeps
        Number of passes over the six ordered pairs.

    Returns
    -------
    Tensor
        ``[B, 3, 3]`` reduced lattice vectors as rows.
    """
    rows = [cell[:, 0], cell[:, 1], cell[:, 2]]
    for _ in range(sweeps):
        for i in range(3):
            for j in range(3):
                if i != j:
                    ratio = (rows[i] * rows[j]).sum(-1) / (rows[j] * rows[j]).sum(-1)  # [B]
                    rows[i] = rows[i] - torch.round(ratio).unsqueeze(-1) * rows[j]
    return torch.stack(rows, dim=1)


def lattice_invariants(cell: Tensor) -> Tensor:
    """Rotation- and basis-invariant features of the lattice, ``[B, 15]``.

    From the :func:`reduced_basis`: the three lengths divided by the cube root of the volume
    (sorted), the three absolute cosines of the angles between them (sorted), and soft
    indicators (1 when true, 0 when clearly false, within 1%) of the degeneracies that crystal
    systems are made of: pairs of equal lengths (3), right angles (3) and 60° or 120° angles
    (3). A dense head on the structure embedding cannot see these, yet they separate cubic,
    hexagonal, tetragonal, orthorhombic and monoclinic lattices.

    Parameters
    ----------
    cell
        ``[B, 3, 3]`` lattice vectors as rows (non-degenerate).

    Returns
    -------
    Tensor
        ``[B, 15]`` in the dtype of ``cell``.

    Examples
    --------
    >>> import torch
    >>> from matsci.tasks.core import lattice_invariants
    >>> cubic = 4.0 * torch.eye(3).unsqueeze(0)
    >>> sheared = cubic.clone()
    >>> sheared[0, 2] += 2 * cubic[0, 0]  # the same lattice in another basis
    >>> torch.allclose(lattice_invariants(sheared), lattice_invariants(cubic))
    True
    >>> lattice_invariants(cubic)[0, :6]
    tensor([1., 1., 1., 0., 0., 0.])
    """
    basis = reduced_basis(cell.detach())
    scale = torch.linalg.det(basis).abs().pow(1.0 / 3.0).unsqueeze(-1)  # [B, 1]
    lengths = basis.norm(dim=-1) / scale  # [B, 3]
    unit = basis / basis.norm(dim=-1, keepdim=True)
    cosines = torch.stack(
        [
            (unit[:, 1] * unit[:, 2]).sum(-1),
            (unit[:, 0] * unit[:, 2]).sum(-1),
            (unit[:, 0] * unit[:, 1]).sum(-1),
        ],
        dim=-1,
    ).abs()  # [B, 3]
    lengths, _ = lengths.sort(dim=-1)
    cosines, _ = cosines.sort(dim=-1)
    pairs = (
        torch.stack(
            [
                lengths[:, 1] - lengths[:, 0],
                lengths[:, 2] - lengths[:, 1],
                lengths[:, 2] - lengths[:, 0],
            ],
            dim=-1,
        )
        / lengths[:, 2:]
    )  # [B, 3] relative differences
    equal_lengths = torch.exp(-((pairs / _TOLERANCE) ** 2))
    right_angles = torch.exp(-((cosines / _TOLERANCE) ** 2))
    hexagonal_angles = torch.exp(-(((cosines - 0.5) / _TOLERANCE) ** 2))
    return torch.cat([lengths, cosines, equal_lengths, right_angles, hexagonal_angles], dim=-1)


def symmetry_features(cell: Tensor, primitive_cell: Tensor | None = None) -> Tensor:
    """Invariants of the cell and of its primitive cell, and the lattice points, ``[B, 31]``.

    A conventional cell hides its centring: the rhombohedral and the hexagonal lattice share a
    hexagonal cell, and only the primitive cell (with the atoms' centring translations, from
    :class:`~matsci.transforms.PrimitiveCell`) tells them apart. The features are
    :func:`lattice_invariants` of ``cell``, those of ``primitive_cell`` (``cell`` again when
    ``None``), and the logarithm of the number of lattice points per cell (the volume ratio).

    Parameters
    ----------
    cell
        ``[B, 3, 3]`` lattice vectors as rows.
    primitive_cell
        ``[B, 3, 3]`` primitive lattice vectors as rows, or ``None``.

    Returns
    -------
    Tensor
        ``[B, 31]`` in the dtype of ``cell``.

    Examples
    --------
    >>> import torch
    >>> from matsci.tasks.core import symmetry_features
    >>> cubic = 4.0 * torch.eye(3).unsqueeze(0)
    >>> body_centred = torch.tensor([[[-2.0, 2.0, 2.0], [2.0, -2.0, 2.0], [2.0, 2.0, -2.0]]])
    >>> features = symmetry_features(cubic, body_centred)
    >>> features.shape, round(float(features[0, -1].exp()), 6)  # two lattice points per cell
    (torch.Size([1, 31]), 2.0)
    """
    primitive = cell if primitive_cell is None else primitive_cell.reshape(-1, 3, 3).to(cell.dtype)
    ratio = torch.linalg.det(cell.detach()).abs() / torch.linalg.det(primitive.detach()).abs()
    return torch.cat(
        [lattice_invariants(cell), lattice_invariants(primitive), ratio.log().unsqueeze(-1)],
        dim=-1,
    )
