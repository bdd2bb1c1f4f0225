"""How a force-training step grows with structure size (32 to 4096 atoms) and batch size.

A training step of ``ForceRegressionTask`` (energy, forces by autograd with
``create_graph=True``, backward, AdamW) must cost time proportional to the number of atoms
(the neighbour graph within a fixed cutoff grows linearly). The script times it on periodic
supercells of one bundled EMT cell, from 32 to 4096 atoms, and on batches of 1 to 64 EMT
structures, and fits ``time = intercept + slope * atoms`` by least squares over the sizes of
at least ``--fit-from`` atoms (below, the fixed cost per step dominates). Reported: the slope
(microseconds per atom), the intercept, the largest relative deviation from the fitted line,
and the exponent ``b`` of ``time ~ atoms**b`` fitted on the same sizes (1 for linear growth).
The baseline, measured in the same run, is the smallest size's time per atom.

On Linux, glibc serves every allocation above 32 MB with a fresh ``mmap``, whose pages fault
in again at every step: from about 2000 atoms (edge tensors of SchNet 64 wide pass 32 MB) a
step then costs up to twice its linear share. ``MALLOC_MMAP_MAX_=0`` in the environment (or
jemalloc / tcmalloc) keeps the memory and restores linear growth.

Run: ``uv run python benchmarks/scaling.py [--quick] [--encoder tiny|realistic]``.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable

import torch
from _common import (
    collate,
    emt_structures,
    machine_line,
    print_table,
    realistic_schnet,
    setup_threads,
    supercell,
    tiny_schnet,
)
from torch import nn
from torch_geometric.data import Batch

from matsci.tasks.physics import ForceRegressionTask

SUPERCELLS = [(2, 2, 1), (2, 2, 2), (4, 2, 2), (4, 4, 2), (4, 4, 4), (8, 4, 4), (8, 8, 4),
              (8, 8, 8)]  # fmt: skip
"""Repeats of an 8-atom cell: 32 to 4096 atoms."""
BATCH_SIZES = [1, 2, 4, 8, 16, 32, 64]


def step_seconds(task: ForceRegressionTask, batch: Batch, repeats: int) -> float:
    """Median time of a training step on ``batch`` (after one warm-up step)."""
    optimizer = torch.optim.AdamW(task.parameters(), lr=1e-4)
    times = []
    for index in range(repeats + 1):
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss = task.compute_losses(task(batch), batch)[0]
        loss.backward()
        optimizer.step()
        if index:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def fit_line(atoms: list[float], seconds: list[float]) -> tuple[float, float, float]:
    """Least-squares ``(slope, intercept, largest relative deviation)``."""
    n = len(atoms)
    mean_x, mean_y = sum(atoms) / n, sum(seconds) / n
    sxx = sum((x - mean_x) ** 2 for x in atoms)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(atoms, seconds, strict=True)) / sxx
    intercept = mean_y - slope * mean_x
    deviation = max(abs(y - (intercept + slope * x)) / y for x, y in zip(atoms, seconds,
                                                                         strict=True))  # fmt: skip
    return slope, intercept, deviation


def report(title: str, label: str, sizes: list[str], atoms: list[int], seconds: list[float],
           edges: list[int], fit_from: int) -> None:  # fmt: skip
    fitted = [(n, t) for n, t in zip(atoms, seconds, strict=True) if n >= fit_from]
    slope, intercept, deviation = fit_line([n for n, _ in fitted], [t for _, t in fitted])
    logs = [(math.log(n), math.log(t)) for n, t in fitted]
    exponent, _, _ = fit_line([x for x, _ in logs], [y for _, y in logs])
    base = seconds[0] / atoms[0]
    rows = [[size, f"{n}", f"{e}", f"{1e3 * t:.1f}", f"{1e6 * t / n:.1f}", f"{t / n / base:.2f}"]
            for size, n, e, t in zip(sizes, atoms, edges, seconds, strict=True)]  # fmt: skip
    print_table(title, [label, "atoms", "edges", "ms/step", "us/atom", "per atom / first"], rows)
    print(
        f"fit from {fit_from} atoms: {1e6 * slope:.0f} us per atom + {1e3 * intercept:.1f} ms, "
        f"largest deviation from the line {100 * deviation:.0f}%; time ~ atoms^{exponent:.2f}"
    )


def build(encoder: Callable[[], nn.Module]) -> ForceRegressionTask:
    torch.manual_seed(0)
    return ForceRegressionTask(encoder=encoder(), output_kwargs={"hidden_dim": 64})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", choices=["tiny", "realistic"], default="realistic")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--fit-from", type=int, default=128, help="smallest size fitted")
    parser.add_argument("--quick", action="store_true", help="up to 1024 atoms, 1 repeat")
    args = parser.parse_args()
    setup_threads(args.threads)
    encoder = {"tiny": tiny_schnet, "realistic": realistic_schnet}[args.encoder]
    repeats = 1 if args.quick else args.repeats
    cells = SUPERCELLS[:6] if args.quick else SUPERCELLS
    print(machine_line())
    print(f"ForceRegressionTask training step, SchNet {args.encoder}; median of {repeats} steps")
    structures = emt_structures()
    base = next(s for s in structures if int(s.natoms) == 8)
    task = build(encoder)
    sizes, atoms, seconds, edges = [], [], [], []
    for repeat in cells:
        batch = Batch.from_data_list([supercell(base, repeat)])
        sizes.append("x".join(map(str, repeat)))
        atoms.append(batch.num_nodes)
        edges.append(int(batch.edge_index.shape[1]))
        seconds.append(step_seconds(task, batch, repeats))
    report("one periodic supercell of an 8-atom EMT cell", "repeats", sizes, atoms, seconds,
           edges, args.fit_from)  # fmt: skip
    sizes, atoms, seconds, edges = [], [], [], []
    for size in BATCH_SIZES[:6] if args.quick else BATCH_SIZES:
        batch = collate(structures, size)[0]
        sizes.append(f"{size}")
        atoms.append(batch.num_nodes)
        edges.append(int(batch.edge_index.shape[1]))
        seconds.append(step_seconds(task, batch, repeats))
    report("batches of EMT structures (8 to 32 atoms each)", "structures", sizes, atoms,
           seconds, edges, args.fit_from)  # fmt: skip


if __name__ == "__main__":
    main()
