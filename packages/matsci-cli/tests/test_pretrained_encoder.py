from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from matsci.cli import ConfigError, PretrainedEncoder
from matsci.tasks.physics import ForceRegressionTask, NodeDenoisingTask

ENCODER: dict[str, Any] = {
    "encoder_class": "matsci.encoders.SchNetEncoder",
    "encoder_kwargs": {"hidden_channels": 4, "num_filters": 4, "num_interactions": 1,
                       "num_gaussians": 4, "cutoff": 3.0},
}  # fmt: skip


def _save(task: torch.nn.Module, path: Path) -> Path:
    torch.save({"state_dict": task.state_dict(), "hyper_parameters": dict(task.hparams)}, path)
    return path


def test_copies_the_encoder_weights_of_a_checkpoint(tmp_path: Path) -> None:
    pretrained = NodeDenoisingTask(**ENCODER)
    path = _save(pretrained, tmp_path / "pre.ckpt")
    torch.manual_seed(1)
    task = ForceRegressionTask(**ENCODER)
    heads = {name: value.clone() for name, value in task.output_heads.state_dict().items()}
    PretrainedEncoder(str(path)).setup(SimpleNamespace(ckpt_path=None), task, "fit")  # type: ignore[arg-type]
    for name, value in pretrained.encoder.state_dict().items():
        torch.testing.assert_close(task.encoder.state_dict()[name], value)
    for name, value in task.output_heads.state_dict().items():
        torch.testing.assert_close(value, heads[name])


def test_does_nothing_when_resuming(tmp_path: Path) -> None:
    path = _save(NodeDenoisingTask(**ENCODER), tmp_path / "pre.ckpt")
    torch.manual_seed(1)
    task = ForceRegressionTask(**ENCODER)
    before = {name: value.clone() for name, value in task.encoder.state_dict().items()}
    PretrainedEncoder(str(path)).setup(SimpleNamespace(ckpt_path="last.ckpt"), task, "fit")  # type: ignore[arg-type]
    for name, value in task.encoder.state_dict().items():
        torch.testing.assert_close(value, before[name])


def test_refuses_another_encoder(tmp_path: Path) -> None:
    path = _save(NodeDenoisingTask(**ENCODER), tmp_path / "pre.ckpt")
    other = {**ENCODER, "encoder_kwargs": {**ENCODER["encoder_kwargs"], "hidden_channels": 6}}
    task = ForceRegressionTask(**other)
    with pytest.raises(ConfigError, match="was trained with encoder_kwargs="):
        PretrainedEncoder(str(path)).setup(SimpleNamespace(ckpt_path=None), task, "fit")  # type: ignore[arg-type]


def test_refuses_a_checkpoint_without_encoder_weights(tmp_path: Path) -> None:
    path = tmp_path / "empty.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {}}, path)
    with pytest.raises(ConfigError, match="no encoder weights"):
        PretrainedEncoder(str(path)).setup(
            SimpleNamespace(ckpt_path=None),
            ForceRegressionTask(**ENCODER),
            "fit",  # type: ignore[arg-type]
        )
