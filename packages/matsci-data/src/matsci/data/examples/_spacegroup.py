"""Random crystals of chosen space groups from pyxtal, labelled by spglib."""

# ASE is partly annotated; its unannotated functions are fine to call.
# mypy: untyped-calls-exclude=ase

from __future__ import annotations

import importlib
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Final

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers

from matsci.data.examples._writing import KeyValue, check_destination, write_rows

DEFAULT_SPACEGROUPS: Final[tuple[int, ...]] = (14, 62, 139, 166, 194, 225)
"""One space group per crystal system but triclinic: P2₁/c, Pnma, I4/mmm, R-3m, P6₃/mmc, Fm-3m."""

DEFAULT_SPACEGROUP_ELEMENTS: Final[tuple[str, ...]] = (
    "Li", "C", "N", "O", "F", "Na", "Mg", "Al", "Si", "S", "Cl", "K", "Ca", "Ti", "Fe", "Zn",
)  # fmt: skip
"""Elements :func:`make_spacegroup_dataset` draws from by default."""

SPACEGROUP_KEY: Final = "spacegroup"
"""Key of the label in each row's key-value pairs, the batch key ``keys.SPACEGROUP``.

Spelled out here rather than imported from :mod:`matsci.contract.keys`, so that generating
data does not import torch.
"""

_INSTALL_HINT: Final = "pip install 'matsci-data[examples]'"
_MAX_ATTEMPTS: Final = 100


def _import_optional(caller: str) -> tuple[ModuleType, ModuleType]:
    """Import pyxtal and spglib (the ``examples`` extra), or explain how to install them."""
    # import_module keeps the type checker quiet whether or not the extra is installed.
    try:
        pyxtal = importlib.import_module("pyxtal")
        spglib = importlib.import_module("spglib")
    except ImportError as error:
        raise ImportError(
            f"{caller} needs pyxtal and spglib, the optional 'examples' dependencies of "
            f"matsci-data: {_INSTALL_HINT} ({error})"
        ) from error
    return pyxtal, spglib


@dataclass(frozen=True)
class _Settings:
    """Validated options of :func:`make_spacegroup_dataset`."""

    spacegroups: tuple[int, ...]
    elements: tuple[str, ...]
    max_species: int
    max_atoms: int
    symprec: float


def _spglib_number(spglib: ModuleType, atoms: Atoms, symprec: float) -> int | None:
    """Space group number that spglib finds for ``atoms``, ``None`` if it finds none."""
    cell = (np.asarray(atoms.cell[:]), atoms.get_scaled_positions(), atoms.numbers)
    with warnings.catch_warnings():
        # spglib >= 2.5 warns on every call until its global error handling is switched over.
        warnings.filterwarnings("ignore", "Set OLD_ERROR_HANDLING", DeprecationWarning)
        dataset = spglib.get_symmetry_dataset(cell, symprec=symprec)
    return None if dataset is None else int(dataset.number)


def _random_crystal(
    rng: np.random.Generator,
    spacegroup: int,
    multiplicities: Sequence[int],
    group: Any,
    settings: _Settings,
    modules: tuple[ModuleType, ModuleType],
) -> Atoms | None:
    """One attempt: a random composition that fits the group's Wyckoff positions, then a crystal.

    Returns ``None`` when the attempt fails (composition does not fit, pyxtal gives up, or
    spglib finds a different group), so that the caller draws again.
    """
    num_species = int(rng.integers(1, settings.max_species + 1))
    chosen = rng.choice(len(settings.elements), size=num_species, replace=False)
    species = [settings.elements[int(index)] for index in chosen]
    # Each species fills one or two Wyckoff positions' worth of sites.
    counts = [int(sum(rng.choice(multiplicities, size=int(rng.integers(1, 3))))) for _ in species]
    if sum(counts) > settings.max_atoms or not group.check_compatible(counts)[0]:
        return None
    pyxtal, spglib = modules
    crystal = pyxtal.pyxtal()
    try:
        crystal.from_random(3, spacegroup, species, counts, random_state=rng)
    except RuntimeError:  # pyxtal: "long time to generate structure, check inputs"
        return None
    atoms: Atoms = crystal.to_ase()
    if _spglib_number(spglib, atoms, settings.symprec) != spacegroup:
        return None
    return atoms


def _labelled_structures(
    num_structures: int,
    rng: np.random.Generator,
    settings: _Settings,
    groups: dict[int, Any],
    modules: tuple[ModuleType, ModuleType],
) -> Iterator[tuple[Atoms, dict[str, KeyValue]]]:
    multiplicities = {
        number: sorted(
            {wp.multiplicity for wp in group.Wyckoff_positions}
            & set(range(1, settings.max_atoms + 1))
        )
        for number, group in groups.items()
    }
    for index in range(num_structures):
        spacegroup = settings.spacegroups[index % len(settings.spacegroups)]
        for _ in range(_MAX_ATTEMPTS):
            atoms = _random_crystal(
                rng, spacegroup, multiplicities[spacegroup], groups[spacegroup], settings, modules
            )
            if atoms is not None:
                break
        else:
            raise RuntimeError(
                f"make_spacegroup_dataset: no crystal of space group {spacegroup} with at most "
                f"{settings.max_atoms} atoms after {_MAX_ATTEMPTS} attempts; "
                "raise max_atoms"
            )
        yield atoms, {SPACEGROUP_KEY: spacegroup}


def make_spacegroup_dataset(
    path: str | os.PathLike[str],
    *,
    num_structures: int = 300,
    spacegroups: Sequence[int] = DEFAULT_SPACEGROUPS,
    seed: int = 0,
    elements: Sequence[str] = DEFAULT_SPACEGROUP_ELEMENTS,
    max_species: int = 3,
    max_atoms: int = 24,
    symprec: float = 1e-3,
    overwrite: bool = False,
) -> Path:
    """Write random crystals of given space groups, labelled by spglib, to an ASE database.

    Structure ``i`` belongs to ``spacegroups[i % len(spacegroups)]``, so the classes are
    balanced. For each, one to ``max_species`` distinct elements are drawn from ``elements``,
    each with as many atoms as one or two of the group's Wyckoff positions hold (at most
    ``max_atoms`` in the conventional cell, a composition the group accepts); pyxtal's
    ``from_random`` then places them on Wyckoff positions in a random lattice (Fredericks et
    al., Comput. Phys. Commun. 261, 107810 (2021)). spglib (Togo et al., Sci. Technol. Adv.
    Mater. Meth. 4, 2384822 (2024)) determines each crystal's space group with tolerance
    ``symprec`` (Å); a crystal whose group differs from the requested one (pyxtal may place
    atoms on special positions of higher symmetry) is drawn again, so every stored label is
    both requested and spglib's.

    The label is stored as the integer key ``spacegroup`` in the row's key-value pairs; rows
    have no energies or forces. Everything is drawn from one random generator seeded with
    ``seed``: the same arguments and the same pyxtal version give the same crystals, and the
    first ``k`` crystals do not depend on ``num_structures``. The defaults produce the bundled
    copy, see :func:`bundled_dataset_path`. About ten crystals per second (pyxtal's
    placement dominates), after a few seconds to import pyxtal.

    Parameters
    ----------
    path
        Database file to create (SQLite); parent directories are created.
    num_structures
        Number of crystals (rows).
    spacegroups
        Distinct space group numbers, 1 to 230; the classes of the dataset.
    seed
        Seed of the random generator.
    elements
        Chemical symbols to draw species from.
    max_species
        Largest number of distinct elements in one crystal.
    max_atoms
        Largest number of atoms in one crystal's conventional cell.
    symprec
        spglib's distance tolerance, Å.
    overwrite
        Replace ``path`` if it exists.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    ImportError
        If pyxtal or spglib is missing: ``pip install 'matsci-data[examples]'``.
    ValueError
        If an argument is out of range or a space group has no Wyckoff position with at most
        ``max_atoms`` sites.
    FileExistsError
        If ``path`` exists and ``overwrite`` is false.

    Examples
    --------
    Generating needs the ``examples`` extra (pyxtal's import takes a few seconds):

    >>> import tempfile
    >>> from pathlib import Path
    >>> import ase.db
    >>> from matsci.data.examples import make_spacegroup_dataset
    >>> folder = tempfile.mkdtemp()
    >>> path = make_spacegroup_dataset(  # doctest: +SKIP
    ...     Path(folder) / "sg.db", num_structures=4, spacegroups=(225, 194)
    ... )
    >>> [row.spacegroup for row in ase.db.connect(path).select()]  # doctest: +SKIP
    [225, 194, 225, 194]

    Reading the bundled copy needs nothing beyond ASE:

    >>> from matsci.data.examples import bundled_dataset_path
    >>> database = ase.db.connect(bundled_dataset_path("spacegroup"))
    >>> database.count(spacegroup=225)
    50
    """
    caller = "make_spacegroup_dataset"
    if isinstance(num_structures, bool) or not isinstance(num_structures, int):
        raise TypeError(
            f"{caller}(num_structures={num_structures!r}): expected an int, "
            f"got {type(num_structures).__name__}"
        )
    if num_structures < 1:
        raise ValueError(f"{caller}(num_structures={num_structures}): expected at least 1")
    spacegroups = tuple(spacegroups)
    if (
        not spacegroups
        or len(set(spacegroups)) != len(spacegroups)
        or any(
            isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 230 for n in spacegroups
        )
    ):
        raise ValueError(
            f"{caller}(spacegroups={spacegroups!r}): expected distinct integers from 1 to 230"
        )
    elements = tuple(elements)
    unknown = [element for element in elements if element not in atomic_numbers]
    if not elements or unknown or len(set(elements)) != len(elements):
        raise ValueError(
            f"{caller}(elements={elements!r}): expected distinct chemical symbols"
            + (f"; unknown: {unknown}" if unknown else "")
        )
    if not 1 <= max_species <= len(elements):
        raise ValueError(
            f"{caller}(max_species={max_species}): expected 1 to len(elements) = {len(elements)}"
        )
    if max_atoms < 1:
        raise ValueError(f"{caller}(max_atoms={max_atoms}): expected at least 1")
    if not symprec > 0.0:
        raise ValueError(f"{caller}(symprec={symprec}): expected a positive tolerance")
    destination = check_destination(path, overwrite=overwrite, caller=caller)
    modules = _import_optional(caller)
    symmetry = importlib.import_module("pyxtal.symmetry")
    groups = {number: symmetry.Group(number) for number in spacegroups}
    for number, group in groups.items():
        smallest = min(wp.multiplicity for wp in group.Wyckoff_positions)
        if smallest > max_atoms:
            raise ValueError(
                f"{caller}(max_atoms={max_atoms}): space group {number} needs at least "
                f"{smallest} atoms in its conventional cell"
            )

    settings = _Settings(
        spacegroups=spacegroups,
        elements=elements,
        max_species=int(max_species),
        max_atoms=int(max_atoms),
        symprec=float(symprec),
    )
    rng = np.random.default_rng(seed)
    write_rows(
        destination,
        _labelled_structures(num_structures, rng, settings, groups, modules),
        id_namespace=f"matsci-spacegroup:{seed}:{settings}",
    )
    return destination
