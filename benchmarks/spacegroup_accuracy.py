"""Held-out space-group accuracy of ``CrystalSymmetryClassificationTask`` on both encoders.

The data are the bundled pyxtal crystals (six space groups: 14, 62, 139, 166, 194, 225), plus
``--generate`` more from :func:`matsci.data.examples.make_spacegroup_dataset` (pyxtal, local:
nothing is downloaded), cached under ``--cache``. One random split with a fixed seed: 70% train,
10% validation, 20% test. During training each crystal's elements are relabelled at random
(``--relabel``, a one-to-one map onto other elements of the generator's list): the space group
does not change, and the model can no longer tell the groups apart by the chemistry of its
training crystals, which the generator draws at random. Both ``SchNetEncoder`` and
``EquivariantEncoder`` (lmax 2, so that its invariants carry angular information) are trained
with the same seed, schedule (AdamW, cosine), label smoothing and head dropout, and evaluated on
the test split with the weights of the best validation epoch. The table gives top-1 accuracy
and macro F1 beside the majority-class share of the test split and chance (one over the number
of groups), with the wall time of each.

Run: ``uv run python benchmarks/spacegroup_accuracy.py [--quick] [--generate 1200]
[--epochs 20] [--threads 1]``. ``--quick``: the bundled crystals only, 3 epochs, small models
(a smoke test of the script, not a measurement).
"""

from __future__ import annotations

import argparse
import random
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from _common import machine_line, print_table, setup_threads
from torch.utils.data import Dataset
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader

from matsci.contract import testing
from matsci.data import AseDbDataset
from matsci.data.examples import bundled_dataset_path, make_spacegroup_dataset
from matsci.tasks.core import CrystalSymmetryClassificationTask
from matsci.transforms import PeriodicRadiusGraph, PrimitiveCell

CUTOFF = 5.0
"""Neighbour cutoff (Å) of the graphs and encoders; no cap on the number of neighbours."""
ELEMENTS = (3, 6, 7, 8, 9, 11, 12, 13, 14, 16, 17, 19, 20, 22, 26, 30)
"""Atomic numbers of the generator's default elements, the targets of the relabelling."""


def load(paths: Sequence[Path], primitive: bool = True) -> list[Data]:
    """Every crystal of the databases with its label, radius graph and primitive cell."""
    graph = PeriodicRadiusGraph(cutoff=CUTOFF)
    cell = PrimitiveCell() if primitive else (lambda data: data)
    structures: list[Data] = []
    for path in paths:
        dataset = AseDbDataset(path, keys=["spacegroup"])
        structures += [cell(graph(dataset[i])) for i in range(len(dataset))]
    return structures


def generated(count: int, cache: Path) -> list[Path]:
    """``count`` generated crystals (seed 1; the bundled copy is seed 0), cached by count."""
    if count == 0:
        return []
    path = cache / f"spacegroup-seed1-{count}.db"
    if not path.exists():
        start = time.perf_counter()
        make_spacegroup_dataset(path, num_structures=count, seed=1)
        print(f"generated {count} crystals in {time.perf_counter() - start:.0f} s: {path}")
    return [path]


class Relabelled(Dataset[Data]):
    """Training crystals with their elements mapped one-to-one onto random other elements.

    A one-to-one map keeps which sites hold the same element, so the space group is unchanged.
    """

    def __init__(self, structures: Sequence[Data], enabled: bool) -> None:
        self.structures, self.enabled = list(structures), enabled

    def __len__(self) -> int:
        return len(self.structures)

    def __getitem__(self, index: int) -> Data:
        data = self.structures[index]
        if not self.enabled:
            return data
        present, inverse = torch.unique(data.atomic_numbers, return_inverse=True)
        choice = torch.randperm(len(ELEMENTS))[: len(present)]
        relabelled = data.clone()
        relabelled.atomic_numbers = torch.tensor(ELEMENTS)[choice][inverse]
        return relabelled


def encoder_settings(name: str, quick: bool, avg_neighbors: float) -> tuple[str, dict[str, Any]]:
    if name == "SchNetEncoder":
        width = 32 if quick else 64
        return "matsci.encoders.SchNetEncoder", {
            "hidden_channels": width, "num_filters": width, "num_interactions": 3,
            "num_gaussians": 50, "cutoff": CUTOFF, "readout": "mean",
        }  # fmt: skip
    return "matsci.encoders.EquivariantEncoder", {
        "num_channels": 8 if quick else 16, "lmax": 2, "num_layers": 2, "cutoff": CUTOFF,
        "readout": "mean", "avg_num_neighbors": avg_neighbors,
    }  # fmt: skip


class BestOnValidation(pl.Callback):
    """Keep the weights of the epoch with the highest validation top-1 accuracy."""

    def __init__(self) -> None:
        self.best = -1.0
        self.state: dict[str, torch.Tensor] | None = None

    def on_validation_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        accuracy = float(trainer.callback_metrics["val/spacegroup/top1"])
        if accuracy > self.best:
            self.best = accuracy
            self.state = {k: v.detach().clone() for k, v in module.state_dict().items()}


def train_and_test(
    name: str,
    splits: dict[str, list[Data]],
    args: argparse.Namespace,
) -> tuple[dict[str, float], float]:
    """Test metrics of one encoder and the wall time of its training."""
    edges = sum(int(d.edge_index.shape[1]) for d in splits["train"])
    atoms = sum(int(d.natoms) for d in splits["train"])
    encoder_class, encoder_kwargs = encoder_settings(name, args.quick, edges / atoms)
    pl.seed_everything(args.seed, verbose=False)
    task = CrystalSymmetryClassificationTask(
        encoder_class=encoder_class,
        encoder_kwargs=encoder_kwargs,
        label_smoothing=0.1,
        lattice_features=args.lattice,
        output_kwargs={"hidden_dim": 64, "dropout": 0.1},
        lr=args.lr,
        weight_decay=0.01,
        scheduler_kwargs={
            "class_path": "CosineAnnealingLR",
            "init_args": {"T_max": args.epochs},
            "interval": "epoch",
        },
    )
    best = BestOnValidation()
    trainer = testing.quiet_trainer(
        max_epochs=args.epochs, deterministic=None, num_sanity_val_steps=0, callbacks=[best]
    )
    train = DataLoader(Relabelled(splits["train"], args.relabel), batch_size=16, shuffle=True)
    start = time.perf_counter()
    trainer.fit(task, train, DataLoader(splits["val"], batch_size=64))
    seconds = time.perf_counter() - start
    if best.state is not None:
        task.load_state_dict(best.state)
    metrics = trainer.test(task, DataLoader(splits["test"], batch_size=64), verbose=False)[0]
    return {k: float(v) for k, v in metrics.items()}, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="bundled data, 3 epochs, small")
    parser.add_argument("--generate", type=int, default=1200, help="generated crystals to add")
    parser.add_argument("--cache", type=Path, default=Path(".cache/spacegroup"))
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-relabel", dest="relabel", action="store_false")
    parser.add_argument(
        "--no-primitive",
        dest="primitive",
        action="store_false",
        help="without PrimitiveCell: the head sees the stored cell only",
    )
    parser.add_argument(
        "--no-lattice",
        dest="lattice",
        action="store_false",
        help="head without the lattice invariants (structure embedding only)",
    )
    parser.add_argument("--encoders", nargs="+", default=["SchNetEncoder", "EquivariantEncoder"],
                        choices=["SchNetEncoder", "EquivariantEncoder"])  # fmt: skip
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.quick:
        args.generate, args.epochs = 0, 3
    setup_threads(args.threads)
    started = time.perf_counter()
    args.cache.mkdir(parents=True, exist_ok=True)

    paths = [bundled_dataset_path("spacegroup"), *generated(args.generate, args.cache)]
    structures = load(paths, primitive=args.primitive)
    random.Random(args.seed).shuffle(structures)
    test_size, val_size = len(structures) // 5, len(structures) // 10
    splits = {
        "test": structures[:test_size],
        "val": structures[test_size : test_size + val_size],
        "train": structures[test_size + val_size :],
    }
    labels = [int(d.spacegroup) for d in splits["test"]]
    majority = Counter(labels).most_common(1)[0][1] / len(labels)
    chance = 1 / len(set(int(d.spacegroup) for d in structures))

    print(machine_line())
    print(
        f"{len(structures)} crystals ({args.generate} generated), train/val/test "
        f"{len(splits['train'])}/{len(splits['val'])}/{len(splits['test'])}; cutoff {CUTOFF} Å, "
        f"{args.epochs} epochs, lr {args.lr}, AdamW weight decay 0.01, label smoothing 0.1, "
        f"head dropout 0.1, relabelled elements: {args.relabel}"
    )
    rows = []
    for name in args.encoders:
        metrics, seconds = train_and_test(name, splits, args)
        rows.append([
            name, f"{metrics['test/spacegroup/top1']:.3f}",
            f"{metrics['test/spacegroup/f1_macro']:.3f}", f"{majority:.3f}", f"{chance:.3f}",
            f"{seconds:.0f}",
        ])  # fmt: skip
    print_table(
        "held-out space-group accuracy",
        ["encoder", "top-1", "macro F1", "majority", "chance", "train s"],
        rows,
    )
    print(f"total wall time {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
