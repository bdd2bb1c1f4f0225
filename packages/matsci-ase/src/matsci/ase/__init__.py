"""Run simulations with trained matsci force fields through ASE.

:class:`MatsciCalculator` is an :class:`ase.calculators.calculator.Calculator` around a trained
:class:`~matsci.tasks.physics.ForceRegressionTask`: energies, forces and stresses for ASE's
molecular dynamics, optimizers and cell filters, and many structures at once with
:meth:`MatsciCalculator.calculate_many`. Direct-force models
(:class:`~matsci.tasks.physics.GradFreeForceRegression`) give forces only.
:func:`load_force_field` and :func:`neighbour_graph` are the rules every simulator front end
(the calculator, :mod:`matsci.simulate`) loads a force field and builds its graph by.
"""

from importlib.metadata import version as _version

from matsci.ase._calculator import MatsciCalculator
from matsci.ase._checkpoint import ForceTask, check_model_dtype, load_force_field, neighbour_graph

__version__ = _version("matsci-ase")

__all__ = [
    "ForceTask",
    "MatsciCalculator",
    "__version__",
    "check_model_dtype",
    "load_force_field",
    "neighbour_graph",
]
