"""Time to accuracy: the test force MAE that a force field reaches in a fixed CPU-time budget.

Trains ``ForceRegressionTask`` (energy, forces, stress) on the bundled EMT metals
(``AtomsDataModule`` over ``bundled:emt``, 300 cells of 8 to 32 atoms, neighbour graphs of
4.5 Å built once and kept in memory, split 0.8/0.1/0.1 with seed 0), fitting the normalizers
first as ``matsci fit`` does, and stops when the process has used ``--budget`` seconds of CPU
time since training started. One torch thread does all the work, so CPU time, unlike wall
time, does not depend on what else runs on the machine. Then it tests the final weights (the
exponential moving average where a config keeps one) on the test split and prints the force
MAE (eV/Å), the energy MAE per atom (eV/atom) and the zero-force baseline
(:func:`matsci.training.baseline_metrics`) beside them.

Configs, per encoder (SchNet 64x3 as in ``examples/forces_schnet.yaml``, the equivariant
encoder as in ``examples/forces_equivariant.yaml``):

- ``before``: what the example configs shipped with before this benchmark: AdamW, peak
  learning rate 3e-3 (SchNet) / 5e-3 (equivariant), ``CosineAnnealingLR`` over ``T_max=8``
  *epochs* (which knows nothing of the budget: past epoch 8 it climbs back up), loss weights
  energy 1, force 10, stress 1, batch 8, gradient clipping at 10, no weight average (``matsci
  fit`` adds none by default);
- ``after``: a linear warm-up over the first steps, then a cosine decay to 2% of the peak over
  the budget (progress measured in CPU time, so the schedule ends where the budget does),
  and the defaults the search below settled on (see ``AFTER``);
- ``after:key=value,...``: ``after`` with some settings replaced, for searches: ``lr`` (peak
  learning rate), ``force`` (force loss weight; energy weighs 1), ``ema`` (decay of an
  :class:`~matsci.training.ExponentialMovingAverage` with warm-up; 0 for none), ``batch``
  (batch size), ``warmup`` (warm-up steps), ``final`` (last learning rate as a fraction of
  the peak), ``schedule`` (``constant``, or ``task-default``: the task's own schedule,
  ``FORCE_FIELD_SCHEDULE``). ``before:key=value`` works the same way on ``before``;
- ``defaults``: what ``ForceRegressionTask`` gives a user who sets nothing but the encoder
  and the head width: its default learning rate, loss weights and schedule, no weight
  average. ``defaults:lr=0.001,force=1,schedule=constant`` is the task as it was before it
  had these defaults. Schedules that end with the run need an end: run these with
  ``--epochs N``, which trains every run for N epochs instead of a CPU budget.

Each run is a separate process (``--jobs`` of them at a time), so each has its own CPU clock.
The last column divides each force MAE by that of the first config of its encoder.

Run ``uv run python benchmarks/time_to_accuracy.py`` (``--budget 300 --encoders
schnet,equivariant --configs before,after``); ``--budget 10`` for a quick check.
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import math
import subprocess
import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from typing import Any

import lightning.pytorch as pl
from _common import machine_line, print_table, setup_threads

from matsci.contract.testing import quiet_trainer
from matsci.data import AtomsDataModule
from matsci.data.examples import bundled_dataset_path
from matsci.tasks.physics import DEFAULT_LOSS_SCALING, ForceRegressionTask
from matsci.training import ExponentialMovingAverage, FitNormalizers, baseline_metrics
from matsci.transforms import PeriodicRadiusGraph

CUTOFF = 4.5
"""Å, the neighbour graph and encoder cutoff of both example configs."""

ENCODERS: dict[str, tuple[str, dict[str, Any], int]] = {
    "schnet": (
        "matsci.encoders.SchNetEncoder",
        {"hidden_channels": 64, "num_filters": 64, "num_interactions": 3, "num_gaussians": 32,
         "cutoff": CUTOFF},
        64,
    ),
    "equivariant": (
        "matsci.encoders.EquivariantEncoder",
        {"num_channels": 16, "lmax": 1, "num_layers": 2, "cutoff": CUTOFF, "num_basis": 8,
         "avg_num_neighbors": 20.0},
        32,
    ),
}  # fmt: skip
"""Encoder class, its arguments and the head width, as in the example configs."""

FORCE_MAE = "test/force/mae"
ENERGY_MAE = "test/energy/mae_per_atom"


@dataclass(frozen=True)
class Config:
    """The settings of one training run that this benchmark varies."""

    lr: float
    force: float  # force loss weight; energy and stress weigh 1
    batch: int
    ema: float  # ExponentialMovingAverage decay, 0 for none
    # "epoch-cosine" (T_max epochs), "budget-cosine" (warm-up, cosine to the budget),
    # "constant" or "task-default" (the task's own when scheduler_kwargs is None)
    schedule: str
    warmup: int = 0  # warm-up steps of "budget-cosine"
    final: float = 0.02  # last learning rate / peak of "budget-cosine"
    t_max: int = 8  # epochs of "epoch-cosine"
    eta_min: float = 1e-4  # last learning rate of "epoch-cosine"


BEFORE: dict[str, Config] = {
    "schnet": Config(lr=3e-3, force=10.0, batch=8, ema=0.0, schedule="epoch-cosine",
                     eta_min=1e-4),
    "equivariant": Config(lr=5e-3, force=10.0, batch=8, ema=0.0, schedule="epoch-cosine",
                          eta_min=2e-4),
}  # fmt: skip
"""The example configs as shipped before this benchmark."""

AFTER: dict[str, Config] = {
    "schnet": Config(lr=3e-3, force=10.0, batch=8, ema=0.99, schedule="budget-cosine",
                     warmup=30),
    "equivariant": Config(lr=5e-3, force=10.0, batch=8, ema=0.99, schedule="budget-cosine",
                          warmup=30),
}  # fmt: skip
"""The proposed defaults (updated from the search)."""

DEFAULTS: dict[str, Config] = {
    encoder: Config(
        lr=inspect.signature(ForceRegressionTask).parameters["lr"].default,
        force=DEFAULT_LOSS_SCALING["force"], batch=8, ema=0.0, schedule="task-default",
    )
    for encoder in ENCODERS
}  # fmt: skip
"""What the task gives without settings (its lr, loss weights and schedule)."""

_OVERRIDES = {"lr": float, "force": float, "ema": float, "batch": int, "warmup": int,
              "final": float, "schedule": str}  # fmt: skip
_SCHEDULES = ("epoch-cosine", "budget-cosine", "constant", "task-default")
_CONSTANT = {"class_path": "ConstantLR", "init_args": {"factor": 1.0}}


def parse_config(spec: str, encoder: str) -> Config:
    """``before``, ``after``, ``defaults`` or one of them with ``:key=value,...`` overrides."""
    name, _, rest = spec.partition(":")
    bases = {"before": BEFORE, "after": AFTER, "defaults": DEFAULTS}
    if name not in bases:
        raise ValueError(f"--configs: {spec!r} does not start with one of {sorted(bases)}")
    config = bases[name][encoder]
    for item in filter(None, rest.split(",")):
        key, sep, value = item.partition("=")
        if not sep or key not in _OVERRIDES:
            raise ValueError(f"--configs {spec!r}: {item!r} is not one of {sorted(_OVERRIDES)}=x")
        config = replace(config, **{key: _OVERRIDES[key](value)})
    if config.schedule not in _SCHEDULES:
        raise ValueError(f"--configs {spec!r}: schedule must be one of {_SCHEDULES}")
    return config


class CpuBudget(pl.Callback):
    """Stop training once the process has used ``budget`` CPU seconds since training started.

    With ``warmup`` given (``schedule="budget-cosine"``), it also sets each parameter group's
    learning rate before every step: a linear warm-up over ``warmup`` steps, times a cosine
    from 1 to ``final`` over the fraction of the budget used, so the decay ends with the
    budget whatever the step time.
    """

    def __init__(self, budget: float, warmup: int | None = None, final: float = 0.02) -> None:
        self.budget, self.warmup, self.final = budget, warmup, final
        self.steps = 0
        self.used = 0.0
        self._start = 0.0
        self._peaks: list[float] = []

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = time.process_time()
        self._peaks = [group["lr"] for group in trainer.optimizers[0].param_groups]

    def on_train_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        if self.warmup is None:
            return
        progress = min((time.process_time() - self._start) / self.budget, 1.0)
        cosine = self.final + (1.0 - self.final) * 0.5 * (1.0 + math.cos(math.pi * progress))
        factor = min(1.0, (self.steps + 1) / max(self.warmup, 1)) * cosine
        for group, peak in zip(trainer.optimizers[0].param_groups, self._peaks, strict=True):
            group["lr"] = peak * factor

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        self.steps += 1
        self.used = time.process_time() - self._start
        if self.used >= self.budget:
            trainer.should_stop = True


def run_one(
    encoder: str, spec: str, budget: float, threads: int, epochs: int | None = None
) -> dict[str, Any]:
    """Train one config for ``budget`` CPU seconds (or ``epochs``) and test it; as a dict."""
    setup_threads(threads)
    config = parse_config(spec, encoder)
    pl.seed_everything(0, verbose=False)
    encoder_class, encoder_kwargs, head_width = ENCODERS[encoder]
    # The budget cosine sets the rate itself (CpuBudget), on top of a constant schedule.
    scheduler: dict[str, Any] | None = _CONSTANT
    if config.schedule == "epoch-cosine":
        scheduler = {
            "class_path": "torch.optim.lr_scheduler.CosineAnnealingLR",
            "init_args": {"T_max": config.t_max, "eta_min": config.eta_min},
        }
    elif config.schedule == "task-default":
        scheduler = None
    task = ForceRegressionTask(
        compute_stress=True,
        encoder_class=encoder_class,
        encoder_kwargs=encoder_kwargs,
        output_kwargs={"hidden_dim": head_width},
        lr=config.lr,
        scheduler_kwargs=scheduler,
        task_loss_scaling={"energy": 1.0, "force": config.force, "stress": 1.0},
    )
    data = AtomsDataModule(
        bundled_dataset_path("emt"),
        keys=["energy", "force", "stress"],
        in_memory=True,
        pre_transform=PeriodicRadiusGraph(cutoff=CUTOFF),
        split=[0.8, 0.1, 0.1],
        seed=0,
        batch_size=config.batch,
    )
    clock = CpuBudget(
        math.inf if epochs else budget,
        warmup=config.warmup if config.schedule == "budget-cosine" else None,
        final=config.final,
    )  # fmt: skip
    callbacks: list[pl.Callback] = [FitNormalizers(), clock]
    if config.ema > 0:
        callbacks.append(ExponentialMovingAverage(config.ema))
    trainer = quiet_trainer(
        max_epochs=epochs or -1, limit_val_batches=0, num_sanity_val_steps=0,
        gradient_clip_val=10.0, deterministic=None, callbacks=callbacks,
    )  # fmt: skip
    started = time.perf_counter()
    trainer.fit(task, datamodule=data)
    wall = time.perf_counter() - started
    # With an EMA the module holds the averaged weights once fit ends.
    metrics = trainer.test(task, datamodule=data, verbose=False)[0]
    baseline = baseline_metrics(task, data.train_dataloader(), data.test_dataloader())
    return {
        "encoder": encoder,
        "config": spec,
        "settings": asdict(config),
        "steps": clock.steps,
        "epochs": trainer.current_epoch,
        "cpu_s": clock.used,
        "wall_s": wall,
        "force_mae": metrics[FORCE_MAE],
        "energy_mae": metrics[ENERGY_MAE],
        "zero_force_mae": baseline[FORCE_MAE],
        "metrics": metrics,
    }


def run_in_process(encoder: str, spec: str, args: argparse.Namespace) -> dict[str, Any] | None:
    """``run_one`` in a fresh Python process (its own CPU clock); its result, or ``None``."""
    command = [sys.executable, __file__, "--one", encoder, spec, "--budget", str(args.budget),
               "--threads", str(args.threads)] + (
                   ["--epochs", str(args.epochs)] if args.epochs else [])  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        print(f"  {encoder} {spec} failed (exit {done.returncode}):\n{done.stderr[-3000:]}",
              flush=True)  # fmt: skip
        return None
    result: dict[str, Any] = json.loads(lines[-1])
    print(f"  {encoder:11s} {spec:40s} steps {result['steps']:5d}  force MAE "
          f"{result['force_mae']:.4f}  energy MAE {result['energy_mae']:.4f}  zero-force "
          f"{result['zero_force_mae']:.4f}  ({result['wall_s']:.0f} s wall)",
          flush=True)  # fmt: skip
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=300.0, help="CPU seconds of training")
    parser.add_argument("--encoders", default="schnet,equivariant")
    parser.add_argument("--configs", default="before,after",
                        help="before, after, or either with :key=value,... (space-separated "
                        "list allowed with ';')")  # fmt: skip
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time (processes)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="train every run for this many epochs instead of --budget",
    )
    parser.add_argument("--one", nargs=2, metavar=("ENCODER", "CONFIG"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        print(json.dumps(run_one(*args.one, budget=args.budget, threads=args.threads,
                                 epochs=args.epochs)))  # fmt: skip
        return
    encoders = args.encoders.split(",")
    unknown = set(encoders) - set(ENCODERS)
    if unknown:
        parser.error(f"--encoders: unknown {sorted(unknown)}; expected from {sorted(ENCODERS)}")
    specs = args.configs.split(";") if ";" in args.configs else args.configs.split(",")
    for encoder in encoders:
        for spec in specs:
            config = parse_config(spec, encoder)  # fail before any run
            if config.schedule == "task-default" and not args.epochs:
                parser.error(f"--configs {spec!r}: the task's schedule ends with the run; "
                             "give --epochs")  # fmt: skip
            if config.schedule == "budget-cosine" and args.epochs:
                parser.error(f"--configs {spec!r}: a budget cosine needs --budget, not --epochs")
    setup_threads(args.threads)
    print(machine_line())
    length = f"{args.epochs} epochs" if args.epochs else f"budget {args.budget:.0f} CPU s"
    print(f"{length} of training per run, {args.threads} torch thread(s), "
          f"{args.jobs} run(s) at a time")  # fmt: skip
    runs = [(encoder, spec) for encoder in encoders for spec in specs]
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        results = [r for r in pool.map(lambda run: run_in_process(*run, args), runs) if r]
    first: dict[str, float] = {}
    rows = []
    for r in results:
        ratio = r["force_mae"] / first.setdefault(r["encoder"], r["force_mae"])
        rows.append([r["encoder"], r["config"], r["steps"], r["epochs"], f"{r['cpu_s']:.0f}",
                     f"{r['force_mae']:.4f}", f"{1000 * r['energy_mae']:.1f}",
                     f"{r['zero_force_mae']:.4f}", f"{ratio:.2f}"])  # fmt: skip
    print_table(
        f"Test force MAE after {length} of training (bundled EMT, test split)",
        ["encoder", "config", "steps", "epochs", "CPU s", "force MAE eV/Å",
         "energy MAE meV/atom", "zero-force MAE", "/ first"],
        rows,
    )  # fmt: skip


if __name__ == "__main__":
    main()
