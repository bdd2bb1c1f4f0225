"""Energy drift of NVE dynamics with conservative and with direct (gradient-free) forces.

Trains two SchNet force fields on EMT copper generated here (``make_emt_dataset``, fcc cells of
8-32 atoms, rattled and strained): a conservative ``ForceRegressionTask`` (forces are the
negative gradient of its energy) and a direct ``GradFreeForceRegression`` (forces from an
equivariant head, no energy), with the same encoder settings and the same number of steps. Prints
their force MAE on held-out EMT cells, then runs NVE molecular dynamics (ASE ``VelocityVerlet``)
of an fcc Cu supercell started at 300 K (Maxwell-Boltzmann velocities, no net momentum) with
``MatsciCalculator`` on each model and with ASE's ``EMT`` as the reference, from the same start.

Per trajectory, from linear fits against time after a short equilibration window:

* the drift of the conserved total energy (potential + kinetic) in meV/atom/ps and its
  fluctuation (standard deviation about the fit, meV/atom), for the models that have an energy
  (the conservative model, EMT);
* the drift of the kinetic temperature (K/ps);
* the drift of the EMT total energy evaluated along the trajectory (EMT potential of the
  positions + kinetic energy), meV/atom/ps: the direct model has no energy of its own, so this
  is the physical energy it gains or loses; for the conservative model it shows how far its
  trajectory strays from EMT's energy surface.

Run ``uv run python benchmarks/nve_drift.py`` (``--quick`` for a tiny run).
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import ase.db
import numpy as np
import torch
from _common import machine_line, setup_threads
from ase import Atoms, units
from ase.build import bulk
from ase.calculators.calculator import Calculator
from ase.calculators.emt import EMT
from ase.md.velocitydistribution import Stationary, thermalize_momenta
from ase.md.verlet import VelocityVerlet

from matsci.ase import MatsciCalculator
from matsci.contract.testing import quiet_trainer
from matsci.data import AtomsDataModule
from matsci.data.examples import make_emt_dataset
from matsci.tasks.core import BaseTaskModule
from matsci.tasks.physics import ForceRegressionTask, GradFreeForceRegression
from matsci.transforms import PeriodicRadiusGraph

CUTOFF = 4.5
"""Å, the neighbour graph and SchNet cutoff."""


@dataclass
class Trajectory:
    """What an NVE run recorded at every ``interval`` steps."""

    time_ps: np.ndarray
    temperature: np.ndarray  # K
    kinetic: np.ndarray  # eV/atom
    emt_potential: np.ndarray  # eV/atom, EMT at the trajectory's positions
    potential: np.ndarray | None  # eV/atom, the driving model's own energy (None: it has none)
    seconds: float


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny run (seconds)")
    parser.add_argument("--structures", type=int, default=300, help="EMT training cells")
    parser.add_argument("--steps", type=int, default=400, help="training steps per model")
    parser.add_argument("--md-steps", type=int, default=2000, help="NVE steps of 1 fs")
    parser.add_argument("--repeat", type=int, default=2, help="cubic fcc cell repeats (2: 32)")
    parser.add_argument("--interval", type=int, default=5, help="MD steps between records")
    parser.add_argument("--skip-ps", type=float, default=0.2, help="equilibration left out")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.quick:
        args.structures, args.steps, args.md_steps, args.skip_ps = 40, 10, 100, 0.02
    setup_threads(args.threads)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    started = time.perf_counter()
    print(machine_line())
    print(
        f"SchNet hidden 64, 3 interactions, cutoff {CUTOFF} Å; {args.structures} EMT Cu cells, "
        f"{args.steps} steps of batch 8 per model; NVE: {4 * args.repeat**3} Cu atoms, "
        f"300 K start, 1 fs VelocityVerlet, {args.md_steps} steps, fits after {args.skip_ps} ps"
    )

    with tempfile.TemporaryDirectory() as folder:
        train_db = make_emt_dataset(
            Path(folder) / "cu.db",
            num_structures=args.structures,
            elements=["Cu"],
            structure_types=["fcc"],
            alloy_probability=0.0,
        )
        test_db = make_emt_dataset(
            Path(folder) / "cu-test.db",
            num_structures=max(20, args.structures // 6),
            seed=1,
            elements=["Cu"],
            structure_types=["fcc"],
            alloy_probability=0.0,
        )
        with ase.db.connect(test_db) as db:
            test = [row.toatoms(add_additional_information=False) for row in db.select()]
        calculators: dict[str, Calculator] = {}
        for name, task in (("conservative", conservative_task()), ("direct", direct_task())):
            seconds = train(task, train_db, args.steps)
            calc = MatsciCalculator(task)
            print(
                f"{name:>12}: trained in {seconds:5.1f} s; test force MAE "
                f"{1e3 * force_mae(calc, test):6.1f} meV/Å"
            )
            calculators[name] = calc
    calculators["EMT"] = EMT()  # type: ignore[no-untyped-call]

    header = (
        f"{'forces':>12} | {'E drift':>17} | {'E fluct.':>8} | {'T drift':>12} | "
        f"{'E_EMT drift':>17} | {'T mean':>6} | {'MD wall':>7}"
    )
    units_row = (
        f"{'':>12} | {'meV/atom/ps':>17} | {'meV/atom':>8} | {'K/ps':>12} | "
        f"{'meV/atom/ps':>17} | {'K':>6} | {'s':>7}"
    )
    lines = []
    for name, driver in calculators.items():
        trajectory = run_nve(driver, args)
        fits = summary(trajectory, args.skip_ps)
        energy, fluctuation = fits.get("energy"), fits.get("fluctuation")
        lines.append(
            f"{name:>12} | {_slope(energy, '.4f'):>17} | "
            f"{'-' if fluctuation is None else format(fluctuation, '.4f'):>8} | "
            f"{_slope(fits['temperature'], '.1f'):>12} | {_slope(fits['emt'], '.4f'):>17} | "
            f"{fits['mean_T']:6.0f} | {trajectory.seconds:7.1f}"
        )
    print("drifts: slope ± standard error of a linear fit")
    print(header, units_row, "-" * len(header), *lines, sep="\n")
    print(f"wall time {time.perf_counter() - started:.0f} s")


def _slope(fit: object, spec: str) -> str:
    """``slope ± error`` of a fit, or ``(no energy)``."""
    if not isinstance(fit, tuple):
        return "(no energy)"
    return f"{format(fit[0], '+' + spec)} ± {format(fit[1], spec)}"


def encoder_kwargs() -> dict[str, float | int]:
    return {
        "hidden_channels": 64,
        "num_filters": 64,
        "num_interactions": 3,
        "num_gaussians": 32,
        "cutoff": CUTOFF,
    }


def conservative_task() -> ForceRegressionTask:
    torch.manual_seed(0)
    return ForceRegressionTask(
        encoder_class="matsci.encoders.SchNetEncoder",
        encoder_kwargs=encoder_kwargs(),
        lr=2e-3,
        task_loss_scaling={"energy": 1.0, "force": 10.0},
    )


def direct_task() -> GradFreeForceRegression:
    torch.manual_seed(0)
    return GradFreeForceRegression(
        encoder_class="matsci.encoders.SchNetEncoder", encoder_kwargs=encoder_kwargs(), lr=2e-3
    )


def train(task: BaseTaskModule, path: Path, steps: int) -> float:
    """Train ``task`` for ``steps`` steps on the EMT cells at ``path``; the seconds it took."""
    keys = ["energy", "force"] if isinstance(task, ForceRegressionTask) else ["force"]
    data = AtomsDataModule(
        path, keys=keys, transform=PeriodicRadiusGraph(cutoff=CUTOFF), batch_size=8, seed=0
    )
    data.setup("fit")
    if isinstance(task, ForceRegressionTask):
        task.fit_normalizers(data.train_dataloader())
    trainer = quiet_trainer(max_steps=steps, max_epochs=-1, limit_val_batches=0)
    started = time.perf_counter()
    trainer.fit(task, datamodule=data)
    task.eval()
    return time.perf_counter() - started


def force_mae(calc: MatsciCalculator, structures: list[Atoms]) -> float:
    """Mean absolute force error (eV/Å) against the EMT forces stored with ``structures``."""
    predicted = np.concatenate([result["forces"] for result in calc.calculate_many(structures)])
    reference = np.concatenate([atoms.get_forces() for atoms in structures])
    return float(np.abs(predicted - reference).mean())


def start_cell(repeat: int) -> Atoms:
    """The fcc Cu cell with 300 K Maxwell-Boltzmann velocities, the same for every run.

    ``thermalize_momenta`` is ASE's ``MaxwellBoltzmannDistribution`` under its new name.
    """
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True) * (repeat, repeat, repeat)
    thermalize_momenta(atoms, temperature_K=300.0, rng=np.random.default_rng(0))
    Stationary(atoms)
    return atoms


def run_nve(calc: Calculator, args: argparse.Namespace) -> Trajectory:
    atoms = start_cell(args.repeat)
    atoms.calc = calc
    probe = EMT()  # type: ignore[no-untyped-call]
    has_energy = not isinstance(calc, MatsciCalculator) or calc.conservative
    n = len(atoms)
    records: dict[str, list[float]] = {k: [] for k in ("t", "T", "kin", "emt", "pot")}

    def record() -> None:
        records["t"].append(dynamics.get_time() / (1000 * units.fs))
        records["T"].append(atoms.get_temperature())
        records["kin"].append(atoms.get_kinetic_energy() / n)
        records["emt"].append(probe.get_potential_energy(atoms.copy()) / n)
        if has_energy:
            records["pot"].append(atoms.get_potential_energy() / n)

    dynamics = VelocityVerlet(atoms, timestep=1.0 * units.fs)
    dynamics.attach(record, interval=args.interval)
    started = time.perf_counter()
    dynamics.run(args.md_steps)
    seconds = time.perf_counter() - started
    return Trajectory(
        time_ps=np.array(records["t"]),
        temperature=np.array(records["T"]),
        kinetic=np.array(records["kin"]),
        emt_potential=np.array(records["emt"]),
        potential=np.array(records["pot"]) if has_energy else None,
        seconds=seconds,
    )


def summary(trajectory: Trajectory, skip_ps: float) -> dict[str, tuple[float, float] | float]:
    """Linear-fit drifts (slope, standard error) after ``skip_ps``, fluctuation and mean T.

    ``energy``: the driving model's total energy (meV/atom/ps; absent without an energy),
    ``fluctuation``: its standard deviation about the fit (meV/atom), ``temperature``: K/ps,
    ``emt``: the EMT total energy along the trajectory (meV/atom/ps), ``mean_T``: K.
    """
    keep = trajectory.time_ps >= skip_ps
    time_ps = trajectory.time_ps[keep]

    def fit(values: np.ndarray) -> tuple[float, float, float]:
        (slope, intercept), cov = np.polyfit(time_ps, values[keep], 1, cov=True)
        residual = values[keep] - (slope * time_ps + intercept)
        return float(slope), float(np.sqrt(cov[0, 0])), float(residual.std())

    result: dict[str, tuple[float, float] | float] = {}
    if trajectory.potential is not None:
        slope, error, spread = fit(1e3 * (trajectory.potential + trajectory.kinetic))
        result["energy"], result["fluctuation"] = (slope, error), spread
    result["temperature"] = fit(trajectory.temperature)[:2]
    result["emt"] = fit(1e3 * (trajectory.emt_potential + trajectory.kinetic))[:2]
    result["mean_T"] = float(trajectory.temperature[keep].mean())
    return result


if __name__ == "__main__":
    main()
