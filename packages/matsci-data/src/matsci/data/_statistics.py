# mypy: untyped-calls-exclude=ase
r"""Dataset statistics for normalization, computed in one streaming pass.

Per-key mean and standard deviation, force RMS, average neighbour count and per-element
reference energies fitted by least squares on composition,
:math:`E_b \approx \sum_Z n_{bZ} e_Z`, from the accumulated normal equations
:math:`(A^\top A) e = A^\top E`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Final

import numpy as np
import torch
from ase.neighborlist import primitive_neighbor_list
from torch import Tensor
from torch_geometric.data import Data

from matsci.contract import NUM_ELEMENTS, DatasetStatistics
from matsci.contract import keys as K

__all__ = ["DatasetStatistics", "compute_statistics", "fit_reference_energies"]

_PTR: Final = "ptr"  # PyG's per-batch offsets
_NOT_TARGETS: Final = K.STRUCTURE_KEYS | {_PTR}


class _Moments:
    """Running count, mean and sum of squared deviations per column (Chan et al., 1979)."""

    def __init__(self) -> None:
        self.count = 0
        self.mean = torch.zeros(0, dtype=torch.float64)
        self.m2 = torch.zeros(0, dtype=torch.float64)

    def update(self, rows: Tensor, key: str) -> None:
        """Merge ``rows`` [R, k]."""
        if rows.shape[0] == 0:
            return
        if self.count and rows.shape[1] != self.mean.shape[0]:
            raise ValueError(
                f"compute_statistics: key {key!r} has {rows.shape[1]} columns in one batch and "
                f"{self.mean.shape[0]} in an earlier one"
            )
        count = rows.shape[0]
        mean = rows.mean(dim=0)
        m2 = ((rows - mean) ** 2).sum(dim=0)
        if not self.count:
            self.count, self.mean, self.m2 = count, mean, m2
            return
        total = self.count + count
        delta = mean - self.mean
        self.mean = self.mean + delta * (count / total)
        self.m2 = self.m2 + m2 + delta**2 * (self.count * count / total)
        self.count = total


class _ReferenceFit:
    """Normal equations of the composition fit, accumulated over batches.

    ``A`` [B, Z] holds atom counts per element, ``y`` [B] total energies, ``w = 1/N²`` weights
    the per-atom residual.
    """

    def __init__(self) -> None:
        self.ata = torch.zeros(NUM_ELEMENTS, NUM_ELEMENTS, dtype=torch.float64)
        self.aty = torch.zeros(NUM_ELEMENTS, dtype=torch.float64)
        self.w_ata = torch.zeros_like(self.ata)
        self.w_aty = torch.zeros_like(self.aty)
        self.w_yy = 0.0
        self.count = 0

    def update(self, counts: Tensor, energies: Tensor) -> None:
        weights = counts.sum(dim=1).clamp(min=1.0) ** -2  # [B]
        self.ata += counts.T @ counts
        self.aty += counts.T @ energies
        self.w_ata += counts.T @ (counts * weights[:, None])
        self.w_aty += counts.T @ (energies * weights)
        self.w_yy += float((energies**2 * weights).sum())
        self.count += counts.shape[0]

    def solve(self) -> tuple[Tensor, float]:
        """Per-element energies [Z] (min-norm where the fit is degenerate), residual RMS/atom."""
        present = torch.diagonal(self.ata) > 0
        solution = torch.zeros(NUM_ELEMENTS, dtype=torch.float64)
        if self.count == 0:
            return solution, math.nan
        reduced = self.ata[present][:, present]
        fitted = np.linalg.lstsq(reduced.numpy(), self.aty[present].numpy(), rcond=None)[0]
        solution[present] = torch.from_numpy(fitted)
        squares = self.w_yy - 2 * solution @ self.w_aty + solution @ self.w_ata @ solution
        return solution, math.sqrt(max(float(squares), 0.0) / self.count)


def _composition(atomic_numbers: Tensor, batch: Tensor, num_structures: int) -> Tensor:
    """Atom counts per structure and element, [B, 119] float64."""
    counts = torch.zeros(num_structures, NUM_ELEMENTS, dtype=torch.float64)
    ones = torch.ones(atomic_numbers.shape[0], dtype=torch.float64)
    return counts.index_put_((batch, atomic_numbers), ones, accumulate=True)


def fit_reference_energies(compositions: Tensor, energies: Tensor) -> Tensor:
    r"""Fit per-element reference energies by least squares on composition.

    Solves :math:`\min_e \sum_b (E_b - \sum_Z n_{bZ} e_Z)^2` over the elements present;
    a degenerate fit (say, every structure of the same stoichiometry) gets the minimum-norm
    solution.

    Parameters
    ----------
    compositions : Tensor
        [B, M] atom counts, column Z for atomic number Z (M ≤ 119).
    energies : Tensor
        [B] total energies, eV.

    Returns
    -------
    Tensor
        [119] float64 per-element energies indexed by Z, 0 for elements with no atoms.

    Raises
    ------
    ValueError
        If the shapes do not match.

    Examples
    --------
    >>> counts = torch.zeros(3, 30)
    >>> counts[0, 29], counts[1, 13], counts[2, 13], counts[2, 29] = 4, 2, 1, 3
    >>> energies = torch.tensor([4 * -3.5, 2 * -3.0, -3.0 + 3 * -3.5])
    >>> fit_reference_energies(counts, energies)[[13, 29]]
    tensor([-3.0000, -3.5000], dtype=torch.float64)
    """
    if compositions.dim() != 2 or compositions.shape[1] > NUM_ELEMENTS:
        raise ValueError(
            f"fit_reference_energies: compositions of shape {tuple(compositions.shape)}; "
            f"expected [B, M] with M <= {NUM_ELEMENTS}"
        )
    if energies.shape != (compositions.shape[0],):
        raise ValueError(
            f"fit_reference_energies: energies of shape {tuple(energies.shape)}; expected "
            f"[{compositions.shape[0]}] to match compositions"
        )
    counts = torch.zeros(compositions.shape[0], NUM_ELEMENTS, dtype=torch.float64)
    counts[:, : compositions.shape[1]] = compositions.detach().cpu().double()
    fit = _ReferenceFit()
    fit.update(counts, energies.detach().cpu().double())
    return fit.solve()[0]


def _neighbor_count(item: Data, natoms: Tensor, cutoff: float) -> int:
    """Edges within ``cutoff`` over the structures of ``item``, with ASE's neighbour list."""
    positions = item[K.POS].detach().cpu().double().numpy()
    cells = (
        item[K.CELL].detach().cpu().double().numpy().reshape(-1, 3, 3)
        if K.CELL in item
        else np.zeros((natoms.shape[0], 3, 3))
    )
    pbcs = (
        item[K.PBC].detach().cpu().numpy().reshape(-1, 3)
        if K.PBC in item
        else np.zeros((natoms.shape[0], 3), dtype=bool)
    )
    total, start = 0, 0
    for b, n in enumerate(natoms.tolist()):
        first = primitive_neighbor_list(
            "i", pbcs[b], cells[b], positions[start : start + n], cutoff, self_interaction=False
        )
        total += len(first)
        start += n
    return total


def compute_statistics(
    data: Iterable[Data],
    keys: Sequence[str] | None = None,
    cutoff: float | None = None,
    elements: Sequence[int] | None = None,
) -> DatasetStatistics:
    """Compute normalization statistics in one pass over structures or batches.

    Parameters
    ----------
    data : iterable of Data or Batch
        A dataset (one structure per item) or a ``DataLoader`` (batches).
    keys : sequence of str, optional
        Targets to describe; ``None`` takes every target attribute of the first item. With
        ``energy`` the per-element reference energies are fitted; with ``force`` the force RMS
        is computed.
    cutoff : float, optional
        Radius (Å) for the average neighbour count where items have no ``edge_index``.
    elements : sequence of int, optional
        Atomic numbers the model should cover; those without data are reported missing.

    Returns
    -------
    DatasetStatistics
        The statistics; float64 tensors.

    Raises
    ------
    ValueError
        If an item lacks a requested key, a key's width changes, or there is no data.

    Examples
    --------
    >>> from ase.build import bulk
    >>> from matsci.data._convert import atoms_to_data
    >>> structures = []
    >>> for symbol, energy in [("Cu", -3.5), ("Al", -3.0)]:
    ...     atoms = bulk(symbol, cubic=True)
    ...     atoms.info["energy"] = energy * len(atoms)
    ...     structures.append(atoms_to_data(atoms))
    >>> stats = compute_statistics(structures, keys=["energy"], cutoff=3.0)
    >>> stats.reference_energies[[13, 29]], stats.elements
    (tensor([-3.0000, -3.5000], dtype=torch.float64), [13, 29])
    >>> stats.avg_num_neighbors
    12.0
    """
    moments: dict[str, _Moments] = {}
    fit = _ReferenceFit()
    element_counts = torch.zeros(NUM_ELEMENTS, dtype=torch.long)
    num_structures = num_atoms = 0
    force_squares, force_components = 0.0, 0
    edges, edge_atoms = 0, 0
    selected: list[str] | None = None if keys is None else list(keys)

    for item in data:
        atomic_numbers = item[K.ATOMIC_NUMBERS].detach().cpu().long()
        n = atomic_numbers.shape[0]
        if K.NATOMS in item:
            natoms = item[K.NATOMS].detach().cpu().long().reshape(-1)
        else:
            natoms = torch.tensor([n])
        batch = torch.repeat_interleave(torch.arange(natoms.shape[0]), natoms)
        if selected is None:
            selected = sorted(
                key
                for key in item.keys()  # noqa: SIM118 (Data is no Mapping)
                if key not in _NOT_TARGETS and isinstance(item[key], Tensor)
            )
        for key in selected:
            if key not in item:
                raise ValueError(
                    f"compute_statistics: an item has no {key!r}; it holds {sorted(item.keys())}"
                )
            value = item[key].detach().cpu().double()
            moments.setdefault(key, _Moments()).update(value.reshape(value.shape[0], -1), key)
        if K.FORCE in selected:
            force = item[K.FORCE].detach().cpu().double()
            force_squares += float((force**2).sum())
            force_components += force.numel()
        if K.ENERGY in selected:
            counts = _composition(atomic_numbers, batch, natoms.shape[0])
            fit.update(counts, item[K.ENERGY].detach().cpu().double().reshape(-1))
        if K.EDGE_INDEX in item:
            edges += item[K.EDGE_INDEX].shape[1]
            edge_atoms += n
        elif cutoff is not None:
            edges += _neighbor_count(item, natoms, cutoff)
            edge_atoms += n
        element_counts += torch.bincount(atomic_numbers, minlength=NUM_ELEMENTS)
        num_structures += natoms.shape[0]
        num_atoms += n

    if num_structures == 0:
        raise ValueError("compute_statistics: the data holds no structures")
    present = torch.nonzero(element_counts).flatten().tolist()
    reference, residual = fit.solve() if fit.count else (None, None)
    return DatasetStatistics(
        num_structures=num_structures,
        num_atoms=num_atoms,
        mean={key: m.mean for key, m in moments.items()},
        std={key: (m.m2 / m.count).sqrt() for key, m in moments.items()},
        force_rms=math.sqrt(force_squares / force_components) if force_components else None,
        avg_num_neighbors=edges / edge_atoms if edge_atoms else None,
        reference_energies=reference,
        reference_residual_rms=residual,
        elements=present,
        missing_elements=sorted(set(elements or ()) - set(present)),
    )
