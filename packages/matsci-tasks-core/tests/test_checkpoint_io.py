from pathlib import Path
from typing import Any

import pytest
import torch
from tasks_core_helpers import (
    encoder_kwargs,
    truncated_checkpoint,
)

from matsci.tasks.core import MultiTaskLitModule, ScalarRegressionTask, read_checkpoint


def _task() -> ScalarRegressionTask:
    return ScalarRegressionTask(**encoder_kwargs(), task_keys=["energy"])


def test_truncated_checkpoint_is_a_value_error_naming_the_file(tmp_path: Path) -> None:
    path = truncated_checkpoint(tmp_path)
    pattern = rf"'{path}' is not a readable checkpoint \(truncated or corrupted"
    with pytest.raises(ValueError, match=r"ScalarRegressionTask.load_from_checkpoint: " + pattern):
        ScalarRegressionTask.load_from_checkpoint(path)
    with pytest.raises(ValueError, match=r"MultiTaskLitModule.load_from_checkpoint: " + pattern):
        MultiTaskLitModule.load_from_checkpoint(path)
    with pytest.raises(ValueError, match=pattern):
        ScalarRegressionTask.from_pretrained_encoder(path, task_keys=["energy"])


@pytest.mark.parametrize(
    ("content", "found"),
    [
        (b"", "not a readable checkpoint"),
        (b"PK\x03\x04 garbage that only starts like a zip file", "not a readable checkpoint"),
        ([1, 2, 3], "it holds a list, not a dict"),
        ({"weights": torch.ones(2)}, r"it has no \['state_dict'\]"),
    ],
)
def test_foreign_files_are_value_errors(tmp_path: Path, content: Any, found: str) -> None:
    path = tmp_path / "foreign.ckpt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)
    with pytest.raises(ValueError, match=found):
        ScalarRegressionTask.load_from_checkpoint(path)


def test_missing_checkpoint_is_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_checkpoint(tmp_path / "nothing.ckpt")


def test_file_objects_are_read_and_rewound(tmp_path: Path) -> None:
    path = tmp_path / "ok.ckpt"
    torch.save({"state_dict": {}}, path)
    with path.open("rb") as file:
        assert read_checkpoint(file, required_keys=["state_dict"]) == {"state_dict": {}}
        assert file.tell() == 0
