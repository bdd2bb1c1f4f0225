# mypy: untyped-calls-exclude=ase
"""An ASE calculator for an exported force field: torch, ASE and NumPy only, no Lightning."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any, Final

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes
from ase.data import chemical_symbols
from ase.neighborlist import neighbor_list
from ase.stress import full_3x3_to_voigt_6_stress

__all__ = ["ProgramCalculator"]

_METADATA: Final = "matsci.json"
"""The record ``matsci.simulate.export_program`` stores beside the program."""


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
    element the model was not trained on are refused, naming it and the known elements.

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
        If the file has no matsci record (it was not written by ``export_program``).

    Examples
    --------
    ``calc = ProgramCalculator("model.pt2"); atoms.calc = calc; atoms.get_forces()``.
    """

    implemented_properties: Final = ["energy", "free_energy", "forces", "stress"]  # type: ignore[misc]

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
        self.known = frozenset(int(z) for z in self.metadata["atomic_numbers"])

    @property
    def elements(self) -> list[str]:
        """Chemical symbols of the elements the model was trained on."""
        return [chemical_symbols[z] for z in sorted(self.known)]

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
            What ASE asks for; everything is computed at once.
        system_changes
            What changed since the last call (ASE's bookkeeping).

        Raises
        ------
        ValueError
            If the structure holds an element the model was not trained on.
        PropertyNotImplementedError
            If the stress is asked for on a cell not periodic in all three directions.
        """
        super().calculate(atoms, properties, system_changes)  # type: ignore[no-untyped-call]
        atoms = self.atoms
        assert atoms is not None  # Calculator.calculate stored a copy
        unknown = sorted(set(atoms.numbers.tolist()) - self.known)
        if unknown:
            raise ValueError(
                f"ProgramCalculator: structure {atoms.get_chemical_formula()} has element "
                f"{[chemical_symbols[z] for z in unknown]} the model was not trained on; known "
                f"elements: {self.elements}"
            )
        periodic = bool(atoms.pbc.all())
        if "stress" in properties and not periodic:
            raise PropertyNotImplementedError(
                "ProgramCalculator: the stress needs a cell periodic in all three directions"
            )
        first, second, shifts = neighbor_list("ijS", atoms, self.cutoff)
        cell = atoms.cell.array if atoms.cell.rank == 3 else np.zeros((3, 3))
        with torch.inference_mode():
            energy, forces, stress = self.module(
                torch.tensor(atoms.positions, dtype=self.dtype),
                torch.tensor(atoms.numbers, dtype=torch.int64),
                torch.tensor(np.stack([first, second]), dtype=torch.int64),
                torch.tensor(shifts @ atoms.cell.array, dtype=self.dtype),
                torch.tensor(cell, dtype=self.dtype),
            )
        self.results = {
            "energy": float(energy),
            "free_energy": float(energy),
            "forces": forces.double().numpy(),
        }
        if periodic:
            self.results["stress"] = full_3x3_to_voigt_6_stress(stress.double().numpy())
