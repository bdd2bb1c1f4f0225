"""Run simulations with trained matsci force fields through ASE.

:class:`MatsciCalculator` is an :class:`ase.calculators.calculator.Calculator` around a trained
:class:`~matsci.tasks.physics.ForceRegressionTask`: energies, forces and stresses for ASE's
molecular dynamics, optimizers and cell filters, and many structures at once with
:meth:`MatsciCalculator.calculate_many`. Direct-force models
(:class:`~matsci.tasks.physics.GradFreeForceRegression`) give forces only.
:class:`ProgramCalculator` runs a force field exported with ``matsci.simulate.export_program``
with torch alone. :func:`load_force_field` and :func:`neighbour_graph` are the rules every
simulator front end (the calculator, :mod:`matsci.simulate`) loads a force field and builds its
graph by.

Names are imported on first use (PEP 562): ``from matsci.ase import ProgramCalculator`` imports
neither Lightning nor PyTorch Geometric.
"""

from __future__ import annotations

from importlib.metadata import version as _version
from typing import TYPE_CHECKING

from matsci.contract import lazy_exports

if TYPE_CHECKING:
    from matsci.ase._calculator import MatsciCalculator
    from matsci.ase._checkpoint import (
        ForceTask,
        check_model_dtype,
        load_force_field,
        neighbour_graph,
    )
    from matsci.ase._program_calculator import ProgramCalculator

__version__ = _version("matsci-ase")

_MODULE_OF: dict[str, str] = {
    "MatsciCalculator": "_calculator",
    "ForceTask": "_checkpoint",
    "check_model_dtype": "_checkpoint",
    "load_force_field": "_checkpoint",
    "neighbour_graph": "_checkpoint",
    "ProgramCalculator": "_program_calculator",
}

__all__ = [
    "ForceTask",
    "MatsciCalculator",
    "ProgramCalculator",
    "__version__",
    "check_model_dtype",
    "load_force_field",
    "neighbour_graph",
]

__getattr__, __dir__ = lazy_exports(__name__, _MODULE_OF)
