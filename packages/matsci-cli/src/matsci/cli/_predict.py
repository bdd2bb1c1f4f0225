# mypy: untyped-calls-exclude=ase
"""``matsci predict``: predictions of a trained task for every structure of a file."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jsonargparse import ArgumentParser, Namespace
from torch import Tensor
from torch_geometric.data import Batch
from torch_geometric.loader import DataLoader
from torch_geometric.transforms import BaseTransform, Compose

from matsci.cli._errors import ConfigError, ShortErrorParser
from matsci.cli._paths import resolve_bundled
from matsci.cli._prediction_table import (
    PER_ATOM,
    SOURCE,
    check_output,
    formula,
    write_predictions,
)
from matsci.cli._run_info import CHECKPOINT_KEY
from matsci.contract import keys
from matsci.data import AtomsDataset, ShardedDataset, open_dataset
from matsci.tasks.core import BaseTaskModule, MultiTaskLitModule
from matsci.tasks.physics import KnownElements
from matsci.training import LoadedModel, load_model


def predict_parser() -> ArgumentParser:
    """The parser of ``matsci predict``.

    Returns
    -------
    jsonargparse.ArgumentParser
        Options ``--ckpt_path``, ``--data``, ``--output``, ``--batch_size``, ``--device``.
    """
    parser = ShortErrorParser(
        prog="matsci predict",
        description=(
            "Predict with a checkpoint written by `matsci fit` for every structure of an ASE "
            "database (.db, .json, .aselmdb), an extxyz file, or a folder of them (shards). A "
            ".csv output has one row per structure: source (the shard, for a folder), "
            "structure_id (database row id or frame index), formula, natoms and the "
            "predictions per structure (energy in eV; stress in eV/Å³ as stress_xx, stress_yy, "
            "stress_zz, stress_yz, stress_xz, stress_xy; class labels and probabilities); "
            "per-atom predictions (forces) are summarized by their largest norm "
            "(force_max_norm). A .db output is a copy of an input SQLite database (or a new "
            "database of the other inputs' structures) with predicted_<key> key-value pairs "
            "for numbers and predicted_<key> arrays in each row's data (forces per atom). The "
            "input is never modified."
        ),
    )
    parser.add_argument("--ckpt_path", type=str, required=True, help="Checkpoint of `matsci fit`.")
    parser.add_argument(
        "--data",
        type=str,
        required=True,
        help=(
            "Database, extxyz file or folder of shards (or a bundled file, e.g. bundled:emt-test)."
        ),
    )
    parser.add_argument(
        "--output",
        type=str | None,
        default=None,
        help="A .csv or .db file (default: <data name>_predictions.csv here).",
    )
    parser.add_argument(
        "--dataset",
        type=str | None,
        default=None,
        help="Multi-task checkpoints: the dataset whose transform and tasks to use (columns "
        "<task>_<key>); may be left out when the model has one dataset.",
    )
    parser.add_argument("--batch_size", type=int, default=32, help="Structures per batch.")
    parser.add_argument("--device", type=str, default="cpu", help="Torch device, e.g. cuda.")
    return parser


def predict_main(args: Sequence[str]) -> None:
    """Run ``matsci predict`` with the given arguments (without ``predict``).

    Parameters
    ----------
    args
        Command-line arguments.

    Raises
    ------
    ConfigError
        On a missing or foreign checkpoint, an unknown file type, or an output that would
        overwrite the input.
    """
    config = predict_parser().parse_args(list(args))
    data = str(resolve_bundled(config.data))  # "bundled:emt-test" names a bundled file
    output = config.output or f"{Path(data).stem}_predictions.csv"
    count = predict_to_file(
        config.ckpt_path, data, output, dataset=config.dataset,
        batch_size=config.batch_size, device=config.device,
    )  # fmt: skip
    print(f"matsci: {count} predictions written to {output}")


def predict_to_file(
    ckpt_path: str | Path,
    data: str | Path,
    output: str | Path,
    *,
    dataset: str | None = None,
    batch_size: int = 32,
    device: str = "cpu",
) -> int:
    """Write the predictions of a checkpoint for every structure of ``data`` into ``output``.

    Parameters
    ----------
    ckpt_path
        A checkpoint written by ``matsci fit`` (it holds the model class and the data
        transform).
    data
        An ASE database (``.db``) or extxyz file (``.xyz``, ``.extxyz``).
    output
        A ``.csv`` file (one row per structure) or a ``.db`` file (a copy of the database,
        with predictions added to each row).
    dataset
        For a multi-task checkpoint, the dataset whose transform and tasks to use (needed
        when it has several).
    batch_size
        Structures per batch.
    device
        Torch device to run the model on.

    Returns
    -------
    int
        The number of structures.

    Raises
    ------
    ConfigError
        On a missing checkpoint, one not written by ``matsci fit``, an unknown file type, or
        an output that is the input.
    ValueError
        If the file is not a matsci checkpoint (see :func:`~matsci.training.load_model`), or
        a structure holds an element the model was not trained on (a force field knows the
        elements with a fitted reference energy; see
        :class:`~matsci.tasks.physics.KnownElements`).
    """
    data_path, output_path = Path(data), Path(output)
    check_output(data_path, output_path, owner="predict", error=ConfigError)
    loaded, transform = load_for_prediction(ckpt_path, dataset=dataset)
    structures = _dataset(data_path, transform)
    loaded.module.to(torch.device(device)).eval()
    predict, levels = _predictor(loaded, dataset)
    known = _known_elements(loaded, dataset)
    rows = list(_predict_rows(predict, levels, structures, batch_size, torch.device(device), known))
    write_predictions(rows, data_path, output_path)
    return len(rows)


def load_for_prediction(
    ckpt_path: str | Path, *, dataset: str | None = None
) -> tuple[LoadedModel, BaseTransform | None]:
    """The model of a ``matsci fit`` checkpoint and the transform of its training data.

    The checkpoint is read once, by :func:`~matsci.training.load_model`. A data module with a
    ``pre_transform`` and a ``transform`` gives both, composed in that order (the order the
    data module applies them).

    Parameters
    ----------
    ckpt_path
        The checkpoint.
    dataset
        For a multi-task run over several datasets, the one whose transform to return.

    Returns
    -------
    tuple
        ``(loaded, transform)``: the :class:`~matsci.training.LoadedModel`, and the transform
        (``None`` if the data had none).

    Raises
    ------
    ConfigError
        If the file is missing or was not written by ``matsci fit``.
    ValueError
        If the file is not a matsci checkpoint.
    """
    path = Path(ckpt_path)
    if not path.is_file():
        raise ConfigError(f"predict --ckpt_path {str(path)!r}: no such file")
    loaded = load_model(path)
    info = loaded.records.get(CHECKPOINT_KEY)
    if not isinstance(info, dict) or not isinstance(info.get("config"), str):
        raise ConfigError(
            f"predict --ckpt_path {str(path)!r}: not written by `matsci fit` (no "
            f"{CHECKPOINT_KEY!r} entry with the run's config, which names the data transform)"
        )
    config = json.loads(info["config"])
    data_args = (config.get("data") or {}).get("init_args") or {}
    datasets = data_args.get("datasets")
    if isinstance(loaded.module, MultiTaskLitModule) and isinstance(datasets, dict):
        name = _dataset_name(loaded.module, dataset)
        data_args = (datasets.get(name) or {}).get("init_args") or {}
    transforms = [_transform(data_args.get(name)) for name in ("pre_transform", "transform")]
    present = [transform for transform in transforms if transform is not None]
    return loaded, (Compose(present) if len(present) > 1 else next(iter(present), None))


def _dataset_name(model: MultiTaskLitModule, dataset: str | None) -> str:
    """The multi-task dataset to predict for: the one given, or the only one."""
    names = [str(name) for name in model.dataset_names]
    if dataset is None and len(names) == 1:
        return names[0]
    if dataset is None or dataset not in names:
        given = "no --dataset" if dataset is None else f"--dataset {dataset!r}"
        raise ConfigError(f"predict: {given}; choose one of the model's datasets {names}")
    return dataset


def _predictor(
    loaded: LoadedModel, dataset: str | None
) -> tuple[Callable[[Batch], dict[str, Tensor]], dict[str, str]]:
    """A function from a batch to ``{column: prediction}``, and each target key's level."""
    model = loaded.module
    if not isinstance(model, MultiTaskLitModule):
        assert isinstance(model, BaseTaskModule)
        return model.predict, {spec.name: spec.level for spec in model.target_specs()}
    name = _dataset_name(model, dataset)
    levels: dict[str, str] = {}
    for task_id in model.dataset_tasks[name]:
        task_name = task_id.split("/", 1)[1]
        specs = model.task(task_id).target_specs()
        levels.update({f"{task_name}_{spec.name}": spec.level for spec in specs})

    def predict(batch: Batch) -> dict[str, Tensor]:
        by_task = model.predict({name: batch})[name]
        return {
            f"{task}_{key}": value
            for task, outputs in by_task.items()
            for key, value in outputs.items()
        }

    return predict, levels


def _known_elements(loaded: LoadedModel, dataset: str | None) -> KnownElements:
    """The elements every predicting task knows (the intersection over a dataset's tasks)."""
    model = loaded.module
    if not isinstance(model, MultiTaskLitModule):
        return KnownElements.of(model, owner="matsci predict")
    sets = [
        KnownElements.of(model.task(task_id), owner="matsci predict").numbers
        for task_id in model.dataset_tasks[_dataset_name(model, dataset)]
    ]
    told = [numbers for numbers in sets if numbers is not None]
    return KnownElements(frozenset.intersection(*told) if told else None)


def _transform(spec: Any) -> BaseTransform | None:
    """Instantiate the training data's transform from its config."""
    if spec is None:
        return None
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--transform", type=BaseTransform | None)
    parsed = parser.parse_object({"transform": spec})
    instance: Namespace = parser.instantiate(parsed)
    transform: BaseTransform | None = instance.transform
    return transform


def _dataset(path: Path, transform: BaseTransform | None) -> AtomsDataset:
    """Any source the data module reads: a file, a database URL or a folder of shards."""
    try:
        return open_dataset(path, keys=[], transform=transform)
    except (FileNotFoundError, ValueError) as error:
        raise ConfigError(f"predict --data {str(path)!r}: {error}") from error


def _predict_rows(
    predict: Callable[[Batch], dict[str, Tensor]],
    levels: dict[str, str],
    dataset: AtomsDataset,
    batch_size: int,
    device: torch.device,
    known: KnownElements,
) -> Iterator[dict[str, Any]]:
    """One dict per structure: id, formula, natoms, and predictions as NumPy arrays.

    Rows of a folder of shards also name their shard (``source``): row ids repeat across shards.
    A batch with an element the model does not know is refused before it is predicted.
    """
    position = 0
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        natoms = batch[keys.NATOMS].reshape(-1).tolist()
        offsets = np.cumsum([0, *natoms]).tolist()
        numbers = batch[keys.ATOMIC_NUMBERS].cpu().numpy()
        for i in range(batch.num_graphs):
            atoms = numbers[offsets[i] : offsets[i + 1]]
            where = f"structure {int(batch[keys.STRUCTURE_ID][i])} {formula(atoms)}"
            known.check(atoms.tolist(), owner="matsci predict", where=where)
        batch = batch.to(device)
        outputs = predict(batch)
        for i in range(batch.num_graphs):
            row: dict[str, Any] = {
                "structure_id": int(batch[keys.STRUCTURE_ID][i]),
                "formula": formula(numbers[offsets[i] : offsets[i + 1]]),
                "natoms": natoms[i],
            }
            if isinstance(dataset, ShardedDataset):
                row[SOURCE] = Path(dataset.paths[dataset.locate(position)[0]]).name
            position += 1
            per_atom: set[str] = set()
            for key, value in outputs.items():
                if levels.get(key) == "node" or (
                    key not in levels and value.shape[0] == batch.num_nodes != batch.num_graphs
                ):
                    per_atom.add(key)
                    part = value[offsets[i] : offsets[i + 1]]
                else:
                    part = value[i]
                row[key] = part.detach().cpu().numpy()
            row[PER_ATOM] = per_atom
            yield row
