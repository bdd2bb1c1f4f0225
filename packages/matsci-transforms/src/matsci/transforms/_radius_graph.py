"""Neighbour graphs within a cutoff that follow periodic boundary conditions (vesin)."""

from __future__ import annotations

import math

import torch
import vesin
from torch import Tensor
from torch_geometric.data import Batch, Data
from torch_geometric.transforms import BaseTransform

from matsci.contract import keys

__all__ = ["PeriodicRadiusGraph"]

_TIE_RESOLUTION = {torch.float64: 1e-8}
"""Å; for ``max_neighbors``, distances rounded to multiples of this count as ties.

Float64 positions use 1e-8 Å, any other dtype 1e-4 Å: well above the rounding of float32
coordinates (about 1e-5 Å at 100 Å), so symmetry-equivalent neighbours tie in practice.
"""
_TIE_RESOLUTION_DEFAULT = 1e-4
_MIN_DISTANCE = 1e-3
"""Å; atoms closer than this are refused (duplicated atoms give zero-length edges, whose
directions and derivatives are NaN)."""
_VESIN_MAX_CELLS = 1e5
"""vesin's cell lists have at most this many cells, rescaled keeping the ratio between
directions; a long, thin box can end with zero cells along one direction, which crashes."""


def _check_magnitude(points: Tensor) -> None:
    if points.numel() == 0:
        return
    largest = float(points.abs().max())
    if largest > keys.MAX_ABS_POSITION:
        raise ValueError(
            f"PeriodicRadiusGraph: {keys.POS} has a coordinate of magnitude {largest:.3g} Å, "
            f"more than {keys.MAX_ABS_POSITION:.0e} Å (corrupt or unwrapped positions?)"
        )


def _grid_extents(points: Tensor, cell: Tensor, pbc: Tensor) -> list[float]:
    """Size of the box vesin grids, per direction: face distances (periodic), extents (not)."""
    extents = []
    volume = abs(float(torch.linalg.det(cell))) if bool(pbc.all()) else 0.0
    for axis in range(3):
        if bool(pbc[axis]) and volume > 0:
            others = cell[[a for a in range(3) if a != axis]]
            extents.append(volume / float(torch.linalg.cross(others[0], others[1]).norm()))
        elif bool(pbc[axis]):
            extents.append(float(cell[axis].norm()))
        elif points.numel():
            spread = float(points[:, axis].max() - points[:, axis].min())
            extents.append(max(spread, 1.0) * 1.01)
        else:
            extents.append(1.0)
    return extents


def _cell_grid_may_fail(extents: list[float], cutoff: float) -> bool:
    """Whether vesin's rescaled cell grid may get no cell along a direction (with a margin)."""
    counts = [max(1.0, math.trunc(extent / cutoff)) for extent in extents]
    if counts[0] * counts[1] * counts[2] <= _VESIN_MAX_CELLS / 2:
        return False
    ratio_xy, ratio_yz = counts[0] / counts[1], counts[1] / counts[2]
    along_z = math.trunc(math.cbrt(_VESIN_MAX_CELLS / (ratio_xy * ratio_yz * ratio_yz)))
    along_y = math.trunc(ratio_yz * along_z)
    along_x = math.trunc(ratio_xy * along_y)
    return min(along_x, along_y, along_z) < 2


def _lexsort(columns: list[Tensor]) -> Tensor:
    """Permutation that sorts rows by ``columns[0]``, then ``columns[1]``, and so on."""
    order = torch.arange(columns[0].numel())
    for column in reversed(columns):  # stable sorts, least significant key first
        order = order[torch.sort(column[order], stable=True).indices]
    return order


def _structure(data: Data) -> tuple[Tensor, Tensor, Tensor]:
    """Read ``pos`` [N, 3], ``cell`` [3, 3] and ``pbc`` [3] of one structure, with checks."""
    if isinstance(data, Batch):
        raise TypeError(
            "PeriodicRadiusGraph: got a Batch; apply the transform to each structure "
            "before collation (for example as a dataset transform)"
        )
    pos = getattr(data, keys.POS, None)
    if not isinstance(pos, Tensor) or pos.dim() != 2 or pos.shape[1] != 3:
        shape = tuple(pos.shape) if isinstance(pos, Tensor) else type(pos).__name__
        raise ValueError(f"PeriodicRadiusGraph: {keys.POS} must have shape [N, 3], got {shape}")
    if not pos.is_floating_point():
        raise ValueError(f"PeriodicRadiusGraph: {keys.POS} must be floating point, got {pos.dtype}")
    cell = getattr(data, keys.CELL, None)
    pbc = getattr(data, keys.PBC, None)
    if cell is None:
        if pbc is not None and bool(torch.as_tensor(pbc).any()):
            raise ValueError(
                f"PeriodicRadiusGraph: {keys.PBC}={torch.as_tensor(pbc).tolist()} "
                f"is periodic but the structure has no {keys.CELL}"
            )
        return pos, torch.zeros(3, 3, dtype=torch.float64), torch.zeros(3, dtype=torch.bool)
    if tuple(cell.shape) not in ((1, 3, 3), (3, 3)):
        raise ValueError(
            f"PeriodicRadiusGraph: {keys.CELL} must have shape [1, 3, 3] or [3, 3], "
            f"got {tuple(cell.shape)}"
        )
    if pbc is None:
        pbc_flags = torch.ones(3, dtype=torch.bool)
    else:
        pbc_flags = torch.as_tensor(pbc).detach().cpu()
        if pbc_flags.numel() != 3:
            raise ValueError(
                f"PeriodicRadiusGraph: {keys.PBC} must have shape [1, 3] or [3], "
                f"got {tuple(pbc_flags.shape)}"
            )
        pbc_flags = pbc_flags.reshape(3).bool()
    return pos, cell.detach().cpu().reshape(3, 3).to(torch.float64), pbc_flags


class PeriodicRadiusGraph(BaseTransform):  # type: ignore[misc]  # PyG ships no type hints
    r"""Connect every pair of atoms closer than ``cutoff``, across periodic boundaries.

    Builds a full (directed, both ``i → j`` and ``j → i``) neighbour list with
    `vesin <https://github.com/Luthaf/vesin>`_ and stores

    - ``edge_index`` [2, E] long: row 0 is the centre (source) atom ``i``, row 1 the
      neighbour (target) atom ``j``;
    - ``cell_offsets`` [E, 3] (dtype of ``pos``): the integer image shift ``S`` of ``j``, so
      that the edge vector is

      .. math:: \mathbf{r}_{ij} = \mathbf{x}_j - \mathbf{x}_i + \mathbf{S}\,\mathbf{C},

      with the lattice vectors as the rows of ``C`` (see :func:`edge_vectors`).

    The edges are exactly the triples ``(i, j, S)`` of
    ``ase.neighborlist.neighbor_list("ijS", atoms, cutoff)``: pairs with
    :math:`|\mathbf{r}_{ij}| < \mathrm{cutoff}`, no self pair with ``S = 0``, and an atom
    neighbours its own periodic images when the cell is smaller than the cutoff. Positions need
    not be wrapped into the cell. Edges are sorted by ``i``, then ``j``, then ``S``
    lexicographically, so the output is reproducible.

    Periodicity is read from the structure: ``cell`` [1, 3, 3] or [3, 3] and ``pbc`` [1, 3] or
    [3]. Without ``cell`` the structure is a molecule (non-periodic); a ``cell`` without
    ``pbc`` is periodic along all three lattice vectors; mixed ``pbc`` such as
    ``[True, True, False]`` (slabs, wires) is supported, and shifts along non-periodic
    directions are zero.

    The transform acts on one structure at a time: apply it before collation (as a dataset
    transform), not to a :class:`~torch_geometric.data.Batch`. The neighbour search runs on the
    CPU in float64; the outputs are moved to the device of ``pos``.

    Parameters
    ----------
    cutoff
        Neighbour cutoff radius in Å, positive and finite.
    max_neighbors
        If given, keep for every centre atom ``i`` only its ``max_neighbors`` nearest
        neighbours. Distances are compared after rounding to multiples of 1e-8 Å (float64
        ``pos``) or 1e-4 Å (other dtypes), so symmetry-equivalent neighbours tie despite
        floating-point rounding; ties go to the smaller ``j``, then the lexicographically
        smaller ``S``. The choice is deterministic. The truncated graph need not be symmetric
        (``j`` may keep ``i`` while ``i`` drops ``j``).

    Raises
    ------
    ValueError
        If ``cutoff`` is not positive and finite or ``max_neighbors`` is not a positive int;
        when called, if ``pos``, ``cell`` or ``pbc`` have wrong shapes, a direction is periodic
        without a cell, the cell is singular along a periodic direction, a coordinate exceeds
        :data:`~matsci.contract.keys.MAX_ABS_POSITION` (1e5 Å), two atoms (or an atom and an
        image) are closer than 1e-3 Å, or a periodic cell is so large and elongated that vesin's
        cell list cannot grid it. Molecules spread far along one direction, which vesin's own
        bounding box cannot grid either, are searched in a cubic box instead.
    TypeError
        When called on a :class:`~torch_geometric.data.Batch`.

    Examples
    --------
    Two atoms 1.5 Å apart in a cubic cell of 2 Å: within 1 Å, each atom sees the other one's
    periodic image at 0.5 Å; within 2.2 Å it also sees its own six images at 2 Å, and five more
    of the other atom (at 1.5 Å and 2.06 Å).

    >>> import torch
    >>> from torch_geometric.data import Data
    >>> from matsci.transforms import PeriodicRadiusGraph
    >>> data = Data(
    ...     pos=torch.tensor([[0.0, 0.0, 0.0], [1.5, 0.0, 0.0]]),
    ...     cell=2.0 * torch.eye(3).unsqueeze(0),
    ...     pbc=torch.tensor([[True, True, True]]),
    ... )
    >>> data = PeriodicRadiusGraph(cutoff=1.0)(data)
    >>> data.edge_index
    tensor([[0, 1],
            [1, 0]])
    >>> data.cell_offsets
    tensor([[-1.,  0.,  0.],
            [ 1.,  0.,  0.]])
    >>> PeriodicRadiusGraph(cutoff=2.2)(data).edge_index.shape  # 2 atoms x 12 neighbours
    torch.Size([2, 24])
    """

    def __init__(self, cutoff: float, max_neighbors: int | None = None) -> None:
        if isinstance(cutoff, bool) or not isinstance(cutoff, int | float):
            raise TypeError(
                f"PeriodicRadiusGraph(cutoff={cutoff!r}): expected a float, "
                f"got {type(cutoff).__name__}"
            )
        if not (math.isfinite(cutoff) and cutoff > 0):
            raise ValueError(
                f"PeriodicRadiusGraph(cutoff={cutoff!r}): cutoff must be positive and finite"
            )
        if max_neighbors is not None and (
            isinstance(max_neighbors, bool) or not isinstance(max_neighbors, int)
        ):
            raise TypeError(
                f"PeriodicRadiusGraph(max_neighbors={max_neighbors!r}): expected an int or None, "
                f"got {type(max_neighbors).__name__}"
            )
        if max_neighbors is not None and max_neighbors < 1:
            raise ValueError(
                f"PeriodicRadiusGraph(max_neighbors={max_neighbors!r}): "
                "max_neighbors must be a positive int or None"
            )
        self.cutoff = float(cutoff)
        self.max_neighbors = max_neighbors

    def forward(self, data: Data) -> Data:
        """Add ``edge_index`` [2, E] and ``cell_offsets`` [E, 3] to one structure."""
        pos, cell, pbc = _structure(data)
        periodic_vectors = cell[pbc]  # [P, 3], lattice vectors along periodic directions
        if (
            bool(pbc.any())
            and torch.linalg.matrix_rank(periodic_vectors) < periodic_vectors.shape[0]
        ):
            raise ValueError(
                f"PeriodicRadiusGraph: {keys.CELL}={cell.tolist()} is singular along the "
                f"periodic directions {keys.PBC}={pbc.tolist()}"
            )
        points = pos.detach().cpu().to(torch.float64)
        _check_magnitude(points)
        # a plain bool when all directions agree (any vesin), three flags for mixed pbc
        periodic: bool | list[bool] = (
            bool(pbc.all()) if bool(pbc.all() == pbc.any()) else pbc.tolist()
        )
        box = cell if bool(pbc.any()) else torch.zeros(3, 3, dtype=torch.float64)
        if _cell_grid_may_fail(_grid_extents(points, cell, pbc), self.cutoff):
            if bool(pbc.any()):
                raise ValueError(
                    f"PeriodicRadiusGraph: the cell {cell.tolist()} is too large and elongated "
                    f"for vesin's cell list at cutoff {self.cutoff} Å (it would end with no "
                    "cell along one direction and crash)"
                )
            # A molecule spread far along one or two directions: search it in a cubic periodic
            # box larger than the structure plus the cutoff, so no image is within reach.
            lower = points.min(dim=0).values
            side = float((points.max(dim=0).values - lower).max()) + 2 * self.cutoff + 1.0
            points, box, periodic = points - lower, side * torch.eye(3, dtype=torch.float64), True
        neighbor_list = vesin.NeighborList(cutoff=self.cutoff, full_list=True)
        try:
            i, j, shifts, distances = neighbor_list.compute(
                points.numpy(), box.numpy(), periodic, quantities="ijSd"
            )
        except RuntimeError as error:
            raise ValueError(
                f"PeriodicRadiusGraph: vesin could not build the neighbour list for "
                f"{keys.CELL}={cell.tolist()}, {keys.PBC}={pbc.tolist()}: {error}"
            ) from error
        if distances.size and float(distances.min()) < _MIN_DISTANCE:
            first = int(distances.argmin())
            raise ValueError(
                f"PeriodicRadiusGraph: atoms {int(i[first])} and {int(j[first])} (shift "
                f"{shifts[first].tolist()}) are {float(distances[first]):.3g} Å apart, closer than "
                f"{_MIN_DISTANCE} Å: atoms on top of each other (duplicated atoms?)"
            )
        if not bool(pbc.any()):
            shifts = shifts * 0  # the padded box of a spread-out molecule has no images in reach
        source = torch.from_numpy(i.astype("int64"))  # [E]
        target = torch.from_numpy(j.astype("int64"))  # [E]
        offsets = torch.from_numpy(shifts.astype("int64")).reshape(-1, 3)  # [E, 3]
        columns = [source, target, offsets[:, 0], offsets[:, 1], offsets[:, 2]]
        if self.max_neighbors is not None:
            resolution = _TIE_RESOLUTION.get(pos.dtype, _TIE_RESOLUTION_DEFAULT)
            ticks = torch.round(torch.from_numpy(distances) / resolution).to(torch.int64)
            nearest_first = _lexsort([source, ticks, *columns[1:]])
            source, target, offsets = (
                source[nearest_first],
                target[nearest_first],
                offsets[nearest_first],
            )
            # rank of each edge among the edges of its centre atom (edges are grouped by source)
            counts = torch.bincount(source, minlength=pos.shape[0])
            starts = torch.cumsum(counts, 0) - counts
            keep = torch.arange(source.numel()) - starts[source] < self.max_neighbors
            source, target, offsets = source[keep], target[keep], offsets[keep]
            columns = [source, target, offsets[:, 0], offsets[:, 1], offsets[:, 2]]
        order = _lexsort(columns)
        setattr(data, keys.EDGE_INDEX, torch.stack([source[order], target[order]]).to(pos.device))
        setattr(data, keys.CELL_OFFSETS, offsets[order].to(device=pos.device, dtype=pos.dtype))
        return data

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}(cutoff={self.cutoff}, max_neighbors={self.max_neighbors})"
        )
