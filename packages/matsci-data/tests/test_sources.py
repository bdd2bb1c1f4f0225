"""open_dataset: one file, a folder of shards, a list of them; ShardedDataset; key maps."""

import sqlite3
from pathlib import Path

import ase.db
import ase.io
import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule

from matsci.data import AseDbDataset, ExtxyzDataset, ShardedDataset, open_dataset


def _structures(count: int, offset: int = 0) -> list[Atoms]:
    """Structures of 1, 2, 3, ... atoms with a stored ``total_energy`` and ``split``."""
    structures = []
    for i in range(count):
        atoms = Atoms("Cu" * (1 + (offset + i) % 3), positions=np.eye(3)[: 1 + (offset + i) % 3])
        atoms.center(vacuum=2.0)
        atoms.info.update(total_energy=-1.0 * (offset + i), split="train" if i % 2 else "val")
        structures.append(atoms)
    return structures


def _write_db(path: Path, structures: list[Atoms]) -> Path:
    with ase.db.connect(path) as db:
        for atoms in structures:
            db.write(atoms, **atoms.info)
    return path


def _write_extxyz(path: Path, structures: list[Atoms]) -> Path:
    ase.io.write(path, structures, format="extxyz")
    return path


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """``b.db`` (3 rows), ``a.extxyz`` (2 frames), ``c.xyz`` (1 frame) and a stray file."""
    shards = tmp_path / "shards"
    shards.mkdir()
    _write_db(shards / "b.db", _structures(3, offset=2))
    _write_extxyz(shards / "a.extxyz", _structures(2, offset=0))
    _write_extxyz(shards / "c.xyz", _structures(1, offset=5))
    (shards / "notes.txt").write_text("not a shard")
    return shards


def test_a_plain_file_gives_its_own_dataset(folder: Path) -> None:
    assert isinstance(open_dataset(folder / "b.db"), AseDbDataset)
    assert isinstance(open_dataset(str(folder / "a.extxyz")), ExtxyzDataset)


def test_a_folder_reads_its_shards_sorted_by_name(folder: Path) -> None:
    dataset = open_dataset(folder, keys=["energy"], key_map={"energy": "total_energy"})
    assert isinstance(dataset, ShardedDataset)
    assert [Path(path).name for path in dataset.paths] == ["a.extxyz", "b.db", "c.xyz"]
    assert len(dataset) == 6
    assert [dataset[i].energy.item() for i in range(6)] == [0.0, -1.0, -2.0, -3.0, -4.0, -5.0]
    assert dataset.atom_counts().tolist() == [1, 2, 3, 1, 2, 3]
    assert dataset.atom_counts().dtype == np.int64
    assert dataset.column("split") == ["val", "train", "val", "train", "val", "val"]
    assert dataset.keys == ("energy",)
    assert dataset[-1].energy.item() == -5.0
    with pytest.raises(IndexError, match="index 6 out of range for 6 structures"):
        dataset[6]


def test_a_list_concatenates_in_the_order_given(folder: Path, tmp_path: Path) -> None:
    extra = _write_db(tmp_path / "extra.db", _structures(2, offset=10))
    dataset = open_dataset([extra, folder / "c.xyz", folder])
    assert [Path(path).name for path in dataset.paths] == [
        "extra.db",
        "c.xyz",
        "a.extxyz",
        "b.db",
        "c.xyz",
    ]
    assert [dataset[i].total_energy.item() for i in range(len(dataset))] == [
        -10.0,
        -11.0,
        -5.0,
        -0.0,
        -1.0,
        -2.0,
        -3.0,
        -4.0,
        -5.0,
    ]
    assert isinstance(open_dataset([folder / "b.db"]), ShardedDataset)  # a list stays a list


def test_sharded_items_equal_the_shards_items(folder: Path) -> None:
    dataset = open_dataset(folder, in_memory=True)
    shard = AseDbDataset(folder / "b.db")
    assert isinstance(dataset, ShardedDataset)
    assert dataset.locate(3) == (1, 1)
    one, other = dataset[3], shard[1]
    assert sorted(one.keys()) == sorted(other.keys())
    for key in one.keys():  # noqa: SIM118
        assert torch.equal(one[key], other[key])


def test_repr_names_the_shards(folder: Path) -> None:
    text = repr(open_dataset(folder, keys=["total_energy"]))
    assert text == (
        "ShardedDataset(3 shards ['a.extxyz', 'b.db', 'c.xyz'], structures=6, "
        "keys=('total_energy',))"
    )


def test_sqlite_index_reads_no_structure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write_db(tmp_path / "many.db", _structures(7))
    read: list[int] = []
    row = AseDbDataset._row

    def counting(self: AseDbDataset, row_id: int) -> object:
        read.append(row_id)
        return row(self, row_id)

    monkeypatch.setattr(AseDbDataset, "_row", counting)
    dataset = AseDbDataset(path, keys=["total_energy"])
    assert read == [1]  # the first row only, to check the keys
    assert len(dataset) == 7
    assert dataset.atom_counts().tolist() == [1, 2, 3, 1, 2, 3, 1]
    assert read == [1]
    selected = AseDbDataset(path, selection="natoms>=2")
    assert selected.atom_counts().tolist() == [2, 3, 2, 3]


def test_key_map_reads_the_stored_name_wherever_it_is(tmp_path: Path) -> None:
    atoms = molecule("H2O")
    atoms.info["REF_energy"] = -14.0
    atoms.arrays["REF_forces"] = np.arange(9.0).reshape(3, 3)
    atoms.info["virial_stress"] = np.arange(6.0)
    path = _write_extxyz(tmp_path / "mace.extxyz", [atoms])
    key_map = {"energy": "REF_energy", "force": "REF_forces", "stress": "virial_stress"}
    dataset = ExtxyzDataset(path, keys=["energy", "force", "stress"], key_map=key_map)
    data = dataset[0]
    assert data.energy.tolist() == [-14.0]
    assert data.force.tolist() == np.arange(9.0).reshape(3, 3).tolist()
    assert data.stress.shape == (1, 3, 3)  # a Voigt 6-vector becomes the 3x3 stress
    assert data.stress[0, 1, 2].item() == 3.0  # yz
    assert "REF_energy" not in dataset.available_keys  # renamed, not copied


def test_unknown_stored_name_lists_the_available_names(tmp_path: Path) -> None:
    path = _write_db(tmp_path / "named.db", _structures(2))
    with pytest.raises(
        ValueError,
        match=r"named\.db'\), row id 1: .*no stored name 'e_tot' \(key_map\['energy'\]\); "
        r"available: calculator results \[\], info/key-value pairs/data \[.*'total_energy'\]",
    ):
        open_dataset(path, key_map={"energy": "e_tot"})


def test_key_map_must_map_names_to_names(tmp_path: Path) -> None:
    path = _write_db(tmp_path / "named.db", _structures(1))
    with pytest.raises(TypeError, match=r"key_map maps target names to stored names"):
        AseDbDataset(path, key_map={"energy": 3})  # type: ignore[dict-item]


# --- errors -----------------------------------------------------------------------------------


def test_missing_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nowhere\.extxyz' does not exist"):
        open_dataset(tmp_path / "nowhere.extxyz")
    with pytest.raises(FileNotFoundError, match=r"gone' does not exist"):
        open_dataset([tmp_path / "gone"])


def test_unknown_suffix_and_bad_sources(tmp_path: Path) -> None:
    path = tmp_path / "structures.cif"
    path.write_text("data_x")
    with pytest.raises(ValueError, match=r"structures\.cif' has an unknown suffix '\.cif'"):
        open_dataset(path)
    with pytest.raises(ValueError, match="the list of sources is empty"):
        open_dataset([])
    with pytest.raises(TypeError, match=r"3 in the list is not a path"):
        open_dataset([3])  # type: ignore[list-item]
    with pytest.raises(TypeError, match=r"expected a path, a database URL, a folder"):
        open_dataset(3)  # type: ignore[arg-type]


def test_empty_folder_says_what_it_holds(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"holds no shard .*; it holds \[\]"):
        open_dataset(tmp_path)


def test_damaged_sqlite_shard_names_the_file(folder: Path) -> None:
    (folder / "d.db").write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ValueError, match=r"d\.db' is not a readable ASE database"):
        open_dataset(folder)


def test_foreign_sqlite_shard_is_left_untouched(folder: Path) -> None:
    foreign = folder / "d.db"
    with sqlite3.connect(foreign) as connection:
        connection.execute("CREATE TABLE people (name TEXT)")
    connection.close()
    before = foreign.read_bytes()
    with pytest.raises(ValueError, match=r"d\.db' is not a readable ASE database .*'people'"):
        open_dataset(folder)
    assert foreign.read_bytes() == before


def test_shards_with_other_targets_fail_before_training(folder: Path, tmp_path: Path) -> None:
    other = _structures(1)
    other[0].info["bandgap"] = 1.5
    path = _write_extxyz(tmp_path / "z.extxyz", other)
    with pytest.raises(
        ValueError, match=r"z\.extxyz' holds other targets than .*a\.extxyz'.*extra \['bandgap'\]"
    ):
        open_dataset([folder, path])
    assert open_dataset([folder, path], keys=["total_energy"]).keys == ("total_energy",)


def test_a_requested_key_absent_in_one_shard_names_it(folder: Path, tmp_path: Path) -> None:
    atoms = bulk("Cu")
    atoms.info["energy"] = -1.0
    path = _write_extxyz(tmp_path / "other.extxyz", [atoms])
    with pytest.raises(ValueError, match=r"other\.extxyz'\), frame 0: .*'total_energy'"):
        open_dataset([folder, path], keys=["total_energy"])


def test_shards_declaring_other_units(tmp_path: Path) -> None:
    for name, unit in [("a.db", "eV"), ("b.db", "eV"), ("c.db", "Ha")]:
        path = _write_db(tmp_path / name, _structures(1))
        with ase.db.connect(path) as db:
            db.metadata = {"key_descriptions": {"total_energy": ("E", "Total energy", unit)}}
    with pytest.raises(
        ValueError, match=r"c\.db' declares 'total_energy' in 'Ha' but .*a\.db' declares it in 'eV'"
    ):
        open_dataset(tmp_path)


def test_aselmdb_without_the_extra_says_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib

    path = tmp_path / "shard.aselmdb"
    path.write_bytes(b"")
    real = importlib.import_module

    def without_lmdb(name: str, package: str | None = None) -> object:
        if name in ("lmdb", "ase_db_backends.aselmdb"):
            raise ImportError(f"No module named {name!r}")
        return real(name, package)

    monkeypatch.setattr(importlib, "import_module", without_lmdb)
    with pytest.raises(ImportError, match=r"needs pip install 'matsci-data\[aselmdb\]'"):
        open_dataset(path)
