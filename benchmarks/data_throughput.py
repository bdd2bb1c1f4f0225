"""Data pipeline speed: ASE database to neighbour graphs to batches, and its share of training.

1. Structures per second of ``AseDbDataset`` + ``PeriodicRadiusGraph`` (the read, the
   conversion and the neighbour list), then with collation through the loader, single process
   and with 1 and 2 workers (steady state: a second pass over the data, workers kept alive;
   the first pass, with worker start-up, is shown too). The baseline, measured in the same run,
   is collation alone: the loader over the same structures already read and held in memory.
2. A training run of the default example (``examples/forces_schnet.yaml``: SchNet 64x3,
   energy, forces and stress, batches of 8, cutoff 4.5 Å; or with ``--model radial`` the
   small encoder of ``examples/emt_forces_quickstart.py``) for ``--epochs`` epochs with
   :class:`AtomThroughputMonitor`: atoms and structures per second, and the share of wall time
   the loop waits for data (target: below 5%), with and without a loader worker (which gets a
   core of its own: torch's threads are reduced by one), reading the database in every epoch
   or with ``AtomsDataModule(pre_transform=PeriodicRadiusGraph(...), in_memory=True)``, as the
   example configs do: the structures and their graphs are read once, in ``setup`` (timed
   apart), and the loader only collates.

Run: ``uv run python benchmarks/data_throughput.py [--quick]``. The same pipeline on large data
(ASE-LMDB shard folders and extxyz files of 10^4 to 10^6 structures: start-up, reads per
worker, memory against dataset size, data wait) is measured by ``data_at_scale.py``.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import lightning.pytorch as pl
import torch
from _common import CUTOFF, RadialEncoder, machine_line, print_table, setup_threads
from torch_geometric.loader import DataLoader

from matsci.data import AseDbDataset, AtomsDataModule
from matsci.data.examples import bundled_dataset_path
from matsci.tasks.physics import ForceRegressionTask
from matsci.training import AtomThroughputMonitor
from matsci.transforms import PeriodicRadiusGraph

KEYS = ["energy", "force", "stress"]


def dataset(cutoff: float = CUTOFF) -> AseDbDataset:
    return AseDbDataset(bundled_dataset_path("emt"), keys=KEYS,
                        transform=PeriodicRadiusGraph(cutoff=cutoff))  # fmt: skip


def rate_of(passes: int, run: Any) -> list[float]:
    """Structures per second of each of ``passes`` calls of ``run`` (which returns a count)."""
    rates = []
    for _ in range(passes):
        start = time.perf_counter()
        count = run()
        rates.append(count / (time.perf_counter() - start))
    return rates


def pipeline_rows(batch_size: int, passes: int) -> list[list[str]]:
    data = dataset()
    count = len(data)
    held = [data[i] for i in range(count)]

    def iterate(loader: Any) -> int:
        return sum(int(batch.num_graphs) for batch in loader)

    collate_only = DataLoader(held, batch_size=batch_size, shuffle=True)
    baseline = max(rate_of(passes, lambda: iterate(collate_only)))
    rows: list[tuple[str, float, float | None]] = []
    reads = rate_of(passes, lambda: sum(1 for i in range(count) if data[i] is not None))
    rows.append(("read + radius graph, no collation", max(reads), None))
    for workers in (0, 1, 2):
        loader = DataLoader(data, batch_size=batch_size, shuffle=True, num_workers=workers,
                            persistent_workers=workers > 0)  # fmt: skip
        first, *steady = rate_of(passes + 1, lambda loader=loader: iterate(loader))
        rows.append((f"loader, {workers} workers", max(steady), first))
    table = [["collation only, structures in memory (baseline)", f"{baseline:,.0f}", "", "1"]]
    for name, rate, first in rows:
        table.append([name, f"{rate:,.0f}", "" if first is None else f"{first:,.0f}",
                      f"{rate / baseline:.3f}"])  # fmt: skip
    return table


def example_task(model: str) -> tuple[ForceRegressionTask, float]:
    """The task of ``examples/forces_schnet.yaml`` (or of the Python quick-start) and its cutoff."""
    if model == "radial":
        task = ForceRegressionTask(encoder_class=RadialEncoder, compute_stress=True, lr=3e-3,
                                   task_loss_scaling={"force": 10.0})  # fmt: skip
        return task, 4.0
    encoder = {"hidden_channels": 64, "num_filters": 64, "num_interactions": 3,
               "num_gaussians": 32, "cutoff": 4.5}  # fmt: skip
    task = ForceRegressionTask(
        compute_stress=True, encoder_class="matsci.encoders.SchNetEncoder",
        encoder_kwargs=encoder, output_kwargs={"hidden_dim": 64}, lr=3e-3,
        task_loss_scaling={"energy": 1.0, "force": 10.0, "stress": 1.0},
    )  # fmt: skip
    return task, 4.5


def example_run(
    model: str, epochs: int, workers: int, in_memory: bool
) -> tuple[AtomThroughputMonitor, float]:
    """The default example's training, with the throughput monitor; and the setup time."""
    torch.manual_seed(0)
    task, cutoff = example_task(model)
    graph = {"pre_transform" if in_memory else "transform": PeriodicRadiusGraph(cutoff=cutoff)}
    data = AtomsDataModule(bundled_dataset_path("emt"), keys=KEYS, batch_size=8,
                           num_workers=workers, in_memory=in_memory, **graph)  # fmt: skip
    start = time.perf_counter()
    data.setup("fit")
    setup_seconds = time.perf_counter() - start
    loader = data.train_dataloader()
    task.fit_normalizers(loader)
    monitor = AtomThroughputMonitor()
    trainer = pl.Trainer(max_epochs=epochs, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         num_sanity_val_steps=0, limit_val_batches=0,
                         callbacks=[monitor])  # fmt: skip
    trainer.fit(task, train_dataloaders=loader)
    return monitor, setup_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--model", choices=["schnet", "radial"], default="schnet")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--quick", action="store_true", help="one pass, one epoch")
    args = parser.parse_args()
    setup_threads(args.threads)
    passes, epochs = (1, 1) if args.quick else (args.passes, args.epochs)
    print(machine_line())
    print_table(
        f"structures per second, bundled EMT data (300 cells, 8 to 32 atoms), cutoff "
        f"{CUTOFF} Å, batches of {args.batch_size}; best of {passes} passes",
        ["pipeline", "structures/s", "first pass", "/ baseline"],
        pipeline_rows(args.batch_size, passes),
    )
    rows = []
    threads = torch.get_num_threads()
    for name, workers, in_memory in (("AtomsDataModule, no worker", 0, False),
                                     ("AtomsDataModule, 1 worker", 1, False),
                                     ("in_memory=True, no worker", 0, True),
                                     ("in_memory=True, 1 worker", 1, True)):  # fmt: skip
        # A worker gets a core of its own: oversubscribed cores stall torch's thread pool.
        torch.set_num_threads(max(1, threads - workers))
        monitor, setup_seconds = example_run(args.model, epochs, workers, in_memory)
        total = monitor.total
        torch.set_num_threads(threads)
        rows.append([name, f"{total.atoms_per_second:,.0f}",
                     f"{total.structures_per_second:,.0f}",
                     f"{1e3 * total.seconds / max(total.steps, 1):.1f}",
                     f"{100 * total.data_wait_fraction:.1f}%",
                     f"{setup_seconds:.2f}"])  # fmt: skip
    print_table(
        f"training the default example ({args.model} encoder, {epochs} epochs): "
        "AtomThroughputMonitor totals",
        ["data", "atoms/s", "structures/s", "ms/step", "data wait", "setup s"],
        rows,
    )


if __name__ == "__main__":
    main()
