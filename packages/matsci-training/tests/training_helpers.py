"""Helpers of the matsci-training tests: the tasks-core test helpers, reused, and a quiet trainer.

The small encoder and synthetic structures are those of the tasks-core tests (one copy): their
module is put on the path here, so checkpoints name the encoder by its dotted path
(``tasks_core_helpers.TinyEncoder``) and reload.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[2] / "matsci-tasks-core" / "tests"))

from tasks_core_helpers import (
    ELEMENT_VALUES,
    TinyEncoder,
    encoder_kwargs,
    loader,
    make_structures,
    truncated_checkpoint,
)

from matsci.contract.testing import quiet_trainer as trainer

__all__ = [
    "ELEMENT_VALUES",
    "TinyEncoder",
    "encoder_kwargs",
    "loader",
    "make_structures",
    "trainer",
    "truncated_checkpoint",
]
