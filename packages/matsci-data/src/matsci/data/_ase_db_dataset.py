# mypy: untyped-calls-exclude=ase
"""An indexed dataset of the rows of an ASE database: SQLite, ASE-LMDB, JSON or a URL.

The row ids are found without reading any row (and the atoms per row, where the file keeps
them), so building the index costs the same at any size; each item then reads one row. The
database is only read, never written (a SQLite file is opened ``mode=ro``). What every dataset
of structures shares (conversion, transforms, ``in_memory``, ``keys``) lives in
:mod:`matsci.data._atoms_dataset`.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import ase.db
import numpy as np
from ase import Atoms
from numpy.typing import NDArray

from matsci.data._aselmdb import ASELMDB_SUFFIX, AseLmdbRows, folder_atom_counts
from matsci.data._atoms_dataset import Transform, _AtomsDataset, _checked_file
from matsci.data._index_cache import load_index, store_index

__all__ = ["AseDbDataset"]


def _read_only_sqlite(file: Path) -> sqlite3.Connection:
    """A connection that cannot change the file (``mode=ro``), whatever ASE would do."""
    return sqlite3.connect(file.resolve().as_uri() + "?mode=ro", uri=True, timeout=20)


def _sqlite_index(file: Path) -> tuple[NDArray[np.int64], NDArray[np.int64], dict[str, Any]]:
    """Row ids, atoms per row and metadata of an ASE SQLite file: no structure is read."""
    connection = _read_only_sqlite(file)
    try:
        tables = {name for (name,) in connection.execute("SELECT name FROM sqlite_master")}
        if "systems" not in tables:
            raise sqlite3.DatabaseError(f"no 'systems' table; tables: {sorted(tables)}")
        table = np.array(
            connection.execute("SELECT id, natoms FROM systems ORDER BY id").fetchall(),
            dtype=np.int64,
        ).reshape(-1, 2)
        metadata: dict[str, Any] = {}
        if "information" in tables:
            found = connection.execute(
                "SELECT value FROM information WHERE name='metadata'"
            ).fetchone()
            metadata = json.loads(found[0]) if found else {}
    finally:
        connection.close()
    return table[:, 0].copy(), table[:, 1].copy(), metadata


class AseDbDataset(_AtomsDataset):
    """Structures of an ASE database (:mod:`ase.db`), one ``Data`` per row.

    The row ids are found without reading rows: from the ``id`` and ``natoms`` columns of a
    SQLite file (``.db``, opened read-only), from the two values an ASE-LMDB file
    (``.aselmdb``, fairchem's format; the ``aselmdb`` extra) keeps for them; other ASE back
    ends (``.json``, ``postgresql://...``) go through :func:`ase.db.connect`. Rows are read
    one per item. Each process connects on its first item (an ASE-LMDB file opens a read-only
    environment per process), so the dataset works with ``DataLoader`` workers and DDP ranks.
    Row ``key_value_pairs`` and numeric ``data`` entries become graph-level targets.

    Parameters
    ----------
    path : str or os.PathLike
        Database file, or a URL ASE supports.
    keys : sequence of str, optional
        Targets every item holds (see :func:`~matsci.data.atoms_to_data`); ``None`` keeps all.
    transform : callable, optional
        Applied to each ``Data`` on every access, after ``pre_transform``: random transforms
        (:class:`~matsci.transforms.NoisyPositions`) belong here.
    selection : str, optional
        An ASE selection (``"natoms<10,energy<0"``) choosing the rows. An ASE-LMDB file has
        no index: a selection reads every row once.
    pre_transform : callable, optional
        Applied to each ``Data`` after conversion; with ``in_memory``, once per structure.
        It must be deterministic, e.g. a
        :class:`~matsci.transforms.PeriodicRadiusGraph`.
    in_memory : bool
        Read, convert and ``pre_transform`` every structure once, when the dataset is made,
        and keep them; items then skip the database. Holds the whole selection in memory.
        Transforms must not change tensors in place (PyG's rule): items share them.
    key_map : mapping of str to str, optional
        Targets stored under other names, ``{target: stored name}`` such as
        ``{"energy": "ref_energy"}``, looked up in each row's calculator results, key-value
        pairs, ``data`` and per-atom arrays (see :func:`~matsci.data.atoms_to_data`).

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ImportError
        If the file is an ASE-LMDB file and ``ase-db-backends`` is not installed.
    ValueError
        If the file is not an ASE database, or the first row lacks a requested key; reading a
        row that lacks one names the row id and the key.

    Examples
    --------
    >>> import tempfile, pathlib, ase.db
    >>> from ase.build import bulk
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "tiny.db"
    >>> with ase.db.connect(path) as db:
    ...     _ = db.write(bulk("Cu"), energy_per_atom=-0.1)
    >>> dataset = AseDbDataset(path)
    >>> len(dataset), dataset.available_keys, dataset.atom_counts().tolist()
    (1, ('energy_per_atom',), [1])
    >>> dataset[0].structure_id
    tensor([1])
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        keys: Sequence[str] | None = None,
        transform: Transform | None = None,
        selection: str | None = None,
        *,
        pre_transform: Transform | None = None,
        in_memory: bool = False,
        key_map: Mapping[str, str] | None = None,
    ) -> None:
        text = os.fspath(path)
        is_url = "://" in text
        if not is_url:
            text = str(_checked_file(text, "AseDbDataset"))
        super().__init__(text, keys, transform, pre_transform, in_memory, key_map)
        self.selection = selection
        suffix = "" if is_url else Path(text).suffix.lower()
        backends = {ASELMDB_SUFFIX: "lmdb", ".db": "sqlite"}
        self._backend = backends.get(suffix, "ase")
        self._db: Any = None
        self._pid: int | None = None
        self._lmdb: AseLmdbRows | None = None
        self._ids: NDArray[np.int64] | None = None  # None: every row of an ASE-LMDB file
        self._metadata: dict[str, Any] | None = None
        try:
            self._index()
        except (sqlite3.Error, OSError, ValueError, KeyError) as error:
            if isinstance(error, ValueError) and repr(text) in str(error):
                raise  # already names the file
            raise ValueError(
                f"AseDbDataset: {text!r} is not a readable ASE database "
                f"({type(error).__name__}: {error})"
            ) from error
        self._finish_init()

    def _index(self) -> None:
        """Find the row ids (and atom counts where they come for free), reading no row."""
        if self._backend == "sqlite":
            ids, natoms, self._metadata = _sqlite_index(Path(self.path))
            if self.selection is not None:
                database = self._database()
                chosen = database.select(self.selection, include_data=False, columns=["id"])
                selected = np.array([row.id for row in chosen], dtype=np.int64)
                ids, natoms = selected, natoms[np.searchsorted(ids, selected)]
            self._ids, self._atom_counts = ids, natoms
            return
        if self._backend == "lmdb":
            self._lmdb = AseLmdbRows(Path(self.path))
            if self.selection is not None:
                self._ids, self._atom_counts = self._lmdb.select(self.selection)
            return
        rows = [
            (row.id, row.natoms)
            for row in self._database().select(self.selection, include_data=False)
        ]
        table = np.array(rows, dtype=np.int64).reshape(-1, 2)
        self._ids = table[:, 0].copy()
        self._atom_counts = table[:, 1].copy()

    def _database(self) -> Any:
        """The ASE connection of this process, made on first use (workers make their own)."""
        pid = os.getpid()
        if self._db is None or self._pid != pid:
            if self._backend == "sqlite":
                # One connection held for this process (ASE's context manager); the schema was
                # checked read-only first, so ASE only reads.
                database = ase.db.connect(self.path, type="db", use_lock_file=False)
                self._db = database.__enter__()
            else:
                self._db = ase.db.connect(self.path, use_lock_file=False)
            self._pid = pid
        return self._db

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_db"] = None
        state["_pid"] = None
        return state

    def __len__(self) -> int:
        if self._ids is None:
            assert self._lmdb is not None
            return len(self._lmdb)
        return len(self._ids)

    def _row_id(self, position: int) -> int:
        if self._ids is None:
            assert self._lmdb is not None
            return self._lmdb.row_id(position)
        return int(self._ids[position])

    def _name(self, structure_id: int) -> str:
        return f"row id {structure_id}"

    def _row(self, row_id: int) -> Any:
        if self._lmdb is not None:
            return self._lmdb.row(row_id)
        try:
            return self._database().get(id=row_id)
        except sqlite3.Error as error:  # a damaged file: malformed pages, undecodable text
            raise ValueError(
                f"AseDbDataset({self.path!r}): row id {row_id} cannot be read; the database is "
                f"damaged ({type(error).__name__}: {error})"
            ) from error

    def _read(self, position: int) -> tuple[Atoms, int]:
        row_id = self._row_id(position)
        row = self._row(row_id)
        atoms = row.toatoms()
        atoms.info.update(row.key_value_pairs)
        data = row.data
        for name, value in (data if isinstance(data, dict) else {}).items():
            atoms.info.setdefault(name, value)
        return atoms, row_id

    @property
    def metadata(self) -> dict[str, Any]:
        """The database's metadata (ASE's ``db.metadata``): title, key descriptions, units."""
        if self._metadata is None:
            if self._lmdb is not None:
                self._metadata = self._lmdb.metadata()
            else:
                self._metadata = dict(self._database().metadata)
        return self._metadata

    def _count_atoms(self) -> NDArray[np.int64]:
        if self._atom_counts is not None:
            return self._atom_counts
        if self._lmdb is not None:
            return _lmdb_atom_counts(Path(self.path), self._lmdb)
        return np.array(  # pragma: no cover - set by the index for every other back end
            [len(self._row(self._row_id(i)).numbers) for i in range(len(self))], dtype=np.int64
        )

    def column(self, name: str) -> list[Any]:
        """Values of one key-value column, one per structure (``None`` where a row lacks it).

        Reads only the rows' key-value pairs, not their structures (an ASE-LMDB file keeps
        no columns: there, every row is read).

        Examples
        --------
        >>> import tempfile, pathlib, ase.db
        >>> from ase.build import bulk
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "split.db"
        >>> with ase.db.connect(path) as db:
        ...     _ = db.write(bulk("Cu"), split="train")
        ...     _ = db.write(bulk("Al"), split="test")
        >>> AseDbDataset(path).column("split")
        ['train', 'test']
        """
        if self._lmdb is not None:
            rows = self._lmdb
            return [
                (rows.record(self._row_id(i)).get("key_value_pairs") or {}).get(name)
                for i in range(len(self))
            ]
        database = self._database()
        if self._backend == "sqlite":
            selected = database.select(
                self.selection, include_data=False, columns=["id", "key_value_pairs"]
            )
        else:
            selected = database.select(self.selection, include_data=False)
        pairs = {row.id: row.key_value_pairs for row in selected}
        return [pairs[self._row_id(i)].get(name) for i in range(len(self))]


def _lmdb_atom_counts(path: Path, rows: AseLmdbRows) -> NDArray[np.int64]:
    """Atoms per row of an ASE-LMDB file: fairchem's ``metadata.npz``, a cache, or one pass."""
    from_metadata = folder_atom_counts(path.parent)
    if from_metadata is not None and str(path.resolve()) in from_metadata:
        return from_metadata[str(path.resolve())]
    cached = load_index(path, "natoms")
    if cached is not None and cached.get("natoms", np.empty(0)).shape == (len(rows),):
        return cached["natoms"]
    counts = rows.atom_counts()
    store_index(path, "natoms", {"natoms": counts})
    return counts
