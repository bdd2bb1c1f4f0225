# mypy: untyped-calls-exclude=ase
"""Indexed datasets of ASE structures: ASE databases (SQLite, ASE-LMDB, ...) and extxyz files.

Both read one structure per item, convert it with :func:`~matsci.data.atoms_to_data` and apply
an optional ``pre_transform`` then an optional ``transform``; nothing is loaded up front but the
index (database row ids or the byte offsets of the frames in a file), unless ``in_memory`` asks
to read every structure once (through ``pre_transform``) and keep it. Building the index costs
the same at any size for databases (no row is read), and once per file for extxyz, whose index
is kept in a small cache file (see :mod:`matsci.data._index_cache`). Neither ever writes to the
file it reads.
"""

from __future__ import annotations

import copy
import io
import json
import operator
import os
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, SupportsIndex, TypeAlias

import ase.db
import ase.io
import numpy as np
from ase import Atoms
from ase.io.extxyz import key_val_str_to_dict
from numpy.typing import NDArray
from torch.utils.data import Dataset
from torch_geometric.data import Data
from torch_geometric.transforms import BaseTransform

from matsci.contract import keys as K
from matsci.data._aselmdb import ASELMDB_SUFFIX, AseLmdbRows, folder_atom_counts
from matsci.data._convert import atoms_to_data
from matsci.data._index_cache import load_index, store_index

__all__ = ["AseDbDataset", "ExtxyzDataset"]

Transform: TypeAlias = BaseTransform | Callable[[Data], Data]
"""A callable on one ``Data``: a PyG transform (``Compose``, ...) or a function."""

_NOT_TARGETS: Final = K.STRUCTURE_KEYS


class _AtomsDataset(Dataset[Data]):
    """Shared item access: index checks, conversion, transforms, the cache, ``keys``."""

    def __init__(
        self,
        path: str,
        keys: Sequence[str] | None,
        transform: Transform | None,
        pre_transform: Transform | None,
        in_memory: bool,
        key_map: Mapping[str, str] | None,
    ) -> None:
        self.path = path
        self.transform = transform
        self.pre_transform = pre_transform
        self.in_memory = in_memory
        if isinstance(keys, str):
            raise TypeError(
                f"{type(self).__name__}(keys={keys!r}): keys is a sequence of key names, "
                f"e.g. [{keys!r}]"
            )
        self._requested = None if keys is None else tuple(keys)
        self.key_map = _checked_key_map(key_map, type(self).__name__)
        self._available: tuple[str, ...] = ()
        self._held: list[Data] | None = None
        self._atom_counts: NDArray[np.int64] | None = None

    def _finish_init(self) -> None:
        """Check the keys on the first structure, then read them all if ``in_memory``."""
        self._available = self._check_keys()
        if self.in_memory:
            self._held = [self._prepared(position) for position in range(len(self))]

    def _check_keys(self) -> tuple[str, ...]:
        """Convert the first structure: fail now on a missing key; return its targets."""
        if len(self) == 0:
            return ()
        atoms, structure_id = self._read(0)
        data = self._to_data(atoms, structure_id, keys=None)
        available = tuple(sorted(key for key in data.keys() if key not in _NOT_TARGETS))  # noqa: SIM118
        if self._requested is not None:
            self._to_data(atoms, structure_id, keys=self._requested)
        return available

    # Implemented by subclasses.
    def __len__(self) -> int:
        raise NotImplementedError

    def _read(self, position: int) -> tuple[Atoms, int]:
        """The structure at ``position`` and its structure id."""
        raise NotImplementedError

    def _name(self, structure_id: int) -> str:
        """How error messages name one structure."""
        raise NotImplementedError

    def _count_atoms(self) -> NDArray[np.int64]:
        """Atoms per structure, in item order, however the subclass finds them cheapest."""
        raise NotImplementedError

    @property
    def paths(self) -> tuple[str, ...]:
        """The file read, as a one-element tuple (a :class:`ShardedDataset` has several)."""
        return (self.path,)

    @property
    def keys(self) -> tuple[str, ...]:
        """Targets each item holds: the requested keys, or else :attr:`available_keys`."""
        return self._requested if self._requested is not None else self.available_keys

    @property
    def available_keys(self) -> tuple[str, ...]:
        """Sorted targets of the first structure (energy, force, stress, info, array names)."""
        return self._available

    def atom_counts(self) -> NDArray[np.int64]:
        """Atoms of each structure, in item order: ``int64`` [len(self)].

        Found without reading structures where the file keeps them (an SQLite ``natoms``
        column, fairchem's ``metadata.npz``, the extxyz index), else with one pass whose
        result is cached; computed once per dataset.
        """
        if self._atom_counts is None:
            counts = self._count_atoms()
            counts.flags.writeable = False
            self._atom_counts = counts
        return self._atom_counts

    def _convert(self, position: int, *, keys: Sequence[str] | None) -> Data:
        atoms, structure_id = self._read(position)
        return self._to_data(atoms, structure_id, keys=keys)

    def _to_data(self, atoms: Atoms, structure_id: int, *, keys: Sequence[str] | None) -> Data:
        try:
            return atoms_to_data(atoms, keys=keys, index=structure_id, key_map=self.key_map)
        except ValueError as error:
            raise ValueError(
                f"{type(self).__name__}({self.path!r}), {self._name(structure_id)}: {error}"
            ) from error

    def _prepared(self, position: int) -> Data:
        """The structure at ``position``, converted and through ``pre_transform``."""
        data = self._convert(position, keys=self._requested)
        return self.pre_transform(data) if self.pre_transform is not None else data

    def __getitem__(self, index: SupportsIndex) -> Data:
        position = operator.index(index)
        length = len(self)
        if not -length <= position < length:
            raise IndexError(
                f"{type(self).__name__}: index {position} out of range for {length} structures"
            )
        position %= length
        if self._held is None:
            data = self._prepared(position)
        else:
            # A shallow copy: the transform may set attributes without touching the held one.
            data = self._held[position]
            if self.transform is not None:
                data = copy.copy(data)
        return self.transform(data) if self.transform is not None else data

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path!r}, structures={len(self)}, keys={self.keys})"


def _checked_key_map(key_map: Mapping[str, str] | None, caller: str) -> dict[str, str] | None:
    """``key_map`` as a plain dict of names, or a ``TypeError`` saying what is expected."""
    if key_map is None:
        return None
    if not isinstance(key_map, Mapping) or not all(
        isinstance(target, str) and isinstance(stored, str) for target, stored in key_map.items()
    ):
        raise TypeError(
            f"{caller}(key_map={key_map!r}): key_map maps target names to stored names, "
            "e.g. {'energy': 'total_energy'}"
        )
    return dict(key_map)


def _checked_file(path: str | os.PathLike[str], caller: str) -> Path:
    file = Path(path)
    if not file.is_file():
        what = "is a directory, not a file" if file.is_dir() else "does not exist"
        raise FileNotFoundError(f"{caller}: {str(file)!r} {what}")
    return file


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


class ExtxyzDataset(_AtomsDataset):
    """Frames of an extended XYZ file, one ``Data`` per frame.

    The file is scanned once for the byte offset and atom count of each frame; each item then
    seeks to its frame and parses only that one with :func:`ase.io.read`. The index is kept in
    a small cache file, ``<file>.matsci-index.npz`` beside the data (or, where that folder is
    not writable, under ``$XDG_CACHE_HOME/matsci``), so later opens cost the same at any file
    size; it is rebuilt when the file changes (size, modification time, first and last bytes)
    and never trusted when damaged. The data file is opened read-only for every item, so the
    dataset works with ``DataLoader`` workers.

    Parameters
    ----------
    path : str or os.PathLike
        The ``.xyz`` / ``.extxyz`` file.
    keys : sequence of str, optional
        Targets every item holds (see :func:`~matsci.data.atoms_to_data`); ``None`` keeps all.
    transform : callable, optional
        Applied to each ``Data`` on every access, after ``pre_transform``: random transforms
        (:class:`~matsci.transforms.NoisyPositions`) belong here.
    pre_transform : callable, optional
        Applied to each ``Data`` after conversion; with ``in_memory``, once per frame.
        It must be deterministic, e.g. a
        :class:`~matsci.transforms.PeriodicRadiusGraph`.
    in_memory : bool
        Read, convert and ``pre_transform`` every frame once, when the dataset is made, and
        keep them; items then skip the file. Holds the whole file in memory. Transforms must
        not change tensors in place (PyG's rule): items share them.
    key_map : mapping of str to str, optional
        Targets stored under other names, ``{target: stored name}`` such as
        ``{"energy": "REF_energy"}``, looked up in each frame's calculator results, comment
        line and per-atom columns (see :func:`~matsci.data.atoms_to_data`).
    index_cache : bool
        Keep the index in a cache file and reuse it (the default); ``False`` scans the file at
        every open and writes nothing.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        If the file is not in (ext)xyz format, is truncated, or its first frame lacks a
        requested key; reading a frame that lacks one names the frame and the key.

    Examples
    --------
    >>> import tempfile, pathlib, ase.io
    >>> from ase.build import bulk
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "tiny.extxyz"
    >>> frames = [bulk("Cu"), bulk("Al", cubic=True)]
    >>> for frame, energy in zip(frames, [-0.1, -0.2]):
    ...     frame.info["energy"] = energy
    >>> ase.io.write(path, frames)
    >>> dataset = ExtxyzDataset(path, keys=["energy"])
    >>> len(dataset), dataset[1].energy, dataset.atom_counts().tolist()
    (2, tensor([-0.2000]), [1, 4])
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        keys: Sequence[str] | None = None,
        transform: Transform | None = None,
        *,
        pre_transform: Transform | None = None,
        in_memory: bool = False,
        key_map: Mapping[str, str] | None = None,
        index_cache: bool = True,
    ) -> None:
        path = str(_checked_file(path, "ExtxyzDataset"))
        super().__init__(path, keys, transform, pre_transform, in_memory, key_map)
        self.index_cache = index_cache
        self._offsets, self._atom_counts, self._end = self._index()
        self._finish_init()

    def _index(self) -> tuple[NDArray[np.int64], NDArray[np.int64], int]:
        """Byte offsets and atom counts of the frames, and the file's size: cached or scanned."""
        file = Path(self.path)
        if self.index_cache:
            cached = load_index(file, "index")
            if cached is not None and _valid_index(cached, file.stat().st_size):
                return cached["offsets"], cached["natoms"], int(cached["end"][0])
        offsets, natoms, end = self._scan()
        if self.index_cache:
            arrays = {"offsets": offsets, "natoms": natoms, "end": np.array([end], np.int64)}
            store_index(file, "index", arrays)
        return offsets, natoms, end

    def _scan(self) -> tuple[NDArray[np.int64], NDArray[np.int64], int]:
        """Byte offsets and atom counts of the frames, and the file's size: one pass."""
        offsets: list[int] = []
        counts: list[int] = []
        with open(self.path, "rb") as file:
            line_number = 0
            while True:
                offset = file.tell()
                line = file.readline()
                if not line:
                    break
                line_number += 1
                text = line.strip()
                if not text:
                    continue
                try:
                    count = int(text)
                except ValueError:
                    count = -1
                if count < 0:
                    raise ValueError(
                        f"ExtxyzDataset: {self.path!r} is not an extxyz file: line "
                        f"{line_number} should hold a number of atoms, found {text[:40]!r}"
                    )
                for _ in range(count + 1):
                    if not file.readline():
                        raise ValueError(
                            f"ExtxyzDataset: {self.path!r} is truncated: frame {len(offsets)} "
                            f"(line {line_number}) announces {count} atoms but the file ends"
                        )
                line_number += count + 1
                offsets.append(offset)
                counts.append(count)
            end = file.tell()
        if not offsets:
            raise ValueError(f"ExtxyzDataset: {self.path!r} holds no frames")
        return np.array(offsets, dtype=np.int64), np.array(counts, dtype=np.int64), end

    def __len__(self) -> int:
        return len(self._offsets)

    def _name(self, structure_id: int) -> str:
        return f"frame {structure_id}"

    def _count_atoms(self) -> NDArray[np.int64]:
        return self._atom_counts if self._atom_counts is not None else self._index()[1]

    def _frame_text(self, position: int) -> str:
        start = int(self._offsets[position])
        stop = int(self._offsets[position + 1]) if position + 1 < len(self) else self._end
        with open(self.path, "rb") as file:
            file.seek(start)
            return file.read(stop - start).decode()

    def _read(self, position: int) -> tuple[Atoms, int]:
        try:
            atoms = ase.io.read(io.StringIO(self._frame_text(position)), format="extxyz")
        except (ValueError, KeyError, IndexError, OSError, UnicodeDecodeError) as error:
            raise ValueError(
                f"ExtxyzDataset({self.path!r}): frame {position} cannot be parsed: {error}"
            ) from error
        assert isinstance(atoms, Atoms)
        return atoms, position

    def column(self, name: str) -> list[Any]:
        """Values of one comment-line key, one per frame (``None`` where a frame lacks it).

        Reads only the frames' comment lines, not their atoms.

        Examples
        --------
        >>> import tempfile, pathlib, ase.io
        >>> from ase.build import bulk
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "split.extxyz"
        >>> frames = [bulk("Cu"), bulk("Al")]
        >>> frames[0].info["split"], frames[1].info["split"] = "train", "val"
        >>> ase.io.write(path, frames)
        >>> ExtxyzDataset(path).column("split")
        ['train', 'val']
        """
        values: list[Any] = []
        with open(self.path, "rb") as file:
            for offset in self._offsets.tolist():
                file.seek(offset)
                file.readline()
                comment = file.readline().decode()
                values.append(key_val_str_to_dict(comment).get(name))
        return values


def _valid_index(arrays: Mapping[str, NDArray[np.int64]], size: int) -> bool:
    """Whether a cached extxyz index is whole and consistent with a file of ``size`` bytes."""
    offsets, natoms, end = (arrays.get(name) for name in ("offsets", "natoms", "end"))
    if offsets is None or natoms is None or end is None:
        return False
    return bool(
        offsets.ndim == 1
        and len(offsets) > 0
        and natoms.shape == offsets.shape
        and end.shape == (1,)
        and end[0] == size
        and offsets[0] >= 0
        and offsets[-1] < size
        and np.all(np.diff(offsets) > 0)
        and np.all(natoms >= 0)
    )
