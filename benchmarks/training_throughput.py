"""Training throughput: one full force-training step, before and after, with its arithmetic.

A step of :class:`~matsci.tasks.physics.ForceRegressionTask` on 108-atom copper cells (fcc Cu
3x3x3, rattled and strained, EMT energies, forces and stresses made in memory from a fixed
seed), batch 8 (864 atoms): forward, force (and stress) derivative with ``create_graph``, loss,
backward and the optimizer step, through the task's public API::

    outputs = task(batch); total, _ = task.compute_losses(outputs, batch)
    total.backward(); optimizer.step(); optimizer.zero_grad()

so the figure is the model's step, not Lightning's loop. Encoders: SchNet (64 wide, three
interactions, 32 Gaussians) and :class:`~matsci.encoders.EquivariantEncoder` (``lmax`` 1 and 2,
its defaults otherwise), cutoff 4.5 Å; energy + forces, and energy + forces + stress.

"before" is the same measurement on the code of ``--baseline-rev`` (a git worktree at
``/tmp/matsci-baseline``, imported through ``PYTHONPATH``, which shadows the editable installs;
each worker prints the ``matsci.encoders`` it imported), "after" on this checkout. Both run in
worker processes that the script drives in turn, config by config and round by round, so the
two see the same load and their ratio holds on a shared machine. The first step of both starts
from the same seeded weights and batch: the table shows the largest difference of its loss and
forces (identical code paths give 0; reordered arithmetic gives float32 round-off).

Per config: seconds per step (median over the timed steps), steps/s and atoms/s of "after",
the FLOPs of one step counted by :class:`torch.utils.flop_counter.FlopCounterMode` (matrix
products: forward, derivative and weight gradients), the GFLOP/s this achieves, and its
fraction of this machine's float32 2048x2048 matrix-product rate measured in the same run with
the same threads. ``--clock cpu`` (the default with one thread) times the CPU time of the
worker's main thread, which leaves out time other processes took from the core.

``--compiled`` also times the step with ``compile_training=True`` (inductor) on this checkout:
its seconds per step, the speed-up over this checkout's eager step, the first call (trace and
compile, wall seconds), the largest force difference from eager on the first batch and the
fraction of the matmul rate it reaches.

Run: ``uv run python benchmarks/training_throughput.py [--steps N] [--rounds R] [--threads 1]
[--encoders schnet,equivariant-l1,equivariant-l2] [--baseline-rev 241d3bd] [--clock cpu|wall]
[--tuned-malloc] [--compiled]``.

``--tuned-malloc`` runs both sides with glibc's ``MALLOC_MMAP_THRESHOLD_``,
``MALLOC_TRIM_THRESHOLD_`` and ``MALLOC_TOP_PAD_`` raised: PyTorch on the CPU allocates every
intermediate afresh, and with glibc's defaults each tensor of a few MB is a new ``mmap`` whose
pages the kernel faults in and zeroes; kept memory is reused instead.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch_geometric.data import Batch

ROOT = Path(__file__).resolve().parent.parent
BASELINE_DIR = Path("/tmp/matsci-baseline")
CUTOFF = 4.5
"""Cutoff (Å) of the graph and of both encoders."""
BATCH_SIZE = 8
NUM_BATCHES = 2
ENCODERS = ("schnet", "equivariant-l1", "equivariant-l2")
MODES = ("eager", "compiled")
"""What :func:`measure` can time: the eager step, or ``compile_training=True`` (inductor)."""


@dataclasses.dataclass(frozen=True)
class Config:
    """One row of the table: an encoder and whether the stress is trained."""

    encoder: str
    stress: bool

    @property
    def name(self) -> str:
        return f"{self.encoder} E+F{'+S' if self.stress else ''}"


# -- data and model (run in the workers) ----------------------------------------------------------


def copper_batches(seed: int = 0) -> list[Batch]:
    """``NUM_BATCHES`` batches of ``BATCH_SIZE`` rattled, strained 108-atom Cu cells with EMT."""
    import numpy as np
    from ase.build import bulk
    from ase.calculators.emt import EMT

    from matsci.data import atoms_to_data
    from matsci.transforms import PeriodicRadiusGraph

    rng = np.random.default_rng(seed)
    graph = PeriodicRadiusGraph(cutoff=CUTOFF)
    structures = []
    for _ in range(BATCH_SIZE * NUM_BATCHES):
        atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((3, 3, 3))  # 108 atoms
        strain = np.eye(3) + rng.uniform(-0.02, 0.02, (3, 3))
        atoms.set_cell(atoms.cell.array @ strain, scale_atoms=True)
        atoms.positions += rng.normal(0.0, 0.08, atoms.positions.shape)
        atoms.calc = EMT()
        atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()
        structures.append(graph(atoms_to_data(atoms, keys=["energy", "force", "stress"])))
    return [
        Batch.from_data_list(structures[start : start + BATCH_SIZE])
        for start in range(0, len(structures), BATCH_SIZE)
    ]


def build_task(config: Config, batches: list[Batch], compiled: bool = False) -> Any:
    """A seeded ``ForceRegressionTask`` with the config's encoder, normalizers fitted."""
    from matsci.encoders import EquivariantEncoder, SchNetEncoder
    from matsci.tasks.physics import ForceRegressionTask

    torch.manual_seed(0)
    encoder: torch.nn.Module
    if config.encoder == "schnet":
        encoder = SchNetEncoder(hidden_channels=64, num_filters=64, num_interactions=3,
                                num_gaussians=32, cutoff=CUTOFF)  # fmt: skip
    elif config.encoder.startswith("equivariant-l"):
        encoder = EquivariantEncoder(lmax=int(config.encoder.removeprefix("equivariant-l")),
                                     cutoff=CUTOFF)  # fmt: skip
    else:
        raise ValueError(f"--encoders: unknown encoder {config.encoder!r}; expected {ENCODERS}")
    weights = {"energy": 1.0, "force": 10.0} | ({"stress": 1.0} if config.stress else {})
    # The baseline commit has no compile_training argument: pass it only when asked for.
    extra = {"compile_training": True} if compiled else {}
    task = ForceRegressionTask(encoder=encoder, compute_stress=config.stress,
                               task_loss_scaling=weights, **extra)  # fmt: skip
    task.fit_normalizers(batches)
    return task.train()


def make_step(task: Any) -> Callable[[Batch], tuple[float, torch.Tensor]]:
    """The training step: forward, derivatives, loss, backward, optimizer step."""
    optimizer = torch.optim.AdamW(task.parameters(), lr=1e-3)

    def step(batch: Batch) -> tuple[float, torch.Tensor]:
        outputs = task(batch)
        total, _ = task.compute_losses(outputs, batch)
        total.backward()
        optimizer.step()
        optimizer.zero_grad()
        return float(total.detach()), outputs["force"].detach()

    return step


_STATE: dict[tuple[Config, str], dict[str, Any]] = {}
_BATCHES: list[Batch] = []


def measure(config: Config, mode: str, steps: int, clock: str = "cpu") -> dict[str, Any]:
    """Time ``steps`` training steps of ``config`` in ``mode`` (one of :data:`MODES`).

    The first call for a config and mode builds the task, runs the first step (eager: under
    ``FlopCounterMode``; compiled: timed, as it traces and compiles; its loss and forces are
    returned for the comparisons) and one untimed warm-up step; later calls continue training
    the same task.
    """
    if mode not in MODES:
        raise ValueError(f"measure(mode={mode!r}): expected one of {MODES}")
    if not _BATCHES:
        _BATCHES.extend(copper_batches())
    result: dict[str, Any] = {}
    state = _STATE.get((config, mode))
    if state is None:
        from torch.utils.flop_counter import FlopCounterMode

        task = build_task(config, _BATCHES, compiled=mode == "compiled")
        step = make_step(task)
        if mode == "compiled":
            start = time.perf_counter()
            loss, force = step(_BATCHES[0])
            result["first_call_s"] = time.perf_counter() - start
        else:
            counter = FlopCounterMode(display=False)
            with counter:
                loss, force = step(_BATCHES[0])
            result["flops"] = counter.get_total_flops()
        step(_BATCHES[1])  # warm-up
        state = _STATE[(config, mode)] = {"step": step, "count": 0}
        result |= {"loss": loss, "force": force.tolist()}
    tick = time.thread_time if clock == "cpu" else time.perf_counter
    times = []
    for _ in range(steps):
        batch = _BATCHES[state["count"] % len(_BATCHES)]
        state["count"] += 1
        start = tick()
        state["step"](batch)
        times.append(tick() - start)
    result["times"] = times
    return result


def worker(threads: int) -> None:
    """Answer JSON requests ``{"config", "mode", "steps", "clock"}`` on stdin, one per line."""
    torch.set_num_threads(threads)
    import matsci.encoders

    print(json.dumps({"encoders": matsci.encoders.__file__}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        config = Config(**request["config"])
        answer = measure(config, request["mode"], request["steps"], request["clock"])
        print(json.dumps(answer), flush=True)


# -- the driver -----------------------------------------------------------------------------------


TUNED_MALLOC = {
    "MALLOC_MMAP_THRESHOLD_": str(2**32),
    "MALLOC_TRIM_THRESHOLD_": str(2**32),
    "MALLOC_TOP_PAD_": str(2**29),
}
"""glibc settings that keep freed memory for reuse instead of returning it to the kernel."""


class Worker:
    """A worker process on this checkout or (``pythonpath``) on the baseline's sources."""

    def __init__(self, threads: int, pythonpath: str | None, tuned_malloc: bool = False) -> None:
        env = dict(os.environ)
        if tuned_malloc:
            env |= TUNED_MALLOC
        if pythonpath is not None:
            env["PYTHONPATH"] = pythonpath
        self.process = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--worker", "--threads", str(threads)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT,
        )  # fmt: skip
        self.encoders_file = self._read()["encoders"]

    def _read(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"worker exited with code {self.process.wait()}")
        return json.loads(line)  # type: ignore[no-any-return]

    def measure(self, config: Config, mode: str, steps: int, clock: str) -> dict[str, Any]:
        assert self.process.stdin is not None
        request = {"config": dataclasses.asdict(config), "mode": mode, "steps": steps,
                   "clock": clock}  # fmt: skip
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        return self._read()

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait()


def baseline_pythonpath(rev: str) -> str:
    """The baseline worktree's ``packages/*/src`` folders (the worktree is added if absent)."""
    if not BASELINE_DIR.exists():
        subprocess.run(["git", "worktree", "add", "--detach", str(BASELINE_DIR), rev],
                       cwd=ROOT, check=True)  # fmt: skip
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=BASELINE_DIR, check=True,
                          capture_output=True, text=True).stdout.strip()  # fmt: skip
    wanted = subprocess.run(["git", "rev-parse", rev], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout.strip()  # fmt: skip
    if head != wanted:
        raise RuntimeError(f"{BASELINE_DIR} is at {head[:9]}, not {rev}; remove it or pass its rev")
    return os.pathsep.join(str(p) for p in sorted(BASELINE_DIR.glob("packages/*/src")))


def matmul_rate(clock: str, repeats: int = 5, size: int = 2048) -> float:
    """GFLOP/s of a float32 ``size`` x ``size`` matrix product (median of ``repeats``)."""
    tick = time.thread_time if clock == "cpu" else time.perf_counter
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    times = []
    for _ in range(repeats):
        start = tick()
        a @ b
        times.append(tick() - start)
    return 2 * size**3 / statistics.median(times) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=2, help="timed steps per round and side")
    parser.add_argument("--rounds", type=int, default=2, help="alternations of before/after")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--encoders", default=",".join(ENCODERS))
    parser.add_argument("--stress", choices=["both", "no", "yes"], default="both")
    parser.add_argument("--baseline-rev", default="241d3bd")
    parser.add_argument("--no-baseline", action="store_true", help="time this checkout only")
    parser.add_argument("--clock", choices=["cpu", "wall"], default=None,
                        help="default: cpu with one thread, wall otherwise")  # fmt: skip
    parser.add_argument(
        "--tuned-malloc", action="store_true", help="both workers with TUNED_MALLOC (see above)"
    )
    parser.add_argument(
        "--compiled", action="store_true", help="also time compile_training=True (inductor)"
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.threads)
        return
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _common import machine_line, print_table, setup_threads

    threads = setup_threads(args.threads)
    clock = args.clock or ("cpu" if threads == 1 else "wall")
    encoders = [name.strip() for name in args.encoders.split(",") if name.strip()]
    unknown = sorted(set(encoders) - set(ENCODERS))
    if unknown:
        parser.error(f"--encoders: unknown {unknown}; expected names from {ENCODERS}")
    stresses = {"both": (False, True), "no": (False,), "yes": (True,)}[args.stress]
    configs = [Config(encoder, stress) for encoder in encoders for stress in stresses]

    print(machine_line())
    rate = matmul_rate(clock)
    print(f"float32 2048x2048 matmul: {rate:.1f} GFLOP/s ({threads} threads); clock: {clock}")
    if args.tuned_malloc:
        print("workers run with " + " ".join(f"{k}={v}" for k, v in TUNED_MALLOC.items()))
    sides = {"after": Worker(threads, None, args.tuned_malloc)}
    if not args.no_baseline:
        before = Worker(threads, baseline_pythonpath(args.baseline_rev), args.tuned_malloc)
        sides = {"before": before, **sides}
    for side, process in sides.items():
        print(f"{side}: matsci.encoders from {process.encoders_file}")

    rows = []
    for config in configs:
        results: dict[str, dict[str, Any]] = {side: {"times": []} for side in sides}
        for _ in range(args.rounds):
            for side, process in sides.items():
                answer = process.measure(config, "eager", args.steps, clock)
                results[side]["times"] += answer.pop("times")
                results[side] |= answer
            if args.compiled:
                answer = sides["after"].measure(config, "compiled", args.steps, clock)
                compiled = results.setdefault("compiled", {"times": []})
                compiled["times"] += answer.pop("times")
                compiled |= answer
        seconds = {side: statistics.median(r["times"]) for side, r in results.items()}
        after = results["after"]
        flops = after["flops"]
        row = [config.name]
        if "before" in sides:
            before = results["before"]
            loss_diff = abs(after["loss"] - before["loss"])
            force_diff = (torch.tensor(after["force"]) - torch.tensor(before["force"])).abs().max()
            row += [f"{seconds['before']:.3f}", f"{seconds['after']:.3f}",
                    f"{seconds['before'] / seconds['after']:.2f}x",
                    f"{loss_diff:.1e}", f"{float(force_diff):.1e}"]  # fmt: skip
        else:
            row += [f"{seconds['after']:.3f}"]
        achieved = flops / seconds["after"] / 1e9
        row += [f"{1 / seconds['after']:.2f}", f"{BATCH_SIZE * 108 / seconds['after']:.0f}"]
        row += [f"{flops / 1e9:.2f}", f"{achieved:.2f}", f"{100 * achieved / rate:.1f}%"]
        if args.compiled:
            compiled = results["compiled"]
            fast = statistics.median(compiled["times"])
            drift = (torch.tensor(compiled["force"]) - torch.tensor(after["force"])).abs().max()
            row += [f"{fast:.3f}", f"{seconds['after'] / fast:.2f}x",
                    f"{compiled['first_call_s']:.0f}", f"{float(drift):.1e}",
                    f"{100 * flops / fast / 1e9 / rate:.1f}%"]  # fmt: skip
        rows.append(row)
        print(f"  {config.name}: done", flush=True)
    header = ["config"]
    if "before" in sides:
        header += ["before s", "after s", "speed-up", "|dloss|", "max|dF|"]
    else:
        header += ["s/step"]
    header += ["steps/s", "atoms/s", "GFLOP/step", "GFLOP/s", "of matmul"]
    if args.compiled:
        header += ["compiled s", "vs eager", "first call s", "max|dF| c-e", "of matmul"]
    print_table(
        f"Training step, batch {BATCH_SIZE} x 108 Cu atoms, cutoff {CUTOFF} Å "
        f"(median of {args.rounds * args.steps} steps per side)",
        header,
        rows,
    )
    for process in sides.values():
        process.close()


if __name__ == "__main__":
    main()
