# mypy: untyped-calls-exclude=ase
"""Conversion between ASE :class:`~ase.Atoms` and PyG :class:`~torch_geometric.data.Data`.

One structure becomes one ``Data`` that follows the data contract (``matsci.contract.keys``):
``pos`` [N, 3], ``atomic_numbers`` [N], ``cell`` [1, 3, 3], ``pbc`` [1, 3], ``natoms`` [1] and
one attribute per target: graph-level targets have shape ``[1]`` or ``[1, *shape]``, node-level
targets ``[N, k]``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import all_properties
from ase.calculators.singlepoint import SinglePointCalculator
from numpy.typing import NDArray
from torch import Tensor
from torch_geometric.data import Batch, Data

from matsci.contract import keys as K

__all__ = ["atoms_to_data", "data_to_atoms"]


# ASE calls a few results by other names than the data contract does.
_ASE_TO_KEY: Final[Mapping[str, str]] = {"energy": K.ENERGY, "forces": K.FORCE, "stress": K.STRESS}
_KEY_TO_ASE: Final[Mapping[str, str]] = {key: name for name, key in _ASE_TO_KEY.items()}
# ASE calculator properties with one row per atom (ase.calculators.calculator.all_properties).
_PER_ATOM_RESULTS: Final = frozenset(
    {"forces", "stresses", "charges", "magmoms", "energies", "born_effective_charges"}
)
# `Atoms.arrays` entries that are the structure itself, not targets.
_STRUCTURE_ARRAYS: Final = frozenset({"numbers", "positions"})
# Physical targets are real numbers even where a file stores an integer (an energy of 0).
_REAL_KEYS: Final = frozenset({K.ENERGY, K.FORCE, K.STRESS})
_VOIGT: Final = ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))
"""Voigt order of ASE's 6-vector stress: xx, yy, zz, yz, xz, xy."""


def _describe(atoms: Atoms, index: int | None) -> str:
    """Name a structure in error messages: ``structure 3 (Cu3Au)``."""
    formula = atoms.get_chemical_formula()
    return f"structure {index} ({formula})" if index is not None else f"structure {formula}"


def _as_tensor(value: Any, key: str) -> Tensor | None:
    """A numeric value as a tensor of its kind (bool, long or default float); None otherwise."""
    array = np.asarray(value)
    if key in _REAL_KEYS and array.dtype.kind in "biuf":
        return torch.tensor(array, dtype=torch.get_default_dtype())
    if array.dtype.kind == "b":
        return torch.tensor(array.astype(bool))
    if array.dtype.kind in "iu":
        return torch.tensor(array.astype(np.int64))
    if array.dtype.kind == "f":
        return torch.tensor(array, dtype=torch.get_default_dtype())
    return None


def _stress_3x3(value: Any, where: str) -> NDArray[np.float64]:
    """ASE stress (Voigt 6-vector or 3x3) as a 3x3 array in eV/Å³."""
    stress = np.asarray(value, dtype=np.float64)
    if stress.shape == (3, 3):
        return stress
    if stress.shape == (6,):
        full = np.empty((3, 3))
        for column, (i, j) in enumerate(_VOIGT):
            full[i, j] = full[j, i] = stress[column]
        return full
    raise ValueError(
        f"atoms_to_data: {where} has a stress of shape {stress.shape}; "
        "expected a Voigt 6-vector (xx, yy, zz, yz, xz, xy) or a 3x3 tensor in eV/Å³"
    )


def _calculator_results(atoms: Atoms) -> dict[str, Any]:
    """Results the attached calculator holds for the atoms' current state; never computes."""
    calc = atoms.calc
    if calc is None:
        return {}
    # One comparison of the atoms with the calculator's copy: `get_property` would repeat it
    # for every property (a third of the time to read a structure from a database). An object
    # without ASE's `check_state` is taken at its word.
    check_state = getattr(calc, "check_state", None)
    if check_state is not None and check_state(atoms):
        return {}  # results of another state: stale, as `get_property` would find them
    results = getattr(calc, "results", {})
    return {name: value for name, value in results.items() if value is not None}


def _mapped(
    atoms: Atoms, results: Mapping[str, Any], key_map: Mapping[str, str], where: str
) -> list[tuple[str, str, Any, bool]]:
    """Find each stored name of ``key_map``: (target, stored name, value, per atom)."""
    found: list[tuple[str, str, Any, bool]] = []
    for target, stored in key_map.items():
        ase_name = _KEY_TO_ASE.get(stored, stored)
        if stored in results or ase_name in results:
            name = stored if stored in results else ase_name
            found.append((target, name, results[name], name in _PER_ATOM_RESULTS))
        elif stored in atoms.info:
            found.append((target, stored, atoms.info[stored], False))
        elif stored in atoms.arrays and stored not in _STRUCTURE_ARRAYS:
            found.append((target, stored, atoms.arrays[stored], True))
        else:
            arrays = sorted(set(atoms.arrays) - _STRUCTURE_ARRAYS)
            raise ValueError(
                f"atoms_to_data: {where} has no stored name {stored!r} (key_map[{target!r}]); "
                f"available: calculator results {sorted(results)}, info/key-value pairs/data "
                f"{sorted(atoms.info)}, per-atom arrays {arrays}"
            )
    return found


def _targets(
    atoms: Atoms, where: str, key_map: Mapping[str, str] | None = None
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Every numeric target of ``atoms``: (graph-level, node-level), keyed by batch key."""
    n = len(atoms)
    graph: dict[str, Tensor] = {}
    node: dict[str, Tensor] = {}

    def add_node(key: str, value: Any, source: str) -> None:
        tensor = _as_tensor(value, key)
        if tensor is None or key in node or key in graph:
            return
        if tensor.dim() == 0 or tensor.shape[0] != n:
            raise ValueError(
                f"atoms_to_data: {where} has {source} of shape {tuple(tensor.shape)}; "
                f"expected one row per atom ({n} atoms)"
            )
        if key == K.FORCE and tuple(tensor.shape) != (n, 3):
            raise ValueError(
                f"atoms_to_data: {where} has forces of shape {tuple(tensor.shape)}; "
                f"expected ({n}, 3)"
            )
        node[key] = tensor.reshape(n, -1) if tensor.dim() == 1 else tensor

    def add_graph(key: str, value: Any) -> None:
        if key in node or key in graph:
            return
        if key == K.STRESS:
            value = _stress_3x3(value, where)
        tensor = _as_tensor(value, key)
        if key == K.ENERGY and tensor is not None and tensor.numel() != 1:
            raise ValueError(
                f"atoms_to_data: {where} has an energy of shape {tuple(tensor.shape)}; "
                "expected one number (eV)"
            )
        if tensor is not None:
            graph[key] = tensor.unsqueeze(0) if tensor.dim() > 0 else tensor.reshape(1)

    results = _calculator_results(atoms)
    # Names mapped by `key_map` come first, under their target name; the stored name is not
    # a target of its own. Then the calculator's results: they win over `info` and `arrays`.
    renamed: set[str] = set()
    for target, stored, value, per_atom in _mapped(atoms, results, key_map or {}, where):
        renamed.add(stored)
        if per_atom:
            add_node(target, value, f"{stored!r} (key_map[{target!r}])")
        else:
            add_graph(target, value)
        if target not in graph and target not in node:
            raise ValueError(
                f"atoms_to_data: {where} has a non-numeric {stored!r} (key_map[{target!r}])"
            )
    for name, value in results.items():
        if name not in renamed:
            key = _ASE_TO_KEY.get(name, name)
            if name in _PER_ATOM_RESULTS:
                add_node(key, value, f"calculator result {name!r}")
            else:
                add_graph(key, value)
    for name, value in atoms.arrays.items():
        if name not in _STRUCTURE_ARRAYS and name not in renamed:
            add_node(_ASE_TO_KEY.get(name, name), value, f"array {name!r}")
    for name, value in atoms.info.items():
        if name not in renamed:
            add_graph(_ASE_TO_KEY.get(name, name), value)
    return graph, node


def atoms_to_data(
    atoms: Atoms,
    *,
    keys: Sequence[str] | None = None,
    index: int | None = None,
    key_map: Mapping[str, str] | None = None,
) -> Data:
    r"""Convert one ASE structure into a ``Data`` of the data contract.

    Targets come from the results the attached calculator already holds (a
    :class:`~ase.calculators.singlepoint.SinglePointCalculator`, or any calculator after a
    calculation; this function never runs one), then from ``atoms.arrays`` (node level) and
    ``atoms.info`` (graph level). ASE's ``forces`` becomes ``force``; stress, as a Voigt
    6-vector (xx, yy, zz, yz, xz, xy) or a 3x3 tensor, becomes ``stress`` [1, 3, 3] in eV/Å³ with
    ASE's sign (positive is tensile, :math:`\sigma = V^{-1} \partial E / \partial \varepsilon`).
    Non-numeric entries (strings, dicts) are skipped.

    Parameters
    ----------
    atoms : ase.Atoms
        The structure (N atoms).
    keys : sequence of str, optional
        Targets to keep, by batch key (``"energy"``, ``"force"``, ``"stress"``, an ``info`` or
        ``arrays`` name). ``None`` keeps every numeric target.
    index : int, optional
        Where the structure came from (database row id, frame index), stored as
        ``structure_id`` [1] and named in error messages.
    key_map : mapping of str to str, optional
        Targets stored under other names, ``{target: stored name}``, e.g.
        ``{"energy": "total_energy"}``. The stored name is looked up in the calculator
        results, then ``atoms.info`` (which holds an ASE database row's key-value pairs and
        ``data``), then ``atoms.arrays``; its value becomes the target (with the target's
        conversions: a stress becomes [1, 3, 3]) and wins over a target of the same name
        stored elsewhere. The stored name is then no target of its own.

    Returns
    -------
    torch_geometric.data.Data
        ``pos`` [N, 3] (default float dtype), ``atomic_numbers`` [N] long, ``cell`` [1, 3, 3],
        ``pbc`` [1, 3] bool, ``natoms`` [1] long, ``structure_id`` [1] long when ``index`` is
        given; graph-level targets [1] or ``[1, *shape]``; node-level targets [N, k]. Integer and
        bool values keep their kind (long, bool), except ``energy``, ``force`` and ``stress``;
        real values take the default float dtype.

    Raises
    ------
    ValueError
        If the structure has no atoms, atomic numbers outside 1 to 118, positions that are not
        finite or beyond :data:`~matsci.contract.keys.MAX_ABS_POSITION` (1e5 Å), a cell that
        is not finite, forces that do not match the number of atoms, a stress of the wrong
        shape, an energy that is not one number, a requested key is missing or not numeric,
        or a stored name of ``key_map`` is absent (the message lists the names there are).
        NaN targets are kept: tasks treat them as missing.

    Examples
    --------
    >>> from ase.build import bulk
    >>> from ase.calculators.emt import EMT
    >>> atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    >>> atoms.calc = EMT()
    >>> _ = atoms.get_stress()
    >>> data = atoms_to_data(atoms, keys=["energy", "force", "stress"], index=7)
    >>> data.pos.shape, data.cell.shape, data.stress.shape, data.force.shape
    (torch.Size([4, 3]), torch.Size([1, 3, 3]), torch.Size([1, 3, 3]), torch.Size([4, 3]))
    >>> data.structure_id
    tensor([7])
    >>> atoms.info["ref_energy"] = -1.5
    >>> atoms_to_data(atoms, keys=["energy"], key_map={"energy": "ref_energy"}).energy
    tensor([-1.5000])
    """
    numbers = np.asarray(atoms.numbers)
    unknown = numbers[(numbers < 1) | (numbers > K.MAX_ATOMIC_NUMBER)]
    if unknown.size:
        where = f"structure {index}" if index is not None else "a structure"
        raise ValueError(
            f"atoms_to_data: {where} has unknown elements {sorted(set(unknown.tolist()))[:10]}; "
            f"expected atomic numbers 1 to {K.MAX_ATOMIC_NUMBER}"
        )
    where = _describe(atoms, index)
    if len(atoms) == 0:
        raise ValueError(f"atoms_to_data: {where} has no atoms")
    positions = np.asarray(atoms.positions, dtype=np.float64)
    if not np.isfinite(positions).all():
        raise ValueError(f"atoms_to_data: {where} has non-finite positions")
    largest = float(np.abs(positions).max())
    if largest > K.MAX_ABS_POSITION:
        raise ValueError(
            f"atoms_to_data: {where} has a coordinate of magnitude {largest:.3g} Å, more than "
            f"{K.MAX_ABS_POSITION:.0e} Å (corrupt or unwrapped positions?)"
        )
    cell = np.asarray(atoms.cell.array, dtype=np.float64)
    if not np.isfinite(cell).all():
        raise ValueError(f"atoms_to_data: {where} has a non-finite cell")
    n = len(atoms)
    dtype = torch.get_default_dtype()

    data = Data()
    data[K.POS] = torch.tensor(positions, dtype=dtype)
    data[K.ATOMIC_NUMBERS] = torch.tensor(atoms.numbers, dtype=torch.long)
    data[K.CELL] = torch.tensor(cell, dtype=dtype).unsqueeze(0)
    data[K.PBC] = torch.tensor(np.asarray(atoms.pbc, dtype=bool)).reshape(1, 3)
    data[K.NATOMS] = torch.tensor([n], dtype=torch.long)
    if index is not None:
        data[K.STRUCTURE_ID] = torch.tensor([index], dtype=torch.long)

    graph, node = _targets(atoms, where, key_map)
    if keys is None:
        selected = [*graph, *node]
    else:
        missing = [key for key in keys if key not in graph and key not in node]
        if missing:
            available = sorted([*graph, *node])
            raise ValueError(
                f"atoms_to_data: {where} has no numeric target {missing}; available: {available}"
            )
        selected = list(keys)
    for key in selected:
        data[key] = graph[key] if key in graph else node[key]
    return data


def _to_python(tensor: Tensor) -> Any:
    """A graph-level target ``[1, *shape]`` as an ASE ``info`` value (scalar or array)."""
    value = tensor.detach().cpu()[0]
    if value.dim() == 0:
        return value.item()
    array = value.numpy()
    return array.astype(np.float64) if array.dtype.kind == "f" else array


def _voigt(stress: NDArray[np.float64]) -> NDArray[np.float64]:
    """3x3 stress as ASE's Voigt 6-vector (xx, yy, zz, yz, xz, xy)."""
    return np.array([stress[i, j] for i, j in _VOIGT])


def data_to_atoms(data: Data) -> Atoms:
    """Convert a ``Data`` of the data contract back into an ASE structure.

    The inverse of :func:`atoms_to_data`: ``energy``, ``force`` and ``stress`` and the other
    ASE calculator properties (``free_energy``, ``energies``, ...) go into a
    :class:`~ase.calculators.singlepoint.SinglePointCalculator`; other node-level targets
    ([N, k], first dimension N) go into ``atoms.arrays`` ([N, 1] back to [N]) and graph-level
    targets (``[1, *shape]``) into ``atoms.info``. With a single atom (N = 1) only forces and ASE's
    per-atom properties count as node level. ``structure_id`` and graph attributes
    (``edge_index``, ``cell_offsets``) are dropped.

    Parameters
    ----------
    data : torch_geometric.data.Data
        One structure, or a ``Batch`` that holds exactly one.

    Returns
    -------
    ase.Atoms
        The structure with its targets.

    Raises
    ------
    ValueError
        If ``data`` is a batch of several structures, or an attribute is neither node level
        nor graph level.

    Examples
    --------
    >>> from ase.build import molecule
    >>> atoms = molecule("H2O")
    >>> atoms.info["energy"] = -14.25
    >>> back = data_to_atoms(atoms_to_data(atoms))
    >>> back.get_chemical_formula(), back.get_potential_energy()
    ('H2O', -14.25)
    """
    if isinstance(data, Batch):
        if data.num_graphs != 1:
            raise ValueError(
                f"data_to_atoms: got a batch of {data.num_graphs} structures; convert each of "
                "batch.to_data_list() instead"
            )
        data = data.get_example(0)
    positions = data[K.POS].detach().cpu().double().numpy()
    n = positions.shape[0]
    atoms = Atoms(numbers=data[K.ATOMIC_NUMBERS].detach().cpu().numpy(), positions=positions)
    if K.CELL in data:
        atoms.cell = data[K.CELL].detach().cpu().double().numpy().reshape(3, 3)
    if K.PBC in data:
        atoms.pbc = data[K.PBC].detach().cpu().numpy().reshape(3)

    results: dict[str, Any] = {}
    for key in sorted(data.keys()):  # Data.keys() comes in no fixed order
        value = data[key]
        if key in K.STRUCTURE_KEYS or not isinstance(value, Tensor):
            continue
        name = _KEY_TO_ASE.get(key, key)
        per_atom = name in _PER_ATOM_RESULTS
        if value.dim() > 0 and value.shape[0] == n and (n != 1 or per_atom):
            array = value.detach().cpu().numpy()
            if array.ndim == 2 and array.shape[1] == 1:
                array = array[:, 0]
            if array.dtype.kind == "f":
                array = array.astype(np.float64)
            if name in all_properties:
                results[name] = array
            else:
                atoms.set_array(name, array)
        elif value.dim() > 0 and value.shape[0] == 1:
            scalar_or_array = _to_python(value)
            if key == K.STRESS:
                results[name] = _voigt(np.asarray(scalar_or_array, dtype=np.float64))
            elif name in all_properties:
                results[name] = scalar_or_array
            else:
                atoms.info[name] = scalar_or_array
        else:
            raise ValueError(
                f"data_to_atoms: attribute {key!r} of shape {tuple(value.shape)} is neither "
                f"node level [{n}, ...] nor graph level [1, ...]"
            )
    if results:
        atoms.calc = SinglePointCalculator(atoms, **results)
    return atoms
