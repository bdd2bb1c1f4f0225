"""Cost of a multi-task step with K tasks on one dataset, against one task alone.

A multi-task module runs the encoder once per dataset batch and backpropagates once, so K
tasks should cost about one encoder pass, not K. The script trains, through ``Trainer.fit``,
a single ``ScalarRegressionTask`` and multi-task modules with K = 2, 4 and 8 tasks (each its
own target) on the bundled EMT data with a ``SchNetEncoder``, and prints the median step time
of each against the single task's, next to K (what K separate passes would cost).

Run: ``uv run python benchmarks/multitask_cost.py [--steps 40] [--repeats 2]``.
"""

from __future__ import annotations

import argparse
import statistics
from typing import Any

import lightning.pytorch as pl
import torch
from _common import (
    StepClock,
    emt_structures,
    machine_line,
    median_after,
    print_table,
    quiet_trainer,
    setup_threads,
)
from torch_geometric.loader import DataLoader

from matsci.encoders import SchNetEncoder
from matsci.tasks.core import MultiTaskLitModule, ScalarRegressionTask

WARMUP = 5


def structures(count: int) -> list[Any]:
    """Bundled EMT cells with eight energy-like targets, one per task."""
    items = emt_structures(count, keys=("energy",))
    for data in items:
        for k in range(8):
            setattr(data, f"target_{k}", data.energy * (k + 1))
    return items


def median_step(module: pl.LightningModule, loader: Any, steps: int) -> float:
    clock = StepClock()
    quiet_trainer(steps + WARMUP, [clock]).fit(module, train_dataloaders=loader)
    return median_after(clock.times, WARMUP)


def build(k: int) -> pl.LightningModule:
    """One task alone (``k == 0``) or a multi-task module of ``k`` tasks on one dataset."""
    torch.manual_seed(0)
    encoder = SchNetEncoder(hidden_channels=64, num_filters=64, num_interactions=2)
    if k == 0:
        return ScalarRegressionTask(encoder=encoder, task_keys=["target_0"])
    tasks = [ScalarRegressionTask(encoder=encoder, task_keys=[f"target_{i}"]) for i in range(k)]
    return MultiTaskLitModule(*[("emt", task) for task in tasks])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    setup_threads(args.threads)
    data = structures(128)
    rows: dict[int, list[float]] = {}
    for _ in range(args.repeats):
        single = DataLoader(data, batch_size=16, shuffle=True)
        rows.setdefault(1, []).append(median_step(build(0), single, args.steps))
        for k in (2, 4, 8):
            loader = {"emt": DataLoader(data, batch_size=16, shuffle=True)}
            rows.setdefault(k, []).append(median_step(build(k), loader, args.steps))
    baseline = statistics.median(rows[1])
    table = [
        ["single task" if k == 1 else f"multi-task, K={k}", f"{1e3 * statistics.median(t):.2f}",
         f"{statistics.median(t) / baseline:.2f}", k]
        for k, t in rows.items()
    ]  # fmt: skip
    print(machine_line())
    print_table("SchNet 64 wide x 2 interactions, 16 EMT structures per step",
                ["module", "ms/step", "ratio", "K passes"], table)  # fmt: skip


if __name__ == "__main__":
    main()
