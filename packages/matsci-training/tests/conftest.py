import sys
from pathlib import Path

import pytest
import torch

# Test helpers live beside the tests as a plain module, importable by a dotted path so that
# checkpoints of tasks built from `tasks_core_helpers.TinyEncoder` can be reloaded.
sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
