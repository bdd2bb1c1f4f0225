"""The task layer of matsci: BaseTaskModule, multi-task training and property tasks on Lightning.

An encoder turns a batch into :class:`Embeddings`; a task puts heads on them, computes losses
against targets, logs metrics and trains with PyTorch Lightning.
"""

from importlib.metadata import version as _version

# The data contract lives in matsci.contract; these names are re-exported for convenience.
from matsci.contract import (
    AttributeSpec,
    Embeddings,
    Encoder,
    keys,
    validate_batch,
)
from matsci.tasks.core._base_task import DEFAULT_OUTPUT_KWARGS, BaseTaskModule
from matsci.tasks.core._binary_classification import BinaryClassificationTask
from matsci.tasks.core._checkpoint_io import read_checkpoint
from matsci.tasks.core._compiled_pass import CompiledViewPass
from matsci.tasks.core._crystal_symmetry import NUM_SPACEGROUPS, CrystalSymmetryClassificationTask
from matsci.tasks.core._engine import CHECKPOINT_RECORD, TaskEngine, TaskEntry
from matsci.tasks.core._inputs import (
    EncoderInput,
    InputRequest,
    View,
    autograd_ready_copy,
    gradients_enabled,
    num_structures,
    prepare_encoder_input,
    structure_index,
)
from matsci.tasks.core._lattice import (
    LATTICE_FEATURES,
    SYMMETRY_FEATURES,
    lattice_invariants,
    reduced_basis,
    symmetry_features,
)
from matsci.tasks.core._loss_weights import LossWeightSchedule
from matsci.tasks.core._masked_loss import MaskedLoss
from matsci.tasks.core._multitask import MultiTaskLitModule
from matsci.tasks.core._normalizer import Normalizer
from matsci.tasks.core._optim import (
    build_optimizer,
    build_scheduler,
    check_scheduler_kwargs,
    optimizer_path,
)
from matsci.tasks.core._scalar_regression import ScalarRegressionTask
from matsci.tasks.core._schedules import WarmupCosineLR

__version__ = _version("matsci-tasks-core")

__all__ = [
    "LATTICE_FEATURES",
    "SYMMETRY_FEATURES",
    "DEFAULT_OUTPUT_KWARGS",
    "NUM_SPACEGROUPS",
    "AttributeSpec",
    "BaseTaskModule",
    "BinaryClassificationTask",
    "CompiledViewPass",
    "CHECKPOINT_RECORD",
    "CrystalSymmetryClassificationTask",
    "Embeddings",
    "Encoder",
    "EncoderInput",
    "InputRequest",
    "LossWeightSchedule",
    "MaskedLoss",
    "MultiTaskLitModule",
    "Normalizer",
    "ScalarRegressionTask",
    "TaskEngine",
    "TaskEntry",
    "View",
    "WarmupCosineLR",
    "__version__",
    "lattice_invariants",
    "reduced_basis",
    "symmetry_features",
    "autograd_ready_copy",
    "build_optimizer",
    "build_scheduler",
    "check_scheduler_kwargs",
    "gradients_enabled",
    "keys",
    "num_structures",
    "optimizer_path",
    "prepare_encoder_input",
    "read_checkpoint",
    "structure_index",
    "validate_batch",
]
