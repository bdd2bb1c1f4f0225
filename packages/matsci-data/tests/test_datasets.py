import hashlib
import io
import os
import pickle
import sqlite3
from pathlib import Path

import ase.db
import ase.io
import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader

from matsci.contract import keys as K
from matsci.contract.keys import STRUCTURE_ID
from matsci.data import AseDbDataset, ExtxyzDataset

Dataset = AseDbDataset | ExtxyzDataset


def _write_db(path: Path, structures: list[Atoms]) -> Path:
    with ase.db.connect(path) as db:
        for i, atoms in enumerate(structures):
            db.write(atoms, target=float(i) / 2, split="train" if i % 2 else "val")
    return path


def _write_extxyz(path: Path, structures: list[Atoms]) -> Path:
    for i, atoms in enumerate(structures):
        atoms.info.update(target=float(i) / 2, split="train" if i % 2 else "val")
    ase.io.write(path, structures, format="extxyz")
    return path


@pytest.fixture(params=["db", "extxyz"])
def kind(request: pytest.FixtureRequest) -> str:
    value: str = request.param
    return value


@pytest.fixture
def dataset_file(kind: str, tmp_path: Path, emt_structures: list[Atoms]) -> Path:
    if kind == "db":
        return _write_db(tmp_path / "structures.db", emt_structures)
    return _write_extxyz(tmp_path / "structures.extxyz", emt_structures)


def _open(path: Path, **kwargs: object) -> Dataset:
    cls = AseDbDataset if path.suffix == ".db" else ExtxyzDataset
    return cls(path, **kwargs)  # type: ignore[arg-type]


def _fingerprint(path: Path) -> tuple[str, int]:
    return hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns


def test_items_equal_the_written_structures(
    dataset_file: Path, emt_structures: list[Atoms]
) -> None:
    dataset = _open(dataset_file, keys=[K.ENERGY, K.FORCE, K.STRESS, "target"])
    assert len(dataset) == len(emt_structures)
    for i, atoms in enumerate(emt_structures):
        data = dataset[i]
        np.testing.assert_allclose(data.pos.numpy(), atoms.positions, atol=1e-5)
        assert data.atomic_numbers.tolist() == atoms.numbers.tolist()
        np.testing.assert_allclose(data.cell[0].numpy(), atoms.cell.array, atol=1e-5)
        assert data.pbc.tolist() == [atoms.pbc.tolist()]
        np.testing.assert_allclose(data.energy.numpy(), [atoms.get_potential_energy()], rtol=1e-6)
        np.testing.assert_allclose(data.force.numpy(), atoms.get_forces(), atol=1e-6)
        np.testing.assert_allclose(data.stress[0].numpy(), atoms.get_stress(voigt=False), atol=1e-7)
        assert data.target.tolist() == [i / 2]
        assert data.natoms.tolist() == [len(atoms)]


def test_structure_id_is_the_row_id_or_frame_index(dataset_file: Path) -> None:
    dataset = _open(dataset_file)
    offset = 1 if dataset_file.suffix == ".db" else 0  # ASE row ids start at 1
    assert [dataset[i][STRUCTURE_ID].item() for i in range(len(dataset))] == [
        i + offset for i in range(len(dataset))
    ]


def test_keys_and_available_keys(dataset_file: Path) -> None:
    dataset = _open(dataset_file)
    assert {K.ENERGY, K.FORCE, K.STRESS, "target"} <= set(dataset.available_keys)
    assert "split" not in dataset.available_keys  # strings are no targets
    assert list(dataset.available_keys) == sorted(dataset.available_keys)
    assert dataset.keys == dataset.available_keys
    selected = _open(dataset_file, keys=[K.ENERGY, "target"])
    assert selected.keys == (K.ENERGY, "target")
    present = {key for key in selected[0].keys() if key in dataset.available_keys}  # noqa: SIM118
    assert present == {
        K.ENERGY,
        "target",
    }


def test_negative_index_and_out_of_range(dataset_file: Path) -> None:
    dataset = _open(dataset_file)
    assert dataset[-1][STRUCTURE_ID].item() == dataset[len(dataset) - 1][STRUCTURE_ID].item()
    with pytest.raises(IndexError, match="index 6 out of range for 6 structures"):
        dataset[6]


def test_transform_is_applied(dataset_file: Path) -> None:
    def double_energy(data: Data) -> Data:
        data.energy = 2 * data.energy
        return data

    plain = _open(dataset_file, keys=[K.ENERGY])
    doubled = _open(dataset_file, keys=[K.ENERGY], transform=double_energy)
    torch.testing.assert_close(doubled[2].energy, 2 * plain[2].energy)


def test_column_reads_split_labels(dataset_file: Path) -> None:
    assert _open(dataset_file).column("split") == ["val", "train"] * 3
    assert _open(dataset_file).column("absent") == [None] * 6


def test_worker_processes_give_the_same_batches(dataset_file: Path) -> None:
    dataset = _open(dataset_file, keys=[K.ENERGY, K.FORCE, K.STRESS])
    serial = list(DataLoader(dataset, batch_size=2))
    parallel = list(DataLoader(dataset, batch_size=2, num_workers=2))
    assert len(serial) == len(parallel) == 3
    for one, other in zip(serial, parallel, strict=True):
        for key in (K.POS, K.ENERGY, K.FORCE, K.STRESS, STRUCTURE_ID, K.BATCH):
            torch.testing.assert_close(one[key], other[key])
    assert parallel[0].stress.shape == (2, 3, 3)


def test_pickled_dataset_reads_the_same(dataset_file: Path) -> None:
    dataset = _open(dataset_file)
    dataset[0]  # connect or read before pickling
    copy = pickle.loads(pickle.dumps(dataset))
    torch.testing.assert_close(copy[3].force, dataset[3].force)


def test_reading_leaves_the_file_unchanged(dataset_file: Path) -> None:
    before = _fingerprint(dataset_file)
    siblings = set(dataset_file.parent.iterdir())
    dataset = _open(dataset_file)
    _ = [dataset[i] for i in range(len(dataset))]
    _ = list(DataLoader(dataset, batch_size=3, num_workers=2))
    dataset.column("split")
    del dataset
    assert _fingerprint(dataset_file) == before
    # No lock or journal files left; extxyz keeps its index in a cache file of its own.
    if dataset_file.suffix == ".extxyz":
        siblings.add(dataset_file.with_name(dataset_file.name + ".matsci-index.npz"))
    assert set(dataset_file.parent.iterdir()) == siblings


def test_extxyz_parses_one_frame_per_item(
    tmp_path: Path, emt_structures: list[Atoms], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _write_extxyz(tmp_path / "structures.extxyz", emt_structures)
    dataset = ExtxyzDataset(path)
    parsed: list[int] = []
    read = ase.io.read

    def spy(source: io.StringIO, **kwargs: object) -> object:
        lines = source.getvalue().splitlines()
        parsed.append(len(lines))
        return read(source, **kwargs)

    monkeypatch.setattr(ase.io, "read", spy)
    assert dataset[4].natoms.item() == len(emt_structures[4])
    assert parsed == [len(emt_structures[4]) + 2]


def test_db_selection(tmp_path: Path, emt_structures: list[Atoms]) -> None:
    path = _write_db(tmp_path / "structures.db", emt_structures)
    dataset = AseDbDataset(path, selection="target>1")
    assert [dataset[i][STRUCTURE_ID].item() for i in range(len(dataset))] == [4, 5, 6]


def test_db_numeric_data_entries_become_targets(tmp_path: Path) -> None:
    path = tmp_path / "data.db"
    with ase.db.connect(path) as db:
        db.write(bulk("Cu"), data={"spectrum": np.arange(4.0)})
    assert AseDbDataset(path)[0].spectrum.tolist() == [[0.0, 1.0, 2.0, 3.0]]


# --- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".db", ".extxyz"])
def test_missing_file(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"absent{suffix}"
    with pytest.raises(FileNotFoundError, match=r"absent\.(db|extxyz)' does not exist"):
        _open(path)
    assert not path.exists()  # in particular, no empty database was created
    with pytest.raises(FileNotFoundError, match="is a directory"):
        _open(tmp_path)


@pytest.mark.parametrize("suffix", [".db", ".extxyz"])
def test_corrupt_file(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"corrupt{suffix}"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    before = _fingerprint(path)
    with pytest.raises(ValueError, match=r"corrupt\.(db|extxyz)' is not"):
        _open(path)
    assert _fingerprint(path) == before


def test_empty_and_foreign_sqlite_files_are_rejected_untouched(tmp_path: Path) -> None:
    empty = tmp_path / "empty.db"
    empty.touch()
    with pytest.raises(ValueError, match=r"empty\.db' is not a readable ASE database"):
        AseDbDataset(empty)
    assert empty.stat().st_size == 0
    foreign = tmp_path / "foreign.db"
    with sqlite3.connect(foreign) as connection:
        connection.execute("CREATE TABLE people (name TEXT)")
    connection.close()
    before = _fingerprint(foreign)
    with pytest.raises(ValueError, match=r"foreign\.db' is not a readable ASE database"):
        AseDbDataset(foreign)
    assert _fingerprint(foreign) == before


def test_truncated_extxyz(tmp_path: Path, emt_structures: list[Atoms]) -> None:
    path = _write_extxyz(tmp_path / "full.extxyz", emt_structures)
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:-2]))
    with pytest.raises(ValueError, match=r"full.extxyz' is truncated: frame 5"):
        ExtxyzDataset(path)


def test_unparsable_extxyz_frame_names_the_frame(tmp_path: Path) -> None:
    path = tmp_path / "bad.extxyz"
    path.write_text("1\nPBC\nCu 0 0 0\n1\nPBC\nCu zero 0 0\n")
    dataset = ExtxyzDataset(path)
    with pytest.raises(ValueError, match=r"bad.extxyz'\): frame 1 cannot be parsed"):
        dataset[1]


def test_missing_key_in_first_row_fails_at_construction(dataset_file: Path) -> None:
    with pytest.raises(ValueError, match=r"no numeric target \['bandgap'\]; available: \["):
        _open(dataset_file, keys=["bandgap"])


def test_missing_key_in_a_later_row_names_the_row(tmp_path: Path) -> None:
    path = tmp_path / "mixed.db"
    with ase.db.connect(path) as db:
        db.write(bulk("Cu"), target=1.0)
        db.write(bulk("Al"))
    dataset = AseDbDataset(path, keys=["target"])
    message = r"mixed.db'\), row id 2: .*no numeric target \['target'\]"
    with pytest.raises(ValueError, match=message):
        dataset[1]


def test_keys_must_be_a_sequence_of_names(dataset_file: Path) -> None:
    with pytest.raises(TypeError, match=r"keys='energy'\): keys is a sequence of key names"):
        _open(dataset_file, keys="energy")


def test_repr(dataset_file: Path) -> None:
    text = repr(_open(dataset_file, keys=[K.ENERGY]))
    assert text.endswith(f"{os.fspath(dataset_file)!r}, structures=6, keys=('energy',))")


class _Counting:
    """A deterministic pre-transform that counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, data: Data) -> Data:
        self.calls += 1
        data.doubled_pos = 2 * data.pos
        return data


def test_in_memory_items_equal_read_items(dataset_file: Path) -> None:
    keys = [K.ENERGY, K.FORCE, K.STRESS]
    lazy, held = _open(dataset_file, keys=keys), _open(dataset_file, keys=keys, in_memory=True)
    for i in range(len(lazy)):
        one, other = lazy[i], held[i]
        assert sorted(one.keys()) == sorted(other.keys())
        for key in one.keys():  # noqa: SIM118
            torch.testing.assert_close(one[key], other[key], rtol=0, atol=0)


def test_in_memory_reads_once_and_pre_transforms_once(
    dataset_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    counting = _Counting()
    dataset = _open(dataset_file, pre_transform=counting, in_memory=True)
    assert counting.calls == len(dataset)
    monkeypatch.setattr(type(dataset), "_read", lambda *_: pytest.fail("read after setup"))
    for _ in range(3):
        for i in range(len(dataset)):
            torch.testing.assert_close(dataset[i].doubled_pos, 2 * dataset[i].pos)
    assert counting.calls == len(dataset)
    batches = list(DataLoader(dataset, batch_size=4, num_workers=1))
    assert sum(int(batch.num_graphs) for batch in batches) == len(dataset)


def test_pre_transform_without_memory_runs_before_the_transform(dataset_file: Path) -> None:
    order: list[str] = []

    def first(data: Data) -> Data:
        order.append("pre")
        return data

    def second(data: Data) -> Data:
        order.append("transform")
        return data

    _open(dataset_file, pre_transform=first, transform=second)[1]
    assert order[-2:] == ["pre", "transform"]


def test_random_transform_redraws_on_held_structures(dataset_file: Path) -> None:
    def jitter(data: Data) -> Data:
        data.pos = data.pos + torch.randn_like(data.pos)
        return data

    plain = _open(dataset_file, in_memory=True)
    jittered = _open(dataset_file, transform=jitter, in_memory=True)
    first, second = jittered[2].pos, jittered[2].pos
    assert not torch.equal(first, second)  # drawn again at every access
    torch.testing.assert_close(jittered._held[2].pos, plain[2].pos)  # type: ignore[index]
