"""Rattled, strained and alloyed metal supercells labelled by ASE's EMT calculator."""

# ASE is partly annotated; its unannotated functions are fine to call.
# mypy: untyped-calls-exclude=ase

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal, get_args

import numpy as np
from ase import Atoms
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.data import atomic_numbers, reference_states

from matsci.data.examples._writing import KeyValue, check_destination, write_rows

StructureType = Literal["fcc", "bcc", "hcp"]
"""Lattices that :func:`make_emt_dataset` builds."""

EMT_ELEMENTS: Final[tuple[str, ...]] = ("Cu", "Al", "Ni", "Pd", "Ag", "Pt", "Au")
"""The metals ASE's EMT calculator is fitted for (its H, C, N and O are "just for fun")."""

STRUCTURE_TYPES: Final[tuple[StructureType, ...]] = get_args(StructureType)

STRUCTURE_TYPE_KEY: Final = "structure_type"
"""Key of the lattice (``"fcc"``, ``"bcc"`` or ``"hcp"``) in each row's key-value pairs."""

COMPRESSED_KEY: Final = "compressed"
r"""Key of the binary label in each row's key-value pairs: whether EMT's pressure
:math:`p = -\operatorname{tr}(\sigma) / 3` is positive (the cell is under compression)."""

# Unit cells of ``ase.build.bulk`` (fcc and bcc cubic with 4 and 2 atoms, hcp orthorhombic
# with 4 atoms) and the repetitions that give supercells of 8 to 32 atoms.
_REPEATS: Final[dict[StructureType, tuple[tuple[int, int, int], ...]]] = {
    "fcc": ((2, 1, 1), (2, 2, 1), (3, 2, 1), (2, 2, 2)),
    "bcc": ((2, 2, 1), (2, 2, 2), (3, 2, 2), (4, 2, 2)),
    "hcp": ((2, 1, 1), (2, 1, 2), (3, 1, 2), (2, 2, 2)),
}


def _volume_per_atom(symbol: str) -> float:
    """Volume per atom (Å³) of the element's fcc ground state in ASE's reference data."""
    state = reference_states[atomic_numbers[symbol]]
    assert state is not None
    assert state["symmetry"] == "fcc"
    lattice_constant = state["a"]
    assert isinstance(lattice_constant, float)
    return lattice_constant**3 / 4.0


def _unit_cell(symbol: str, structure_type: StructureType) -> Atoms:
    """Unit cell of ``structure_type`` with the volume per atom of ``symbol``'s fcc state."""
    volume = _volume_per_atom(symbol)
    if structure_type == "fcc":
        return bulk(symbol, "fcc", a=(4.0 * volume) ** (1.0 / 3.0), cubic=True)
    if structure_type == "bcc":
        return bulk(symbol, "bcc", a=(2.0 * volume) ** (1.0 / 3.0), cubic=True)
    # Ideal hcp: the volume per atom is (sqrt(3) / 4) a² c with c = sqrt(8 / 3) a.
    covera = math.sqrt(8.0 / 3.0)
    a = (4.0 * volume / (math.sqrt(3.0) * covera)) ** (1.0 / 3.0)
    return bulk(symbol, "hcp", a=a, covera=covera, orthorhombic=True)


@dataclass(frozen=True)
class _Settings:
    """Validated options of :func:`make_emt_dataset`."""

    elements: tuple[str, ...]
    structure_types: tuple[StructureType, ...]
    alloy_probability: float
    rattle_stdev: tuple[float, float]
    max_strain: float


def _random_structure(rng: np.random.Generator, settings: _Settings) -> tuple[Atoms, StructureType]:
    """Draw one supercell: lattice, size, base element, alloying, strain, then rattle."""
    elements, structure_types = settings.elements, settings.structure_types
    structure_type = structure_types[int(rng.integers(len(structure_types)))]
    base = elements[int(rng.integers(len(elements)))]
    repeats = _REPEATS[structure_type]
    atoms = _unit_cell(base, structure_type).repeat(repeats[int(rng.integers(len(repeats)))])
    symbols = [base] * len(atoms)
    if rng.random() < settings.alloy_probability:
        others = [element for element in elements if element != base]
        solute = others[int(rng.integers(len(others)))]
        num_solute = int(rng.integers(1, len(atoms) // 2 + 1))
        for index in rng.choice(len(atoms), size=num_solute, replace=False):
            symbols[int(index)] = solute
        atoms.set_chemical_symbols(symbols)
    # Vegard's law: the volume is the composition average of the elements' volumes.
    volume = sum(_volume_per_atom(symbol) for symbol in symbols)
    atoms.set_cell(atoms.cell * (volume / atoms.get_volume()) ** (1.0 / 3.0), scale_atoms=True)
    # A random symmetric strain with six independent components, applied to cell and
    # positions: cell' = cell (1 + ε).
    draws = rng.uniform(-settings.max_strain, settings.max_strain, size=(3, 3))
    strain = np.triu(draws) + np.triu(draws, 1).T
    atoms.set_cell(atoms.cell[:] @ (np.eye(3) + strain), scale_atoms=True)
    stdev = rng.uniform(*settings.rattle_stdev)
    atoms.positions += rng.normal(scale=stdev, size=atoms.positions.shape)
    atoms.wrap()
    return atoms, structure_type


def _labelled_structures(
    num_structures: int, rng: np.random.Generator, settings: _Settings
) -> Iterator[tuple[Atoms, dict[str, KeyValue]]]:
    for _ in range(num_structures):
        atoms, structure_type = _random_structure(rng, settings)
        atoms.calc = EMT()
        energy = atoms.get_potential_energy()
        forces = atoms.get_forces()
        stress = atoms.get_stress(voigt=True)
        atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=forces, stress=stress)
        # ASE's sign: a positive stress is tensile, so a compressed cell has a negative trace.
        pressure = -float(np.mean(stress[:3]))
        yield atoms, {STRUCTURE_TYPE_KEY: structure_type, COMPRESSED_KEY: pressure > 0.0}


def make_emt_dataset(
    path: str | os.PathLike[str],
    *,
    num_structures: int = 300,
    seed: int = 0,
    elements: Sequence[str] = EMT_ELEMENTS,
    structure_types: Sequence[StructureType] = STRUCTURE_TYPES,
    alloy_probability: float = 0.5,
    rattle_stdev: tuple[float, float] = (0.05, 0.1),
    max_strain: float = 0.03,
    overwrite: bool = False,
) -> Path:
    r"""Write rattled, strained fcc/bcc/hcp metal supercells with EMT labels to an ASE database.

    Each structure is drawn in turn from one random generator seeded with ``seed``:

    1. a lattice from ``structure_types`` and a base element from ``elements``; the cubic fcc
       (4 atoms) or bcc (2 atoms) cell or the orthorhombic ideal hcp cell (4 atoms) of
       :func:`ase.build.bulk`, repeated to a supercell of 8 to 32 atoms, with the volume per
       atom of the element's fcc ground state (so bcc and hcp cells lie above the fcc energy);
    2. with probability ``alloy_probability``, a binary alloy: between one atom and half of the
       atoms are replaced by a second element, and the volume follows Vegard's law;
    3. a random symmetric strain :math:`\varepsilon` with independent components uniform in
       ``[-max_strain, max_strain]``, applied as :math:`\mathbf{C}' = \mathbf{C}(1+\varepsilon)`
       to the cell rows and the positions;
    4. Gaussian displacements of every atom, with a standard deviation drawn uniformly from
       ``rattle_stdev`` (Å) for each structure.

    Energy (eV), forces (eV/Å) and stress (eV/Å³, ASE's sign convention, Voigt order
    ``xx, yy, zz, yz, xz, xy``) come from ASE's effective-medium theory calculator
    :class:`ase.calculators.emt.EMT` (Jacobsen, Stoltze and Nørskov, Surf. Sci. 366, 394
    (1996)) and are stored as the row's results, with the calculator name ``"emt"``. Two keys
    are stored in the key-value pairs: ``structure_type`` (``"fcc"``, ``"bcc"`` or ``"hcp"``)
    and ``compressed``, a yes/no label for :class:`~matsci.tasks.core.BinaryClassificationTask`:
    ``True`` where EMT's pressure :math:`p = -\operatorname{tr}(\sigma)/3` is positive, i.e. the
    cell is smaller than EMT's equilibrium volume for its atoms and arrangement and pushes
    outwards (about two thirds of the default structures: Vegard's volumes from the
    elements' experimental lattice constants, the random strain and the rattling decide it).

    The same arguments give the same structures and labels, and the first ``k`` structures do
    not depend on ``num_structures``; only each row's ``ctime`` and ``user`` differ between runs.
    The defaults produce the bundled copy, see :func:`bundled_dataset_path`. About 100
    structures per second.

    Parameters
    ----------
    path
        Database file to create (SQLite); parent directories are created.
    num_structures
        Number of structures (rows).
    seed
        Seed of the random generator.
    elements
        Elements to draw from; a subset of :data:`EMT_ELEMENTS`.
    structure_types
        Lattices to draw from; a subset of ``("fcc", "bcc", "hcp")``.
    alloy_probability
        Probability that a structure is a binary alloy (needs two or more ``elements``).
    rattle_stdev
        Range ``(low, high)`` of the per-structure standard deviation of displacements, Å.
    max_strain
        Largest strain component, in ``[0, 0.2)``.
    overwrite
        Replace ``path`` if it exists.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    ValueError
        If an argument is out of range, an element is not an EMT metal, or a structure type is
        unknown.
    FileExistsError
        If ``path`` exists and ``overwrite`` is false.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> import ase.db
    >>> from matsci.data.examples import make_emt_dataset
    >>> folder = tempfile.mkdtemp()
    >>> path = make_emt_dataset(Path(folder) / "emt.db", num_structures=4, seed=1)
    >>> database = ase.db.connect(path)
    >>> database.count()
    4
    >>> row = database.get(id=1)
    >>> row.structure_type in ("fcc", "bcc", "hcp"), 8 <= row.natoms <= 32
    (True, True)
    >>> row.compressed == bool(row.stress[:3].mean() < 0)
    True
    >>> row.forces.shape, row.stress.shape
    ((..., 3), (6,))
    """
    caller = "make_emt_dataset"
    if isinstance(num_structures, bool) or not isinstance(num_structures, int):
        raise TypeError(
            f"{caller}(num_structures={num_structures!r}): expected an int, "
            f"got {type(num_structures).__name__}"
        )
    if num_structures < 1:
        raise ValueError(f"{caller}(num_structures={num_structures}): expected at least 1")
    elements = tuple(elements)
    unknown = [element for element in elements if element not in EMT_ELEMENTS]
    if not elements or unknown or len(set(elements)) != len(elements):
        raise ValueError(
            f"{caller}(elements={elements!r}): expected distinct elements from {EMT_ELEMENTS}, "
            "the metals EMT is fitted for"
        )
    structure_types = tuple(structure_types)
    if not structure_types or any(kind not in STRUCTURE_TYPES for kind in structure_types):
        raise ValueError(
            f"{caller}(structure_types={structure_types!r}): expected a non-empty subset of "
            f"{STRUCTURE_TYPES}"
        )
    if not 0.0 <= alloy_probability <= 1.0:
        raise ValueError(f"{caller}(alloy_probability={alloy_probability}): expected 0 to 1")
    if alloy_probability > 0.0 and len(elements) < 2:
        raise ValueError(
            f"{caller}(elements={elements!r}, alloy_probability={alloy_probability}): "
            "binary alloys need two or more elements; pass alloy_probability=0.0"
        )
    low, high = rattle_stdev
    if not 0.0 <= low <= high:
        raise ValueError(
            f"{caller}(rattle_stdev={rattle_stdev!r}): expected (low, high) with 0 <= low <= high"
        )
    if not 0.0 <= max_strain < 0.2:
        raise ValueError(f"{caller}(max_strain={max_strain}): expected 0 <= max_strain < 0.2")
    destination = check_destination(path, overwrite=overwrite, caller=caller)

    settings = _Settings(
        elements=elements,
        structure_types=structure_types,
        alloy_probability=float(alloy_probability),
        rattle_stdev=(float(low), float(high)),
        max_strain=float(max_strain),
    )
    rng = np.random.default_rng(seed)
    write_rows(
        destination,
        _labelled_structures(num_structures, rng, settings),
        id_namespace=f"matsci-emt:{seed}:{settings}",
        calculator="emt",
    )
    return destination
