"""The extxyz byte-offset index is kept in a cache file, reused, and rebuilt when it must be."""

import os
from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase import Atoms

from matsci.data import ExtxyzDataset
from matsci.data._index_cache import cache_paths


def _frames(count: int) -> list[Atoms]:
    frames = []
    for i in range(count):
        atoms = Atoms("H" * (1 + i % 4), positions=np.arange(3 * (1 + i % 4)).reshape(-1, 3))
        atoms.info["energy"] = float(i)
        frames.append(atoms)
    return frames


class _ScanCounter:
    """Counts ``ExtxyzDataset._scan`` calls."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        scan = ExtxyzDataset._scan

        def counting(dataset: ExtxyzDataset) -> object:
            self.calls += 1
            return scan(dataset)

        monkeypatch.setattr(ExtxyzDataset, "_scan", counting)


@pytest.fixture
def scans(monkeypatch: pytest.MonkeyPatch) -> _ScanCounter:
    return _ScanCounter(monkeypatch)


@pytest.fixture
def path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user-cache"))
    file = tmp_path / "train.extxyz"
    ase.io.write(file, _frames(9), format="extxyz")
    return file


def _cache(path: Path) -> Path:
    return path.with_name(path.name + ".matsci-index.npz")


def test_second_open_reuses_the_index(path: Path, scans: _ScanCounter) -> None:
    first = ExtxyzDataset(path)
    assert scans.calls == 1
    assert _cache(path).is_file()
    second = ExtxyzDataset(path)
    assert scans.calls == 1  # no scan: the cache was used
    assert second._offsets.tolist() == first._offsets.tolist()
    assert second.atom_counts().tolist() == [1, 2, 3, 4, 1, 2, 3, 4, 1]
    assert [second[i].energy.item() for i in range(9)] == [float(i) for i in range(9)]


def test_changed_file_rebuilds(path: Path, scans: _ScanCounter) -> None:
    ExtxyzDataset(path)
    ase.io.write(path, _frames(12), format="extxyz")
    dataset = ExtxyzDataset(path)
    assert scans.calls == 2
    assert len(dataset) == 12
    assert dataset[11].energy.item() == 11.0


def test_same_size_and_time_but_other_bytes_rebuilds(path: Path, scans: _ScanCounter) -> None:
    ExtxyzDataset(path)
    stat = path.stat()
    text = path.read_text()
    path.write_text(text.replace("energy=1.0", "energy=7.0"))  # same length
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size
    dataset = ExtxyzDataset(path)
    assert scans.calls == 2
    assert dataset[1].energy.item() == 7.0


@pytest.mark.parametrize(
    "damage",
    [
        lambda cache: cache.write_bytes(np.random.default_rng(0).bytes(300)),
        lambda cache: cache.write_bytes(cache.read_bytes()[:100]),
        lambda cache: np.savez(cache, offsets=np.array([5, 2])),
    ],
    ids=["random-bytes", "truncated", "foreign"],
)
def test_damaged_cache_is_rebuilt(path: Path, scans: _ScanCounter, damage: object) -> None:
    ExtxyzDataset(path)
    damage(_cache(path))  # type: ignore[operator]
    dataset = ExtxyzDataset(path)
    assert scans.calls == 2
    assert dataset.atom_counts().tolist() == [1, 2, 3, 4, 1, 2, 3, 4, 1]
    ExtxyzDataset(path)
    assert scans.calls == 2  # the rebuilt cache is good again


def test_inconsistent_cache_with_the_right_fingerprint_is_not_trusted(
    path: Path, scans: _ScanCounter
) -> None:
    ExtxyzDataset(path)
    with np.load(_cache(path)) as archive:
        arrays = dict(archive)
    arrays["offsets"] = arrays["offsets"][::-1].copy()  # not increasing
    np.savez(_cache(path), **arrays)
    dataset = ExtxyzDataset(path)
    assert scans.calls == 2
    assert dataset[2].energy.item() == 2.0


def test_unwritable_folder_uses_the_user_cache(path: Path, scans: _ScanCounter) -> None:
    _cache(path).mkdir()  # the cache cannot be written beside the file
    ExtxyzDataset(path)
    beside, user = cache_paths(path, "index")
    assert beside == _cache(path)
    assert user.is_file()
    assert user.parent == path.parent / "user-cache" / "matsci"
    ExtxyzDataset(path)
    assert scans.calls == 1


def test_no_cache_writes_nothing(path: Path, scans: _ScanCounter) -> None:
    before = set(path.parent.iterdir())
    ExtxyzDataset(path, index_cache=False)
    ExtxyzDataset(path, index_cache=False)
    assert scans.calls == 2
    assert set(path.parent.iterdir()) == before
