"""Bad input gives a clear ``ValueError`` naming the problem, or is handled as documented.

Property-based (hypothesis) over batches, ASE structures, data files and checkpoints: missing
attributes, wrong dtypes and shapes, empty and single-atom structures, atoms on top of each
other, huge coordinates, NaN targets and positions, unknown elements, truncated and corrupted
files. Never a crash deep in torch, SQLite or vesin, never a silent broadcast; data files are
read-only and come out unchanged.
"""

import math
import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import ase.db
import ase.io
import numpy as np
import pytest
import torch
from ase import Atoms
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from physics_helpers import SmoothEncoder
from torch_geometric.data import Batch, Data

from matsci.contract.testing import quiet_trainer
from matsci.data import AseDbDataset, ExtxyzDataset, atoms_to_data
from matsci.tasks.core import ScalarRegressionTask
from matsci.tasks.physics import ForceRegressionTask
from matsci.transforms import PeriodicRadiusGraph

SETTINGS = settings(max_examples=30, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
CUTOFF = 3.0


class _Encoder(torch.nn.Module):
    """Atom types and positions relative to the structure's centre, pooled per structure."""

    embedding_dim = 8

    def __init__(self) -> None:
        super().__init__()
        self.types = torch.nn.Embedding(119, 8)
        self.geometry = torch.nn.Linear(3, 8)

    def forward(self, batch: Batch) -> Any:
        from torch_geometric.utils import scatter

        from matsci.tasks.core import Embeddings

        centre = scatter(batch.pos, batch.batch, dim=0, dim_size=batch.num_graphs, reduce="mean")
        point = self.types(batch.atomic_numbers) + self.geometry(batch.pos - centre[batch.batch])
        return Embeddings(point_embedding=point)


_TASK = ScalarRegressionTask(encoder=_Encoder(), task_keys=["energy"])


def _structure(n: int, rng: np.random.Generator) -> Data:
    return Data(
        pos=torch.tensor(rng.uniform(0, 4, size=(n, 3)), dtype=torch.float32),
        atomic_numbers=torch.tensor(rng.integers(1, 30, size=n)),
        natoms=torch.tensor([n]),
        energy=torch.tensor([float(rng.normal())]),
    )


def _remove(name: str) -> Callable[[Batch], None]:
    def mutate(batch: Batch) -> None:
        del batch[name]

    return mutate


def _set(name: str, make: Callable[[Batch], Any]) -> Callable[[Batch], None]:
    def mutate(batch: Batch) -> None:
        batch[name] = make(batch)

    return mutate


def _nan_position(batch: Batch) -> None:
    batch.pos[-1, 1] = float("nan")


# A collated batch made malformed (by a custom collate function or transform), and the
# ValueError message each must give.
BATCH_CASES: dict[str, tuple[Callable[[Batch], None], str]] = {
    "missing pos": (_remove("pos"), "batch attribute 'pos' is missing"),
    "missing atomic_numbers": (_remove("atomic_numbers"), "'atomic_numbers' is missing"),
    "missing natoms": (_remove("natoms"), "'natoms' is missing"),
    "missing target": (_remove("energy"), "'energy' is missing, expected float"),
    "integer positions": (_set("pos", lambda b: b.pos.long()), "'pos' has dtype torch.int64"),
    "float atomic numbers": (
        _set("atomic_numbers", lambda b: b.atomic_numbers.float()),
        "'atomic_numbers' has dtype torch.float32",
    ),
    "2d positions": (_set("pos", lambda b: b.pos[:, :2]), r"'pos' has shape \[\d+, 2\]"),
    "3d positions per atom": (
        _set("pos", lambda b: b.pos[:, None]),
        r"'pos' has shape \[\d+, 1, 3",
    ),
    "wide target": (
        _set("energy", lambda b: torch.zeros(b.num_graphs, 3)),
        r"'energy' has shape \[\d+, 3\], expected \[B\] or \[B, 1\]",
    ),
    "target per atom": (
        _set("energy", lambda b: torch.zeros(b.num_nodes)),
        r"'energy' has shape \[\d+\], expected \[B\] or \[B, 1\]",
    ),
    "natoms off by one": (_set("natoms", lambda b: b.natoms + 1), "'natoms' sums to"),
    "nan position": (_nan_position, "'pos' has 1 non-finite values"),
    "huge coordinates": (
        _set("pos", lambda b: b.pos * 1e8 + 1e6),
        r"'pos' has a coordinate of magnitude .* expected at most 1e\+05",
    ),
    "element 0": (
        _set("atomic_numbers", lambda b: b.atomic_numbers * 0),
        r"unknown elements \[0\]",
    ),
    "element 119": (
        _set("atomic_numbers", lambda b: torch.full_like(b.atomic_numbers, 119)),
        r"unknown elements \[119\], expected atomic numbers 1 to 118",
    ),
    "negative element": (_set("atomic_numbers", lambda b: -b.atomic_numbers), "unknown elements"),
}


def _empty(data: Data) -> None:
    data.pos = torch.zeros(0, 3)
    data.atomic_numbers = torch.zeros(0, dtype=torch.long)
    data.natoms = torch.tensor([0])


def _keep_first_atom(data: Data) -> None:
    data.pos, data.atomic_numbers = data.pos[:1], data.atomic_numbers[:1]
    data.natoms = torch.tensor([1])


def _duplicate_atom(data: Data) -> None:
    data.pos[-1] = data.pos[0]


def _nan_target(data: Data) -> None:
    data.energy = torch.tensor([float("nan")])


# One structure of the batch made unusual; None: handled (documented), the step works.
STRUCTURE_CASES: dict[str, tuple[Callable[[Data], None], str | None]] = {
    "empty structure": (_empty, r"'natoms' has structures \[\d\] with no atoms"),
    "single atom": (_keep_first_atom, None),
    "atoms on top of each other": (_duplicate_atom, None),  # refused by PeriodicRadiusGraph
    "nan target": (_nan_target, None),  # a missing target: masked in the loss
}


@SETTINGS
@given(
    case=st.sampled_from(sorted(BATCH_CASES) + sorted(STRUCTURE_CASES)),
    sizes=st.lists(st.integers(min_value=2, max_value=6), min_size=1, max_size=4),
    which=st.integers(min_value=0, max_value=3),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_bad_batches_raise_a_clear_value_error_or_work(
    case: str, sizes: list[int], which: int, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    structures = [_structure(n, rng) for n in sizes]
    message: str | None
    if case in STRUCTURE_CASES:
        change, message = STRUCTURE_CASES[case]
        change(structures[which % len(structures)])
        batch = Batch.from_data_list(structures)
    else:
        batch = Batch.from_data_list(structures)
        mutate, message = BATCH_CASES[case]
        mutate(batch)
    if message is not None:
        with pytest.raises(ValueError, match=rf"ScalarRegressionTask: .*{message}"):
            _TASK.check_batch(batch)
        return
    _TASK.check_batch(batch)
    total, losses = _TASK.compute_losses(_TASK(batch), batch)
    assert bool(torch.isfinite(total))  # a NaN target is missing data: masked, not propagated
    if case == "nan target" and len(structures) == 1:
        assert float(losses["energy"]) == 0.0


# -- ASE structures ----------------------------------------------------------------------------


def _atoms(n: int, rng: np.random.Generator, periodic: bool) -> Atoms:
    atoms = Atoms(numbers=rng.integers(1, 30, size=n), positions=rng.uniform(0, 4, size=(n, 3)))
    if periodic:
        atoms.cell = np.diag(rng.uniform(4, 6, size=3))
        atoms.pbc = True
    atoms.info["energy"] = float(rng.normal())
    return atoms


ATOMS_CASES: dict[str, tuple[Callable[[Atoms], Atoms], str | None]] = {
    "empty": (lambda a: a[[]], "has no atoms"),
    "element 0": (lambda a: _numbers(a, 0), r"unknown elements \[0\]"),
    "element 150": (lambda a: _numbers(a, 150), r"unknown elements \[150\]"),
    "huge coordinates": (lambda a: _shift(a, 3e7), r"coordinate of magnitude 3e\+07 Å"),
    "nan position": (lambda a: _shift(a, float("nan")), "non-finite positions"),
    "nan target": (lambda a: _info(a, "energy", float("nan")), None),
    "single atom": (lambda a: a[:1], None),
    "far apart in a plane": (lambda a: _spread(a, 5e3), None),
    "atoms on top of each other": (lambda a: _duplicate(a), "closer than 0.001 Å"),
}


def _numbers(atoms: Atoms, z: int) -> Atoms:
    atoms.numbers[0] = z
    return atoms


def _shift(atoms: Atoms, value: float) -> Atoms:
    atoms.positions[0, 0] = value
    return atoms


def _info(atoms: Atoms, key: str, value: float) -> Atoms:
    atoms.info[key] = value
    return atoms


def _spread(atoms: Atoms, distance: float) -> Atoms:
    # Molecules far apart along two directions: vesin's own bounding box would have no cell
    # along the third (a floating-point exception that kills the process).
    atoms.pbc = False
    atoms.positions[:, 2] = 0.0
    atoms.positions[0, :2] = distance
    return atoms


def _duplicate(atoms: Atoms) -> Atoms:
    return atoms + atoms[:1]


@SETTINGS
@given(
    case=st.sampled_from(sorted(ATOMS_CASES)),
    n=st.integers(min_value=2, max_value=6),
    periodic=st.booleans(),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_bad_structures_raise_a_clear_value_error_or_work(
    case: str, n: int, periodic: bool, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    mutate, message = ATOMS_CASES[case]
    atoms = mutate(_atoms(n, rng, periodic))
    graph = PeriodicRadiusGraph(cutoff=CUTOFF)
    if message is not None:
        with pytest.raises(ValueError, match=message):
            graph(atoms_to_data(atoms, index=7))
        return
    data = graph(atoms_to_data(atoms, index=7))
    assert data.edge_index.shape[0] == 2
    if case == "nan target":
        assert math.isnan(float(data.energy))
    if case == "far apart in a plane":  # the same pairs as a brute-force search
        distances = torch.cdist(data.pos.double(), data.pos.double())
        close = (distances < CUTOFF) & ~torch.eye(len(atoms), dtype=torch.bool)
        assert sorted(map(tuple, data.edge_index.t().tolist())) == sorted(
            map(tuple, close.nonzero().tolist())
        )
        assert bool((data.cell_offsets == 0).all())


def test_single_atom_structures_train_a_force_field() -> None:
    """One atom, alone in a molecule (no edges) or in a small periodic cell (its images)."""
    graph = PeriodicRadiusGraph(cutoff=CUTOFF)
    lone = Atoms("Cu", positions=[[0.0, 0.0, 0.0]])
    crystal = Atoms("Cu", positions=[[0.0, 0.0, 0.0]], cell=np.eye(3) * 2.5, pbc=True)
    structures = []
    for atoms in (lone, crystal):
        atoms.info["energy"] = -1.0
        atoms.arrays["forces"] = np.zeros((1, 3))
        structures.append(graph(atoms_to_data(atoms)))
    assert structures[0].edge_index.shape == (2, 0)
    batch = Batch.from_data_list(structures)
    task = ForceRegressionTask(encoder_class=SmoothEncoder, encoder_kwargs={"embedding_dim": 8})
    task.check_batch(batch)
    total, _ = task.compute_losses(task(batch), batch)
    total.backward()
    assert bool(torch.isfinite(total))
    assert all(bool(torch.isfinite(p.grad).all()) for p in task.parameters() if p.grad is not None)
    forces = task.predict(batch)["force"]
    torch.testing.assert_close(forces, torch.zeros(2, 3), atol=1e-5, rtol=0)  # by symmetry


# -- data files --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def data_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    folder = tmp_path_factory.mktemp("files")
    rng = np.random.default_rng(0)
    frames = [_atoms(int(rng.integers(2, 5)), rng, True) for _ in range(6)]
    ase.io.write(folder / "good.extxyz", frames)
    with ase.db.connect(folder / "good.db") as db:
        for atoms in frames:
            db.write(atoms, energy_value=atoms.info["energy"])
    return {suffix: (folder / f"good.{suffix}").read_bytes() for suffix in ("extxyz", "db")}


def _read_everything(cls: type[Any], path: Path) -> None:
    dataset = cls(path)
    for index in range(len(dataset)):
        dataset[index]


@SETTINGS
@given(
    suffix=st.sampled_from(["extxyz", "db"]),
    damage=st.sampled_from(["truncate", "overwrite"]),
    where=st.floats(min_value=0.0, max_value=0.999),
    junk=st.binary(min_size=1, max_size=64),
)
def test_damaged_files_raise_value_errors_and_stay_unchanged(
    data_files: dict[str, bytes], tmp_path: Path, suffix: str, damage: str, where: float,
    junk: bytes,
) -> None:  # fmt: skip
    good = data_files[suffix]
    offset = int(where * len(good))
    if damage == "truncate":
        content = good[:offset]
    else:
        content = good[:offset] + junk + good[offset + len(junk) :]
    path = tmp_path / f"damaged-{offset}-{len(junk)}.{suffix}"
    path.write_bytes(content)
    path.chmod(0o444)  # read-only: opening it for writing would fail loudly
    mtime = path.stat().st_mtime_ns
    cls = ExtxyzDataset if suffix == "extxyz" else AseDbDataset
    message = ""
    try:
        _read_everything(cls, path)
    except ValueError as error:  # the only exception a damaged file may cause
        message = str(error)
    assert not message or str(path) in message  # the message names the file
    assert path.read_bytes() == content
    assert path.stat().st_mtime_ns == mtime
    beside = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(path.name))
    # No journal or lock file was left beside it; an extxyz file may get its frame index cache.
    assert beside in ([path.name], [path.name, f"{path.name}.matsci-index.npz"])


def test_a_damaged_database_row_is_a_value_error_naming_it(
    data_files: dict[str, bytes], tmp_path: Path
) -> None:
    # Invalid UTF-8 in a row's key-value text: SQLite fails only when that row is read.
    content = data_files["db"]
    start = content.index(b'{"energy_value"')
    path = tmp_path / "damaged.db"
    path.write_bytes(content[: start + 2] + b"\xff\xfe" + content[start + 4 :])
    with pytest.raises(ValueError, match=r"row id \d+ cannot be read; the database is damaged"):
        _read_everything(AseDbDataset, path)
    assert path.read_bytes() != content  # (the damage is there, and nothing repaired it)


def test_databases_are_never_written(data_files: dict[str, bytes], tmp_path: Path) -> None:
    path = tmp_path / "good.db"
    path.write_bytes(data_files["db"])
    mtime = path.stat().st_mtime_ns
    _read_everything(AseDbDataset, path)
    assert path.read_bytes() == data_files["db"]
    assert path.stat().st_mtime_ns == mtime
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.db"]  # no journal, no lock
    # An SQLite file of another program: ASE would create its tables in it; we refuse it first.
    foreign = tmp_path / "foreign.db"
    with closing(sqlite3.connect(foreign)) as connection:
        connection.execute("CREATE TABLE measurements (x REAL)")
        connection.commit()
    content = foreign.read_bytes()
    with pytest.raises(ValueError, match=r"foreign\.db"):
        AseDbDataset(foreign)
    assert foreign.read_bytes() == content


# -- checkpoints --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoint_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    from torch_geometric.loader import DataLoader

    folder = tmp_path_factory.mktemp("checkpoint")
    rng = np.random.default_rng(1)
    task = ScalarRegressionTask(encoder=_Encoder(), task_keys=["energy"])
    run = quiet_trainer(max_steps=1)
    run.fit(task, DataLoader([_structure(3, rng) for _ in range(4)], batch_size=4))
    run.save_checkpoint(folder / "task.ckpt")
    return (folder / "task.ckpt").read_bytes()


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(fraction=st.floats(min_value=0.0, max_value=0.99))
def test_truncated_checkpoints_raise_a_value_error_naming_the_file(
    checkpoint_bytes: bytes, tmp_path: Path, fraction: float
) -> None:
    path = tmp_path / f"cut-{fraction}.ckpt"
    path.write_bytes(checkpoint_bytes[: int(fraction * len(checkpoint_bytes))])
    with pytest.raises(ValueError, match=rf"'{path}' is not a readable checkpoint"):
        ScalarRegressionTask.load_from_checkpoint(path)
