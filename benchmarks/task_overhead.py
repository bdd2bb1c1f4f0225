"""Cost of the task layer: each task through ``Trainer.fit`` against a hand-written PyTorch loop.

For ``ScalarRegressionTask``, ``ForceRegressionTask`` (without and with stress) and a two-task
``MultiTaskLitModule`` (two structure targets on one encoder pass) the script times, in the same
process and interleaved:

- ``bare``: a hand-written loop doing the same mathematics with copies of the task's encoder
  and heads, the same batches and AdamW with the same parameter groups;
- ``lightning``: the same hand-written step as the ``training_step`` of a plain
  ``LightningModule`` (what Lightning's loop costs, without the task layer);
- ``task``: the task itself through ``Trainer.fit`` (no logger, progress bar, checkpointing or
  validation: a benchmark measures the step, not the reporting).

Each is run ``--repeats`` times; a run's figure is the median iteration time after
``--warmup`` steps, and the table shows the median over repeats. ``ratio`` is task / bare and
``fixed ms`` the difference per step. The tiny encoder (SchNet 8 wide, one interaction, 8-wide
heads) shows the fixed cost of the task layer; the realistic one (SchNet 64 wide, three
interactions) shows what it means for a real model.

``--clock cpu`` times with the CPU time of the main thread instead of wall time: steadier on
a shared machine (with one torch thread the main thread holds all the work).

Run: ``uv run python benchmarks/task_overhead.py [--quick] [--encoder tiny|realistic|both]
[--clock wall|cpu]``.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable
from typing import Any

import lightning.pytorch as pl
import torch
from _common import (
    Batches,
    InterleavedBaseline,
    collate,
    cycle,
    emt_structures,
    machine_line,
    median_after,
    mse,
    print_table,
    quiet_trainer,
    realistic_schnet,
    setup_threads,
    tiny_schnet,
)
from torch import Tensor, nn
from torch_geometric.data import Batch
from torch_geometric.utils import scatter

from matsci.tasks.core import MultiTaskLitModule, ScalarRegressionTask
from matsci.tasks.physics import ForceRegressionTask

Step = Callable[[Batch], Tensor]


# -- the same mathematics, hand-written ----------------------------------------------------------


class BareScalar(nn.Module):
    """Structure heads on the encoder's structure embedding, MSE on normalized targets."""

    def __init__(self, task: ScalarRegressionTask | MultiTaskLitModule) -> None:
        super().__init__()
        tasks = (
            [task.task(name) for name in task.task_names]
            if isinstance(task, MultiTaskLitModule)
            else [task]
        )
        self.encoder = copy.deepcopy(tasks[0].encoder)
        self.keys = [t.task_keys[0] for t in tasks]
        self.heads = nn.ModuleList(copy.deepcopy(t.output_heads[t.task_keys[0]]) for t in tasks)
        stats = [t.normalizers[t.task_keys[0]] for t in tasks]
        self.means = [float(n.mean) for n in stats]  # type: ignore[arg-type]
        self.stds = [float(n.std) for n in stats]  # type: ignore[arg-type]

    def groups(self) -> list[dict[str, Any]]:
        groups = [{"params": list(self.encoder.parameters())}]
        return groups + [{"params": list(head.parameters())} for head in self.heads]

    def loss(self, batch: Batch) -> Tensor:
        system = self.encoder(batch).system_embedding
        total = torch.zeros((), dtype=system.dtype)
        for key, head, mean, std in zip(self.keys, self.heads, self.means, self.stds, strict=True):
            target = (batch[key].reshape(-1, 1) - mean) / std
            total = total + mse(head(system), target)
        return total


class BareForces(nn.Module):
    """Per-atom energies, forces by autograd (``create_graph=True``), optionally stress."""

    def __init__(self, task: ForceRegressionTask) -> None:
        super().__init__()
        self.encoder = copy.deepcopy(task.encoder)
        self.head = copy.deepcopy(task.output_heads["energy"])
        self.stress = task.compute_stress
        self.scale = float(task.energy_scale)
        self.references = task.reference_energies.clone()
        self.weights = dict(task.task_loss_scaling)

    def groups(self) -> list[dict[str, Any]]:
        return [
            {"params": list(self.encoder.parameters())},
            {"params": list(self.head.parameters())},
        ]

    def loss(self, batch: Batch) -> Tensor:
        positions, cell = batch.pos, batch.cell
        pos = positions.detach().requires_grad_(True)
        inputs = [pos]
        work_pos = pos
        if self.stress:
            strain = torch.zeros_like(cell, requires_grad=True)
            symmetric = 0.5 * (strain + strain.transpose(1, 2))
            work_pos = pos + torch.bmm(pos.unsqueeze(1), symmetric[batch.batch]).squeeze(1)
            batch.cell = cell + torch.bmm(cell, symmetric)
            inputs.append(strain)
        batch.pos = work_pos
        try:
            point = self.encoder(batch).point_embedding
            atom = self.scale * self.head(point).squeeze(-1) + self.references[batch.atomic_numbers]
            energy = scatter(atom, batch.batch, dim=0, dim_size=batch.natoms.shape[0], reduce="sum")
            grads = torch.autograd.grad(energy.sum(), inputs, create_graph=True)
        finally:
            batch.pos, batch.cell = positions, cell
        natoms = batch.natoms.to(energy.dtype)
        loss = self.weights["energy"] * mse(
            energy / natoms / self.scale, batch.energy / natoms / self.scale
        )
        loss = loss + self.weights["force"] * mse(-grads[0] / self.scale, batch.force / self.scale)
        if self.stress:
            volume = torch.linalg.det(cell).abs().reshape(-1, 1, 1)
            stress = grads[1] / volume
            loss = loss + self.weights["stress"] * mse(
                stress.reshape(-1, 9) / self.scale, batch.stress.reshape(-1, 9) / self.scale
            )
        return loss


def bare_step(model: BareScalar | BareForces, optimizer: torch.optim.Optimizer) -> Step:
    def step(batch: Batch) -> Tensor:
        optimizer.zero_grad(set_to_none=True)
        loss = model.loss(batch)
        loss.backward()
        optimizer.step()
        return loss

    return step


class PlainModule(pl.LightningModule):
    """The hand-written step as a LightningModule: Lightning's loop without the task layer."""

    def __init__(self, model: BareScalar | BareForces) -> None:
        super().__init__()
        self.model = model

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        return self.model.loss(batch)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.model.groups(), lr=1e-3)


# -- the cases -------------------------------------------------------------------------------------


def build_task(case: str, encoder: Callable[[], nn.Module], head_width: int) -> pl.LightningModule:
    torch.manual_seed(0)
    heads = {"hidden_dim": head_width}
    if case == "scalar":
        task = ScalarRegressionTask(encoder=encoder(), task_keys=["energy"], output_kwargs=heads)
        task.normalizers["energy"].mean.fill_(-2.0)  # type: ignore[union-attr]
        return task
    if case in ("forces", "forces+stress"):
        task = ForceRegressionTask(
            encoder=encoder(), compute_stress=case == "forces+stress", output_kwargs=heads,
            task_loss_scaling={"force": 10.0},
        )  # fmt: skip
        task.energy_scale.fill_(0.5)
        return task
    shared = encoder()
    first = ScalarRegressionTask(encoder=shared, task_keys=["energy"], output_kwargs=heads)
    second = ScalarRegressionTask(encoder=shared, task_keys=["volume"], output_kwargs=heads)
    return MultiTaskLitModule(("emt", first), ("emt", second))


def bare_model(case: str, task: pl.LightningModule) -> BareScalar | BareForces:
    if case.startswith("forces"):
        assert isinstance(task, ForceRegressionTask)
        return BareForces(task)
    assert isinstance(task, ScalarRegressionTask | MultiTaskLitModule)
    return BareScalar(task)


def run_interleaved(
    case: str, module: pl.LightningModule, work: list[Batch], warmup: int, encoder: Any,
    head_width: int, clock: Callable[[], float],
) -> tuple[float, float]:  # fmt: skip
    """Median step of ``module`` through ``Trainer.fit`` and of the bare loop, interleaved."""
    model = bare_model(case, build_task(case, encoder, head_width))
    optimizer = torch.optim.AdamW(model.groups(), lr=1e-3)
    multitask = isinstance(module, MultiTaskLitModule)
    timer = InterleavedBaseline(
        bare_step(model, optimizer), select=(lambda b: b["emt"]) if multitask else None,
        clock=clock,
    )  # fmt: skip
    trainer = quiet_trainer(max_steps=len(work), callbacks=[timer])
    loader = Batches([{"emt": b} for b in work] if multitask else work)
    trainer.fit(module, train_dataloaders=loader)
    return median_after(timer.loop, warmup), median_after(timer.baseline, warmup)


def measure(case: str, encoder: Callable[[], nn.Module], head_width: int, batches: list[Batch],
            steps: int, warmup: int, repeats: int,
            clock: Callable[[], float]) -> dict[str, float]:  # fmt: skip
    """Ratios (and times) of the task and of a plain LightningModule against the bare loop."""
    work = cycle(batches, steps + warmup)
    runs: dict[str, list[float]] = {
        name: [] for name in ("bare", "lightning", "task", "lightning/bare", "task/bare")
    }
    for _ in range(repeats):
        plain = PlainModule(bare_model(case, build_task(case, encoder, head_width)))
        lightning, bare_l = run_interleaved(case, plain, work, warmup, encoder, head_width, clock)
        task, bare_t = run_interleaved(case, build_task(case, encoder, head_width), work, warmup,
                                       encoder, head_width, clock)  # fmt: skip
        runs["bare"].append(bare_t)
        runs["lightning"].append(lightning - bare_l + bare_t)  # on the task run's bare time
        runs["task"].append(task)
        runs["lightning/bare"].append(lightning / bare_l)
        runs["task/bare"].append(task / bare_t)
    return {name: statistics.median(values) for name, values in runs.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", choices=["tiny", "realistic", "both"], default="both")
    parser.add_argument("--cases", nargs="+", default=["scalar", "forces", "forces+stress",
                                                        "multitask"])  # fmt: skip
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default="wall",
        help="wall time, or CPU time of the main thread (steadier on a "
        "shared machine; with one torch thread it holds all the work)",
    )
    parser.add_argument("--quick", action="store_true", help="fewer steps and repeats")
    args = parser.parse_args()
    setup_threads(args.threads)
    batches = collate(emt_structures(), args.batch_size)
    encoders = {
        "tiny": (tiny_schnet, 8, 60 if args.quick else 200, 20),
        "realistic": (realistic_schnet, 64, 15 if args.quick else 60, 5),
    }
    repeats = 2 if args.quick else args.repeats
    clock = time.thread_time if args.clock == "cpu" else time.perf_counter
    print(machine_line())
    print(f"batches of {args.batch_size} EMT structures (8 to 32 atoms), {repeats} repeats, "
          f"{args.clock} clock")  # fmt: skip
    for name, (encoder, head_width, steps, warmup) in encoders.items():
        if args.encoder not in (name, "both"):
            continue
        rows = []
        for case in args.cases:
            result = measure(case, encoder, head_width, batches, steps, warmup, repeats, clock)
            bare, task = result["bare"], result["task"]
            ratio, lightning_ratio = result["task/bare"], result["lightning/bare"]
            rows.append([
                case, f"{1e3 * bare:.2f}", f"{1e3 * task:.2f}", f"{lightning_ratio:.3f}",
                f"{ratio:.3f}", f"{1e3 * (ratio - 1) * bare:+.2f}",
                f"{1e3 * (ratio - lightning_ratio) * bare:+.2f}",
            ])  # fmt: skip
        print_table(
            f"{name} encoder ({steps} steps after {warmup} warm-up, median ms per step)",
            ["case", "bare ms", "task ms", "lightning/bare", "task/bare", "fixed ms",
             "of which task layer ms"],
            rows,
        )  # fmt: skip


if __name__ == "__main__":
    main()
