import sys
from pathlib import Path

import pytest
import torch

# The shared checks (`encoder_checks`) live beside the tests as a plain module.
sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(params=[torch.float32, torch.float64], ids=["float32", "float64"])
def dtype(request: pytest.FixtureRequest) -> torch.dtype:
    value: torch.dtype = request.param
    return value


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
