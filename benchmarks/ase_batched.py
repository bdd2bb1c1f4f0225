"""Batched against one-at-a-time evaluation of a force field through `matsci.ase`.

`uv run python benchmarks/ase_batched.py [--device cuda] [--threads 1] [--batch-size 32]`

Energies, forces and stresses of the first structures of the bundled EMT data (8 to 32 atoms
each) with a default-sized SchNet and a small one (untrained: the cost does not depend on the
weights), once through ASE one structure at a time (`atoms.get_forces()`, `atoms.get_stress()`:
one model evaluation each) and once with `MatsciCalculator.calculate_many`. Prints the median
time per structure of several repeats and the ratio.
"""

import argparse
import statistics
import time

import ase.db
import numpy as np
import torch

from matsci.ase import MatsciCalculator
from matsci.data.examples import EMT_ELEMENTS, bundled_dataset_path
from matsci.encoders import SchNetEncoder
from matsci.tasks.physics import ForceRegressionTask


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--structures", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    with ase.db.connect(bundled_dataset_path("emt")) as db:
        structures = [row.toatoms() for row in db.select(limit=args.structures)]
    atoms_count = sum(len(atoms) for atoms in structures)
    print(
        f"{len(structures)} structures, {atoms_count} atoms, {args.device}, "
        f"{torch.get_num_threads()} threads"
    )
    for name, encoder in (("default", SchNetEncoder(cutoff=5.0)), ("small", SchNetEncoder(
        hidden_channels=16, num_filters=16, num_interactions=2, num_gaussians=16, cutoff=4.0
    ))):  # fmt: skip
        compare(name, encoder, structures, args)


def compare(
    name: str, encoder: SchNetEncoder, structures: list[ase.Atoms], args: argparse.Namespace
) -> None:
    numbers = [ase.data.atomic_numbers[symbol] for symbol in EMT_ELEMENTS]
    task = ForceRegressionTask(
        encoder=encoder, compute_stress=True, reference_energies={z: -1.0 for z in numbers}
    )
    calc = MatsciCalculator(task, device=args.device)

    def one_at_a_time() -> list[np.ndarray]:
        forces = []
        for atoms in structures:
            atoms.calc = calc
            forces.append(atoms.get_forces())
            atoms.get_stress()  # from the same evaluation
            atoms.calc = None
        return forces

    def batched() -> list[np.ndarray]:
        results = calc.calculate_many(structures, batch_size=args.batch_size)
        return [result["forces"] for result in results]

    def median_seconds(run: object) -> float:
        assert callable(run)
        run()  # warm-up
        times = []
        for _ in range(args.repeats):
            if calc.device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            run()
            if calc.device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    for single, many in zip(one_at_a_time(), batched(), strict=True):
        np.testing.assert_allclose(single, many, atol=1e-4)
    single_s = median_seconds(one_at_a_time)
    batched_s = median_seconds(batched)
    count = len(structures)
    print(
        f"SchNetEncoder {name:7s}: one at a time {1e3 * single_s / count:6.2f} ms, batched "
        f"({args.batch_size}) {1e3 * batched_s / count:6.2f} ms per structure; "
        f"speed-up {single_s / batched_s:.1f}x"
    )


if __name__ == "__main__":
    main()
