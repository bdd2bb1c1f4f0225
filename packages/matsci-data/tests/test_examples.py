# ASE is partly annotated, and database rows expose their columns as dynamic attributes.
# mypy: untyped-calls-exclude=ase
import hashlib
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import ase.db
import numpy as np
import pytest
from ase.calculators.emt import EMT

from matsci.data.examples import (
    BUNDLED_NAMES,
    DEFAULT_SPACEGROUPS,
    EMT_ELEMENTS,
    bundled_dataset_path,
    make_emt_dataset,
    make_spacegroup_dataset,
)
from matsci.data.examples.__main__ import main
from matsci.data.examples._resources import BUNDLED_NUM_STRUCTURES, BundledName


def _rows(path: Path) -> list[Any]:
    return list(ase.db.connect(path).select())


def _assert_emt_labels(row: Any) -> None:
    atoms = row.toatoms()
    atoms.calc = EMT()
    np.testing.assert_allclose(row.energy, atoms.get_potential_energy(), rtol=0, atol=1e-6)
    np.testing.assert_allclose(row.forces, atoms.get_forces(), rtol=0, atol=1e-6)
    np.testing.assert_allclose(row.stress, atoms.get_stress(voigt=True), rtol=0, atol=1e-6)


def _assert_same_rows(first: list[Any], second: list[Any]) -> None:
    assert len(first) == len(second)
    for a, b in zip(first, second, strict=True):
        assert a.unique_id == b.unique_id
        assert a.key_value_pairs == b.key_value_pairs
        np.testing.assert_array_equal(a.numbers, b.numbers)
        np.testing.assert_allclose(a.cell, b.cell, rtol=0, atol=1e-12)
        np.testing.assert_allclose(a.positions, b.positions, rtol=0, atol=1e-12)
        if "energy" in a:
            np.testing.assert_allclose(a.energy, b.energy, rtol=0, atol=1e-9)
            np.testing.assert_allclose(a.forces, b.forces, rtol=0, atol=1e-9)


# --- make_emt_dataset --------------------------------------------------------------------------


def test_emt_rows_hold_emt_energy_forces_and_stress(tmp_path: Path) -> None:
    path = make_emt_dataset(tmp_path / "emt.db", num_structures=12, seed=3)
    assert path == tmp_path / "emt.db"
    rows = _rows(path)
    assert len(rows) == 12
    for row in rows:
        assert row.calculator == "emt"
        assert row.forces.shape == (row.natoms, 3)
        assert row.stress.shape == (6,)
        assert row.pbc.all()
        _assert_emt_labels(row)


def test_emt_same_seed_gives_same_rows_and_other_seed_does_not(tmp_path: Path) -> None:
    first = _rows(make_emt_dataset(tmp_path / "a.db", num_structures=8, seed=5))
    second = _rows(make_emt_dataset(tmp_path / "b.db", num_structures=8, seed=5))
    _assert_same_rows(first, second)
    other = _rows(make_emt_dataset(tmp_path / "c.db", num_structures=8, seed=6))
    assert not all(
        a.natoms == b.natoms and np.allclose(a.positions, b.positions)
        for a, b in zip(first, other, strict=True)
    )
    assert {row.unique_id for row in first}.isdisjoint(row.unique_id for row in other)


def test_emt_first_structures_do_not_depend_on_num_structures(tmp_path: Path) -> None:
    short = _rows(make_emt_dataset(tmp_path / "short.db", num_structures=3, seed=2))
    long = _rows(make_emt_dataset(tmp_path / "long.db", num_structures=7, seed=2))
    _assert_same_rows(short, long[:3])


def test_emt_structure_types_sizes_and_elements(tmp_path: Path) -> None:
    rows = _rows(make_emt_dataset(tmp_path / "emt.db", num_structures=60, seed=0))
    assert {row.structure_type for row in rows} == {"fcc", "bcc", "hcp"}
    assert all(8 <= row.natoms <= 32 for row in rows)
    elements = [set(row.symbols) for row in rows]
    assert set().union(*elements) == set(EMT_ELEMENTS)
    num_elements = Counter(len(present) for present in elements)
    assert set(num_elements) == {1, 2}
    assert num_elements[1] > 10
    assert num_elements[2] > 10


def test_emt_binary_alloys_have_a_minority_solute(tmp_path: Path) -> None:
    path = make_emt_dataset(
        tmp_path / "emt.db", num_structures=10, elements=("Cu", "Au"), alloy_probability=1.0
    )
    for row in _rows(path):
        counts = Counter(row.symbols)
        assert set(counts) == {"Cu", "Au"}
        assert min(counts.values()) <= row.natoms // 2


def test_emt_perfect_fcc_crystals_have_no_forces_and_isotropic_stress(tmp_path: Path) -> None:
    path = make_emt_dataset(
        tmp_path / "emt.db",
        num_structures=6,
        elements=("Cu",),
        structure_types=("fcc",),
        alloy_probability=0.0,
        rattle_stdev=(0.0, 0.0),
        max_strain=0.0,
    )
    rows = _rows(path)
    # Cu at its reference lattice constant 3.61 Å: volume per atom 3.61³ / 4.
    for row in rows:
        assert row.structure_type == "fcc"
        np.testing.assert_allclose(row.volume / row.natoms, 3.61**3 / 4, rtol=1e-12)
        np.testing.assert_allclose(row.forces, 0.0, atol=1e-10)
        np.testing.assert_allclose(row.stress[:3], row.stress[0], rtol=0, atol=1e-10)
        np.testing.assert_allclose(row.stress[3:], 0.0, atol=1e-10)
    energy_per_atom = [row.energy / row.natoms for row in rows]
    np.testing.assert_allclose(energy_per_atom, energy_per_atom[0], rtol=0, atol=1e-10)


def test_emt_strain_changes_volume_by_at_most_the_strain(tmp_path: Path) -> None:
    max_strain = 0.03
    path = make_emt_dataset(
        tmp_path / "emt.db",
        num_structures=20,
        elements=("Al",),
        alloy_probability=0.0,
        rattle_stdev=(0.0, 0.0),
        max_strain=max_strain,
    )
    ratios = [row.volume / row.natoms / (4.05**3 / 4) for row in _rows(path)]
    assert all((1 - max_strain) ** 3 < r < (1 + max_strain) ** 3 for r in ratios)
    assert not np.allclose(ratios, 1.0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"elements": ("Cu", "Fe")}, r"elements=\('Cu', 'Fe'\)\): expected distinct elements"),
        ({"elements": ("Cu", "Cu")}, "expected distinct elements"),
        ({"elements": ()}, "expected distinct elements"),
        ({"structure_types": ("fcc", "sc")}, r"structure_types=\('fcc', 'sc'\)"),
        ({"alloy_probability": 1.5}, r"alloy_probability=1.5\): expected 0 to 1"),
        ({"elements": ("Cu",)}, "binary alloys need two or more elements"),
        ({"rattle_stdev": (0.1, 0.05)}, r"rattle_stdev=\(0.1, 0.05\)"),
        ({"max_strain": 0.5}, r"max_strain=0.5\): expected 0 <= max_strain < 0.2"),
        ({"num_structures": 0}, r"num_structures=0\): expected at least 1"),
    ],
)
def test_emt_bad_arguments(tmp_path: Path, kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make_emt_dataset(tmp_path / "emt.db", **kwargs)  # type: ignore[arg-type]
    assert not (tmp_path / "emt.db").exists()


def test_emt_num_structures_must_be_an_int(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"num_structures=2.5\): expected an int, got float"):
        make_emt_dataset(tmp_path / "emt.db", num_structures=2.5)  # type: ignore[arg-type]


def test_existing_file_needs_overwrite(tmp_path: Path) -> None:
    path = make_emt_dataset(tmp_path / "sub" / "emt.db", num_structures=2)
    with pytest.raises(FileExistsError, match="pass overwrite=True"):
        make_emt_dataset(path, num_structures=3)
    assert ase.db.connect(path).count() == 2
    make_emt_dataset(path, num_structures=3, overwrite=True)
    assert ase.db.connect(path).count() == 3
    assert sorted(p.name for p in path.parent.iterdir()) == ["emt.db"]
    with pytest.raises(IsADirectoryError, match="is a directory"):
        make_emt_dataset(tmp_path, num_structures=2, overwrite=True)


# --- make_spacegroup_dataset -------------------------------------------------------------------


_SPGLIB_NOTICE = "ignore:Set OLD_ERROR_HANDLING:DeprecationWarning"


@pytest.mark.filterwarnings(_SPGLIB_NOTICE)
def test_spacegroup_dataset_labels_agree_with_spglib(tmp_path: Path) -> None:
    pytest.importorskip("pyxtal")
    spglib = pytest.importorskip("spglib")
    path = make_spacegroup_dataset(
        tmp_path / "sg.db", num_structures=4, spacegroups=(225, 194), max_atoms=12, seed=1
    )
    rows = _rows(path)
    assert [row.spacegroup for row in rows] == [225, 194, 225, 194]
    for row in rows:
        atoms = row.toatoms()
        cell = (atoms.cell[:], atoms.get_scaled_positions(), atoms.numbers)
        assert spglib.get_symmetry_dataset(cell, symprec=1e-3).number == row.spacegroup
        assert row.natoms <= 12
        assert "energy" not in row
    again = make_spacegroup_dataset(
        tmp_path / "again.db", num_structures=4, spacegroups=(225, 194), max_atoms=12, seed=1
    )
    _assert_same_rows(rows, _rows(again))


def test_spacegroup_dataset_names_the_extra_when_pyxtal_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pyxtal", None)
    with pytest.raises(ImportError, match=r"pip install 'matsci-data\[examples\]'"):
        make_spacegroup_dataset(tmp_path / "sg.db", num_structures=2)
    assert not (tmp_path / "sg.db").exists()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"spacegroups": (225, 231)}, r"spacegroups=\(225, 231\)\): expected distinct integers"),
        ({"spacegroups": (0,)}, "expected distinct integers from 1 to 230"),
        ({"spacegroups": (225, 225)}, "expected distinct integers from 1 to 230"),
        ({"spacegroups": ()}, "expected distinct integers from 1 to 230"),
        ({"elements": ("Na", "Xx")}, r"expected distinct chemical symbols; unknown: \['Xx'\]"),
        ({"elements": ("Na",), "max_species": 2}, r"max_species=2\): expected 1 to len"),
        ({"symprec": 0.0}, r"symprec=0.0\): expected a positive tolerance"),
        ({"num_structures": -1}, r"num_structures=-1\): expected at least 1"),
    ],
)
def test_spacegroup_bad_arguments(tmp_path: Path, kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make_spacegroup_dataset(tmp_path / "sg.db", **kwargs)  # type: ignore[arg-type]


def test_spacegroup_max_atoms_must_fit_the_smallest_wyckoff_position(tmp_path: Path) -> None:
    pytest.importorskip("pyxtal")
    with pytest.raises(ValueError, match="space group 225 needs at least 4 atoms"):
        make_spacegroup_dataset(tmp_path / "sg.db", spacegroups=(225,), max_atoms=3)


# --- bundled copies ----------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("name", BUNDLED_NAMES)
def test_bundled_files_ship_with_the_package_and_open_for_reading(name: BundledName) -> None:
    path = bundled_dataset_path(name)
    assert path.is_file()
    assert path.name == f"{name}.db"
    assert path.stat().st_size < 2_000_000
    before = (_sha256(path), sorted(p.name for p in path.parent.iterdir()))
    database = ase.db.connect(path)
    assert database.count() == BUNDLED_NUM_STRUCTURES[name] == 300
    assert len(list(database.select())) == 300
    assert (_sha256(path), sorted(p.name for p in path.parent.iterdir())) == before


def test_bundled_path_rejects_unknown_names() -> None:
    with pytest.raises(ValueError, match=r"name='qm9'\): unknown dataset; expected one of"):
        bundled_dataset_path("qm9")  # type: ignore[arg-type]


def test_bundled_emt_rows_and_keys() -> None:
    rows = _rows(bundled_dataset_path("emt"))
    assert all(row.key_value_pairs.keys() == {"structure_type", "compressed"} for row in rows)
    assert Counter(row.structure_type for row in rows).keys() == {"fcc", "bcc", "hcp"}
    # The binary label: positive EMT pressure (ASE's stress is positive under tension).
    assert all(row.compressed == bool(row.stress[:3].mean() < 0) for row in rows)
    assert 0.5 < sum(row.compressed for row in rows) / len(rows) < 0.8
    assert set().union(*(set(row.symbols) for row in rows)) == set(EMT_ELEMENTS)
    for row in rows[::15]:  # EMT on 20 rows; all 300 take a few seconds
        _assert_emt_labels(row)


def test_bundled_emt_is_what_the_defaults_generate(tmp_path: Path) -> None:
    generated = _rows(make_emt_dataset(tmp_path / "emt.db", num_structures=10))
    _assert_same_rows(generated, _rows(bundled_dataset_path("emt"))[:10])


@pytest.mark.filterwarnings(_SPGLIB_NOTICE)
def test_bundled_spacegroup_labels_equal_spglib_on_the_stored_atoms() -> None:
    spglib = pytest.importorskip("spglib")
    rows = _rows(bundled_dataset_path("spacegroup"))
    assert all(row.key_value_pairs.keys() == {"spacegroup"} for row in rows)
    assert Counter(row.spacegroup for row in rows) == dict.fromkeys(DEFAULT_SPACEGROUPS, 50)
    for row in rows:
        atoms = row.toatoms()
        cell = (atoms.cell[:], atoms.get_scaled_positions(), atoms.numbers)
        assert spglib.get_symmetry_dataset(cell, symprec=1e-3).number == row.spacegroup


# --- python -m matsci.data.examples ------------------------------------------------------------


def test_command_line_help_runs() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "matsci.data.examples", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    for command in ("emt", "spacegroup", "bundled"):
        assert command in result.stdout


def test_command_line_writes_an_emt_dataset(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "out" / "emt.db"
    args = ["emt", str(path), "--num-structures", "5", "--seed", "1", "--elements", "Cu", "Ni"]
    assert main(args) == 0
    output = capsys.readouterr().out
    assert f"wrote 5 structures to {path}" in output
    assert "elements Cu Ni" in output
    rows = _rows(path)
    assert len(rows) == 5
    assert set().union(*(set(row.symbols) for row in rows)) <= {"Cu", "Ni"}
    with pytest.raises(FileExistsError):
        main(args)
