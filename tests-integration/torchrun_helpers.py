"""Launch a test script as two gloo processes with ``torchrun`` and read what each rank saved.

The DDP tests are scripts as well as test modules: run by ``torchrun``, the script trains and
saves one record per rank (``<kind>-rank<r>.pt``) into the folder it is given; the tests then
compare the records.
"""

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch


def run_two_processes(script: str, out: Path) -> Path:
    """Run ``script out`` as two processes of one node; fail the test with their output."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        script, str(out),
    ]  # fmt: skip
    result = subprocess.run(
        command,
        cwd=Path(script).parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=500,
        check=False,
    )
    assert result.returncode == 0, (
        f"torchrun failed:\n{result.stdout[-4000:]}\n{result.stderr[-8000:]}"
    )
    return out


def rank_records(out: Path, kind: str) -> list[dict[str, Any]]:
    """The records the two ranks saved for ``kind``, rank 0 first."""
    return [torch.load(out / f"{kind}-rank{rank}.pt", weights_only=True) for rank in (0, 1)]
