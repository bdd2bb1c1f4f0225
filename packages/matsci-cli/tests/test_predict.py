import csv
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ase.db
import ase.io
import numpy as np
import pytest
import torch
import yaml
from torch_geometric.transforms import Compose

from matsci.cli import ConfigError, load_for_prediction, main, predict_to_file
from matsci.data.examples import bundled_dataset_path
from matsci.transforms import NoisyPositions, PeriodicRadiusGraph


@pytest.fixture(scope="module")
def extxyz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Five EMT structures as an extxyz file."""
    path = tmp_path_factory.mktemp("data") / "five.extxyz"
    with ase.db.connect(bundled_dataset_path("emt")) as database:
        frames = [row.toatoms() for row in database.select(limit=5)]
    ase.io.write(path, frames, format="extxyz")
    return path


def test_csv_has_one_row_per_structure(fitted: Path, tmp_path: Path) -> None:
    output = tmp_path / "predictions.csv"
    main(["predict", "--ckpt_path", str(fitted / "checkpoints" / "best.ckpt"),
          "--data", str(bundled_dataset_path("emt")), "--output", str(output)])  # fmt: skip
    with output.open() as file:
        rows = list(csv.DictReader(file))
    with ase.db.connect(bundled_dataset_path("emt")) as database:
        assert len(rows) == database.count()
        first = database.get(id=int(rows[0]["structure_id"]))
    assert rows[0]["formula"] == first.formula
    assert int(rows[0]["natoms"]) == first.natoms
    columns = set(rows[0])
    assert {"energy", "force_max_norm", "stress_xx", "stress_xy"} <= columns
    assert np.isfinite(float(rows[0]["energy"]))


def test_extxyz_to_csv_and_db(fitted: Path, extxyz: Path, tmp_path: Path) -> None:
    checkpoint = fitted / "checkpoints" / "best.ckpt"
    assert predict_to_file(checkpoint, extxyz, tmp_path / "p.csv") == 5
    assert predict_to_file(checkpoint, extxyz, tmp_path / "p.db") == 5
    with ase.db.connect(tmp_path / "p.db") as database:
        rows = list(database.select())
    assert len(rows) == 5
    assert rows[0].data["predicted_force"].shape == (rows[0].natoms, 3)
    assert "predicted_energy" in rows[0].key_value_pairs


def test_folder_of_shards_predicts_each_structure_once_naming_its_shard(
    fitted: Path, extxyz: Path, tmp_path: Path
) -> None:
    checkpoint = fitted / "checkpoints" / "best.ckpt"
    frames = ase.io.read(extxyz, index=":")
    folder = tmp_path / "shards"
    folder.mkdir()
    ase.io.write(folder / "a.extxyz", frames[:2], format="extxyz")
    ase.db.connect(folder / "b.json").write(frames[2])  # shards of different formats
    assert predict_to_file(checkpoint, folder, tmp_path / "shards.csv") == 3
    assert predict_to_file(checkpoint, extxyz, tmp_path / "whole.csv") == 5
    with (tmp_path / "shards.csv").open() as file:
        sharded = list(csv.DictReader(file))
    with (tmp_path / "whole.csv").open() as file:
        whole = list(csv.DictReader(file))
    assert [(row["source"], row["structure_id"]) for row in sharded] == [
        ("a.extxyz", "0"), ("a.extxyz", "1"), ("b.json", "1")
    ]  # fmt: skip
    for got, expected in zip(sharded, whole[:3], strict=True):
        assert got["formula"] == expected["formula"]
        assert float(got["energy"]) == pytest.approx(float(expected["energy"]), rel=1e-6)

    assert predict_to_file(checkpoint, folder, tmp_path / "shards.db") == 3
    with ase.db.connect(tmp_path / "shards.db") as database:
        rows = list(database.select())
    assert [(row.source, row.source_row) for row in rows] == [
        ("a.extxyz", 0), ("a.extxyz", 1), ("b.json", 1)
    ]  # fmt: skip
    for row, atoms in zip(rows, frames[:3], strict=True):
        assert np.allclose(row.positions, atoms.positions)
        assert row.data["predicted_force"].shape == (len(atoms), 3)


def test_db_output_is_a_copy_and_leaves_the_input_alone(fitted: Path, tmp_path: Path) -> None:
    source = tmp_path / "input.db"
    source.write_bytes(bundled_dataset_path("emt").read_bytes())
    before = source.read_bytes()
    count = predict_to_file(fitted / "checkpoints" / "best.ckpt", source, tmp_path / "out.db")
    assert source.read_bytes() == before
    with ase.db.connect(tmp_path / "out.db") as database:
        assert database.count() == count == 300
        row = database.get(id=1)
        assert "structure_type" in row.key_value_pairs  # the input's columns are kept
        assert np.isfinite(row.key_value_pairs["predicted_energy"])
        assert row.data["predicted_stress"].shape == (3, 3)


def test_refuses_to_write_over_the_input(fitted: Path, tmp_path: Path) -> None:
    source = tmp_path / "input.db"
    source.write_bytes(bundled_dataset_path("emt").read_bytes())
    with pytest.raises(ConfigError, match="is the input file"):
        predict_to_file(fitted / "checkpoints" / "best.ckpt", source, source)


def test_errors(fitted: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    checkpoint = str(fitted / "checkpoints" / "best.ckpt")
    with pytest.raises(SystemExit):
        main(["predict", "--ckpt_path", str(tmp_path / "none.ckpt"), "--data", "x.db"])
    assert "no such file" in capsys.readouterr().err
    notes = tmp_path / "notes.ckpt"
    notes.write_text("not a checkpoint")
    with pytest.raises(SystemExit) as info:
        main(["predict", "--ckpt_path", str(notes), "--data", str(bundled_dataset_path("emt"))])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert re.search(r"^matsci: error: load_model: '.*notes.ckpt' is not a readable", err)
    assert "Traceback" not in err
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {}}, foreign)
    with pytest.raises(ValueError, match=r"without a 'matsci' record naming its model class"):
        predict_to_file(foreign, bundled_dataset_path("emt"), tmp_path / "p.csv")
    with pytest.raises(ConfigError, match=r"expected a \.csv or \.db"):
        predict_to_file(checkpoint, bundled_dataset_path("emt"), tmp_path / "p.txt")
    with pytest.raises(ConfigError, match=r"structures\.cif' does not exist"):
        predict_to_file(checkpoint, tmp_path / "structures.cif", tmp_path / "p.csv")
    (tmp_path / "structures.cif").write_text("data_x\n")
    with pytest.raises(ConfigError, match=r"unknown suffix '\.cif'; expected an ASE database"):
        predict_to_file(checkpoint, tmp_path / "structures.cif", tmp_path / "p.csv")


def test_prediction_applies_the_pre_transform_then_the_transform(
    tmp_path: Path, tiny_force_config: Callable[[], dict[str, Any]]
) -> None:
    config = tiny_force_config()
    data = config["data"]["init_args"]
    data["pre_transform"] = data.pop("transform")
    data["in_memory"] = True
    data["transform"] = {"class_path": "matsci.transforms.NoisyPositions",
                         "init_args": {"scale": 0.01}}  # fmt: skip
    path = tmp_path / "held.yaml"
    path.write_text(yaml.safe_dump(config))
    main(["fit", "--config", str(path), "--runs_dir", str(tmp_path / "runs")])
    checkpoint = tmp_path / "runs" / "held" / "version_0" / "checkpoints" / "best.ckpt"
    loaded, transform = load_for_prediction(checkpoint)
    assert loaded.model_class.endswith("ForceRegressionTask")
    assert isinstance(transform, Compose)
    graph, noise = transform.transforms
    assert isinstance(graph, PeriodicRadiusGraph)
    assert graph.cutoff == 3.5
    assert isinstance(noise, NoisyPositions)


def test_an_element_the_model_never_saw_is_refused_naming_it(
    fitted: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    silicon = tmp_path / "si.extxyz"
    with ase.db.connect(bundled_dataset_path("emt")) as database:
        atoms = next(database.select(limit=1)).toatoms()
    atoms.numbers[0] = 14  # Si: no fitted reference energy, so the model never saw it
    ase.io.write(silicon, [atoms], format="extxyz")
    checkpoint = str(fitted / "checkpoints" / "best.ckpt")
    with pytest.raises(SystemExit) as info:
        main(["predict", "--ckpt_path", checkpoint, "--data", str(silicon),
              "--output", str(tmp_path / "p.csv")])  # fmt: skip
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert re.search(
        r"matsci predict: structure 0 \w*Si\w* has element \['Si'\] the model was not trained "
        r"on; known elements: \['Al', 'Ni', 'Cu', 'Pd', 'Ag', 'Pt', 'Au'\]",
        err,
    ), err
    assert not (tmp_path / "p.csv").exists()
