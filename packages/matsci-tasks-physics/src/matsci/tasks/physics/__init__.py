"""Physics tasks of matsci: energy, forces and stress; direct forces; denoising pretraining."""

from importlib.metadata import version as _version

# Re-exported: the streaming reference-energy fit and the table length live in the contract,
# beside the other dataset statistics.
from matsci.contract import NUM_ELEMENTS, ReferenceEnergyFit

# Re-exported: they moved to tasks-core, where multi-task training shares encoder passes.
from matsci.tasks.core import autograd_ready_copy, gradients_enabled
from matsci.tasks.physics._force_regression import (
    DEFAULT_LOSS_SCALING,
    FIXED,
    FORCE_FIELD_SCHEDULE,
    ForceRegressionTask,
)
from matsci.tasks.physics._gradfree_force import (
    GradFreeForceRegression,
    GradFreeForceRegressionTask,
)
from matsci.tasks.physics._known_elements import KnownElements
from matsci.tasks.physics._node_denoising import NodeDenoisingTask
from matsci.tasks.physics._vector_head import NotEquivariantWarning, VectorHead

__version__ = _version("matsci-tasks-physics")

__all__ = [
    "DEFAULT_LOSS_SCALING",
    "FIXED",
    "FORCE_FIELD_SCHEDULE",
    "NUM_ELEMENTS",
    "ForceRegressionTask",
    "GradFreeForceRegression",
    "GradFreeForceRegressionTask",
    "KnownElements",
    "NodeDenoisingTask",
    "NotEquivariantWarning",
    "ReferenceEnergyFit",
    "VectorHead",
    "__version__",
    "autograd_ready_copy",
    "gradients_enabled",
]
