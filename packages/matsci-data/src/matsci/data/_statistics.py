# mypy: untyped-calls-exclude=ase
r"""Dataset statistics for normalization, computed in one streaming pass.

Per-key mean and standard deviation, force RMS, average neighbour count and per-element
reference energies fitted by least squares on composition,
:math:`E_b \approx \sum_Z n_{bZ} e_Z`. The math is that of :mod:`matsci.contract`
(:class:`~matsci.contract.StreamingMoments`, :class:`~matsci.contract.StreamingRMS`,
:class:`~matsci.contract.ReferenceEnergyFit`), the same classes tasks fit their buffers with;
this module walks a dataset through them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Final

import numpy as np
import torch
from ase.neighborlist import primitive_neighbor_list
from torch import Tensor
from torch_geometric.data import Data

from matsci.contract import (
    NUM_ELEMENTS,
    DatasetStatistics,
    ReferenceEnergyFit,
    StreamingMoments,
    StreamingRMS,
)
from matsci.contract import keys as K

__all__ = ["DatasetStatistics", "compute_statistics", "fit_reference_energies"]

_PTR: Final = "ptr"  # PyG's per-batch offsets
_NOT_TARGETS: Final = K.STRUCTURE_KEYS | {_PTR}


def fit_reference_energies(compositions: Tensor, energies: Tensor) -> Tensor:
    r"""Fit per-element reference energies by least squares on composition.

    Solves :math:`\min_e \sum_b (E_b - \sum_Z n_{bZ} e_Z)^2` over the elements present with
    :class:`~matsci.contract.ReferenceEnergyFit`; a degenerate fit (say, every structure of
    the same stoichiometry) gets the minimum-norm solution. Structures whose energy is NaN
    are left out.

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
        If the shapes do not match, or no structure has an energy.

    Examples
    --------
    >>> counts = torch.zeros(3, 30)
    >>> counts[0, 29], counts[1, 13], counts[2, 13], counts[2, 29] = 4, 2, 1, 3
    >>> energies = torch.tensor([4 * -3.5, 2 * -3.0, -3.0 + 3 * -3.5])
    >>> fit_reference_energies(counts, energies)[[13, 29]]
    tensor([-3.0000, -3.5000], dtype=torch.float64)
    """
    fit = ReferenceEnergyFit()
    fit.update_compositions(compositions, energies)
    return fit.solve()


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


def _update_moments(moments: dict[str, StreamingMoments], key: str, value: Tensor) -> None:
    """Stream ``value`` [R, ...] as rows [R, k] into the moments of ``key``."""
    if value.ndim == 0 or value.shape[0] == 0:
        if value.ndim == 0:
            raise ValueError(f"compute_statistics: key {key!r} is a scalar; expected [R, ...]")
        return
    rows = value.detach().cpu().double()
    rows = rows.reshape(rows.shape[0], -1)  # [R, k]
    known = moments.get(key)
    if known is None:
        if rows.shape[1] == 0:
            raise ValueError(f"compute_statistics: key {key!r} has no columns")
        known = moments[key] = StreamingMoments(rows.shape[1])
    elif rows.shape[1] != known.dim:
        raise ValueError(
            f"compute_statistics: key {key!r} has {rows.shape[1]} columns in one batch and "
            f"{known.dim} in an earlier one"
        )
    known.update(rows, context=f"compute_statistics: key {key!r}")


def compute_statistics(
    data: Iterable[Data],
    keys: Sequence[str] | None = None,
    cutoff: float | None = None,
    elements: Sequence[int] | None = None,
) -> DatasetStatistics:
    """Compute normalization statistics in one pass over structures or batches.

    NaN entries of a target (missing values) are left out of every statistic: per column from
    the means and standard deviations, per component from the force RMS, per structure from
    the reference energies.

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
        If an item lacks a requested key, a key's width changes, a target holds an infinite
        value, or there is no data.

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
    moments: dict[str, StreamingMoments] = {}
    references = ReferenceEnergyFit()
    force_rms = StreamingRMS()
    element_counts = torch.zeros(NUM_ELEMENTS, dtype=torch.long)
    num_structures = num_atoms = 0
    edges, edge_atoms = 0, 0
    selected: list[str] | None = None if keys is None else list(keys)

    for item in data:
        atomic_numbers = item[K.ATOMIC_NUMBERS].detach().cpu().long()
        n = atomic_numbers.shape[0]
        if K.NATOMS in item:
            natoms = item[K.NATOMS].detach().cpu().long().reshape(-1)
        else:
            natoms = torch.tensor([n])
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
            _update_moments(moments, key, item[key])
        if K.FORCE in selected:
            force_rms.update(item[K.FORCE])
        if K.ENERGY in selected:
            batch = torch.repeat_interleave(torch.arange(natoms.shape[0]), natoms)
            references.update(atomic_numbers, batch, item[K.ENERGY])
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
    fitted = references.num_structures > 0
    reference = references.solve() if fitted else None
    return DatasetStatistics(
        num_structures=num_structures,
        num_atoms=num_atoms,
        mean={key: m.mean for key, m in moments.items()},
        std={key: m.std for key, m in moments.items()},
        count={key: m.count for key, m in moments.items()},
        force_rms=force_rms.rms if force_rms.count else None,
        avg_num_neighbors=edges / edge_atoms if edge_atoms else None,
        reference_energies=reference,
        reference_residual_rms=references.residual_rms(reference) if fitted else None,
        elements=present,
        missing_elements=sorted(set(elements or ()) - set(present)),
    )
