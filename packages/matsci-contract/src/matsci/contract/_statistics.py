r"""Dataset statistics: the record tasks are set up from, and the streaming math that fills it.

Every statistic of the toolkit is computed here, once, in float64 and one chunk at a time, so
datasets of any size stream through: per-column mean and standard deviation
(:class:`StreamingMoments`), the root mean square of forces (:class:`StreamingRMS`) and
per-element reference energies by least squares on composition (:class:`ReferenceEnergyFit`).
:func:`matsci.data.compute_statistics` runs them over a dataset into a :class:`DatasetStatistics`;
tasks use the same classes when they fit their own buffers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Final

import torch
from torch import Tensor

__all__ = [
    "NUM_ELEMENTS",
    "DatasetStatistics",
    "ReferenceEnergyFit",
    "StreamingMoments",
    "StreamingRMS",
]

NUM_ELEMENTS: Final = 119
"""Length of Z-indexed tables: index 0 is unused, 1..118 are the elements."""

_DTYPE: Final = torch.float64
"""Every accumulator is float64."""


@dataclass(frozen=True)
class DatasetStatistics:
    r"""What :func:`~matsci.data.compute_statistics` found; tensors are float64 on the CPU.

    NaN entries of a target are missing values: they are left out of every statistic.

    Attributes
    ----------
    num_structures, num_atoms : int
        Structures and atoms seen.
    mean, std : dict of str to Tensor
        Per key, the mean and (population) standard deviation of each column: [k] for a
        target of shape [N, k] or [1, k], [9] for ``stress`` [1, 3, 3], [1] for ``energy``.
        A column with no value has mean 0 and std NaN.
    count : dict of str to Tensor
        Per key, the number of values (not NaN) of each column, float64 [k].
    force_rms : float or None
        Root mean square of all force components, when ``force`` was among the keys and had
        a value.
    avg_num_neighbors : float or None
        Edges per atom, from ``edge_index`` or else from ``cutoff``; ``None`` with neither.
    reference_energies : Tensor or None
        [119] per-element energies in eV indexed by Z (0 where an element has no data), when
        ``energy`` was among the keys and had a value.
    reference_residual_rms : float or None
        RMS over structures of :math:`(E - \sum_Z n_Z e_Z) / N`, eV/atom.
    elements : list of int
        Atomic numbers present.
    missing_elements : list of int
        Requested atomic numbers with no data.

    Examples
    --------
    >>> from matsci.contract import DatasetStatistics
    >>> stats = DatasetStatistics(num_structures=0, num_atoms=0)
    >>> stats.force_rms is None
    True
    """

    num_structures: int
    num_atoms: int
    mean: dict[str, Tensor] = field(default_factory=dict)
    std: dict[str, Tensor] = field(default_factory=dict)
    count: dict[str, Tensor] = field(default_factory=dict)
    force_rms: float | None = None
    avg_num_neighbors: float | None = None
    reference_energies: Tensor | None = None
    reference_residual_rms: float | None = None
    elements: list[int] = field(default_factory=list)
    missing_elements: list[int] = field(default_factory=list)


class StreamingMoments:
    r"""Per-column count, mean and sum of squared deviations, merged one chunk at a time.

    Each chunk's count :math:`n_b`, mean :math:`\bar{x}_b` and sum of squared deviations
    :math:`M_{2,b}` are merged into the running ones with the parallel update of Chan, Golub
    and LeVeque (1979), so the result does not depend on how the data is split:

    .. math::
        n = n_a + n_b, \quad \delta = \bar{x}_b - \bar{x}_a, \quad
        \bar{x} = \bar{x}_a + \delta\,\frac{n_b}{n}, \quad
        M_2 = M_{2,a} + M_{2,b} + \delta^2\,\frac{n_a n_b}{n}.

    ``NaN`` entries are missing values and are skipped per column. The accumulators are float64
    on ``device``.

    Parameters
    ----------
    dim : int
        Number of columns ``k``.
    device : torch.device or str, optional
        Where the accumulators live; the CPU by default.

    Attributes
    ----------
    count : Tensor
        [k] values seen per column (float64).
    mean : Tensor
        [k] running mean per column; 0 for a column without values.
    m2 : Tensor
        [k] sum of squared deviations from the mean per column.

    Raises
    ------
    ValueError
        If ``dim`` is not a positive int.

    Examples
    --------
    >>> import torch
    >>> from matsci.contract import StreamingMoments
    >>> moments = StreamingMoments(dim=2)
    >>> moments.update(torch.tensor([[1.0, 2.0], [3.0, float("nan")]]))
    >>> moments.update(torch.tensor([[5.0, 6.0]]))
    >>> moments.count, moments.mean
    (tensor([3., 2.], dtype=torch.float64), tensor([3., 4.], dtype=torch.float64))
    >>> moments.std  # population std: sqrt(8 / 3) and 2
    tensor([1.6330, 2.0000], dtype=torch.float64)
    """

    def __init__(self, dim: int, device: torch.device | str | None = None) -> None:
        if isinstance(dim, bool) or not isinstance(dim, int) or dim <= 0:
            raise ValueError(f"StreamingMoments(dim={dim!r}): expected a positive int")
        self.dim = dim
        self.count = torch.zeros(dim, dtype=_DTYPE, device=device)
        self.mean = torch.zeros(dim, dtype=_DTYPE, device=device)
        self.m2 = torch.zeros(dim, dtype=_DTYPE, device=device)

    @classmethod
    def from_state(cls, count: Tensor, mean: Tensor, m2: Tensor) -> StreamingMoments:
        """Continue from saved accumulators (as a checkpoint holds them).

        Parameters
        ----------
        count, mean, m2 : Tensor
            [k] each, as in the attributes of the same names; cast to float64, not copied
            otherwise (:meth:`update` replaces them, never changes them in place).

        Returns
        -------
        StreamingMoments
            Moments on the device of ``count``.

        Raises
        ------
        ValueError
            If the three are not 1-D tensors of one length k >= 1.
        """
        shapes = [tuple(tensor.shape) for tensor in (count, mean, m2)]
        if count.ndim != 1 or count.shape[0] == 0 or len(set(shapes)) != 1:
            raise ValueError(
                f"StreamingMoments.from_state: count, mean and m2 of shapes {shapes[0]}, "
                f"{shapes[1]} and {shapes[2]}; expected three [k] tensors with k >= 1"
            )
        moments = cls(count.shape[0], device=count.device)
        device = count.device
        moments.count, moments.mean, moments.m2 = (
            tensor.to(device=device, dtype=_DTYPE) for tensor in (count, mean, m2)
        )
        return moments

    @torch.no_grad()
    def update(self, values: Tensor, *, context: str | None = None) -> None:
        """Merge one chunk of M rows.

        Parameters
        ----------
        values : Tensor
            [M, k], or [M] when ``k == 1``; any real dtype. NaN entries are skipped.
        context : str, optional
            Start of error messages (who called), e.g. ``"Normalizer(dim=3).update"``.

        Raises
        ------
        TypeError
            If ``values`` is complex or boolean.
        ValueError
            If ``values`` has the wrong shape or holds an infinite value (nothing is merged).
        """
        where = context or f"StreamingMoments(dim={self.dim}).update"
        if values.is_complex() or values.dtype == torch.bool:
            raise TypeError(f"{where}: expected real values, got dtype {values.dtype}")
        if not (values.ndim == 2 and values.shape[1] == self.dim) and not (
            values.ndim == 1 and self.dim == 1
        ):
            expected = "[M, dim] or [M]" if self.dim == 1 else "[M, dim]"
            raise ValueError(
                f"{where}: values of shape {tuple(values.shape)} do not match {expected} with "
                f"dim {self.dim}"
            )
        chunk = values.detach().to(device=self.count.device, dtype=_DTYPE)
        chunk = chunk.reshape(chunk.shape[0], self.dim)  # [M, k]
        infinite = torch.isinf(chunk)
        if bool(infinite.any()):
            columns = infinite.any(dim=0).nonzero().flatten().tolist()
            raise ValueError(
                f"{where}: infinite value in column(s) {columns}; use NaN for a missing value"
            )
        present = ~torch.isnan(chunk)  # [M, k]
        chunk = torch.where(present, chunk, 0.0)
        count_b = present.sum(dim=0).to(_DTYPE)  # [k]
        mean_b = chunk.sum(dim=0) / count_b.clamp(min=1.0)
        m2_b = torch.where(present, chunk - mean_b, 0.0).square().sum(dim=0)
        self._merge(count_b, mean_b, m2_b)

    def merge(self, other: StreamingMoments) -> None:
        """Merge the moments of another part of the data (another worker, say).

        Parameters
        ----------
        other : StreamingMoments
            Moments with the same number of columns.

        Raises
        ------
        ValueError
            If the numbers of columns differ.
        """
        if other.dim != self.dim:
            raise ValueError(f"StreamingMoments.merge: dim {other.dim} != {self.dim}")
        device = self.count.device
        self._merge(other.count.to(device), other.mean.to(device), other.m2.to(device))

    def _merge(self, count_b: Tensor, mean_b: Tensor, m2_b: Tensor) -> None:
        total = self.count + count_b
        safe_total = total.clamp(min=1.0)  # columns still empty stay at 0
        delta = mean_b - self.mean
        self.mean = self.mean + delta * (count_b / safe_total)
        self.m2 = self.m2 + m2_b + delta.square() * (self.count * count_b / safe_total)
        self.count = total

    @property
    def variance(self) -> Tensor:
        """[k] population variance, ``m2 / count``; NaN for a column without values."""
        return self.m2.clamp(min=0.0) / self.count

    @property
    def std(self) -> Tensor:
        """[k] population standard deviation; NaN for a column without values."""
        return self.variance.sqrt()

    def __repr__(self) -> str:
        return f"StreamingMoments(dim={self.dim}, count={self.count.tolist()})"


class StreamingRMS:
    r"""Root mean square of every entry of a stream of tensors, :math:`\sqrt{\sum x^2 / n}`.

    NaN entries are missing values and are skipped. Sums are float64.

    Attributes
    ----------
    sum_squares : float
        Sum of the squares seen.
    count : int
        Number of entries seen (not NaN).

    Examples
    --------
    >>> import torch
    >>> from matsci.contract import StreamingRMS
    >>> rms = StreamingRMS()
    >>> rms.update(torch.tensor([[3.0, float("nan")], [4.0, 0.0]]))
    >>> rms.update(torch.tensor([0.0]))
    >>> rms.count, rms.rms  # sqrt(25 / 4)
    (4, 2.5)
    """

    def __init__(self) -> None:
        self.sum_squares = 0.0
        self.count = 0

    @torch.no_grad()
    def update(self, values: Tensor) -> None:
        """Add the entries of ``values`` (any shape, real dtype); NaN entries are skipped."""
        chunk = values.detach().to(_DTYPE)
        present = ~torch.isnan(chunk)
        self.sum_squares += float(chunk[present].square().sum())
        self.count += int(present.sum())

    @property
    def rms(self) -> float:
        """The root mean square; NaN before any entry was seen."""
        return math.sqrt(self.sum_squares / self.count) if self.count else math.nan

    def __repr__(self) -> str:
        return f"StreamingRMS(count={self.count}, rms={self.rms:.6g})"


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
