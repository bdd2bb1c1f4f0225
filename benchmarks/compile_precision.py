"""Eager against ``torch.compile``, and bf16 / tf32 against float32, for force models.

For each encoder (SchNet 64x3 and the equivariant encoder) on batches of EMT structures whose
atom and edge counts change from batch to batch:

- compile: ``torch.compile(encoder, dynamic=True)`` against eager for conservative force
  training (``ForceRegressionTask``: forces by autograd with ``create_graph=True``), for
  prediction (energy and forces, a first derivative) and for direct-force training
  (``GradFreeForceRegression``). Reported: median step time after the first batch, the time
  of the first (compiling) call, graphs compiled after the first batch (0 means no
  recompilation per batch), and the largest force difference to eager over the force RMS.
- precision: ``torch.autocast`` with bfloat16 against float32 for the training step of
  ``ForceRegressionTask`` (same weights, same batches): speed-up and the force difference to
  float32 (RMS of the difference over the RMS of the forces); on a GPU also TF32 matmuls.

Run: ``uv run python benchmarks/compile_precision.py [--quick] [--device cuda]``.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
import torch._dynamo
import torch._functorch.config
from _common import (
    collate,
    emt_structures,
    machine_line,
    print_table,
    realistic_schnet,
    setup_threads,
    synchronize,
)
from torch import Tensor, nn
from torch_geometric.data import Batch

from matsci.encoders import EquivariantEncoder
from matsci.tasks.core import BaseTaskModule
from matsci.tasks.physics import ForceRegressionTask, GradFreeForceRegression

# Autograd forces keep the graph of the backward pass; compiled backward functions then must
# not donate their buffers.
torch._functorch.config.donated_buffer = False


def small_equivariant() -> nn.Module:
    return EquivariantEncoder(num_channels=16, lmax=2, num_layers=2, cutoff=5.0)


def graphs_compiled() -> int:
    return int(torch._dynamo.utils.counters["stats"]["unique_graphs"])


def run_steps(step: Callable[[Batch], Tensor], batches: list[Batch], device: torch.device,
              ) -> tuple[list[float], list[Tensor], int]:  # fmt: skip
    """Time of each step, its force output, and graphs compiled after the first batch."""
    times, forces, after_first = [], [], 0
    for index, batch in enumerate(batches):
        if index == 1:
            after_first = graphs_compiled()
        synchronize(device)
        start = time.perf_counter()
        force = step(batch)
        synchronize(device)
        times.append(time.perf_counter() - start)
        forces.append(force.detach().float().cpu())
    return times, forces, graphs_compiled() - after_first


def force_difference(forces: list[Tensor], reference: list[Tensor]) -> float:
    """Largest |difference| over the force RMS, across the batches."""
    rms = torch.cat([f.reshape(-1) for f in reference]).square().mean().sqrt()
    worst = max(float((f - r).abs().max()) for f, r in zip(forces, reference, strict=True))
    return worst / float(rms)


def rms_difference(forces: list[Tensor], reference: list[Tensor]) -> float:
    """RMS of the difference over the RMS of the reference."""
    diff = torch.cat([(f - r).reshape(-1) for f, r in zip(forces, reference, strict=True)])
    ref = torch.cat([r.reshape(-1) for r in reference])
    return float(diff.square().mean().sqrt() / ref.square().mean().sqrt())


def training_step(task: BaseTaskModule, optimizer: torch.optim.Optimizer,
                  autocast: Any = None) -> Callable[[Batch], Tensor]:  # fmt: skip
    def step(batch: Batch) -> Tensor:
        task.train()
        optimizer.zero_grad(set_to_none=True)
        with autocast if autocast is not None else nullcontext():
            outputs = task(batch)
            loss = task.compute_losses(outputs, batch)[0]
        loss.backward()
        optimizer.step()
        return outputs["force"]

    return step


def prediction_step(task: BaseTaskModule) -> Callable[[Batch], Tensor]:
    def step(batch: Batch) -> Tensor:
        task.eval()
        return task.predict(batch)["force"]

    return step


def build(kind: str, encoder: Callable[[], nn.Module], device: torch.device) -> BaseTaskModule:
    torch.manual_seed(0)
    heads = {"hidden_dim": 64}
    if kind == "direct":
        return GradFreeForceRegression(encoder=encoder(), output_kwargs=heads).to(device)
    return ForceRegressionTask(encoder=encoder(), output_kwargs=heads).to(device)


@contextmanager
def compiled(task: BaseTaskModule) -> Iterator[BaseTaskModule]:
    """The task with its encoder compiled (``dynamic=True``); the caches are reset first."""
    torch._dynamo.reset()
    original = task.encoder
    task.encoder = torch.compile(original, dynamic=True)  # type: ignore[assignment]
    try:
        yield task
    finally:
        task.encoder = original


def compile_rows(name: str, encoder: Callable[[], nn.Module], batches: list[Batch],
                 device: torch.device) -> list[list[str]]:  # fmt: skip
    rows = []
    for label, kind in (("force training", "conservative"), ("prediction", "predict"),
                        ("direct-force training", "direct")):  # fmt: skip
        eager_task = build(kind, encoder, device)
        compiled_task = copy.deepcopy(eager_task)

        def make(task: BaseTaskModule, kind: str = kind) -> Callable[[Batch], Tensor]:
            if kind == "predict":
                return prediction_step(task)
            return training_step(task, torch.optim.AdamW(task.parameters(), lr=1e-4))

        eager_times, eager_forces, _ = run_steps(make(eager_task), batches, device)
        try:
            with compiled(compiled_task) as task:
                times, forces, recompiled = run_steps(make(task), batches, device)
        except (RuntimeError, torch._dynamo.exc.TorchDynamoException) as error:
            reason = str(error).splitlines()[0][:90]
            rows.append([name, label, f"{1e3 * statistics.median(eager_times[1:]):.1f}",
                         "fails", "", "", "", reason])  # fmt: skip
            continue
        eager, fast = statistics.median(eager_times[1:]), statistics.median(times[1:])
        rows.append([name, label, f"{1e3 * eager:.1f}", f"{1e3 * fast:.1f}", f"{eager / fast:.2f}",
                     f"{times[0]:.0f}", f"{recompiled}",
                     f"{force_difference(forces, eager_forces):.1e}"])  # fmt: skip
    return rows


def precision_rows(name: str, encoder: Callable[[], nn.Module], batches: list[Batch],
                   device: torch.device) -> list[list[str]]:  # fmt: skip
    reference = build("conservative", encoder, device)
    settings: dict[str, Any] = {
        "bfloat16 autocast": torch.autocast(device.type, dtype=torch.bfloat16),
    }
    if device.type == "cuda":
        settings["tf32 matmul"] = "tf32"
    rows = []
    for label, autocast in settings.items():
        fp32_task, low_task = copy.deepcopy(reference), copy.deepcopy(reference)
        fp32_opt = torch.optim.AdamW(fp32_task.parameters(), lr=0.0)
        low_opt = torch.optim.AdamW(low_task.parameters(), lr=0.0)  # same weights every step
        fp32_times, fp32_forces = [], []
        low_times, low_forces = [], []
        try:
            for batch in batches:  # interleaved: both see the same load
                t, f, _ = run_steps(training_step(fp32_task, fp32_opt), [batch], device)
                fp32_times += t
                fp32_forces += f
                if autocast == "tf32":
                    torch.backends.cuda.matmul.allow_tf32 = True
                    t, f, _ = run_steps(training_step(low_task, low_opt), [batch], device)
                    torch.backends.cuda.matmul.allow_tf32 = False
                else:
                    t, f, _ = run_steps(training_step(low_task, low_opt, autocast), [batch],
                                        device)  # fmt: skip
                low_times += t
                low_forces += f
        except RuntimeError as error:
            rows.append([name, label, "", "fails", "", str(error).splitlines()[0][:70]])
            continue
        fp32, low = statistics.median(fp32_times[1:]), statistics.median(low_times[1:])
        rows.append([name, label, f"{1e3 * fp32:.1f}", f"{1e3 * low:.1f}", f"{fp32 / low:.2f}",
                     f"{rms_difference(low_forces, fp32_forces):.1e}"])  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="SchNet only, 6 batches")
    args = parser.parse_args()
    setup_threads(args.threads)
    device = torch.device(args.device)
    count = 6 if args.quick else args.batches
    structures = emt_structures()
    # Shuffled so that every batch has other atom and edge counts (dynamic shapes).
    order = torch.randperm(len(structures), generator=torch.Generator().manual_seed(0))
    batches = [b.to(device) for b in collate([structures[int(i)] for i in order],
                                             args.batch_size)[:count]]  # fmt: skip
    encoders: dict[str, Callable[[], nn.Module]] = {"SchNet 64x3": realistic_schnet}
    if not args.quick:
        encoders["equivariant 16x2"] = small_equivariant
    print(machine_line(device))
    sizes = sorted({b.num_nodes for b in batches})
    print(f"{count} batches of {args.batch_size} EMT structures, {sizes[0]} to {sizes[-1]} "
          "atoms; times are medians after the first batch")  # fmt: skip
    rows = [row for name, enc in encoders.items() for row in compile_rows(name, enc, batches,
                                                                          device)]  # fmt: skip
    print_table("eager against torch.compile(dynamic=True) of the encoder",
                ["encoder", "step", "eager ms", "compiled ms", "speed-up", "first call s",
                 "recompiles", "max |dF| / F rms"], rows)  # fmt: skip
    rows = [row for name, enc in encoders.items() for row in precision_rows(name, enc, batches,
                                                                            device)]  # fmt: skip
    print_table("float32 against lower precision, ForceRegressionTask training step",
                ["encoder", "setting", "fp32 ms", "low ms", "speed-up", "rms dF / F rms"],
                rows)  # fmt: skip


if __name__ == "__main__":
    main()
