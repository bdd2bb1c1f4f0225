from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from training_helpers import encoder_kwargs, loader, make_structures, trainer, truncated_checkpoint

from matsci.tasks.core import ScalarRegressionTask
from matsci.training import AtomicCheckpointIO, _checkpoint_io


def _task() -> ScalarRegressionTask:
    return ScalarRegressionTask(**encoder_kwargs(), task_keys=["energy"])


def test_save_replaces_the_file_and_leaves_nothing_else(tmp_path: Path) -> None:
    io = AtomicCheckpointIO()
    target = tmp_path / "sub" / "last.ckpt"
    io.save_checkpoint({"version": torch.tensor(1)}, target)
    io.save_checkpoint({"version": torch.tensor(2)}, target)
    assert io.load_checkpoint(target)["version"] == 2
    assert [path.name for path in target.parent.iterdir()] == ["last.ckpt"]


def test_a_crash_while_writing_keeps_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    io = AtomicCheckpointIO()
    target = tmp_path / "last.ckpt"
    io.save_checkpoint({"version": 1, "weights": torch.ones(1000)}, target)
    save = torch.save

    def half_then_crash(obj: Any, file: Any) -> None:
        save(obj, file)
        file.truncate(file.tell() // 2)
        raise OSError("disk full")

    monkeypatch.setattr(_checkpoint_io.torch, "save", half_then_crash)
    with pytest.raises(OSError, match="disk full"):
        io.save_checkpoint({"version": 2, "weights": torch.zeros(1000)}, target)
    monkeypatch.undo()
    assert io.load_checkpoint(target)["version"] == 1
    assert [path.name for path in tmp_path.iterdir()] == ["last.ckpt"]  # temporary removed


def test_stale_temporary_files_of_a_killed_save_are_removed(tmp_path: Path) -> None:
    stale = tmp_path / ".last.ckpt.abc123.tmp"
    stale.write_bytes(b"half a checkpoint")
    other = tmp_path / ".best.ckpt.abc123.tmp"  # another checkpoint's save is left alone
    other.write_bytes(b"x")
    AtomicCheckpointIO().save_checkpoint({"step": 1}, tmp_path / "last.ckpt")
    assert sorted(path.name for path in tmp_path.iterdir()) == [".best.ckpt.abc123.tmp",
                                                               "last.ckpt"]  # fmt: skip


def test_loading_a_truncated_checkpoint_is_a_value_error_naming_the_file(tmp_path: Path) -> None:
    path = truncated_checkpoint(tmp_path)
    pattern = rf"AtomicCheckpointIO: '{path}' is not a readable checkpoint \(truncated or corrupted"
    with pytest.raises(ValueError, match=pattern):
        AtomicCheckpointIO().load_checkpoint(path)


def test_resuming_from_a_truncated_last_checkpoint_names_it(tmp_path: Path) -> None:
    path = truncated_checkpoint(tmp_path)
    run = trainer(max_steps=2, plugins=[AtomicCheckpointIO()])
    with pytest.raises(ValueError, match=rf"AtomicCheckpointIO: '{path}' is not a readable"):
        run.fit(_task(), loader(make_structures(8, 0)), ckpt_path=path)


def test_trainer_with_the_plugin_writes_loadable_last_checkpoints(tmp_path: Path) -> None:
    callback = ModelCheckpoint(dirpath=tmp_path, save_top_k=0, save_last=True,
                               every_n_train_steps=1)  # fmt: skip
    run = trainer(max_steps=3, enable_checkpointing=True, callbacks=[callback],
                  plugins=[AtomicCheckpointIO()])  # fmt: skip
    run.fit(_task(), loader(make_structures(24, 0), batch_size=8))
    assert sorted(path.name for path in tmp_path.iterdir()) == ["last.ckpt"]
    restored = ScalarRegressionTask.load_from_checkpoint(tmp_path / "last.ckpt")
    assert torch.load(tmp_path / "last.ckpt", weights_only=True)["global_step"] == 3
    assert isinstance(restored, ScalarRegressionTask)
