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
import time
from typing import Any

import lightning.pytorch as pl
import torch
from torch_geometric.loader import DataLoader

from matsci.data import AseDbDataset
from matsci.data.examples import bundled_dataset_path
from matsci.encoders import SchNetEncoder
from matsci.tasks.core import MultiTaskLitModule, ScalarRegressionTask
from matsci.transforms import PeriodicRadiusGraph

WARMUP = 5


class StepTimer(pl.Callback):
    """Wall time of every training step (batch start to batch end)."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._start = 0.0

    def on_train_batch_start(self, *args: Any) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, *args: Any) -> None:
        self.times.append(time.perf_counter() - self._start)


def structures(count: int) -> list[Any]:
    dataset = AseDbDataset(bundled_dataset_path("emt"), keys=["energy"],
                           transform=PeriodicRadiusGraph(cutoff=5.0))  # fmt: skip
    items = [dataset[i] for i in range(count)]
    for data in items:
        for k in range(8):  # eight targets, one per task
            setattr(data, f"target_{k}", data.energy * (k + 1))
    return items


def median_step(module: pl.LightningModule, loader: Any, steps: int) -> float:
    timer = StepTimer()
    trainer = pl.Trainer(accelerator="cpu", max_steps=steps + WARMUP, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[timer])  # fmt: skip
    trainer.fit(module, train_dataloaders=loader)
    return statistics.median(timer.times[WARMUP:])


def build(k: int) -> pl.LightningModule:
    torch.manual_seed(0)
    encoder = SchNetEncoder(hidden_channels=64, num_filters=64, num_interactions=2)
    tasks = [ScalarRegressionTask(encoder=encoder, task_keys=[f"target_{i}"]) for i in range(k)]
    if k == 0:
        return ScalarRegressionTask(encoder=encoder, task_keys=["target_0"])
    return MultiTaskLitModule(*[("emt", task) for task in tasks])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    data = structures(128)
    single_loader = DataLoader(data, batch_size=16, shuffle=True)
    rows: dict[str, list[float]] = {}
    for _ in range(args.repeats):
        rows.setdefault("single task", []).append(median_step(build(0), single_loader, args.steps))
        for k in (2, 4, 8):
            loader = {"emt": DataLoader(data, batch_size=16, shuffle=True)}
            rows.setdefault(f"multi-task, K={k}", []).append(
                median_step(build(k), loader, args.steps)
            )
    baseline = statistics.median(rows["single task"])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"SchNet 64 wide x 2 interactions, 16 EMT structures per step")  # fmt: skip
    print(f"{'module':<20}{'ms/step':>10}{'ratio':>8}{'K passes':>10}")
    for name, times in rows.items():
        value = statistics.median(times)
        k = 1 if name == "single task" else int(name.split("=")[1])
        print(f"{name:<20}{1e3 * value:>10.2f}{value / baseline:>8.2f}{k:>10}")


if __name__ == "__main__":
    main()
