"""Memory and time of a prediction step against a training step, for force tasks.

Prediction (``task.predict``, what ``Trainer.predict`` and the ASE calculator run) takes forces
as a first derivative and keeps no graph; a training step keeps the graph of the forces
(``create_graph=True``) for the backward pass of the force loss. The script measures, on the
same batch, the peak tensor memory and the median time of both, for ``ForceRegressionTask``
without and with stress, on SchNet and on the equivariant encoder.

Peak memory on the CPU is the largest total size of the tensors alive at once among those
created during the step (a ``TorchDispatchMode`` that follows every storage until it is freed);
on a GPU it is ``torch.cuda.max_memory_allocated`` above what was allocated before the step.
Target: prediction at most 0.6 of the training step's peak.

Run: ``uv run python benchmarks/eval_memory.py [--quick] [--device cuda]``.
"""

from __future__ import annotations

import argparse
import statistics
import time
import weakref
from collections.abc import Callable
from typing import Any

import torch
from _common import (
    collate,
    cuda_peak_bytes,
    emt_structures,
    machine_line,
    print_table,
    realistic_schnet,
    setup_threads,
    synchronize,
    tiny_schnet,
)
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from matsci.encoders import EquivariantEncoder
from matsci.tasks.physics import ForceRegressionTask


class PeakTensorMemory(TorchDispatchMode):
    """Peak total bytes of the storages created inside the context and alive at once."""

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._seen: set[int] = set()

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for tensor in tree_leaves(out):
            if isinstance(tensor, torch.Tensor) and tensor.device.type == "cpu":
                self._track(tensor.untyped_storage())
        return out

    def _track(self, storage: torch.UntypedStorage) -> None:
        key, size = id(storage), storage.nbytes()
        if key in self._seen or size == 0:
            return
        self._seen.add(key)
        self.live += size
        self.peak = max(self.peak, self.live)
        weakref.finalize(storage, self._free, key, size)

    def _free(self, key: int, size: int) -> None:
        self._seen.discard(key)
        self.live -= size


def peak_bytes(step: Callable[[], Any], device: torch.device) -> int:
    """Peak memory of one call of ``step`` above what was allocated before it."""
    if device.type == "cuda":
        return cuda_peak_bytes(step, device)
    with PeakTensorMemory() as tracker:
        step()
    return tracker.peak


def median_seconds(step: Callable[[], Any], repeats: int, device: torch.device) -> float:
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        step()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def small_equivariant() -> nn.Module:
    return EquivariantEncoder(num_channels=16, lmax=2, num_layers=2, cutoff=5.0)


def measure(encoder: Callable[[], nn.Module], stress: bool, batch: Any, repeats: int,
            device: torch.device) -> dict[str, float]:  # fmt: skip
    torch.manual_seed(0)
    task = ForceRegressionTask(encoder=encoder(), compute_stress=stress,
                               output_kwargs={"hidden_dim": 64}).to(device)  # fmt: skip
    optimizer = torch.optim.AdamW(task.parameters(), lr=1e-4)

    def train() -> None:
        task.train()
        optimizer.zero_grad(set_to_none=True)
        loss = task.compute_losses(task(batch), batch)[0]
        loss.backward()
        optimizer.step()

    def predict() -> None:
        task.eval()
        task.predict(batch)

    train(), predict()  # warm up; the optimizer's state now exists
    result = {
        "train_bytes": peak_bytes(train, device),
        "predict_bytes": peak_bytes(predict, device),
    }
    # Interleave the timings, so that both see the same load.
    train_times, predict_times = [], []
    for _ in range(repeats):
        train_times.append(median_seconds(train, 1, device))
        predict_times.append(median_seconds(predict, 1, device))
    result["train_s"] = statistics.median(train_times)
    result["predict_s"] = statistics.median(predict_times)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="fewer repeats, no equivariant")
    args = parser.parse_args()
    setup_threads(args.threads)
    device = torch.device(args.device)
    batch = collate(emt_structures(args.batch_size), args.batch_size)[0].to(device)
    encoders: dict[str, Callable[[], nn.Module]] = {
        "SchNet 8x1": tiny_schnet,
        "SchNet 64x3": realistic_schnet,
        "equivariant 16x2 (lmax 2)": small_equivariant,
    }
    if args.quick:
        encoders.pop("equivariant 16x2 (lmax 2)")
    repeats = 3 if args.quick else args.repeats
    print(machine_line(device))
    print(f"one batch of {batch.num_graphs} EMT structures ({batch.num_nodes} atoms, "
          f"{batch.edge_index.shape[1]} edges); median of {repeats} steps")  # fmt: skip
    rows = []
    for name, encoder in encoders.items():
        for stress in (False, True):
            r = measure(encoder, stress, batch, repeats, device)
            rows.append([
                name, "forces+stress" if stress else "forces",
                f"{r['train_bytes'] / 2**20:.1f}", f"{r['predict_bytes'] / 2**20:.1f}",
                f"{r['predict_bytes'] / r['train_bytes']:.2f}",
                f"{1e3 * r['train_s']:.1f}", f"{1e3 * r['predict_s']:.1f}",
                f"{r['predict_s'] / r['train_s']:.2f}",
            ])  # fmt: skip
    print_table(
        "peak memory (MiB) and time (ms) of a prediction step against a training step",
        ["encoder", "task", "train MiB", "predict MiB", "ratio", "train ms", "predict ms",
         "ratio"],
        rows,
    )  # fmt: skip


if __name__ == "__main__":
    main()
