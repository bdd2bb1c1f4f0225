"""Run simulations with trained matsci force fields through ASE.

:class:`MatsciCalculator` is an :class:`ase.calculators.calculator.Calculator` around a trained
:class:`~matsci.tasks.physics.ForceRegressionTask`: energies, forces and stresses for ASE's
molecular dynamics, optimizers and cell filters, and many structures at once with
:meth:`MatsciCalculator.calculate_many`. Direct-force models
(:class:`~matsci.tasks.physics.GradFreeForceRegression`) give forces only.
"""

from importlib.metadata import version as _version

from matsci.ase._calculator import MatsciCalculator

__version__ = _version("matsci-ase")

__all__ = ["MatsciCalculator", "__version__"]
