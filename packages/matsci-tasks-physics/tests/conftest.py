import sys
from pathlib import Path

import pytest
import torch

# Helpers beside the tests, importable by dotted path so checkpoints can name the test encoder.
sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
