"""Energy and forces of one force field through every simulator integration, on the CPU.

`uv run python benchmarks/simulators.py [--sizes 32 256 2048] [--repeats 5] [--md-steps 20]
[--equivariant] [--no-startup] [--threads 1]`

One model, a default-size SchNet ``ForceRegressionTask`` (cutoff 5 Å, float32, energy and
forces, no stress), written by ``matsci fit`` after a single optimizer step on the bundled EMT
data: its weights are as good as random, which does not change what an evaluation costs.
``--equivariant`` uses the e3nn ``EquivariantEncoder`` (its defaults) instead. The structures
are rattled fcc copper supercells of 32, 256 and 2048 atoms.

1. Per structure, energy and forces, median of ``--repeats`` after a warm-up; the methods
   take turns within every repeat so that they see the same load:

   * ``eager``: ``task.energy_and_derivatives`` on a prebuilt graph batch (the baseline);
   * ``MatsciCalculator``: ``atoms.get_forces()``, neighbour graph included;
   * ``metatomic``: the file of ``export_metatomic`` through ``metatomic_ase``;
   * ``torch-sim x8``: ``MatsciTorchSimModel`` on a state of 8 copies, time / 8;
   * ``LAMMPS``: ``fix external`` with ``run 0`` (one evaluation, plus LAMMPS's setup).

   ``peak MB`` is the process's peak resident memory during one evaluation above its resident
   memory just before (Linux ``VmHWM``, reset through ``/proc/self/clear_refs``), with glibc
   told to map every allocation of 64 KiB or more separately and to trim freed memory, so
   that memory an earlier method freed is not silently reused. It counts everything the
   method allocates (tensors, neighbour lists, NumPy arrays, LAMMPS), not only tensors.
2. MD steps per second of the 256-atom cell (velocity Verlet, 1 fs, 300 K): ASE
   ``VelocityVerlet`` with ``MatsciCalculator`` (the baseline), LAMMPS ``fix nve`` with the
   ``fix external``, torch-sim ``nve`` and ASE ``VelocityVerlet`` with the metatomic model.
   Every ``run``/``integrate`` call includes its one setup evaluation.
3. Start-up, each command in a fresh process (median of ``--startup-repeats``): ``import
   matsci.ase``, ``matsci --help``, load and first prediction through ``MatsciCalculator``
   and through ``metatomic_ase`` (``import torch`` included), and ``matsci predict`` of 3
   structures end to end.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import CUTOFF, machine_line, print_table, setup_threads
from ase import Atoms, units
from ase.build import bulk
from ase.calculators.calculator import Calculator
from ase.io import write
from ase.md.velocitydistribution import Stationary, thermalize_momenta
from ase.md.verlet import VelocityVerlet
from torch_geometric.data import Batch, Data

from matsci.ase import MatsciCalculator
from matsci.simulate import (  # imported before metatomic_ase (see export_metatomic)
    MatsciTorchSimModel,
    attach_fix_external,
    export_metatomic,
    lammps_from_atoms,
)
from matsci.tasks.physics import ForceRegressionTask
from matsci.transforms import PeriodicRadiusGraph

COPIES = 8
"""Structures in the torch-sim batch."""

TIMESTEP_FS = 1.0

# -- memory ----------------------------------------------------------------------------------------

_LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters


def _status_kib(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as handle:
        match = re.search(rf"^{field}:\s+(\d+) kB", handle.read(), re.MULTILINE)
    assert match is not None, field
    return int(match.group(1))


def strict_malloc() -> None:
    """Map every glibc allocation of 64 KiB or more on its own and trim freed memory at once."""
    _LIBC.mallopt(_M_MMAP_THRESHOLD, 64 * 1024)
    _LIBC.mallopt(_M_TRIM_THRESHOLD, 64 * 1024)


def peak_growth_mb(call: Callable[[], Any]) -> float:
    """Peak resident memory during ``call()`` above the resident memory before it (MB)."""
    _LIBC.malloc_trim(0)
    with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
        handle.write("5")  # resets VmHWM to the current resident set
    before = _status_kib("VmRSS")
    call()
    return (_status_kib("VmHWM") - before) / 1024


# -- model and structures --------------------------------------------------------------------------


_CONFIG = """\
seed_everything: 0
run_name: simulators
trainer:
  max_steps: 1
model:
  class_path: matsci.tasks.physics.ForceRegressionTask
  init_args:
    compute_stress: false
    encoder_class: matsci.encoders.{encoder}
    encoder_kwargs:
      cutoff: {cutoff}
data:
  class_path: matsci.data.AtomsDataModule
  init_args:
    dataset: bundled:emt
    keys: [energy, force]
    transform:
      class_path: matsci.transforms.PeriodicRadiusGraph
      init_args:
        cutoff: {cutoff}
    batch_size: 8
"""


def run_command(command: list[str], folder: Path) -> None:
    """Run a command in ``folder``; on failure show its output."""
    done = subprocess.run(command, cwd=folder, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}")


def fit_checkpoint(folder: Path, equivariant: bool) -> Path:
    """A default-size force field after one optimizer step, from ``matsci fit``."""
    encoder = "EquivariantEncoder" if equivariant else "SchNetEncoder"
    config = folder / "simulators.yaml"
    config.write_text(_CONFIG.format(encoder=encoder, cutoff=CUTOFF), encoding="utf-8")
    run_command([matsci_command(), "fit", "--config", str(config)], folder)
    return folder / "runs" / "simulators" / "version_0" / "checkpoints" / "last.ckpt"


def matsci_command() -> str:
    """The ``matsci`` entry point of this environment."""
    return str(Path(sys.executable).with_name("matsci"))


def copper(atoms_count: int) -> Atoms:
    """A rattled fcc copper supercell of ``atoms_count`` (4 n³) atoms."""
    repeat = round((atoms_count / 4) ** (1 / 3))
    if 4 * repeat**3 != atoms_count:
        raise ValueError(f"--sizes: {atoms_count} is not 4 n^3 (32, 256, 2048, ...)")
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True) * (repeat, repeat, repeat)
    atoms.rattle(stdev=0.05, seed=0)
    return atoms


def graph_batch(atoms: Atoms, dtype: torch.dtype) -> Batch:
    """One structure with its periodic radius graph, as a batch."""
    data = Data(
        pos=torch.tensor(atoms.positions, dtype=dtype),
        atomic_numbers=torch.tensor(atoms.numbers, dtype=torch.long),
        natoms=torch.tensor([len(atoms)]),
        cell=torch.tensor(atoms.cell.array, dtype=dtype).unsqueeze(0),
        pbc=torch.ones(1, 3, dtype=torch.bool),
    )
    return Batch.from_data_list([PeriodicRadiusGraph(cutoff=CUTOFF)(data)])


# -- per-structure evaluation ----------------------------------------------------------------------


def ase_forces(calc: Calculator, atoms: Atoms) -> Callable[[], np.ndarray]:
    """``atoms.get_forces()`` with ``calc``, recomputed at every call."""
    atoms = atoms.copy()
    atoms.calc = calc

    def run() -> np.ndarray:
        calc.reset()  # no cached results
        return np.asarray(atoms.get_forces())

    return run


def methods(
    atoms: Atoms,
    task: ForceRegressionTask,
    calculator: MatsciCalculator,
    exported: Path,
    skip: set[str],
) -> dict[str, Callable[[], np.ndarray]]:
    """Every way to evaluate ``atoms``: name -> a call returning its forces ``[N, 3]``."""
    from metatomic_ase import MetatomicCalculator

    calls: dict[str, Callable[[], np.ndarray]] = {}
    batch = graph_batch(atoms, calculator.dtype)
    calls["eager"] = lambda: task.energy_and_derivatives(batch, keep_graph=False)[1].numpy()
    calls["MatsciCalculator"] = ase_forces(calculator, atoms)
    calls["metatomic"] = ase_forces(MetatomicCalculator(exported, device="cpu"), atoms)
    if "torch-sim" not in skip:
        import torch_sim as ts

        model = MatsciTorchSimModel(task, compute_stress=False)
        state = ts.initialize_state([atoms] * COPIES, model.device, model.dtype)
        calls[f"torch-sim x{COPIES}"] = lambda: model(state)["forces"][: len(atoms)].numpy()
    if "LAMMPS" not in skip:
        lmp, type_to_element = lammps_from_atoms(atoms)
        fix = attach_fix_external(lmp, calculator, type_to_element=type_to_element)

        def lammps() -> np.ndarray:
            fix.run(0)
            return np.asarray(lmp.numpy.extract_atom("f")[: len(atoms)]).copy()

        calls["LAMMPS"] = lammps
    return calls


def per_structure(
    sizes: list[int],
    task: ForceRegressionTask,
    calculator: MatsciCalculator,
    exported: Path,
    args: argparse.Namespace,
) -> None:
    rows = []
    for size in sizes:
        atoms = copper(size)
        skip = set(args.skip_2048) if size >= 2048 else set()
        calls = methods(atoms, task, calculator, exported, skip)
        reference = calls["eager"]()
        for name, call in calls.items():  # warm-up, and every method gives the same forces
            gap = float(np.abs(call() - reference).max())
            if gap > 1e-3 * max(1.0, float(np.abs(reference).max())):
                raise SystemExit(f"{name}, {size} atoms: forces differ from eager by {gap:.2e}")
        times: dict[str, list[float]] = {name: [] for name in calls}
        for _ in range(args.repeats):
            for name, call in calls.items():
                start = time.perf_counter()
                call()
                times[name].append(time.perf_counter() - start)
        strict_malloc()
        memory = {name: peak_growth_mb(call) for name, call in calls.items()}
        base = statistics.median(times["eager"])
        for name in calls:
            seconds = statistics.median(times[name])
            if name.startswith("torch-sim"):
                seconds /= COPIES
            rows.append([size, name, f"{1e3 * seconds:.1f}", f"{seconds / base:.2f}",
                         f"{memory[name]:.0f}"])  # fmt: skip
        rows.extend([size, name, "skipped", "", ""] for name in sorted(skip))
        print(f"  {size} atoms done", flush=True)
    print_table(
        f"Energy and forces per structure (median of {args.repeats}; torch-sim: batch of "
        f"{COPIES} / {COPIES}; peak MB: resident growth during one call, torch-sim for the "
        "batch)",
        ["atoms", "method", "ms", "x eager", "peak MB"],
        rows,
    )


# -- molecular dynamics ----------------------------------------------------------------------------


def md_rates(
    task: ForceRegressionTask,
    calculator: MatsciCalculator,
    exported: Path,
    args: argparse.Namespace,
) -> None:
    import torch_sim as ts
    from metatomic_ase import MetatomicCalculator

    start = copper(256)
    thermalize_momenta(start, temperature_K=300, rng=np.random.default_rng(0))
    Stationary(start)
    steps = args.md_steps

    def ase_md(calc: Calculator) -> Callable[[int], None]:
        atoms = start.copy()
        atoms.calc = calc
        dynamics = VelocityVerlet(atoms, timestep=TIMESTEP_FS * units.fs)
        return lambda n: dynamics.run(n)

    lmp, type_to_element = lammps_from_atoms(start)
    fix = attach_fix_external(lmp, calculator, type_to_element=type_to_element)
    lmp.command(f"timestep {TIMESTEP_FS / 1000}")  # ps
    lmp.command("fix integrate all nve")

    model = MatsciTorchSimModel(task, compute_stress=False)
    state = ts.initialize_state([start], model.device, model.dtype)

    def torch_sim_md(n: int) -> None:
        ts.integrate(state, model, integrator=ts.nve, n_steps=n, temperature=300.0,
                     timestep=TIMESTEP_FS / 1000)  # fmt: skip

    runs: dict[str, Callable[[int], None]] = {
        "ASE VelocityVerlet + MatsciCalculator": ase_md(calculator),
        "LAMMPS fix nve + fix external": fix.run,
        "torch-sim nve": torch_sim_md,
        "ASE VelocityVerlet + metatomic": ase_md(MetatomicCalculator(exported, device="cpu")),
    }
    rates: dict[str, float] = {}
    for name, run in runs.items():
        run(1)  # warm-up
        seconds = time.perf_counter()
        run(steps)
        rates[name] = steps / (time.perf_counter() - seconds)
    base = rates["ASE VelocityVerlet + MatsciCalculator"]
    print_table(
        f"MD steps per second, 256 Cu atoms, {steps} steps of {TIMESTEP_FS} fs",
        ["integrator", "steps/s", "x ASE"],
        [[name, f"{rate:.2f}", f"{rate / base:.2f}"] for name, rate in rates.items()],
    )


# -- start-up --------------------------------------------------------------------------------------

_MATSCI_FIRST = """
import time; start = time.perf_counter()
import sys, torch
from ase.build import bulk
from matsci.ase import MatsciCalculator
atoms = bulk("Cu", "fcc", a=3.61, cubic=True) * (2, 2, 2)
atoms.calc = MatsciCalculator.from_checkpoint(sys.argv[1], dtype=torch.float32)
atoms.get_forces()
"""

_METATOMIC_FIRST = """
import sys, torch, metatomic_ase
from ase.build import bulk
atoms = bulk("Cu", "fcc", a=3.61, cubic=True) * (2, 2, 2)
atoms.calc = metatomic_ase.MetatomicCalculator(sys.argv[1], device="cpu")
atoms.get_forces()
"""


def startup(checkpoint: Path, exported: Path, folder: Path, args: argparse.Namespace) -> None:
    structures = folder / "three.extxyz"
    write(structures, [copper(32), copper(32), copper(256)])
    matsci = matsci_command()
    commands = {
        "python -c 'import matsci.ase'": [sys.executable, "-c", "import matsci.ase"],
        "matsci --help": [matsci, "--help"],
        "MatsciCalculator: load + first forces (32 atoms)": [
            sys.executable, "-c", _MATSCI_FIRST, str(checkpoint)],
        "metatomic_ase: load + first forces (32 atoms)": [
            sys.executable, "-c", _METATOMIC_FIRST, str(exported)],
        "matsci predict, 3 structures (32, 32, 256 atoms)": [
            matsci, "predict", "--ckpt_path", str(checkpoint), "--data", str(structures),
            "--output", str(folder / "predictions.csv")],
    }  # fmt: skip
    rows = []
    for name, command in commands.items():
        times = []
        for _ in range(args.startup_repeats):
            seconds = time.perf_counter()
            run_command(command, folder)
            times.append(time.perf_counter() - seconds)
        rows.append([name, f"{statistics.median(times):.1f}", f"{min(times):.1f}"])
    print_table(
        f"Start-up, fresh process each (s, {args.startup_repeats} runs)",
        ["command", "median s", "min s"],
        rows,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 256, 2048])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--md-steps", type=int, default=20)
    parser.add_argument("--startup-repeats", type=int, default=1)
    parser.add_argument(
        "--skip-2048",
        nargs="*",
        default=["torch-sim"],
        choices=["torch-sim", "LAMMPS"],
        help="methods left out at 2048 atoms and more (default: torch-sim, 8 x 2048 atoms)",
    )
    parser.add_argument("--equivariant", action="store_true", help="EquivariantEncoder")
    parser.add_argument("--no-startup", action="store_true", help="skip the start-up table")
    parser.add_argument("--no-md", action="store_true", help="skip the MD table")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    setup_threads(args.threads)
    print(machine_line())
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        checkpoint = fit_checkpoint(folder, args.equivariant)
        calculator = MatsciCalculator.from_checkpoint(checkpoint, dtype=torch.float32)
        task = calculator.task
        assert isinstance(task, ForceRegressionTask)
        exported = export_metatomic(checkpoint, folder / "model.pt", dtype=torch.float32)
        encoder = type(task.encoder).__name__
        parameters = sum(parameter.numel() for parameter in task.parameters())
        print(
            f"{encoder} (default size), {parameters} parameters, cutoff {CUTOFF} Å, float32; "
            "weights after one optimizer step (as good as random)"
        )
        per_structure(args.sizes, task, calculator, exported, args)
        if not args.no_md:
            md_rates(task, calculator, exported, args)
        if not args.no_startup:
            startup(checkpoint, exported, folder, args)


if __name__ == "__main__":
    main()
