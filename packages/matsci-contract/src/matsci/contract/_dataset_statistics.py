"""The record of dataset statistics that tasks are set up from, and the length of Z tables.

:func:`matsci.data.compute_statistics` fills a :class:`DatasetStatistics` with the streaming
estimators of :mod:`matsci.contract` (:class:`~matsci.contract.StreamingMoments`,
:class:`~matsci.contract.StreamingRMS`, :class:`~matsci.contract.ReferenceEnergyFit`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from torch import Tensor

__all__ = ["NUM_ELEMENTS", "DatasetStatistics"]

NUM_ELEMENTS: Final = 119
"""Length of Z-indexed tables: index 0 is unused, 1..118 are the elements."""


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
