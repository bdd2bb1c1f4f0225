"""ASE-LMDB shards (``.aselmdb``) written the way fairchem writes them, read lazily."""

import gc
import hashlib
import pickle
from pathlib import Path

import ase.db
import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule
from ase.calculators.singlepoint import SinglePointCalculator
from torch_geometric.loader import DataLoader

from matsci.contract import keys as K
from matsci.data import AseDbDataset, ShardedDataset, open_dataset
from matsci.data._aselmdb import AseLmdbRows

pytest.importorskip("ase_db_backends")
pytest.importorskip("lmdb")

SHARDS = 3
ROWS = 4


def _structure(shard: int, row: int, rng: np.random.Generator) -> Atoms:
    """A small labelled structure; sizes vary (4 or 8 atoms, or a 3-atom molecule)."""
    if row == 3:
        atoms = molecule("H2O")
        atoms.center(vacuum=3.0)
    else:
        atoms = bulk("Cu" if shard % 2 else "Al", cubic=True).repeat((1, 1, 1 + row % 2))
        atoms.rattle(0.02, seed=10 * shard + row)
    atoms.set_initial_charges(rng.normal(size=len(atoms)))
    atoms.calc = SinglePointCalculator(
        atoms,
        energy=float(rng.normal()),
        forces=rng.normal(size=(len(atoms), 3)),
        stress=rng.normal(size=6),
    )
    return atoms


def _write_folder(folder: Path, shards: int = SHARDS, rows: int = ROWS) -> list[list[Atoms]]:
    """Shards as fairchem writes them: energy/forces/stress as results, extras in ``data``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    written = []
    for shard in range(shards):
        structures = []
        with ase.db.connect(folder / f"data.{shard:04d}.aselmdb") as db:
            for row in range(rows):
                atoms = _structure(shard, row, rng)
                data = {
                    "ref_energy": 100.0 * shard + row,
                    "spectrum": np.arange(3.0) + row,
                }
                db.write(atoms, data=data, sid=f"{shard}-{row}", nsteps=row)
                structures.append(atoms)
        written.append(structures)
    return written


def _fingerprints(folder: Path) -> dict[str, str]:
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()
        for path in folder.iterdir()
        if path.suffix == ".aselmdb"
    }


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return tmp_path / "omat"


@pytest.fixture
def written(folder: Path) -> list[list[Atoms]]:
    return _write_folder(folder)


def test_folder_reads_every_row_in_order_with_mapped_keys(
    folder: Path, written: list[list[Atoms]], default_dtype: torch.dtype
) -> None:
    dataset = open_dataset(
        folder,
        keys=[K.ENERGY, K.FORCE, K.STRESS, "dft_energy", "charges"],
        key_map={"energy": "ref_energy", "dft_energy": "energy", "charges": "initial_charges"},
    )
    assert isinstance(dataset, ShardedDataset)
    assert [Path(path).name for path in dataset.paths] == [
        f"data.{shard:04d}.aselmdb" for shard in range(SHARDS)
    ]
    flat = [atoms for shard in written for atoms in shard]
    assert len(dataset) == len(flat) == SHARDS * ROWS
    for i, atoms in enumerate(flat):
        shard, row = divmod(i, ROWS)
        data = dataset[i]
        as_tensor = lambda value: torch.tensor(np.asarray(value), dtype=default_dtype)  # noqa: E731
        assert data.structure_id.tolist() == [row + 1]  # row ids of its shard
        assert data.atomic_numbers.tolist() == atoms.numbers.tolist()
        assert torch.equal(data.pos, as_tensor(atoms.positions))
        assert torch.equal(data.cell[0], as_tensor(atoms.cell.array))
        # energy comes from data["ref_energy"]; the calculator's energy is dft_energy
        assert data.energy.tolist() == [100.0 * shard + row]
        assert torch.equal(data.dft_energy, as_tensor([atoms.get_potential_energy()]))
        assert torch.equal(data.force, as_tensor(atoms.get_forces()))
        assert torch.equal(data.stress[0], as_tensor(atoms.get_stress(voigt=False)))
        assert torch.equal(data.charges, as_tensor(atoms.get_initial_charges())[:, None])
    assert dataset.column("sid") == [f"{s}-{r}" for s in range(SHARDS) for r in range(ROWS)]
    assert dataset.atom_counts().tolist() == [len(atoms) for atoms in flat]


def test_unmapped_targets_come_from_results_key_value_pairs_and_data(
    folder: Path, written: list[list[Atoms]]
) -> None:
    dataset = open_dataset(folder / "data.0001.aselmdb")
    assert isinstance(dataset, AseDbDataset)
    assert dataset.available_keys == (
        K.ENERGY,
        K.FORCE,
        "initial_charges",
        "nsteps",
        "ref_energy",
        "spectrum",
        K.STRESS,
    )
    data = dataset[2]
    assert data.spectrum.tolist() == [[2.0, 3.0, 4.0]]
    assert data.energy.item() == pytest.approx(written[1][2].get_potential_energy())
    assert data.ref_energy.tolist() == [102.0]
    assert data.nsteps.tolist() == [2]


def test_ids_come_without_reading_rows(
    folder: Path, written: list[list[Atoms]], monkeypatch: pytest.MonkeyPatch
) -> None:
    reads: list[tuple[str, int]] = []
    record = AseLmdbRows.record

    def counting(self: AseLmdbRows, row_id: int) -> dict[str, object]:
        reads.append((self.path.name, row_id))
        return record(self, row_id)

    monkeypatch.setattr(AseLmdbRows, "record", counting)
    dataset = open_dataset(folder, keys=[K.ENERGY])
    # Only the first row of each shard is read, to check the keys.
    assert reads == [(f"data.{shard:04d}.aselmdb", 1) for shard in range(SHARDS)]
    assert len(dataset) == SHARDS * ROWS
    reads.clear()
    assert dataset[ROWS + 2].structure_id.tolist() == [3]
    assert reads == [("data.0001.aselmdb", 3)]


def test_deleted_rows_are_skipped_without_reading(tmp_path: Path) -> None:
    path = tmp_path / "gaps.aselmdb"
    with ase.db.connect(path) as db:
        for i in range(7):
            db.write(bulk("Cu"), step=i)
    with ase.db.connect(path) as db:
        db.delete([2, 3, 6])
    rows = AseLmdbRows(path)
    expected = [1, 4, 5, 7]
    assert len(rows) == 4
    assert [rows.row_id(i) for i in range(len(rows))] == expected
    assert rows.ids().tolist() == expected
    dataset = AseDbDataset(path)
    assert [dataset[i].structure_id.item() for i in range(4)] == expected
    assert [dataset[i].step.item() for i in range(4)] == [0, 3, 4, 6]


def test_selection_reads_matching_rows(folder: Path, written: list[list[Atoms]]) -> None:
    dataset = AseDbDataset(folder / "data.0002.aselmdb", selection="nsteps>=2")
    assert [dataset[i].structure_id.item() for i in range(len(dataset))] == [3, 4]
    assert dataset.atom_counts().tolist() == [len(written[2][2]), len(written[2][3])]


def test_worker_processes_and_pickles_read_the_same(
    folder: Path, written: list[list[Atoms]]
) -> None:
    dataset = open_dataset(folder, keys=[K.ENERGY, K.FORCE])
    serial = list(DataLoader(dataset, batch_size=5))
    parallel = list(DataLoader(dataset, batch_size=5, num_workers=2))
    assert len(serial) == len(parallel) == 3
    for one, other in zip(serial, parallel, strict=True):
        for key in (K.POS, K.ENERGY, K.FORCE, K.STRUCTURE_ID, K.BATCH):
            assert torch.equal(one[key], other[key])
    copy = pickle.loads(pickle.dumps(dataset))  # an open LMDB environment cannot be pickled
    assert torch.equal(copy[7].force, dataset[7].force)


def test_reading_writes_nothing_into_the_shards(folder: Path, written: list[list[Atoms]]) -> None:
    before = _fingerprints(folder)
    names = {path.name for path in folder.iterdir()}
    dataset = open_dataset(folder)
    _ = [dataset[i] for i in range(len(dataset))]
    dataset.column("sid")
    del dataset
    assert _fingerprints(folder) == before
    assert {path.name for path in folder.iterdir()} == names  # no lock file either


def test_readers_share_one_environment_closed_after_the_last(
    folder: Path, written: list[list[Atoms]]
) -> None:
    shard = folder / "data.0000.aselmdb"
    first, second = open_dataset(shard), open_dataset(shard)  # LMDB: one per file and process
    assert torch.equal(first[1].pos, second[1].pos)
    del first, second
    gc.collect()
    with ase.db.connect(shard) as db:  # would fail while an environment is still open
        db.write(bulk("Cu"), data={"ref_energy": 0.0}, sid="new", nsteps=0)
    assert len(open_dataset(shard)) == ROWS + 1


def test_atom_counts_from_fairchem_metadata_without_reading_rows(
    folder: Path, written: list[list[Atoms]], monkeypatch: pytest.MonkeyPatch
) -> None:
    natoms = np.array([len(atoms) for shard in written for atoms in shard])
    np.savez(folder / "metadata.npz", natoms=natoms)
    dataset = open_dataset(folder)
    monkeypatch.setattr(AseLmdbRows, "record", lambda *_: pytest.fail("read a row"))
    counts = dataset.atom_counts()
    assert counts.dtype == np.int64
    assert counts.tolist() == natoms.tolist()


def test_mismatched_metadata_is_ignored_with_a_warning(
    folder: Path, written: list[list[Atoms]]
) -> None:
    np.savez(folder / "metadata.npz", natoms=np.array([4, 4]))
    dataset = open_dataset(folder)
    with pytest.warns(UserWarning, match=r"does not match the 12 rows of the 3 shards"):
        counts = dataset.atom_counts()
    assert counts.tolist() == [len(atoms) for shard in written for atoms in shard]


def test_atom_counts_pass_is_cached(
    folder: Path, written: list[list[Atoms]], monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = [len(atoms) for shard in written for atoms in shard]
    assert open_dataset(folder).atom_counts().tolist() == expected
    monkeypatch.setattr(AseLmdbRows, "atom_counts", lambda *_: pytest.fail("counted again"))
    assert open_dataset(folder).atom_counts().tolist() == expected


# --- errors -----------------------------------------------------------------------------------


def test_missing_shard_in_a_list(folder: Path, written: list[list[Atoms]]) -> None:
    absent = folder / "data.0009.aselmdb"
    with pytest.raises(FileNotFoundError, match=r"data\.0009\.aselmdb' does not exist"):
        open_dataset([folder / "data.0000.aselmdb", absent])


def test_damaged_shard_names_the_file(folder: Path, written: list[list[Atoms]]) -> None:
    damaged = folder / "data.0001.aselmdb"
    damaged.write_bytes(np.random.default_rng(1).bytes(8192))
    before = damaged.read_bytes()
    with pytest.raises(ValueError, match=r"data\.0001\.aselmdb' is not a readable ASE-LMDB file"):
        open_dataset(folder)
    assert damaged.read_bytes() == before


def test_row_without_the_requested_target_names_file_and_row(tmp_path: Path) -> None:
    folder = tmp_path / "partial"
    _write_folder(folder, shards=1, rows=2)
    with ase.db.connect(folder / "data.0001.aselmdb") as db:
        db.write(bulk("Cu"), data={"ref_energy": 1.0})
        db.write(bulk("Cu"), data={"other": 2.0})
    dataset = open_dataset(folder, keys=["energy"], key_map={"energy": "ref_energy"})
    with pytest.raises(
        ValueError,
        match=r"data\.0001\.aselmdb'\), row id 2: .*no stored name 'ref_energy' "
        r"\(key_map\['energy'\]\); available: .*\['other'\]",
    ):
        dataset[3]


def test_first_row_without_the_requested_target_fails_at_open(
    folder: Path, written: list[list[Atoms]]
) -> None:
    with ase.db.connect(folder / "data.0005.aselmdb") as db:
        db.write(bulk("Cu"))
    with pytest.raises(ValueError, match=r"data\.0005\.aselmdb'\), row id 1: .*'ref_energy'"):
        open_dataset(folder, keys=["energy"], key_map={"energy": "ref_energy"})


def test_folder_without_shards(tmp_path: Path) -> None:
    (tmp_path / "metadata.npz").write_bytes(b"")
    (tmp_path / "README.txt").write_text("OMat24")
    with pytest.raises(ValueError, match=r"holds no shard .*\['README.txt', 'metadata.npz'\]"):
        open_dataset(tmp_path)


def test_mixed_keys_across_shards(folder: Path, written: list[list[Atoms]]) -> None:
    with ase.db.connect(folder / "data.0007.aselmdb") as db:
        db.write(written[0][0], data={"ref_energy": 1.0}, nsteps=1, bandgap=0.5)
    with pytest.raises(
        ValueError,
        match=r"data\.0007\.aselmdb' holds other targets than .*data\.0000\.aselmdb' .*"
        r"extra \['bandgap'\]",
    ):
        open_dataset(folder)
    assert len(open_dataset(folder, keys=[K.ENERGY])) == SHARDS * ROWS + 1


def test_mixed_units_across_shards(folder: Path, written: list[list[Atoms]]) -> None:
    for shard, unit in [(0, "eV"), (2, "kcal/mol")]:
        with ase.db.connect(folder / f"data.{shard:04d}.aselmdb") as db:
            db.metadata = {"units": {"ref_energy": unit}}
    with pytest.raises(
        ValueError,
        match=r"data\.0002\.aselmdb' declares 'ref_energy' in 'kcal/mol' but "
        r".*data\.0000\.aselmdb' declares it in 'eV'",
    ):
        open_dataset(folder)


def test_rows_written_as_plain_json_by_older_fairchem_code(tmp_path: Path) -> None:
    """Older fairchem writers stored rows as zlib-compressed plain JSON (arrays as lists)."""
    import json
    import zlib

    import lmdb

    path = tmp_path / "old.aselmdb"
    rows = {
        1: {"numbers": [8, 1, 1], "energy": -14.0, "forces": np.ones((3, 3)).tolist()},
        2: {"numbers": [29], "energy": -3.5, "forces": [[0.0, 0.0, 0.1]]},
    }
    env = lmdb.open(str(path), subdir=False, map_size=2**20)
    with env.begin(write=True) as transaction:
        for row_id, row in rows.items():
            record = {
                **row,
                "positions": np.arange(3.0 * len(row["numbers"])).reshape(-1, 3).tolist(),
                "cell": (5.0 * np.eye(3)).tolist(),
                "pbc": [True, True, True],
                "data": {"ref_energy": row["energy"] - 1.0},
            }
            transaction.put(str(row_id).encode(), zlib.compress(json.dumps(record).encode()))
        transaction.put(b"nextid", zlib.compress(b"3"))
    env.close()
    dataset = AseDbDataset(path, keys=[K.ENERGY, K.FORCE, "ref_energy"])
    assert dataset.atom_counts().tolist() == [3, 1]
    assert dataset[0].atomic_numbers.tolist() == [8, 1, 1]
    assert dataset[0].force.tolist() == np.ones((3, 3)).tolist()
    assert dataset[1].energy.tolist() == [-3.5]
    assert dataset[1].ref_energy.tolist() == [-4.5]
