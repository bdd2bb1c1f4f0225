from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from training_helpers import encoder_kwargs

from matsci.tasks.core import BinaryClassificationTask, ScalarRegressionTask
from matsci.training import PretrainedEncoder


def _save(task: torch.nn.Module, path: Path) -> Path:
    torch.save({"state_dict": task.state_dict(), "hyper_parameters": dict(task.hparams)}, path)
    return path


def _trainer(ckpt_path: str | None = None) -> Any:
    return SimpleNamespace(ckpt_path=ckpt_path)


def test_copies_the_encoder_weights_of_a_checkpoint(tmp_path: Path) -> None:
    pretrained = BinaryClassificationTask(**encoder_kwargs(), task_keys=["stable"])
    path = _save(pretrained, tmp_path / "pre.ckpt")
    torch.manual_seed(1)
    task = ScalarRegressionTask(**encoder_kwargs(), task_keys=["energy"])
    heads = {name: value.clone() for name, value in task.output_heads.state_dict().items()}
    PretrainedEncoder(str(path)).setup(_trainer(), task, "fit")
    for name, value in pretrained.encoder.state_dict().items():
        assert torch.equal(task.encoder.state_dict()[name], value)
    for name, value in task.output_heads.state_dict().items():
        assert torch.equal(value, heads[name])


def test_a_run_folder_means_its_newest_best_checkpoint(tmp_path: Path) -> None:
    pretrained = BinaryClassificationTask(**encoder_kwargs(), task_keys=["stable"])
    folder = tmp_path / "pretrain" / "version_2" / "checkpoints"
    folder.mkdir(parents=True)
    _save(pretrained, folder / "best.ckpt")
    task = ScalarRegressionTask(**encoder_kwargs(), task_keys=["energy"])
    PretrainedEncoder(str(tmp_path / "pretrain")).setup(_trainer(), task, "fit")
    for name, value in pretrained.encoder.state_dict().items():
        assert torch.equal(task.encoder.state_dict()[name], value)


def test_does_nothing_when_resuming_or_not_fitting(tmp_path: Path) -> None:
    path = _save(BinaryClassificationTask(**encoder_kwargs(), task_keys=["stable"]),
                 tmp_path / "pre.ckpt")  # fmt: skip
    torch.manual_seed(1)
    task = ScalarRegressionTask(**encoder_kwargs(), task_keys=["energy"])
    before = {name: value.clone() for name, value in task.encoder.state_dict().items()}
    PretrainedEncoder(str(path)).setup(_trainer("last.ckpt"), task, "fit")
    PretrainedEncoder(str(path)).setup(_trainer(), task, "test")
    PretrainedEncoder(None).setup(_trainer(), task, "fit")
    for name, value in task.encoder.state_dict().items():
        assert torch.equal(value, before[name])


def test_refuses_another_encoder(tmp_path: Path) -> None:
    path = _save(BinaryClassificationTask(**encoder_kwargs(), task_keys=["stable"]),
                 tmp_path / "pre.ckpt")  # fmt: skip
    other = {**encoder_kwargs(), "encoder_kwargs": {"embedding_dim": 8}}
    task = ScalarRegressionTask(**other, task_keys=["energy"])
    with pytest.raises(ValueError, match="was trained with encoder_kwargs="):
        PretrainedEncoder(str(path)).setup(_trainer(), task, "fit")


def test_refuses_checkpoints_without_encoder_weights_and_other_files(tmp_path: Path) -> None:
    task = ScalarRegressionTask(**encoder_kwargs(), task_keys=["energy"])
    empty = tmp_path / "empty.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {}}, empty)
    with pytest.raises(ValueError, match=r"pretrained_encoder: no encoder weights in '.*empty"):
        PretrainedEncoder(str(empty)).setup(_trainer(), task, "fit")
    notes = tmp_path / "notes.ckpt"
    notes.write_text("not a checkpoint")
    with pytest.raises(ValueError, match=r"pretrained_encoder: '.*notes.ckpt' is not a readable"):
        PretrainedEncoder(str(notes)).setup(_trainer(), task, "fit")
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        PretrainedEncoder(str(tmp_path / "absent.ckpt")).setup(_trainer(), task, "fit")


def test_repr() -> None:
    assert repr(PretrainedEncoder("runs/pre")) == "PretrainedEncoder(checkpoint='runs/pre')"
