"""Training callbacks, atomic checkpoints and one way to load a trained model.

Callbacks that any matsci task or multi-task module trains with: an exponential moving average
of the weights in Lightning's layout (:class:`ExponentialMovingAverage`), throughput in atoms
per second (:class:`AtomThroughputMonitor`), a guard against NaN and infinite steps
(:class:`NonFiniteGuard`), random states in checkpoints (:class:`RandomStateCheckpoint`),
normalizers fitted before a fresh fit (:class:`FitNormalizers`), a pretrained encoder
(:class:`PretrainedEncoder`) and a check of the target keys at setup (:class:`CheckTargets`);
a checkpoint writer that never leaves a torn file (:class:`AtomicCheckpointIO`); and
:func:`load_model`, which restores any trained model from its checkpoint; and
:func:`baseline_metrics`, the metrics of the obvious baseline (training mean, zero, majority
class) that a trained model must beat.
"""

from importlib.metadata import version as _version

from matsci.training._baselines import (
    BASELINE_DESCRIPTIONS,
    BaselineKind,
    baseline_kind,
    baseline_metrics,
)
from matsci.training._check_targets import CheckTargets, check_targets
from matsci.training._checkpoint_io import AtomicCheckpointIO
from matsci.training._ema import ExponentialMovingAverage
from matsci.training._find_checkpoint import find_checkpoint
from matsci.training._fit_normalizers import FitNormalizers
from matsci.training._load_model import GraphSettings, LoadedModel, load_model
from matsci.training._nonfinite import NonFiniteGuard
from matsci.training._pretrained_encoder import PretrainedEncoder
from matsci.training._random_state import RandomStateCheckpoint
from matsci.training._throughput import (
    AtomThroughputMonitor,
    Throughput,
    count_atoms_and_structures,
)

__version__ = _version("matsci-training")

__all__ = [
    "BASELINE_DESCRIPTIONS",
    "AtomThroughputMonitor",
    "AtomicCheckpointIO",
    "BaselineKind",
    "CheckTargets",
    "ExponentialMovingAverage",
    "FitNormalizers",
    "GraphSettings",
    "LoadedModel",
    "NonFiniteGuard",
    "PretrainedEncoder",
    "RandomStateCheckpoint",
    "Throughput",
    "__version__",
    "baseline_kind",
    "baseline_metrics",
    "check_targets",
    "count_atoms_and_structures",
    "find_checkpoint",
    "load_model",
]
