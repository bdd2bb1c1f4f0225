"""Per-element reference energies by least squares on composition, fitted in one streaming pass."""

from __future__ import annotations

import torch
from torch import Tensor

from matsci.contract import NUM_ELEMENTS


class ReferenceEnergyFit:
    """Accumulate the normal equations of ``E_b ≈ Σ_Z n_bZ e_Z`` over batches, then solve.

    Only ``[119, 119]`` sums are kept, so datasets of any size stream through. Elements that
    never occur get a reference energy of 0.

    Examples
    --------
    >>> import torch
    >>> from matsci.tasks.physics import ReferenceEnergyFit
    >>> fit = ReferenceEnergyFit()
    >>> fit.update(torch.tensor([1, 1, 8, 1, 8, 8]), torch.tensor([0, 0, 0, 1, 1, 1]),
    ...            torch.tensor([-14.0, -19.0]))
    >>> fit.solve()[[1, 8]].round(decimals=6)
    tensor([-3., -8.], dtype=torch.float64)
    """

    def __init__(self) -> None:
        self.gram = torch.zeros(NUM_ELEMENTS, NUM_ELEMENTS, dtype=torch.float64)
        self.moment = torch.zeros(NUM_ELEMENTS, dtype=torch.float64)

    def update(self, atomic_numbers: Tensor, batch: Tensor, energy: Tensor) -> None:
        """Add structures: ``atomic_numbers`` [N], ``batch`` [N] structure index, ``energy`` [B].

        Structures whose energy is NaN (missing) are skipped.
        """
        energy = energy.reshape(-1).double().cpu()
        counts = torch.zeros(len(energy), NUM_ELEMENTS, dtype=torch.float64)
        counts.index_put_(
            (batch.cpu(), atomic_numbers.cpu()), torch.ones(len(batch), dtype=torch.float64),
            accumulate=True,
        )  # fmt: skip
        present = ~torch.isnan(energy)
        counts, energy = counts[present], energy[present]
        self.gram += counts.T @ counts
        self.moment += counts.T @ energy

    def solve(self) -> Tensor:
        """Least-squares reference energies ``[119]`` (float64), 0 for absent elements.

        Raises
        ------
        ValueError
            If no structure was added.
        """
        seen = torch.diagonal(self.gram) > 0
        if not bool(seen.any()):
            raise ValueError("ReferenceEnergyFit.solve: no structure with an energy was added")
        index = torch.nonzero(seen).reshape(-1)
        gram = self.gram[index][:, index]
        # lstsq copes with compositions that do not determine every element (rank deficiency).
        solution = torch.linalg.lstsq(gram, self.moment[index].unsqueeze(-1)).solution
        references = torch.zeros(NUM_ELEMENTS, dtype=torch.float64)
        references[index] = solution.reshape(-1)
        return references
