"""Batches by atom budget against a fixed batch size, on 4-atom cells mixed with 400-atom slabs.

The data: 90 % copper cells of 4 atoms (rattled, lattice constant 3.5 to 3.7 Å) and 10 %
copper (111) slabs of 400 atoms, with their periodic radius graphs at 5 Å (168 and about 13,200
edges). The baseline is a shuffled fixed batch size chosen so that a batch holds on average as
many atoms as the budget allows (``round(max_atoms / mean atoms)`` structures); the budget
sampler is :class:`~matsci.data.BudgetBatchSampler` with ``max_atoms`` and ``max_edges``.
Both run SchNet 64x3 forward and backward (energy loss) on every batch of an epoch.

Reported for each: batches per epoch (over ``--epochs`` epochs: the budget sampler's never
changes), atoms per batch (mean and max) and the largest edge count, padding waste, the peak
memory of a step (largest over the epoch) and the spread of step times (std / mean over the
batches of an epoch), then the budget sampler's figures as ratios of the baseline's.

Padding waste is the budget left unused, summed over batches, as a fraction of the budget
times the number of batches: ``sum(max_atoms - atoms) / (batches * max_atoms)``. For the fixed
batch size the "budget" is what the run must be provisioned for, its largest batch.

Peak memory. ``tracemalloc`` does not see torch's allocations, and the peak RSS of a process
(``ru_maxrss``) is one high-water mark for the whole run, with the allocator's caching in it.
On the CPU each step (collating the batch, forward, backward) therefore runs once under
``torch.profiler`` with ``profile_memory=True``: its trace records every allocation and free
with the running total, and the step's peak is the largest running total (tensors created
before the step, such as the weights, are not counted). On a GPU it is
``torch.cuda.max_memory_allocated`` above the memory allocated before the step. The memory
limit of the demonstration is the largest step peak of the budget sampler, the memory a user
sizes the budget for; the table counts the fixed-size batches that exceed it. Step times are
measured in separate passes, without the profiler, the two samplers' epochs alternating so that
both see the same load.

Run: ``uv run python benchmarks/budget_batching.py [--quick] [--device cuda]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

os.environ.setdefault("KINETO_LOG_LEVEL", "5")  # the profiler's start/stop lines, per step

import numpy as np
import torch
from _common import (
    CUTOFF,
    cuda_peak_bytes,
    machine_line,
    print_table,
    realistic_schnet,
    setup_threads,
    structure_energy,
    synchronize,
)
from ase.build import bulk, fcc111
from torch import nn
from torch.profiler import ProfilerActivity, profile
from torch_geometric.data import Batch, Data

from matsci.data import BudgetBatchSampler, atoms_to_data, edge_counts
from matsci.transforms import PeriodicRadiusGraph


def mixed_structures(count: int, large_fraction: float, seed: int) -> list[Data]:
    """``count`` structures: 4-atom Cu cells and, a ``large_fraction`` of them, 400-atom slabs."""
    rng = np.random.default_rng(seed)
    graph = PeriodicRadiusGraph(cutoff=CUTOFF)
    structures = []
    slab = fcc111("Cu", size=(10, 10, 4), vacuum=8.0)  # 400 atoms; 16 Å of vacuum > cutoff
    slab.pbc = True
    slab.set_array("tags", None)  # the cells have none: every structure the same keys
    for _ in range(count):
        if rng.random() < large_fraction:
            atoms = slab.copy()
        else:
            atoms = bulk("Cu", "fcc", a=float(rng.uniform(3.5, 3.7)), cubic=True)
        atoms.rattle(stdev=0.05, seed=int(rng.integers(2**31)))
        data = graph(atoms_to_data(atoms))
        data.energy = torch.zeros(1)
        structures.append(data)
    return structures


def fixed_size_batches(count: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """A shuffled epoch in batches of ``batch_size`` (the last one shorter)."""
    order = np.random.default_rng([seed, epoch]).permutation(count)
    return [order[start : start + batch_size].tolist() for start in range(0, count, batch_size)]


class EnergyModel(nn.Module):
    """SchNet 64x3 and a per-atom energy head summed per structure."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = realistic_schnet()
        self.head = nn.Sequential(nn.Linear(64, 64), nn.SiLU(), nn.Linear(64, 1))

    def forward(self, batch: Batch) -> torch.Tensor:
        point = self.encoder(batch).point_embedding
        return structure_energy(self.head, point, batch)


def make_step(
    model: EnergyModel, structures: Sequence[Data], device: torch.device
) -> Callable[[list[int]], None]:
    """One training step's work on a batch of indices: collate, forward, backward."""

    def step(indices: list[int]) -> None:
        batch = Batch.from_data_list([structures[i] for i in indices]).to(device)
        model.zero_grad(set_to_none=True)
        loss = (model(batch) - batch.energy).square().mean()
        loss.backward()

    return step


def peak_bytes(step: Callable[[], None], device: torch.device) -> int:
    """Peak memory allocated by torch during one call of ``step`` (see the module notes)."""
    if device.type == "cuda":
        return cuda_peak_bytes(step, device)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "trace.json"
        prof.export_chrome_trace(str(path))
        events = json.loads(path.read_text())["traceEvents"]
    totals = [
        event["args"]["Total Allocated"]
        for event in events
        if event.get("name") == "[memory]" and event["args"].get("Device Type", 0) == 0
    ]
    return int(max(totals, default=0))


def step_seconds(
    step: Callable[[list[int]], None], batches: list[list[int]], device: torch.device
) -> list[float]:
    times = []
    for batch in batches:
        synchronize(device)
        start = time.perf_counter()
        step(batch)
        synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def spread(times: Sequence[float]) -> float:
    return statistics.pstdev(times) / statistics.fmean(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--structures", type=int, default=600)
    parser.add_argument("--large-fraction", type=float, default=0.1)
    parser.add_argument("--max-atoms", type=int, default=1600)
    parser.add_argument("--max-edges", type=int, default=56_000)
    parser.add_argument("--epochs", type=int, default=3, help="epochs of batch counts")
    parser.add_argument("--timed-epochs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="200 structures, budget 800")
    args = parser.parse_args()
    if args.quick:
        args.structures, args.max_atoms, args.max_edges = 200, 800, 28_000
    setup_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)

    structures = mixed_structures(args.structures, args.large_fraction, seed=0)
    atoms = np.array([int(d.natoms) for d in structures])
    edges = edge_counts(structures)
    batch_size = max(1, round(args.max_atoms / atoms.mean()))
    budget = BudgetBatchSampler(atoms, edge_counts=edges, max_atoms=args.max_atoms,
                                max_edges=args.max_edges, seed=0)  # fmt: skip

    def epoch_batches(kind: str, epoch: int) -> list[list[int]]:
        if kind == "fixed":
            return fixed_size_batches(len(structures), batch_size, seed=0, epoch=epoch)
        budget.set_epoch(epoch)
        return list(budget)

    kinds = ("fixed", "budget")
    counts: dict[str, list[dict[str, float]]] = {kind: [] for kind in kinds}
    for epoch in range(args.epochs):
        for kind in kinds:
            batches = epoch_batches(kind, epoch)
            per_batch = np.array([atoms[b].sum() for b in batches])
            ceiling = args.max_atoms if kind == "budget" else per_batch.max()
            counts[kind].append({
                "batches": len(batches),
                "mean_atoms": per_batch.mean(),
                "max_atoms": per_batch.max(),
                "max_edges": max(edges[b].sum() for b in batches),
                "waste": (ceiling - per_batch).sum() / (len(batches) * ceiling),
            })  # fmt: skip

    model = EnergyModel().to(device)
    step = make_step(model, structures, device)
    step(epoch_batches("budget", 0)[0])  # warm up
    peaks = {
        kind: [peak_bytes(lambda b=b: step(b), device) for b in epoch_batches(kind, 0)]
        for kind in kinds
    }
    times: dict[str, list[float]] = {kind: [] for kind in kinds}
    spreads: dict[str, list[float]] = {kind: [] for kind in kinds}
    for epoch in range(args.timed_epochs):
        for kind in kinds:  # alternating: both see the same load
            seconds = step_seconds(step, epoch_batches(kind, epoch), device)
            times[kind] += seconds
            spreads[kind].append(spread(seconds))

    limit = max(peaks["budget"])
    print(machine_line(device))
    print(
        f"{len(structures)} structures: {int((atoms == 4).sum())} of 4 atoms, "
        f"{int((atoms > 4).sum())} of {atoms.max()} atoms; edges {edges.min()} to {edges.max()} "
        f"(cutoff {CUTOFF} Å); SchNet 64x3 forward + backward"
    )
    print(
        f"budget: max_atoms={args.max_atoms}, max_edges={args.max_edges} "
        f"({len(budget.capacities)} buckets, capacities {budget.capacities}); "
        f"fixed batch size {batch_size} (= max_atoms / mean atoms {atoms.mean():.1f})"
    )
    rows, summary = [], {}
    for kind in kinds:
        per_epoch = counts[kind]
        over = sum(peak > limit for peak in peaks[kind])
        summary[kind] = {
            "max_atoms": max(c["max_atoms"] for c in per_epoch),
            "max_edges": max(c["max_edges"] for c in per_epoch),
            "peak": max(peaks[kind]),
            "spread": statistics.fmean(spreads[kind]),
            "epoch_s": sum(times[kind]) / args.timed_epochs,
            "waste": statistics.fmean(c["waste"] for c in per_epoch),
        }
        s = summary[kind]
        rows.append([
            "fixed size" if kind == "fixed" else "budget",
            "/".join(str(c["batches"]) for c in per_epoch),
            f"{statistics.fmean(c['mean_atoms'] for c in per_epoch):.0f}",
            f"{s['max_atoms']:.0f}", f"{s['max_edges']:.0f}", f"{s['waste']:.2f}",
            f"{s['peak'] / 2**20:.0f}", f"{over}/{len(peaks[kind])}",
            f"{s['spread']:.2f}", f"{s['epoch_s']:.1f}",
        ])  # fmt: skip
    print_table(
        f"per epoch (batch counts of {args.epochs} epochs); memory limit = the budget "
        f"sampler's largest step peak, {limit / 2**20:.0f} MiB",
        ["batching", "batches", "mean atoms", "max atoms", "max edges", "waste", "peak MiB",
         "over limit", "time spread", "epoch s"],
        rows,
    )  # fmt: skip
    fixed, ours = summary["fixed"], summary["budget"]
    print_table(
        "budget sampler / fixed batch size",
        ["max atoms", "max edges", "peak memory", "time spread", "epoch time"],
        [[
            f"{ours['max_atoms'] / fixed['max_atoms']:.2f}",
            f"{ours['max_edges'] / fixed['max_edges']:.2f}",
            f"{ours['peak'] / fixed['peak']:.2f}",
            f"{ours['spread'] / fixed['spread']:.2f}",
            f"{ours['epoch_s'] / fixed['epoch_s']:.2f}",
        ]],
    )  # fmt: skip


if __name__ == "__main__":
    main()
