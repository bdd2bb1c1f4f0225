"""The primitive cell of a crystal: its cell with the atoms' centring translations added."""

from __future__ import annotations

import itertools
import math

import torch
from torch import Tensor
from torch_geometric.data import Data

from matsci.contract import keys


class PrimitiveCell:
    """Add the primitive cell of the structure's lattice of translations as ``primitive_cell``.

    The attribute is :data:`matsci.contract.keys.PRIMITIVE_CELL`, ``[1, 3, 3]`` lattice vectors
    as rows in Å.

    A stored cell may hold several lattice points: conventional cells of centred lattices
    (body-centred: 2, rhombohedral in hexagonal axes: 3, face-centred: 4) or supercells. The
    translations that map the crystal onto itself (every atom onto an atom of the same element,
    within ``tolerance`` Å) are found from the first atom's same-element partners and rounded
    to the fraction of smallest denominator (at most 24) within the tolerance; the shortest
    three independent lattice vectors of the cell and these translations form the primitive
    cell (in three dimensions the successive minima of a lattice are a basis). Its volume is
    the cell's divided by the number of lattice points; if the three vectors do not give that
    volume (a tolerance too loose), the cell itself is written. The cost grows as the cube of
    the number of atoms, so apply it once, as a ``pre_transform``.

    Parameters
    ----------
    tolerance
        Largest distance in Å between an atom moved by a translation and its image atom.

    Raises
    ------
    ValueError
        If ``tolerance`` is not positive, or (when called) the structure has no 3-D cell.

    Examples
    --------
    >>> import torch
    >>> from torch_geometric.data import Data
    >>> from matsci.transforms import PrimitiveCell
    >>> cubic = 4.0 * torch.eye(3)  # a body-centred cubic conventional cell: 2 lattice points
    >>> data = Data(pos=torch.tensor([[0.0, 0.0, 0.0], [2.0, 2.0, 2.0]]),
    ...             atomic_numbers=torch.tensor([26, 26]), cell=cubic.unsqueeze(0))
    >>> primitive = PrimitiveCell()(data).primitive_cell[0]
    >>> round(float(torch.linalg.det(primitive).abs()), 6)  # half of 64 Å³
    32.0
    """

    def __init__(self, tolerance: float = 0.01) -> None:
        if not (math.isfinite(tolerance) and tolerance > 0):
            raise ValueError(f"PrimitiveCell(tolerance={tolerance!r}): expected a positive length")
        self.tolerance = float(tolerance)

    def __call__(self, data: Data) -> Data:
        """Return ``data`` with ``primitive_cell`` ``[1, 3, 3]`` (in the dtype of ``pos``).

        Parameters
        ----------
        data
            One periodic structure: ``pos`` [N, 3], ``atomic_numbers`` [N], ``cell`` [1, 3, 3].

        Returns
        -------
        Data
            The same object, with ``primitive_cell`` added.
        """
        cell_value = data.get(keys.CELL)
        if cell_value is None or cell_value.numel() != 9:
            raise ValueError(
                "PrimitiveCell: the structure needs a 3-D 'cell' [1, 3, 3]; molecules have no "
                "lattice"
            )
        cell = cell_value.reshape(3, 3).to(torch.float64)
        pos = data[keys.POS]
        translations = self._centring(pos.to(torch.float64), data[keys.ATOMIC_NUMBERS], cell)
        data[keys.PRIMITIVE_CELL] = self._basis(cell, translations).to(pos.dtype).unsqueeze(0)
        return data

    def _centring(self, pos: Tensor, numbers: Tensor, cell: Tensor) -> list[Tensor]:
        """Fractional translations (other than 0) that map every atom onto a same-element atom."""
        fractional = pos @ torch.linalg.inv(cell)  # [N, 3]
        same = numbers.unsqueeze(0) == numbers.unsqueeze(1)  # [N, N]
        found = []
        for partner in torch.nonzero(same[0]).flatten().tolist()[1:]:
            shift = fractional[partner] - fractional[0]
            moved = fractional + shift  # [N, 3]
            offset = moved.unsqueeze(1) - fractional.unsqueeze(0)  # [N, N, 3]
            offset = offset - offset.round()
            distance = (offset @ cell).norm(dim=-1)  # [N, N] Å
            if bool(((distance < self.tolerance) & same).any(dim=1).all()):
                found.append(self._snap(shift - shift.round(), cell))
        return found

    def _snap(self, shift: Tensor, cell: Tensor) -> Tensor:
        """The fraction of smallest denominator (at most 24) within the tolerance of ``shift``.

        Translations found for displaced atoms are slightly off; lattice translations are
        rational in cell coordinates (1/2, 1/3, 1/4, ...), and snapping keeps the lattice exact.
        """
        for denominator in range(1, 25):
            snapped = torch.round(shift * denominator) / denominator
            if float(((snapped - shift) @ cell).norm()) < self.tolerance:
                return snapped
        return shift

    def _basis(self, cell: Tensor, translations: list[Tensor]) -> Tensor:
        """The shortest three independent vectors of the lattice of the cell and translations."""
        volume = float(torch.linalg.det(cell).abs()) / (1 + len(translations))
        if not translations:
            return cell
        shifts = torch.tensor(list(itertools.product((-1.0, 0.0, 1.0), repeat=3)), dtype=cell.dtype)
        candidates = torch.cat(
            [shifts + t for t in [torch.zeros(3, dtype=cell.dtype), *translations]]
        )
        vectors = candidates @ cell  # [27 (T + 1), 3]
        vectors = vectors[vectors.norm(dim=-1) > 1e-8]
        basis: list[Tensor] = []
        for vector in vectors[vectors.norm(dim=-1).argsort()]:
            trial = torch.stack([*basis, vector])
            if torch.linalg.matrix_rank(trial, atol=1e-6) > len(basis):
                basis.append(vector)
                if len(basis) == 3:
                    break
        primitive = torch.stack(basis)
        if abs(float(torch.linalg.det(primitive).abs()) - volume) > 1e-3 * volume:
            return cell
        return primitive

    def __repr__(self) -> str:
        return f"PrimitiveCell(tolerance={self.tolerance})"
