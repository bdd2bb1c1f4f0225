"""Per-element reference energies by least squares on composition, streamed.

:class:`ReferenceEnergyFit` accumulates the normal equations batch by batch, so datasets of any
size stream through; :func:`matsci.data.compute_statistics` and ``ForceRegressionTask`` both
fit their reference energies with it.
"""

from __future__ import annotations

import math
from typing import Final

import torch
from torch import Tensor

from matsci.contract._dataset_statistics import NUM_ELEMENTS

__all__ = ["ReferenceEnergyFit"]

_DTYPE: Final = torch.float64
"""Every accumulator is float64."""


class ReferenceEnergyFit:
    r"""Per-element reference energies by least squares on composition, fitted in one pass.

    Fits :math:`E_b \approx \sum_Z n_{bZ} e_Z` for structures :math:`b` with :math:`n_{bZ}`
    atoms of element :math:`Z`, accumulating the normal equations
    :math:`(A^\top A)\, e = A^\top E` batch by batch: only [119, 119] sums are kept, so datasets
    of any size stream through. Elements that never occur get a reference energy of 0; where
    the compositions do not determine every element (all structures of one stoichiometry, say)
    the minimum-norm solution is taken. Structures whose energy is NaN (missing) are skipped.
    The per-atom weighted sums kept beside give the residual RMS per atom
    (:meth:`residual_rms`).

    Attributes
    ----------
    gram : Tensor
        [119, 119] :math:`A^\top A`, float64.
    moment : Tensor
        [119] :math:`A^\top E`, float64.
    num_structures : int
        Structures added (with an energy).

    Examples
    --------
    >>> import torch
    >>> from matsci.contract import ReferenceEnergyFit
    >>> fit = ReferenceEnergyFit()
    >>> fit.update(torch.tensor([1, 1, 8, 1, 8, 8]), torch.tensor([0, 0, 0, 1, 1, 1]),
    ...            torch.tensor([-14.0, -19.0]))
    >>> fit.solve()[[1, 8]].round(decimals=6)
    tensor([-3., -8.], dtype=torch.float64)
    >>> fit.residual_rms() < 1e-6  # an exact fit, up to rounding
    True
    """

    def __init__(self) -> None:
        self.gram = torch.zeros(NUM_ELEMENTS, NUM_ELEMENTS, dtype=_DTYPE)
        self.moment = torch.zeros(NUM_ELEMENTS, dtype=_DTYPE)
        # The same sums weighted by 1 / N_b², for the per-atom residual.
        self._weighted_gram = torch.zeros_like(self.gram)
        self._weighted_moment = torch.zeros_like(self.moment)
        self._weighted_squares = 0.0
        self.num_structures = 0

    @torch.no_grad()
    def update(self, atomic_numbers: Tensor, batch: Tensor, energy: Tensor) -> None:
        """Add the structures of a batch.

        Parameters
        ----------
        atomic_numbers : Tensor
            [N] atomic numbers, 1..118.
        batch : Tensor
            [N] index of each atom's structure, 0..B-1.
        energy : Tensor
            [B] (or [B, 1]) total energies, eV; NaN for a structure without one.

        Raises
        ------
        ValueError
            If ``atomic_numbers`` and ``batch`` differ in length, an atomic number is outside
            0..118, or a structure index has no energy.
        """
        numbers = atomic_numbers.detach().cpu().long().reshape(-1)
        index = batch.detach().cpu().long().reshape(-1)
        energies = energy.detach().cpu().to(_DTYPE).reshape(-1)
        if numbers.shape != index.shape:
            raise ValueError(
                f"ReferenceEnergyFit.update: atomic_numbers [{numbers.shape[0]}] and batch "
                f"[{index.shape[0]}] must have one entry per atom"
            )
        if numbers.numel() and not 0 <= int(numbers.min()) <= int(numbers.max()) < NUM_ELEMENTS:
            raise ValueError(
                f"ReferenceEnergyFit.update: atomic numbers from {int(numbers.min())} to "
                f"{int(numbers.max())}; expected 1..{NUM_ELEMENTS - 1}"
            )
        if index.numel() and not 0 <= int(index.min()) <= int(index.max()) < len(energies):
            raise ValueError(
                f"ReferenceEnergyFit.update: batch indices from {int(index.min())} to "
                f"{int(index.max())} for {len(energies)} energies"
            )
        counts = torch.zeros(energies.shape[0], NUM_ELEMENTS, dtype=_DTYPE)
        counts.index_put_((index, numbers), torch.ones(len(index), dtype=_DTYPE), accumulate=True)
        self.update_compositions(counts, energies)

    @torch.no_grad()
    def update_compositions(self, compositions: Tensor, energy: Tensor) -> None:
        """Add structures given by their compositions.

        Parameters
        ----------
        compositions : Tensor
            [B, M] atom counts, column Z for atomic number Z (M ≤ 119).
        energy : Tensor
            [B] total energies, eV; NaN for a structure without one.

        Raises
        ------
        ValueError
            If the shapes do not match.
        """
        if compositions.ndim != 2 or compositions.shape[1] > NUM_ELEMENTS:
            raise ValueError(
                f"ReferenceEnergyFit: compositions of shape {tuple(compositions.shape)}; "
                f"expected [B, M] with M <= {NUM_ELEMENTS}"
            )
        if energy.shape != (compositions.shape[0],):
            raise ValueError(
                f"ReferenceEnergyFit: energies of shape {tuple(energy.shape)}; expected "
                f"[{compositions.shape[0]}] to match compositions"
            )
        counts = torch.zeros(compositions.shape[0], NUM_ELEMENTS, dtype=_DTYPE)
        counts[:, : compositions.shape[1]] = compositions.detach().cpu().to(_DTYPE)
        energies = energy.detach().cpu().to(_DTYPE)
        present = ~torch.isnan(energies)
        counts, energies = counts[present], energies[present]  # [B', 119], [B']
        weights = counts.sum(dim=1).clamp(min=1.0) ** -2  # [B'], 1 / N²
        self.gram += counts.T @ counts
        self.moment += counts.T @ energies
        self._weighted_gram += counts.T @ (counts * weights[:, None])
        self._weighted_moment += counts.T @ (energies * weights)
        self._weighted_squares += float((energies.square() * weights).sum())
        self.num_structures += int(counts.shape[0])

    def solve(self) -> Tensor:
        """Least-squares reference energies (minimum norm where the fit is degenerate).

        Returns
        -------
        Tensor
            [119] float64 energies in eV indexed by Z, 0 for elements without atoms.

        Raises
        ------
        ValueError
            If no structure with an energy was added.
        """
        seen = torch.diagonal(self.gram) > 0
        if not bool(seen.any()):
            raise ValueError("ReferenceEnergyFit.solve: no structure with an energy was added")
        index = torch.nonzero(seen).reshape(-1)
        gram = self.gram[index][:, index]
        # SVD-based: copes with compositions that do not determine every element.
        solution = torch.linalg.lstsq(gram, self.moment[index, None], driver="gelsd").solution
        references = torch.zeros(NUM_ELEMENTS, dtype=_DTYPE)
        references[index] = solution.reshape(-1)
        return references

    def residual_rms(self, references: Tensor | None = None) -> float:
        r"""RMS over structures of the per-atom residual :math:`(E_b - \sum_Z n_{bZ} e_Z) / N_b`.

        Expanded in the accumulated sums (nothing per structure is kept), so it carries rounding
        noise of about 1e-8 times the energy per atom (the square root of float64's epsilon): an
        exact fit gives such a value, not 0.

        Parameters
        ----------
        references : Tensor, optional
            [119] reference energies; those of :meth:`solve` by default.

        Returns
        -------
        float
            eV/atom.

        Raises
        ------
        ValueError
            If no structure with an energy was added, or ``references`` is not [119].
        """
        if self.num_structures == 0:
            raise ValueError(
                "ReferenceEnergyFit.residual_rms: no structure with an energy was added"
            )
        energies = self.solve() if references is None else references.detach().cpu().to(_DTYPE)
        if energies.shape != (NUM_ELEMENTS,):
            raise ValueError(
                f"ReferenceEnergyFit.residual_rms: references of shape {tuple(energies.shape)}; "
                f"expected [{NUM_ELEMENTS}]"
            )
        squares = (
            self._weighted_squares
            - 2 * energies @ self._weighted_moment
            + energies @ self._weighted_gram @ energies
        )
        return math.sqrt(max(float(squares), 0.0) / self.num_structures)

    def __repr__(self) -> str:
        return f"ReferenceEnergyFit(num_structures={self.num_structures})"
