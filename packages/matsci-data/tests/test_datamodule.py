import io
from pathlib import Path

import ase.db
import ase.io
import pytest
import torch
from ase.build import bulk
from torch_geometric.data import Data
from torch_geometric.transforms import Compose

from matsci.contract import keys as K
from matsci.contract.keys import STRUCTURE_ID
from matsci.data import AseDbDataset, AtomsDataModule, compute_statistics
from matsci.data.examples import bundled_dataset_path
from matsci.transforms import NoisyPositions, PeriodicRadiusGraph

SPLITS = ("train", "val", "test")


def _write_db(path: Path, count: int, *, split_every: int = 0) -> Path:
    with ase.db.connect(path) as db:
        for i in range(count):
            labels = {"target": float(i)}
            if split_every:
                labels["split"] = SPLITS[i % split_every % 3]
            db.write(bulk("Cu", a=3.5 + 0.001 * i), **labels)
    return path


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return _write_db(tmp_path / "hundred.db", 103)


def _ids(loader: torch.utils.data.DataLoader) -> list[int]:  # type: ignore[type-arg]
    return [i for batch in loader for i in batch[STRUCTURE_ID].tolist()]


def test_splits_are_disjoint_and_cover_everything(db_path: Path) -> None:
    module = AtomsDataModule(db_path, keys=["target"])
    module.setup("fit")
    parts = [set(module.split_indices[name]) for name in SPLITS]
    assert [len(part) for part in parts] == [83, 10, 10]
    assert set.union(*parts) == set(range(103))
    assert sum(len(part) for part in parts) == 103


def test_splits_are_stable_and_depend_on_the_seed(db_path: Path) -> None:
    first, second = AtomsDataModule(db_path), AtomsDataModule(db_path)
    other = AtomsDataModule(db_path, seed=1)
    for module in (first, second, other):
        module.setup("fit")
    assert first.split_indices == second.split_indices
    assert first.split_indices["test"] != other.split_indices["test"]


def test_fractions_below_one_leave_structures_out(db_path: Path) -> None:
    module = AtomsDataModule(db_path, split=[0.5, 0.2, 0.1])
    module.setup("fit")
    assert [len(module.split_indices[name]) for name in SPLITS] == [51, 20, 10]


def test_setup_reads_no_structures_beyond_the_first(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads: list[int] = []
    original = AseDbDataset._read

    def counting_read(self: AseDbDataset, position: int) -> object:
        reads.append(position)
        return original(self, position)

    monkeypatch.setattr(AseDbDataset, "_read", counting_read)
    module = AtomsDataModule(db_path)
    module.setup("fit")
    module.setup("validate")  # a second call reuses the index
    assert set(reads) <= {0}


def test_loaders_batch_their_split(db_path: Path) -> None:
    module = AtomsDataModule(db_path, keys=["target"], batch_size=8)
    module.setup("fit")
    row_ids = {name: [i + 1 for i in module.split_indices[name]] for name in SPLITS}
    assert _ids(module.val_dataloader()) == row_ids["val"]  # in file order
    assert _ids(module.test_dataloader()) == row_ids["test"]
    assert _ids(module.predict_dataloader()) == row_ids["test"]
    train = _ids(module.train_dataloader())
    assert sorted(train) == row_ids["train"]
    assert train != row_ids["train"]  # shuffled
    batch = next(iter(module.train_dataloader()))
    assert batch.target.shape == (8,)
    assert batch[K.CELL].shape == (8, 3, 3)


def test_transform_applies_to_every_split(db_path: Path) -> None:
    def mark(data: Data) -> Data:
        data.marked = torch.ones(1)
        return data

    module = AtomsDataModule(db_path, transform=mark, batch_size=4)
    module.setup("fit")
    assert next(iter(module.val_dataloader())).marked.tolist() == [1.0] * 4


def test_split_column(tmp_path: Path) -> None:
    path = _write_db(tmp_path / "labelled.db", 9, split_every=3)
    module = AtomsDataModule(path, split_column="split")
    module.setup("fit")
    assert module.split_indices == {"train": [0, 3, 6], "val": [1, 4, 7], "test": [2, 5, 8]}


def test_split_column_from_extxyz(tmp_path: Path) -> None:
    frames = [bulk("Al"), bulk("Cu"), bulk("Au")]
    for frame, split in zip(frames, ["test", "train", "train"], strict=True):
        frame.info["split"] = split
    path = tmp_path / "frames.extxyz"
    ase.io.write(path, frames)
    module = AtomsDataModule(path, split_column="split", batch_size=2)
    module.setup("fit")
    assert module.split_indices == {"train": [1, 2], "val": [], "test": [0]}
    assert sorted(_ids(module.train_dataloader())) == [1, 2]


def test_bad_split_column_value_names_the_structure(tmp_path: Path) -> None:
    path = _write_db(tmp_path / "unlabelled.db", 3)
    module = AtomsDataModule(path, split_column="split")
    with pytest.raises(ValueError, match=r"structure 0 of .*unlabelled.db' has None; expected"):
        module.setup("fit")


def test_predict_path(tmp_path: Path, db_path: Path) -> None:
    other = _write_db(tmp_path / "other.db", 5)
    module = AtomsDataModule(db_path, predict_path=other, batch_size=10)
    module.setup("predict")
    assert _ids(module.predict_dataloader()) == [1, 2, 3, 4, 5]


def test_hyperparameters_are_saved(db_path: Path) -> None:
    module = AtomsDataModule(db_path, keys=["target"], batch_size=4)
    assert module.hparams["batch_size"] == 4
    assert module.hparams["keys"] == ["target"]


@pytest.mark.parametrize(
    "split",
    [[0.8, 0.2, 0.1], [0.5, 0.5], [1.2, -0.1, -0.1]],
    ids=["sum above one", "two fractions", "negative"],
)
def test_bad_fractions(db_path: Path, split: list[float]) -> None:
    with pytest.raises(ValueError, match=r"expected three fractions \(train, val, test\)"):
        AtomsDataModule(db_path, split=split)


def test_bad_arguments(db_path: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="fractions or a split column, not both"):
        AtomsDataModule(db_path, split=[0.8, 0.1, 0.1], split_column="split")
    with pytest.raises(ValueError, match=r"batch_size=0\): must be at least 1"):
        AtomsDataModule(db_path, batch_size=0)
    with pytest.raises(FileNotFoundError, match=r"dataset='.*absent.db'\): no such file"):
        AtomsDataModule(tmp_path / "absent.db")
    with pytest.raises(FileNotFoundError, match=r"predict_path='.*absent.db'\): no such file"):
        AtomsDataModule(db_path, predict_path=tmp_path / "absent.db")
    unknown = tmp_path / "structures.cif"
    unknown.write_text("")
    with pytest.raises(ValueError, match=r"dataset='.*structures.cif'\): unknown file type '.cif'"):
        AtomsDataModule(unknown)
    with pytest.raises(RuntimeError, match=r"call setup\(\) before train_dataloader\(\)"):
        AtomsDataModule(db_path).train_dataloader()


def test_hyperparameters_are_plain_data_for_weights_only_checkpoints() -> None:
    module = AtomsDataModule(bundled_dataset_path("emt"), keys=("energy",), split=(0.5, 0.5, 0))
    buffer = io.BytesIO()
    torch.save(dict(module.hparams), buffer)
    buffer.seek(0)
    restored = torch.load(buffer, weights_only=True)
    assert restored["dataset"] == str(bundled_dataset_path("emt"))
    assert restored["keys"] == ["energy"]


def test_radius_graph_settings_are_saved_as_plain_data(db_path: Path) -> None:
    graph = PeriodicRadiusGraph(cutoff=4.5, max_neighbors=12)
    alone = AtomsDataModule(db_path, transform=graph)
    assert alone.hparams["radius_graph"] == {"cutoff": 4.5, "max_neighbors": 12}
    composed = AtomsDataModule(db_path, transform=Compose([graph, NoisyPositions(scale=0.1)]))
    assert composed.hparams["radius_graph"] == {"cutoff": 4.5, "max_neighbors": 12}
    assert AtomsDataModule(db_path).hparams["radius_graph"] is None
    buffer = io.BytesIO()
    torch.save(dict(alone.hparams), buffer)
    buffer.seek(0)
    assert torch.load(buffer, weights_only=True)["radius_graph"]["cutoff"] == 4.5


def test_radius_graph_settings_come_from_the_pre_transform_too(db_path: Path) -> None:
    graph = PeriodicRadiusGraph(cutoff=3.0)
    module = AtomsDataModule(db_path, pre_transform=graph, in_memory=True)
    assert module.hparams["radius_graph"] == {"cutoff": 3.0, "max_neighbors": None}
    late = AtomsDataModule(db_path, pre_transform=graph, transform=PeriodicRadiusGraph(cutoff=5.0))
    assert late.hparams["radius_graph"] == {"cutoff": 5.0, "max_neighbors": None}
    assert "pre_transform" not in module.hparams


def test_in_memory_loaders_give_the_batches_of_reading_loaders(db_path: Path) -> None:
    def batches(**options: object) -> list[Data]:
        module = AtomsDataModule(db_path, keys=["target"], batch_size=8, seed=3, **options)  # type: ignore[arg-type]
        module.setup("fit")
        return [*module.train_dataloader(), *module.val_dataloader()]

    graph = PeriodicRadiusGraph(cutoff=3.0)
    read = batches(transform=graph)
    held = batches(pre_transform=graph, in_memory=True)
    assert len(read) == len(held)
    for one, other in zip(read, held, strict=True):
        for key in (STRUCTURE_ID, K.POS, K.EDGE_INDEX, K.CELL_OFFSETS, "target"):
            torch.testing.assert_close(one[key], other[key], rtol=0, atol=0)


def test_batches_already_on_the_device_are_not_moved(db_path: Path) -> None:
    module = AtomsDataModule(db_path, keys=["target"], transform=PeriodicRadiusGraph(cutoff=3.0))
    module.setup("fit")
    batch = next(iter(module.train_dataloader()))
    assert module.transfer_batch_to_device(batch, torch.device("cpu"), 0) is batch
    by_dataset = {"a": batch, "b": batch}
    assert module.transfer_batch_to_device(by_dataset, torch.device("cpu"), 0) is by_dataset
    # Elsewhere, Lightning's transfer moves every tensor.
    moved = module.transfer_batch_to_device(batch, torch.device("meta"), 0)
    assert moved.pos.device.type == "meta"
    assert moved.edge_index.device.type == "meta"
    assert module.transfer_batch_to_device(None, torch.device("cpu"), 0) is None


def test_statistics_stream_the_train_split() -> None:
    module = AtomsDataModule(
        bundled_dataset_path("emt"), keys=[K.ENERGY, K.FORCE], split=[0.2, 0.4, 0.4], batch_size=7
    )
    with pytest.raises(RuntimeError, match=r"call setup\(\) before statistics\(\)"):
        module.statistics()
    module.setup("fit")
    stats = module.statistics(cutoff=4.0, elements=[13, 29, 26])
    assert module.dataset is not None
    train = [module.dataset[i] for i in module.split_indices["train"]]
    expected = compute_statistics(train, keys=[K.ENERGY, K.FORCE], cutoff=4.0,
                                  elements=[13, 29, 26])  # fmt: skip
    assert stats.num_structures == expected.num_structures == 60
    assert stats.num_atoms == expected.num_atoms
    for key in (K.ENERGY, K.FORCE):
        torch.testing.assert_close(stats.mean[key], expected.mean[key], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(stats.std[key], expected.std[key], rtol=1e-12, atol=1e-12)
        assert torch.equal(stats.count[key], expected.count[key])
    assert stats.reference_energies is not None
    assert expected.reference_energies is not None
    torch.testing.assert_close(stats.reference_energies, expected.reference_energies)
    assert stats.force_rms == pytest.approx(expected.force_rms, rel=1e-12)
    assert stats.avg_num_neighbors == pytest.approx(expected.avg_num_neighbors, rel=1e-12)
    assert stats.elements == expected.elements
    assert stats.missing_elements == expected.missing_elements == [26]
    only_energy = module.statistics(keys=[K.ENERGY])
    assert set(only_energy.mean) == {K.ENERGY}
    assert only_energy.force_rms is None
    assert only_energy.avg_num_neighbors is None
