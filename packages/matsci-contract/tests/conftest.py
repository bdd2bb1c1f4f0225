import sys
from pathlib import Path

import pytest
import torch

# Modules beside the tests import by their plain names.
sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
