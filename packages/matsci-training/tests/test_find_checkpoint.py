from pathlib import Path

import pytest

from matsci.training import find_checkpoint


def test_find_checkpoint_takes_the_newest_version_with_a_checkpoint(tmp_path: Path) -> None:
    for version, name in ((0, "best.ckpt"), (1, "last.ckpt"), (2, None)):
        folder = tmp_path / "run" / f"version_{version}" / "checkpoints"
        folder.mkdir(parents=True)
        if name is not None:
            (folder / name).write_bytes(b"")
    assert find_checkpoint(tmp_path / "run") == tmp_path / "run/version_1/checkpoints/last.ckpt"
    file = tmp_path / "run/version_0/checkpoints/best.ckpt"
    assert find_checkpoint(file) == file
    assert find_checkpoint(tmp_path / "run/version_0") == file


def test_find_checkpoint_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        find_checkpoint(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="has its training run finished"):
        find_checkpoint(tmp_path / "empty")
