"""Does denoising pretraining help force training, and do direct forces match conservative ones?

Two comparisons on EMT metal cells generated here (``make_emt_dataset``, 8-32 atoms), both
encoders, several seeds, the same number of force-training steps everywhere:

* **denoising**: ``NodeDenoisingTask`` pretrains the encoder on an unlabelled pool (noise
  ``--noise`` Å, drawn anew for every batch), then ``ForceRegressionTask`` fine-tunes it on a
  small labelled set (about 10% of the pool); against the same model trained from scratch.
  Printed: test force MAE of each, and the fraction of the noise variance the pretrained model
  explains on held-out noisy cells (1 - MSE / variance).
* **direct forces**: ``GradFreeForceRegression`` against ``ForceRegressionTask`` on the same
  labelled set, and direct-force pretraining on the labelled set followed by conservative
  fine-tuning (fairchem's recipe), at the same total number of steps.

Force training follows ``ForceRegressionTask``'s own schedule (a per-step cosine to the last
step) unless ``--schedule constant`` keeps the rate at ``--lr``. The zero-force predictor's
MAE is printed beside them. Run
``uv run python benchmarks/denoise_pretraining.py`` (``--quick`` for a small run).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import ase.db
import torch
from _common import machine_line, setup_threads
from torch import nn
from torch.utils.data import Dataset
from torch_geometric.data import Batch, Data
from torch_geometric.loader import DataLoader

from matsci.contract.testing import quiet_trainer
from matsci.data import atoms_to_data
from matsci.data.examples import make_emt_dataset
from matsci.encoders import EquivariantEncoder, SchNetEncoder
from matsci.tasks.core import BaseTaskModule
from matsci.tasks.physics import ForceRegressionTask, GradFreeForceRegression, NodeDenoisingTask
from matsci.transforms import NoisyPositions, PeriodicRadiusGraph

CUTOFF = 4.5
ENCODERS: dict[str, Callable[[], nn.Module]] = {
    "schnet": lambda: SchNetEncoder(
        hidden_channels=64, num_filters=64, num_interactions=3, num_gaussians=32, cutoff=CUTOFF
    ),
    "equivariant": lambda: EquivariantEncoder(
        num_channels=16, lmax=1, num_layers=2, cutoff=CUTOFF, avg_num_neighbors=40.0
    ),
}


class Noised(Dataset[Data]):
    """The structures with fresh position noise at every access (a new draw every epoch)."""

    def __init__(self, structures: Sequence[Data], noise: NoisyPositions) -> None:
        self.structures, self.noise = list(structures), noise

    def __len__(self) -> int:
        return len(self.structures)

    def __getitem__(self, index: int) -> Data:
        return self.noise(self.structures[index].clone())  # type: ignore[no-any-return]


def emt_structures(folder: Path, name: str, count: int, seed: int) -> list[Data]:
    """``count`` EMT cells with their radius graphs (seed picks the structures)."""
    path = make_emt_dataset(folder / f"{name}.db", num_structures=count, seed=seed)
    graph = PeriodicRadiusGraph(cutoff=CUTOFF)
    kept = ("pos", "atomic_numbers", "natoms", "cell", "pbc", "energy", "force")
    with ase.db.connect(path) as db:
        converted = [atoms_to_data(row.toatoms()) for row in db.select()]
    # Only what the tasks read: some rows carry extra arrays (magnetic moments) that others lack.
    return [graph(Data(**{key: data[key] for key in kept})) for data in converted]


def fit(task: BaseTaskModule, data: Dataset[Data] | list[Data], steps: int, batch: int) -> None:
    """Train ``task`` for ``steps`` optimizer steps on shuffled batches."""
    loader = DataLoader(data, batch_size=batch, shuffle=True, drop_last=True)  # type: ignore[arg-type]
    epochs = -(-steps // max(len(loader), 1))
    quiet_trainer(max_steps=steps, max_epochs=epochs).fit(task, loader)


def force_mae(task: BaseTaskModule, test: list[Data]) -> float:
    """Test force MAE in meV/Å."""
    batch = Batch.from_data_list(test)
    predicted = task.predict(batch)["force"]
    return 1000.0 * float((predicted - batch.force).abs().mean())


def explained_noise(task: NodeDenoisingTask, noisy: list[Data]) -> float:
    """Fraction of the noise variance the denoising head explains on held-out noisy cells."""
    batch = Batch.from_data_list(noisy)
    predicted = task.predict(batch)["denoise"]
    return 1.0 - float((predicted - batch.denoise).square().mean() / batch.denoise.square().mean())


SCHEDULES = ("task-default", "constant")
"""``task-default``: the task's own schedule (a per-step cosine to the last step);
``constant``: the rate stays at ``lr`` (this benchmark's recipe before the task had one)."""


def force_task(
    encoder: nn.Module, labelled: list[Data], lr: float, schedule: str = "task-default"
) -> ForceRegressionTask:
    constant = {"class_path": "ConstantLR", "init_args": {"factor": 1.0}}
    task = ForceRegressionTask(
        encoder=encoder, lr=lr, output_kwargs={"hidden_dim": 64},
        task_loss_scaling={"energy": 1.0, "force": 10.0},
        scheduler_kwargs=constant if schedule == "constant" else None,
    )  # fmt: skip
    task.fit_normalizers(DataLoader(labelled, batch_size=16))  # type: ignore[arg-type]
    return task


def run_seed(
    encoder_name: str, seed: int, pool: list[Data], labelled: list[Data], test: list[Data],
    args: argparse.Namespace,
) -> dict[str, float]:  # fmt: skip
    """Every arm of both comparisons for one encoder and seed."""
    build = ENCODERS[encoder_name]
    noise = NoisyPositions(scale=args.noise, normalize=True)
    held_noise = NoisyPositions(
        scale=args.noise, normalize=True, generator=torch.Generator().manual_seed(seed)
    )
    held_out = [held_noise(data.clone()) for data in test]
    result: dict[str, float] = {}

    torch.manual_seed(seed)
    pretrain = NodeDenoisingTask(encoder=build(), lr=args.lr, output_kwargs={"hidden_dim": 64})
    fit(pretrain, Noised(pool, noise), args.pretrain_steps, args.batch)
    result["explained noise"] = explained_noise(pretrain, held_out)

    torch.manual_seed(seed + 100)
    finetuned = force_task(build(), labelled, args.finetune_lr, args.schedule)
    finetuned.encoder.load_state_dict(pretrain.encoder.state_dict())
    fit(finetuned, labelled, args.steps, args.batch)
    result["denoise+finetune"] = force_mae(finetuned, test)

    torch.manual_seed(seed + 100)
    scratch = force_task(build(), labelled, args.lr, args.schedule)
    fit(scratch, labelled, args.steps, args.batch)
    result["scratch"] = force_mae(scratch, test)

    if not args.direct:
        return result

    torch.manual_seed(seed + 100)
    direct = GradFreeForceRegression(encoder=build(), lr=args.lr, output_kwargs={"hidden_dim": 64})
    fit(direct, labelled, args.steps, args.batch)
    result["direct"] = force_mae(direct, test)

    # fairchem's recipe: direct forces first, then conservative; the same total steps.
    torch.manual_seed(seed + 100)
    first = GradFreeForceRegression(encoder=build(), lr=args.lr, output_kwargs={"hidden_dim": 64})
    fit(first, labelled, args.steps // 2, args.batch)
    second = force_task(build(), labelled, args.finetune_lr, args.schedule)
    second.encoder.load_state_dict(first.encoder.state_dict())
    fit(second, labelled, args.steps - args.steps // 2, args.batch)
    result["direct→conservative"] = force_mae(second, test)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small run (CI-sized)")
    parser.add_argument("--encoders", nargs="+", default=sorted(ENCODERS), choices=sorted(ENCODERS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--pool", type=int, default=256, help="unlabelled cells")
    parser.add_argument("--labelled", type=int, default=24, help="labelled cells (about 10%%)")
    parser.add_argument("--test", type=int, default=48)
    parser.add_argument("--noise", type=float, default=0.3, help="noise scale in Å")
    parser.add_argument("--pretrain-steps", type=int, default=600)
    parser.add_argument("--steps", type=int, default=300, help="force-training steps")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--finetune-lr", type=float, default=3e-3)
    parser.add_argument("--schedule", choices=SCHEDULES, default="task-default",
                        help="learning-rate schedule of force training")  # fmt: skip
    parser.add_argument(
        "--no-direct", dest="direct", action="store_false", help="skip the direct-force arms"
    )
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.pool, args.labelled, args.test = 1, 64, 16, 16
        args.pretrain_steps, args.steps = 40, 20
    threads = setup_threads(args.threads)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    for message in ("does not have many workers", "no `val_dataloader`", "LeafSpec"):
        warnings.filterwarnings("ignore", message=f".*{message}.*")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        pool = emt_structures(Path(folder), "pool", args.pool, seed=10)
        labelled = emt_structures(Path(folder), "labelled", args.labelled, seed=11)
        test = emt_structures(Path(folder), "test", args.test, seed=12)
    zero = 1000.0 * float(torch.cat([data.force for data in test]).abs().mean())
    print(machine_line(), f"| {threads} thread(s)")
    print(
        f"pool {len(pool)} unlabelled, {len(labelled)} labelled, {len(test)} test cells; "
        f"noise {args.noise} Å; pretrain {args.pretrain_steps} steps; force training "
        f"{args.steps} steps, batch {args.batch}, {args.schedule} schedule; lr {args.lr} "
        f"(fine-tune {args.finetune_lr}); "
        f"seeds {args.seeds}"
    )
    print(f"zero-force predictor: force MAE {zero:.1f} meV/Å")
    for name in args.encoders:
        runs = [run_seed(name, seed, pool, labelled, test, args) for seed in range(args.seeds)]
        print(f"\n{name}")
        for arm in runs[0]:
            values = [run[arm] for run in runs]
            unit = "" if arm == "explained noise" else " meV/Å"
            spread = f" ± {statistics.stdev(values):.2f}" if len(values) > 1 else ""
            each = ", ".join(f"{value:.3g}" for value in values)
            print(f"  {arm:<22} {statistics.mean(values):8.3g}{spread}{unit}   ({each})")
        gains = [run["scratch"] / run["denoise+finetune"] for run in runs]
        print(f"  scratch / pretrained   {statistics.mean(gains):.3f}  (>1: pretraining helps)")
    print(f"\nwall time {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
