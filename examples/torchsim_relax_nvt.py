"""Relax a batch of metal cells with torch-sim's FIRE, then run NVT Langevin MD on the batch.

A trained matsci force field (a ``ForceRegressionTask`` checkpoint) becomes a torch-sim model
with ``MatsciTorchSimModel.from_checkpoint``; torch-sim then moves all four structures at once,
one batched model call per step.

    uv run python examples/torchsim_relax_nvt.py path/to/model.ckpt
    uv run python examples/torchsim_relax_nvt.py   # trains a small model first

Without a checkpoint it trains a small SchNet on the bundled EMT metals for two epochs (rough,
but its forces are exact derivatives of its energy); the whole script takes about a minute on
two CPU cores. It fails unless relaxing lowers every structure's energy.
"""

import argparse
import tempfile
import time
from pathlib import Path

import torch
import torch_sim as ts
from _quick_force_field import train_quick
from ase import Atoms
from ase.build import bulk

from matsci.simulate import MatsciTorchSimModel


def structures() -> list[Atoms]:
    """Four rattled cells of different sizes and elements (32, 16, 12 and 8 atoms)."""
    copper = bulk("Cu", "fcc", a=3.61, cubic=True) * (2, 2, 2)
    alloy = bulk("Au", "fcc", a=4.08, cubic=True) * (2, 2, 1)
    alloy.symbols[::3] = "Ag"
    silver = bulk("Ag", "fcc", a=4.09) * (3, 2, 2)
    nickel = bulk("Ni", "fcc", a=3.52) * (2, 2, 2)
    cells = [copper, alloy, silver, nickel]
    for seed, atoms in enumerate(cells):
        atoms.rattle(stdev=0.1, seed=seed)
    return cells


def main() -> None:
    """Load (or train) the model, relax the batch, run NVT on it and print what happened."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "checkpoint", nargs="?", type=Path, help="a ForceRegressionTask .ckpt (default: train one)"
    )
    parser.add_argument("--fire-steps", type=int, default=60, help="most FIRE steps")
    parser.add_argument("--md-steps", type=int, default=50, help="NVT steps of 2 fs")
    parser.add_argument("--temperature", type=float, default=300.0, help="K")
    parser.add_argument("--friction", type=float, default=20.0, help="Langevin friction, 1/ps")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = args.checkpoint or train_quick(Path(folder) / "quick.ckpt")
        model = MatsciTorchSimModel.from_checkpoint(path, dtype=torch.float64)
    print(model)

    cells = structures()
    state = ts.initialize_state(cells, model.device, model.dtype)
    atoms_per_system = state.n_atoms_per_system
    before = model(state)["energy"]

    start = time.perf_counter()
    relaxed = ts.optimize(
        state,
        model,
        optimizer=ts.optimizers.fire,
        convergence_fn=ts.generate_force_convergence_fn(force_tol=0.05, include_cell_forces=False),
        max_steps=args.fire_steps,
    )
    relax_seconds = time.perf_counter() - start
    after = model(relaxed)["energy"]

    start = time.perf_counter()
    final = ts.integrate(
        relaxed,
        model,
        integrator=ts.nvt_langevin,
        n_steps=args.md_steps,
        temperature=args.temperature,  # K
        timestep=0.002,  # ps
        gamma=torch.tensor(args.friction / ts.units.MetalUnits.time, dtype=model.dtype),
        seed=0,
    )
    md_seconds = time.perf_counter() - start
    temperatures = ts.quantities.calc_temperature(
        masses=final.masses, momenta=final.momenta, system_idx=final.system_idx
    )  # K, one per system

    print(f"{'system':>8} {'atoms':>5} {'E before':>10} {'E relaxed':>10} {'T final':>8}")
    for index, atoms in enumerate(cells):
        print(
            f"{atoms.get_chemical_formula():>8} {int(atoms_per_system[index]):>5} "
            f"{float(before[index]):>10.3f} {float(after[index]):>10.3f} "
            f"{float(temperatures[index]):>8.1f}"
        )
    drop = ((before - after) / atoms_per_system).tolist()
    print(
        "baseline: relaxing lowered the energy by "
        + ", ".join(f"{1000 * value:.1f}" for value in drop)
        + " meV/atom against the unrelaxed (rattled) cells"
    )
    print(
        f"FIRE: {relax_seconds:.2f} s for the batch (at most {args.fire_steps} steps); "
        f"NVT: {args.md_steps} steps in {md_seconds:.2f} s "
        f"({1000 * md_seconds / args.md_steps:.1f} ms per step for {state.n_atoms} atoms); "
        f"mean final temperature {float(temperatures.mean()):.0f} K "
        f"(target {args.temperature:.0f} K)"
    )
    if not bool((after < before).all()):
        raise SystemExit("relaxing did not lower the energy of every structure")


if __name__ == "__main__":
    main()
