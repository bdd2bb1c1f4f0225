"""AtomsDataModule with separate train/val/test/predict sources, budgets and mixtures."""

import io
from collections import Counter
from pathlib import Path

import ase.db
import ase.io
import numpy as np
import pytest
import torch
from ase.build import bulk
from torch_geometric.data import Batch

from matsci.contract import keys as K
from matsci.data import AtomsDataModule, BudgetBatchSampler, DatasetMixture, compute_statistics
from matsci.data.examples import bundled_dataset_path, write_split_files
from matsci.transforms import PeriodicRadiusGraph

LOADERS = ("train", "val", "test", "predict")


def _write_xyz(path: Path, repeats: list[int], *, symbol: str = "Cu", energy: str = "energy"
               ) -> Path:  # fmt: skip
    """Frames of ``symbol`` cubic fcc repeated ``k`` times along x (4k atoms); energy = index."""
    frames = []
    for i, k in enumerate(repeats):
        atoms = bulk(symbol, "fcc", a=3.6, cubic=True).repeat((k, 1, 1))
        atoms.info[energy] = float(i)
        atoms.info["label"] = i
        frames.append(atoms)
    ase.io.write(path, frames, format="extxyz")
    return path


@pytest.fixture
def triple(tmp_path: Path) -> dict[str, Path]:
    """train (10 frames), val (3), test (4) and predict (2) extxyz files."""
    sizes = {"train": 10, "val": 3, "test": 4, "predict": 2}
    return {name: _write_xyz(tmp_path / f"{name}.extxyz", [1] * n) for name, n in sizes.items()}


def _ids(loader: torch.utils.data.DataLoader) -> list[int]:  # type: ignore[type-arg]
    return [i for batch in loader for i in batch[K.STRUCTURE_ID].tolist()]


def _batches(loader: torch.utils.data.DataLoader) -> list[Batch]:  # type: ignore[type-arg]
    return list(loader)


# --- the separate-sources form ------------------------------------------------------------------


def test_three_files_feed_their_own_loaders(triple: dict[str, Path]) -> None:
    module = AtomsDataModule(
        train=triple["train"], val=triple["val"], test=triple["test"], keys=["energy"],
        batch_size=4,
    )  # fmt: skip
    module.setup("fit")
    assert module.split_indices == {}
    assert len(module.dataset) == 10  # type: ignore[arg-type]  # the training data
    train = _ids(module.train_dataloader())
    assert sorted(train) == list(range(10))
    assert train != list(range(10))  # shuffled
    assert [b.num_graphs for b in module.train_dataloader()] == [4, 4, 2]
    assert _ids(module.val_dataloader()) == [0, 1, 2]  # in file order
    assert _ids(module.test_dataloader()) == [0, 1, 2, 3]
    module.setup("predict")
    assert _ids(module.predict_dataloader()) == [0, 1, 2, 3]  # no predict source: the test file
    energies = [e for b in module.val_dataloader() for e in b.energy.tolist()]
    assert energies == [0.0, 1.0, 2.0]


@pytest.mark.parametrize("argument", ["predict", "predict_path"])
def test_predict_source_and_its_old_name(triple: dict[str, Path], argument: str) -> None:
    module = AtomsDataModule(
        train=triple["train"],
        val=triple["val"],
        **{argument: triple["predict"]},  # type: ignore[arg-type]
    )
    assert module.predict_path == str(triple["predict"])
    with pytest.raises(RuntimeError, match=r"call setup\('predict'\) before predict_dataloader"):
        module.predict_dataloader()
    module.setup("predict")
    assert _ids(module.predict_dataloader()) == [0, 1]
    assert not module.has_test_data
    with pytest.raises(ValueError, match=r"test_dataloader\(\) needs test data; give test="):
        module.test_dataloader()


def test_the_one_file_form_predicts_on_a_predict_source(tmp_path: Path) -> None:
    whole = _write_xyz(tmp_path / "whole.extxyz", [1] * 20)
    other = _write_xyz(tmp_path / "other.extxyz", [2] * 3)
    module = AtomsDataModule(whole, predict=other, batch_size=10)
    module.setup("predict")
    batches = _batches(module.predict_dataloader())
    assert [b.natoms.tolist() for b in batches] == [[8, 8, 8]]
    assert module.has_test_data


def test_folders_and_lists_are_read_in_order(tmp_path: Path) -> None:
    shards = tmp_path / "shards"
    shards.mkdir()
    _write_xyz(shards / "b.extxyz", [2, 2], energy="energy")  # 8-atom frames, second by name
    _write_xyz(shards / "a.extxyz", [1, 1, 1])  # 4-atom frames, first
    val = _write_xyz(tmp_path / "val.extxyz", [3])
    extra = _write_xyz(tmp_path / "extra.extxyz", [5])
    module = AtomsDataModule(train=[shards, extra], val=[val], keys=["energy"], batch_size=100)
    module.setup("fit")
    assert len(module.dataset) == 6  # type: ignore[arg-type]
    natoms = [module.dataset[i].natoms.item() for i in range(6)]  # type: ignore[index]
    assert natoms == [4, 4, 4, 8, 8, 20]
    (batch,) = _batches(module.train_dataloader())
    assert sorted(batch.natoms.tolist()) == sorted(natoms)
    assert module.hparams["train"] == [str(shards), str(extra)]
    assert module.hparams["val"] == [str(val)]


def test_key_map_reads_targets_stored_under_other_names(tmp_path: Path) -> None:
    train = _write_xyz(tmp_path / "train.extxyz", [1, 2], energy="total_energy")
    val = _write_xyz(tmp_path / "val.extxyz", [1], energy="total_energy")
    module = AtomsDataModule(
        train=train, val=val, keys=["energy"], key_map={"energy": "total_energy"}, batch_size=2
    )
    module.setup("fit")
    assert module.hparams["key_map"] == {"energy": "total_energy"}
    assert next(iter(module.val_dataloader())).energy.tolist() == [0.0]
    assert sorted(e for b in module.train_dataloader() for e in b.energy.tolist()) == [0.0, 1.0]


def test_hyperparameters_of_every_form_are_plain_data(triple: dict[str, Path]) -> None:
    module = AtomsDataModule(
        train={"a": triple["train"], "b": [triple["val"], triple["test"]]},
        val=triple["val"],
        predict=(triple["predict"],),
        key_map={"energy": "total_energy"},
        mixture_weights={"a": 2, "b": 1},
        max_atoms=100,
    )
    buffer = io.BytesIO()
    torch.save(dict(module.hparams), buffer)
    buffer.seek(0)
    restored = torch.load(buffer, weights_only=True)
    parts = [str(triple["val"]), str(triple["test"])]
    assert restored["train"] == {"a": str(triple["train"]), "b": parts}
    assert restored["predict"] == [str(triple["predict"])]
    assert restored["mixture_weights"] == {"a": 2, "b": 1}
    assert restored["max_atoms"] == 100
    assert restored["dataset"] is None
    assert restored["radius_graph"] is None


def test_statistics_cover_every_training_source_once(triple: dict[str, Path], tmp_path: Path
                                                    ) -> None:  # fmt: skip
    extra = _write_xyz(tmp_path / "extra.extxyz", [2, 3])
    module = AtomsDataModule(
        train={"small": triple["train"], "large": extra}, val=triple["val"], keys=["energy"],
        mixture_weights="balanced", batch_size=3,
    )  # fmt: skip
    with pytest.raises(RuntimeError, match=r"call setup\(\) before statistics\(\)"):
        module.statistics()
    module.setup("fit")
    stats = module.statistics()
    assert module.dataset is not None
    expected = compute_statistics([module.dataset[i] for i in range(12)], keys=["energy"])
    assert stats.num_structures == 12
    assert stats.num_atoms == 10 * 4 + 8 + 12
    torch.testing.assert_close(stats.mean["energy"], expected.mean["energy"])


# --- bad input -------------------------------------------------------------------------------


def test_the_two_forms_do_not_mix(triple: dict[str, Path]) -> None:
    with pytest.raises(
        ValueError, match=r"dataset=..., train=..., val=...\): give one file to split"
    ):
        AtomsDataModule(triple["train"], train=triple["train"], val=triple["val"])
    with pytest.raises(ValueError, match=r"\(train=...\): give train= and val="):
        AtomsDataModule(train=triple["train"])
    with pytest.raises(ValueError, match=r"\(val=..., test=...\): give train= and val="):
        AtomsDataModule(val=triple["val"], test=triple["test"])
    with pytest.raises(ValueError, match=r"\(no data\): give train= and val="):
        AtomsDataModule()
    with pytest.raises(ValueError, match="separate sources need none"):
        AtomsDataModule(train=triple["train"], val=triple["val"], split=[0.8, 0.1, 0.1])
    with pytest.raises(ValueError, match="predict_path is the old name of predict"):
        AtomsDataModule(triple["train"], predict=triple["val"], predict_path=triple["val"])
    with pytest.raises(ValueError, match=r"train=\[\]\): give at least one file"):
        AtomsDataModule(train=[], val=triple["val"])
    with pytest.raises(TypeError, match=r"val=3\): expected a file or folder path"):
        AtomsDataModule(train=triple["train"], val=3)  # type: ignore[arg-type]


def test_missing_files_name_the_argument(triple: dict[str, Path], tmp_path: Path) -> None:
    absent = tmp_path / "absent.extxyz"
    with pytest.raises(FileNotFoundError, match=r"val='.*absent.extxyz'\): no such file or"):
        AtomsDataModule(train=triple["train"], val=absent)
    with pytest.raises(
        FileNotFoundError, match=r"train=\[.*\]\): no such file or folder '.*absent"
    ):
        AtomsDataModule(train=[triple["train"], absent], val=triple["val"])
    with pytest.raises(FileNotFoundError, match=r"train\['b'\]=.*absent.extxyz"):
        AtomsDataModule(train={"a": triple["train"], "b": absent}, val=triple["val"])
    with pytest.raises(FileNotFoundError, match=r"predict_path='.*absent.extxyz'\)"):
        AtomsDataModule(train=triple["train"], val=triple["val"], predict_path=absent)
    unknown = tmp_path / "structures.cif"
    unknown.write_text("")
    with pytest.raises(ValueError, match=r"test='.*structures.cif'\): unknown file type '.cif'"):
        AtomsDataModule(train=triple["train"], val=triple["val"], test=unknown)


def test_unreadable_sources_fail_in_setup_naming_the_argument(
    triple: dict[str, Path], tmp_path: Path
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no shards here")
    module = AtomsDataModule(train=triple["train"], val=triple["val"], test=empty)
    with pytest.raises(ValueError, match=r"AtomsDataModule\(test='.*empty'\): .*notes.txt"):
        module.setup("fit")
    module = AtomsDataModule(train=triple["train"], val=triple["val"], keys=["energy", "band_gap"])
    with pytest.raises(ValueError, match=r"AtomsDataModule\(train='.*train.extxyz'\): .*band_gap"):
        module.setup("fit")
    broken = tmp_path / "broken.extxyz"
    broken.write_text("3\nno atoms follow\n")
    module = AtomsDataModule(train={"good": triple["train"], "bad": broken}, val=triple["val"])
    with pytest.raises(ValueError, match=r"AtomsDataModule\(train\['bad'\]=.*broken.extxyz"):
        module.setup("fit")


def test_bad_budget_and_mixture_arguments(triple: dict[str, Path]) -> None:
    sources = {"train": triple["train"], "val": triple["val"]}
    mixed = {"train": {"a": triple["train"], "b": triple["test"]}, "val": triple["val"]}
    with pytest.raises(ValueError, match=r"max_atoms=0\): must be at least 1"):
        AtomsDataModule(**sources, max_atoms=0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"max_edges=100\): .*add a PeriodicRadiusGraph"):
        AtomsDataModule(**sources, max_edges=100)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"a mixture needs several named training sources"):
        AtomsDataModule(**sources, mixture_weights="balanced")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"expected one weight for each training source"):
        AtomsDataModule(**mixed, mixture_weights={"a": 1.0})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"non-negative with a positive sum"):
        AtomsDataModule(**mixed, mixture_weights={"a": 0.0, "b": 0.0})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"give a temperature exactly with"):
        AtomsDataModule(**mixed, mixture_weights="temperature")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"give mixture_weights too"):
        AtomsDataModule(**mixed, mixture_temperature=2.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"mixture_temperature=-1.0\): must be positive"):
        AtomsDataModule(**mixed, mixture_weights="temperature", mixture_temperature=-1.0)  # type: ignore[arg-type]
    module = AtomsDataModule(**sources, max_atoms=3)  # type: ignore[arg-type]
    module.setup("fit")
    with pytest.raises(ValueError, match=r"max_atoms=3, max_edges=None\), train data: "):
        module.train_dataloader()


# --- batches by budget -----------------------------------------------------------------------


@pytest.fixture
def mixed_sizes(tmp_path: Path) -> dict[str, Path]:
    """Frames of 4 to 40 atoms: train 24, val 7."""
    rng = np.random.default_rng(0)
    return {
        "train": _write_xyz(tmp_path / "train.extxyz", rng.integers(1, 11, 24).tolist()),
        "val": _write_xyz(tmp_path / "val.extxyz", rng.integers(1, 11, 7).tolist()),
    }


def test_budget_batches_respect_max_atoms_and_cover_each_structure_once(
    mixed_sizes: dict[str, Path],
) -> None:
    module = AtomsDataModule(**mixed_sizes, max_atoms=60, seed=3)  # type: ignore[arg-type]
    assert module.batch_size is None  # no structure limit with a budget
    module.setup("fit")
    loader = module.train_dataloader()
    counts = module.dataset.atom_counts()  # type: ignore[union-attr]
    expected = list(BudgetBatchSampler(counts, max_atoms=60, shuffle=True, seed=3))
    batches = _batches(loader)
    assert [b[K.STRUCTURE_ID].tolist() for b in batches] == expected
    assert all(int(b.natoms.sum()) <= 60 for b in batches)
    assert sorted(_ids(loader)) == list(range(24))  # next epoch: again each once
    assert len(loader) == len(batches)
    val = _batches(module.val_dataloader())
    assert sorted(i for b in val for i in b[K.STRUCTURE_ID].tolist()) == list(range(7))
    assert all(int(b.natoms.sum()) <= 60 for b in val)
    assert [b[K.STRUCTURE_ID].tolist() for b in val] == [
        b[K.STRUCTURE_ID].tolist() for b in module.val_dataloader()
    ]  # not shuffled


def test_batch_size_caps_budget_batches(mixed_sizes: dict[str, Path]) -> None:
    module = AtomsDataModule(**mixed_sizes, max_atoms=1000, batch_size=5)  # type: ignore[arg-type]
    module.setup("fit")
    sizes = [b.num_graphs for b in module.train_dataloader()]
    assert max(sizes) == 5
    assert sum(sizes) == 24


def test_budget_by_edges(mixed_sizes: dict[str, Path]) -> None:
    graph = PeriodicRadiusGraph(cutoff=3.0)
    module = AtomsDataModule(**mixed_sizes, transform=graph, max_edges=2000)  # type: ignore[arg-type]
    module.setup("fit")
    batches = _batches(module.train_dataloader())
    assert all(b.edge_index.shape[1] <= 2000 for b in batches)
    assert max(b.edge_index.shape[1] for b in batches) > 1000  # packed, not one per batch
    assert sorted(i for b in batches for i in b[K.STRUCTURE_ID].tolist()) == list(range(24))


def test_budget_epochs_resume_mid_epoch(mixed_sizes: dict[str, Path]) -> None:
    def module() -> AtomsDataModule:
        data = AtomsDataModule(**mixed_sizes, max_atoms=60, seed=1)  # type: ignore[arg-type]
        data.setup("fit")
        return data

    loader = module().train_dataloader()
    loader.batch_sampler.set_epoch(2)
    full = [b[K.STRUCTURE_ID].tolist() for b in loader]
    iterator = iter(loader)
    for _ in range(3):
        next(iterator)
    state = loader.state_dict()
    assert state == {"epoch": 2, "batches": 3}
    resumed = module().train_dataloader()
    resumed.load_state_dict(state)
    assert [b[K.STRUCTURE_ID].tolist() for b in resumed] == full[3:]


# --- mixtures --------------------------------------------------------------------------------


@pytest.fixture
def two_sources(tmp_path: Path) -> dict[str, Path]:
    return {
        "copper": _write_xyz(tmp_path / "copper.extxyz", [1] * 30, symbol="Cu"),
        "aluminium": _write_xyz(tmp_path / "aluminium.extxyz", [1] * 6, symbol="Al"),
        "val": _write_xyz(tmp_path / "val.extxyz", [1] * 2),
    }


def _drawn_per_source(loader: torch.utils.data.DataLoader) -> Counter[str]:  # type: ignore[type-arg]
    return Counter("Cu" if int(b.atomic_numbers[0]) == 29 else "Al" for batch in loader
                   for b in batch.to_data_list())  # fmt: skip


@pytest.mark.parametrize(
    ("weights", "temperature", "expected"),
    [
        ({"copper": 1.0, "aluminium": 3.0}, None, {"Cu": 15, "Al": 45}),
        ("balanced", None, {"Cu": 30, "Al": 30}),
        ("temperature", 2.0, None),
    ],
    ids=["weights", "balanced", "temperature"],
)
def test_mixture_draws_each_source_its_share(
    two_sources: dict[str, Path],
    weights: object,
    temperature: float | None,
    expected: dict[str, int] | None,
) -> None:
    module = AtomsDataModule(
        train={"copper": two_sources["copper"], "aluminium": two_sources["aluminium"]},
        val=two_sources["val"], mixture_weights=weights, mixture_temperature=temperature,  # type: ignore[arg-type]
        mixture_samples=60, batch_size=7,
    )  # fmt: skip
    module.setup("fit")
    if expected is None:  # p_s ∝ n_s^(1/T): sqrt(30) : sqrt(6)
        copper = DatasetMixture([30, 6], temperature=2.0, num_samples=60).counts().tolist()[0]
        assert copper == round(60 * 30**0.5 / (30**0.5 + 6**0.5))
        expected = {"Cu": copper, "Al": 60 - copper}
    loader = module.train_dataloader()
    assert _drawn_per_source(loader) == expected
    assert len(loader) == 9  # ceil(60 / 7), every epoch
    first = _ids(loader)
    loader.sampler.set_epoch(1)
    assert _ids(loader) != first
    budgeted = AtomsDataModule(
        train={"copper": two_sources["copper"], "aluminium": two_sources["aluminium"]},
        val=two_sources["val"], mixture_weights=weights, mixture_temperature=temperature,  # type: ignore[arg-type]
        mixture_samples=60, max_atoms=24,
    )  # fmt: skip
    budgeted.setup("fit")
    loader = budgeted.train_dataloader()
    assert _drawn_per_source(loader) == expected
    assert all(int(b.natoms.sum()) <= 24 for b in loader)


def test_named_sources_without_weights_are_concatenated(two_sources: dict[str, Path]) -> None:
    module = AtomsDataModule(
        train={"copper": two_sources["copper"], "aluminium": two_sources["aluminium"]},
        val=two_sources["val"], batch_size=8,
    )  # fmt: skip
    module.setup("fit")
    assert _drawn_per_source(module.train_dataloader()) == {"Cu": 30, "Al": 6}


# --- the bundled EMT triple ------------------------------------------------------------------


def test_bundled_triple_is_the_split_of_the_bundled_database(tmp_path: Path) -> None:
    written = write_split_files(bundled_dataset_path("emt"), tmp_path, max_train=120)
    for name, path in written.items():
        bundled = bundled_dataset_path(f"emt-{name}")  # type: ignore[arg-type]
        assert path.read_bytes() == bundled.read_bytes(), name
    # The test file holds the test split of forces_schnet.yaml's data module, in order.
    module = AtomsDataModule(bundled_dataset_path("emt"), keys=["energy", "force"])
    module.setup("fit")
    rows = list(ase.db.connect(bundled_dataset_path("emt")).select())
    frames = ase.io.read(written["test"], index=":")
    assert len(frames) == len(module.split_indices["test"]) == 30
    for frame, position in zip(frames, module.split_indices["test"], strict=True):
        row = rows[position]
        np.testing.assert_allclose(frame.positions, row.positions, atol=1e-8)
        np.testing.assert_allclose(frame.get_forces(), row.forces, atol=1e-8)
        assert frame.get_potential_energy() == pytest.approx(row.energy, abs=1e-10)
        assert frame.info["structure_type"] == row.structure_type
    with pytest.raises(FileExistsError):
        write_split_files(bundled_dataset_path("emt"), tmp_path)
    with pytest.raises(ValueError, match=r"max_train=0\): must be at least 1"):
        write_split_files(bundled_dataset_path("emt"), tmp_path, max_train=0, overwrite=True)


def test_key_map_reads_mace_style_reference_names(tmp_path: Path) -> None:
    """Energies and forces stored as ``REF_energy`` (info) and ``REF_forces`` (per atom)."""
    frames = []
    for i in range(3):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
        atoms.info["REF_energy"] = -1.0 - i
        atoms.arrays["REF_forces"] = np.full((4, 3), 0.1 * i)
        frames.append(atoms)
    paths = {name: tmp_path / f"{name}.extxyz" for name in ("train", "val")}
    for path in paths.values():
        ase.io.write(path, frames, format="extxyz")
    module = AtomsDataModule(
        **paths,  # type: ignore[arg-type]
        keys=["energy", "force"],
        key_map={"energy": "REF_energy", "force": "REF_forces"},
        batch_size=3,
    )
    module.setup("fit")
    batch = next(iter(module.val_dataloader()))
    assert batch.energy.tolist() == [-1.0, -2.0, -3.0]
    torch.testing.assert_close(batch.force[4:8], torch.full((4, 3), 0.1, dtype=batch.force.dtype))


def test_predicting_without_predict_or_test_data_says_what_to_give(
    triple: dict[str, Path],
) -> None:
    module = AtomsDataModule(train=triple["train"], val=triple["val"])
    module.setup("predict")
    with pytest.raises(ValueError, match=r"needs predict data; give predict= or test= \(a file"):
        module.predict_dataloader()
