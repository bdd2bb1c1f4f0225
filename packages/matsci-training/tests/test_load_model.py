import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.demos.boring_classes import BoringModel
from torch_geometric.data import Batch
from training_helpers import encoder_kwargs, trainer

from matsci.data import AtomsDataModule, MultiDataModule
from matsci.data.examples import bundled_dataset_path
from matsci.tasks.core import BinaryClassificationTask, MultiTaskLitModule, ScalarRegressionTask
from matsci.training import GraphSettings, LoadedModel, load_model
from matsci.transforms import PeriodicRadiusGraph

_BORING = "lightning.pytorch.demos.boring_classes.BoringModel"


def _encoder() -> dict[str, Any]:
    """The tests' encoder, with room for the elements of the EMT data (Cu, Au, ...)."""
    kwargs = encoder_kwargs()
    return {**kwargs, "encoder_kwargs": {**kwargs["encoder_kwargs"], "num_elements": 100}}


def _data(cutoff: float, max_neighbors: int | None) -> AtomsDataModule:
    return AtomsDataModule(
        bundled_dataset_path("emt"),
        keys=["energy"],
        transform=PeriodicRadiusGraph(cutoff=cutoff, max_neighbors=max_neighbors),
        split=[0.1, 0.05, 0.05],
        batch_size=8,
    )


def _fit_and_save(module: pl.LightningModule, datamodule: Any, path: Path) -> Path:
    run = trainer(max_steps=1, limit_val_batches=0)
    run.fit(module, datamodule=datamodule)
    run.save_checkpoint(path)
    return path


def _rewrite(path: Path, target: Path, **changes: Any) -> Path:
    """A copy of a checkpoint with top-level entries replaced (``None`` removes one)."""
    contents = torch.load(path, map_location="cpu", weights_only=True)
    for key, value in changes.items():
        if value is None:
            contents.pop(key, None)
        else:
            contents[key] = value
    torch.save(contents, target)
    return target


def _batch(data: AtomsDataModule) -> Batch:
    batch = next(iter(data.train_dataloader()))
    assert isinstance(batch, Batch)
    return batch


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    torch.manual_seed(0)
    data = _data(3.0, 12)
    task = ScalarRegressionTask(**_encoder(), task_keys=["energy"])
    path = _fit_and_save(task, data, tmp_path_factory.mktemp("single") / "task.ckpt")
    return {"task": task.eval(), "data": data, "path": path}


@pytest.fixture(scope="module")
def multi(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    torch.manual_seed(0)
    data = _data(3.5, 16)
    energy = ScalarRegressionTask(**_encoder(), task_keys=["energy"])
    again = ScalarRegressionTask(encoder=energy.encoder, task_keys=["energy"])
    module = MultiTaskLitModule(("emt", energy, "energy"), ("emt", again, "again"))
    path = tmp_path_factory.mktemp("multi") / "multi.ckpt"
    _fit_and_save(module, MultiDataModule({"emt": data}), path)
    return {"module": module.eval(), "data": data, "path": path}


def test_task_checkpoints_carry_the_model_record(single: dict[str, Any]) -> None:
    checkpoint = torch.load(single["path"], weights_only=True)
    expected = "matsci.tasks.core._scalar_regression.ScalarRegressionTask"
    assert checkpoint["matsci"] == {"model_class": expected}


def test_a_single_task(single: dict[str, Any]) -> None:
    loaded = load_model(single["path"])
    assert isinstance(loaded, LoadedModel)
    assert isinstance(loaded.module, ScalarRegressionTask)
    assert loaded.task is loaded.module
    assert not loaded.is_multitask
    assert not loaded.module.training
    assert (loaded.dataset, loaded.graph) == (None, GraphSettings(cutoff=3.0, max_neighbors=12))
    assert loaded.path == single["path"]
    assert loaded.model_class.endswith("ScalarRegressionTask")
    assert loaded.records["global_step"] == 1
    assert "state_dict" not in loaded.records
    batch = _batch(single["data"])
    torch.testing.assert_close(
        loaded.task.predict(batch)["energy"], single["task"].predict(batch)["energy"]
    )
    with pytest.raises(ValueError, match=r"load_model\(task='emt/x'\): task= picks one task of"):
        load_model(single["path"], task="emt/x")


_RECORDERS: list[list[str]] = []
"""Lists that collect the files opened (``sys.audit`` "open" events) while a test records."""


def _record_open(event: str, args: tuple[Any, ...]) -> None:
    if _RECORDERS and event == "open" and isinstance(args[0], str | bytes | os.PathLike):
        _RECORDERS[-1].append(os.fsdecode(args[0]))


sys.addaudithook(_record_open)  # hooks stay for the process: idle while nothing records


@pytest.mark.parametrize("weights", ["evaluation", "raw"])
def test_the_file_is_read_once(
    single: dict[str, Any], monkeypatch: pytest.MonkeyPatch, weights: Literal["evaluation", "raw"]
) -> None:
    path = single["path"]
    given: list[Any] = []  # what torch.load reads: a path would be opened (or mapped) again
    original: Callable[..., Any] = torch.load

    def load(source: Any, *args: Any, **kwargs: Any) -> Any:
        given.append(source)
        return original(source, *args, **kwargs)

    monkeypatch.setattr(torch, "load", load)
    _RECORDERS.append([])
    try:
        loaded = load_model(path, weights=weights)
    finally:
        opened = _RECORDERS.pop()
    assert [name for name in opened if os.path.realpath(name) == os.path.realpath(path)] == [
        os.fspath(path)
    ]
    assert len(given) >= 2  # the records, and Lightning's load_from_checkpoint
    assert not any(isinstance(source, str | os.PathLike) for source in given)
    monkeypatch.undo()
    batch = _batch(single["data"])
    expected = type(single["task"]).load_from_checkpoint(path).eval().predict(batch)["energy"]
    torch.testing.assert_close(loaded.module.predict(batch)["energy"], expected, rtol=0, atol=0)
    torch.testing.assert_close(single["task"].predict(batch)["energy"], expected, rtol=0, atol=0)


def test_without_a_recorded_graph(single: dict[str, Any], tmp_path: Path) -> None:
    path = _rewrite(single["path"], tmp_path / "bare.ckpt", datamodule_hyper_parameters=None)
    assert load_model(path).graph is None


def test_a_multi_task_module(multi: dict[str, Any]) -> None:
    loaded = load_model(multi["path"])
    assert isinstance(loaded.module, MultiTaskLitModule)
    assert loaded.is_multitask
    assert loaded.module.task_names == ["emt/energy", "emt/again"]
    # Two tasks and none chosen; the only dataset's graph.
    assert (loaded.task, loaded.dataset) == (None, None)
    assert loaded.graph == GraphSettings(cutoff=3.5, max_neighbors=16)
    batch = _batch(multi["data"])
    expected = multi["module"].extract_task("emt/again").predict(batch)["energy"]
    for choice in ("emt/again", 1, -1):
        chosen = load_model(multi["path"], task=choice)
        assert isinstance(chosen.task, ScalarRegressionTask)
        assert not chosen.task.training
        assert chosen.dataset == "emt"
        assert chosen.graph == GraphSettings(cutoff=3.5, max_neighbors=16)
        torch.testing.assert_close(chosen.task.predict(batch)["energy"], expected)


@pytest.mark.parametrize(
    ("task", "message"),
    [
        ("emt/nope", r"task='emt/nope'\): no such task; expected one of \['emt/energy', 'emt/ag"),
        (2, r"task=2\): index out of range for the 2 tasks"),
        (True, r"task=True\): expected a task name or index"),
    ],
)
def test_a_task_that_is_not_there(multi: dict[str, Any], task: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_model(multi["path"], task=task)


def test_a_multi_task_module_with_one_task_gives_it(tmp_path: Path) -> None:
    data = _data(3.0, None)
    task = BinaryClassificationTask(**_encoder(), task_keys=["energy"])
    module = MultiTaskLitModule(("emt", task, "sign"))
    path = tmp_path / "one.ckpt"
    torch.save(
        {"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams),
         "pytorch-lightning_version": pl.__version__,
         "matsci": {"model_class": "matsci.tasks.core.MultiTaskLitModule"},
         "datamodule_hyper_parameters": dict(MultiDataModule({"emt": data}).hparams)},
        path,
    )  # fmt: skip
    loaded = load_model(path)
    assert isinstance(loaded.task, BinaryClassificationTask)
    assert (loaded.dataset, loaded.graph) == ("emt", GraphSettings(cutoff=3.0))


def test_files_that_are_not_checkpoints(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"load_model: checkpoint '.*absent.ckpt' does not"):
        load_model(tmp_path / "absent.ckpt")
    notes = tmp_path / "notes.ckpt"
    notes.write_text("not a checkpoint")
    with pytest.raises(
        ValueError, match=r"load_model: '.*notes.ckpt' is not a readable checkpoint \(truncated"
    ):
        load_model(notes)
    listed = tmp_path / "list.ckpt"
    torch.save([1, 2], listed)
    with pytest.raises(ValueError, match=r"'.*list.ckpt' is not a readable .* holds a list"):
        load_model(listed)
    weights = tmp_path / "weights.pt"
    torch.save({"weight": torch.ones(2)}, weights)
    with pytest.raises(ValueError, match=r"'.*weights.pt' is not a readable .*no \['state_dict"):
        load_model(weights)


def test_foreign_and_old_checkpoints(single: dict[str, Any], tmp_path: Path) -> None:
    foreign = tmp_path / "foreign.ckpt"
    run = trainer(max_steps=1, limit_val_batches=0)
    run.fit(BoringModel())
    run.save_checkpoint(foreign)
    message = r"'.*foreign.ckpt' is a Lightning checkpoint without a 'matsci' record .* older"
    with pytest.raises(ValueError, match=message):
        load_model(foreign)
    old = _rewrite(single["path"], tmp_path / "old.ckpt", matsci=None)
    with pytest.raises(ValueError, match=r"'.*old.ckpt' is a Lightning checkpoint without"):
        load_model(old)
    other = _rewrite(single["path"], tmp_path / "other.ckpt",
                     matsci={"model_class": _BORING})  # fmt: skip
    with pytest.raises(ValueError, match=r"holds a .*BoringModel, not a matsci task module"):
        load_model(other)
    missing = _rewrite(single["path"], tmp_path / "missing.ckpt",
                       matsci={"model_class": "matsci.tasks.core.NoSuchTask"})  # fmt: skip
    with pytest.raises(ValueError, match=r"'matsci.tasks.core.NoSuchTask' does not name a"):
        load_model(missing)
