# mypy: untyped-calls-exclude=ase
"""An ASE calculator for an exported force field: torch, ASE and NumPy only, no Lightning."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from typing import Any, Final

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes
from ase.data import chemical_symbols
from ase.neighborlist import neighbor_list
from ase.stress import full_3x3_to_voigt_6_stress

__all__ = ["ProgramCalculator"]

_ENERGY_PROPERTIES: Final = ("energy", "free_energy", "stress")
"""What a direct-force model cannot give: its forces are not the derivative of an energy."""

_METADATA: Final = "matsci.json"
"""The record ``matsci.simulate.export_program`` stores beside the program."""

_ENERGY_OUTPUTS: Final = ("energy", "forces", "stress")
"""The outputs of an energy model's program, in order."""

_FORCE_OUTPUTS: Final = ("forces",)
"""The outputs of a direct-force model's program."""

_OWNER: Final = "ProgramCalculator"
_NO_ENERGY: Final = (
    "the program is of a direct-force model (outputs ['forces']), whose forces are not the "
    "gradient of an energy. Only 'forces' are available"
)
"""Why a direct-force program gives no energy or stress (see :func:`_refuse_energy`)."""


def _refuse_energy(
    properties: Iterable[str], *, conservative: bool, owner: str, reason: str
) -> None:
    """Refuse to give energy or stress of a direct-force model: the rule of both calculators.

    A model that is not ``conservative`` (a direct-force model) gives ``forces`` only:
    ``energy``, ``free_energy`` and ``stress`` are refused. :class:`ProgramCalculator` and
    :class:`~matsci.ase.MatsciCalculator` both call this (from this module, which imports
    neither Lightning nor PyTorch Geometric).

    Parameters
    ----------
    properties
        The properties asked for.
    conservative
        Whether the model has an energy whose negative gradient is the forces.
    owner
        The calculator, named first in the message.
    reason
        Why there is no energy: the end of the message.

    Raises
    ------
    ase.calculators.calculator.PropertyNotImplementedError
        ``"{owner}: no {property}; {reason}"`` for the first of ``energy``, ``free_energy``
        and ``stress`` asked for, if the model is not ``conservative``.
    """
    if conservative:
        return
    asked = [name for name in properties if name in _ENERGY_PROPERTIES]
    if asked:
        raise PropertyNotImplementedError(f"{owner}: no {asked[0]}; {reason}")


class ProgramCalculator(Calculator):
    """ASE calculator of a force field exported with ``matsci.simulate.export_program``.

    The file is a :func:`torch.export` program of energy, forces and stress; this calculator
    builds its inputs (a full neighbour list with ``ase.neighborlist.neighbor_list`` and the
    model's cutoff, read from the file) and runs it. It imports torch, ASE and NumPy only:
    neither Lightning nor PyTorch Geometric nor the matsci task classes, so a simulation starts
    seconds sooner than with :class:`MatsciCalculator`, which loads the trained task itself.
    Results equal :class:`MatsciCalculator`'s on the same checkpoint (to 1e-9 in float64).

    ``energy`` and ``free_energy`` (eV), ``forces`` (eV/Å) and, for cells periodic in all
    three directions, ``stress`` (eV/Å³, ASE's Voigt order and sign). Structures with an
    element the model was not trained on are refused, naming it and the known elements (a
    model that cannot tell its elements, such as a direct-force model, accepts every one).

    A program of a direct-force model (``GradFreeForceRegression``, whose record lists the
    outputs ``["forces"]``) gives ``forces`` only (:attr:`conservative` is ``False``, and
    :attr:`implemented_properties` is ``["forces"]``): asking for ``energy``,
    ``free_energy`` or ``stress`` raises
    :class:`~ase.calculators.calculator.PropertyNotImplementedError`, as
    :class:`MatsciCalculator` does for the same model.

    Parameters
    ----------
    path
        A ``.pt2`` file written by ``export_program`` (or ``matsci export --format
        torch-export``).
    **kwargs
        Passed to :class:`ase.calculators.calculator.Calculator`.

    Raises
    ------
    ValueError
        If the file has no matsci record (it was not written by ``export_program``), or its
        record lists outputs this calculator does not know.

    Examples
    --------
    ``calc = ProgramCalculator("model.pt2"); atoms.calc = calc; atoms.get_forces()``.
    """

    implemented_properties: list[str] = ["energy", "free_energy", "forces", "stress"]  # noqa: RUF012

    def __init__(self, path: str | os.PathLike[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)  # type: ignore[no-untyped-call]
        extra = {_METADATA: ""}
        program = torch.export.load(os.fspath(path), extra_files=extra)
        if not extra[_METADATA]:
            raise ValueError(
                f"ProgramCalculator({os.fspath(path)!r}): no {_METADATA!r} record; expected a file "
                "written by matsci.simulate.export_program (matsci export --format torch-export)"
            )
        self.metadata: dict[str, Any] = json.loads(extra[_METADATA])
        self.module = program.module()
        self.cutoff = float(self.metadata["cutoff"])
        self.dtype: torch.dtype = getattr(torch, self.metadata["dtype"])
        numbers = self.metadata.get("atomic_numbers")
        self.known = None if numbers is None else frozenset(int(z) for z in numbers)
        # Files written before direct-force programs have no "outputs" record.
        self.outputs: tuple[str, ...] = tuple(self.metadata.get("outputs", _ENERGY_OUTPUTS))
        if self.outputs not in (_ENERGY_OUTPUTS, _FORCE_OUTPUTS):
            raise ValueError(
                f"ProgramCalculator({os.fspath(path)!r}): outputs {list(self.outputs)}; expected "
                f"{list(_ENERGY_OUTPUTS)} or {list(_FORCE_OUTPUTS)}"
            )
        if not self.conservative:
            # Declared per instance: ASE tools read it to see what the calculator can give.
            self.implemented_properties = ["forces"]

    @property
    def conservative(self) -> bool:
        """Whether the program gives an energy whose negative gradient is the forces.

        ``False`` for a program of a direct-force model, which gives forces only.
        """
        return self.outputs == _ENERGY_OUTPUTS

    @property
    def elements(self) -> list[str] | None:
        """Chemical symbols of the elements the model was trained on; ``None``: any element."""
        if self.known is None:
            return None
        return [chemical_symbols[z] for z in sorted(self.known)]

    def get_property(
        self, name: str, atoms: Atoms | None = None, allow_calculation: bool = True
    ) -> Any:
        """One property of ``atoms``, as :meth:`~matsci.ase.MatsciCalculator.get_property`.

        ASE's entry point (``atoms.get_forces()`` and friends); see :meth:`calculate`.

        Raises
        ------
        ase.calculators.calculator.PropertyNotImplementedError
            If the program cannot give it: the energy or stress of a direct-force program (the
            message says why), or an unknown property.
        """
        _refuse_energy([name], conservative=self.conservative, owner=_OWNER, reason=_NO_ENERGY)
        return super().get_property(name, atoms, allow_calculation)  # type: ignore[no-untyped-call]

    def calculate(
        self,
        atoms: Atoms | None = None,
        properties: Sequence[str] = ("energy",),
        system_changes: Sequence[str] = tuple(all_changes),
    ) -> None:
        """Energy, forces and (periodic cells) stress of ``atoms`` into ``self.results``.

        Parameters
        ----------
        atoms
            The structure.
        properties
            What ASE asks for; everything the program gives is computed at once.
        system_changes
            What changed since the last call (ASE's bookkeeping).

        Raises
        ------
        ValueError
            If the structure holds an element the model was not trained on.
        PropertyNotImplementedError
            If the stress is asked for on a cell not periodic in all three directions, or
            energy or stress of a direct-force program.
        """
        super().calculate(atoms, properties, system_changes)  # type: ignore[no-untyped-call]
        atoms = self.atoms
        assert atoms is not None  # Calculator.calculate stored a copy
        unknown = [] if self.known is None else sorted(set(atoms.numbers.tolist()) - self.known)
        if unknown:
            raise ValueError(
                f"ProgramCalculator: structure {atoms.get_chemical_formula()} has element "
                f"{[chemical_symbols[z] for z in unknown]} the model was not trained on; known "
                f"elements: {self.elements}"
            )
        _refuse_energy(properties, conservative=self.conservative, owner=_OWNER, reason=_NO_ENERGY)
        periodic = bool(atoms.pbc.all())
        if "stress" in properties and not periodic:
            raise PropertyNotImplementedError(
                "ProgramCalculator: the stress needs a cell periodic in all three directions"
            )
        first, second, shifts = neighbor_list("ijS", atoms, self.cutoff)
        cell = atoms.cell.array if atoms.cell.rank == 3 else np.zeros((3, 3))
        with torch.inference_mode():
            outputs = self.module(
                torch.tensor(atoms.positions, dtype=self.dtype),
                torch.tensor(atoms.numbers, dtype=torch.int64),
                torch.tensor(np.stack([first, second]), dtype=torch.int64),
                torch.tensor(shifts @ atoms.cell.array, dtype=self.dtype),
                torch.tensor(cell, dtype=self.dtype),
            )
        if not self.conservative:
            (forces,) = outputs
            self.results = {"forces": forces.double().numpy()}
            return
        energy, forces, stress = outputs
        self.results = {
            "energy": float(energy),
            "free_energy": float(energy),
            "forces": forces.double().numpy(),
        }
        if periodic:
            self.results["stress"] = full_3x3_to_voigt_6_stress(stress.double().numpy())
