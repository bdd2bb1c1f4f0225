# mypy: untyped-calls-exclude=ase
"""Read-only, lazy access to the rows of ASE-LMDB files (``.aselmdb``), fairchem's format.

An ASE-LMDB file (written by :func:`ase.db.connect` with the ``ase-db-backends`` package) is
one LMDB environment whose keys are the row ids, each value a zlib-compressed ASE-JSON row,
beside three reserved keys: ``nextid``, ``deleted_ids`` and ``metadata``. The row ids are
therefore known from two small values, without reading any row: 1 to ``nextid - 1`` less the
deleted ones. Each process (``DataLoader`` worker, DDP rank) opens its own read-only
environment on first use, without a lock file; an open environment is never pickled.

The reading itself goes through :mod:`lmdb` and the decoder of ``ase-db-backends``, both of the
``aselmdb`` extra of ``matsci-data``.
"""

from __future__ import annotations

import importlib
import json
import os
import warnings
import weakref
import zlib
from pathlib import Path
from typing import Any, Final

import numpy as np
from ase.calculators.calculator import all_properties
from ase.db.core import ops, parse_selection
from ase.db.row import AtomsRow
from numpy.typing import NDArray

__all__ = ["ASELMDB_SUFFIX", "AseLmdbRows", "folder_atom_counts"]

ASELMDB_SUFFIX: Final = ".aselmdb"
_METADATA_NPZ: Final = "metadata.npz"
_INSTALL: Final = "pip install 'matsci-data[aselmdb]' (the ase-db-backends and lmdb packages)"


def _modules() -> tuple[Any, Any]:
    """``lmdb`` and ``ase_db_backends.aselmdb``, or an error that says how to install them."""
    try:
        return importlib.import_module("lmdb"), importlib.import_module("ase_db_backends.aselmdb")
    except ImportError as error:
        raise ImportError(f"reading ASE-LMDB files needs {_INSTALL}: {error}") from error


_OPEN: dict[tuple[int, int], list[Any]] = {}
"""Environments this process opened, by file (device, inode), with their number of readers:
LMDB allows one environment per file and process."""
_OPEN_PID: list[int] = [os.getpid()]


def _acquire(path: Path) -> tuple[Any, tuple[int, int]]:
    """The read-only environment of ``path`` in this process, shared by all its readers.

    LMDB forbids opening a file twice in one process, and an environment must not be used
    after ``fork``: a forked process (a ``DataLoader`` worker) closes its inherited copies,
    which leaves the parent's untouched, and opens its own. Each reader calls
    :func:`_release` when it is collected; the last one closes the environment.
    """
    lmdb, _ = _modules()
    if _OPEN_PID[0] != os.getpid():
        for inherited, _ in _OPEN.values():
            inherited.close()
        _OPEN.clear()
        _OPEN_PID[0] = os.getpid()
    try:
        stat = path.stat()
        key = (stat.st_dev, stat.st_ino)
        if key not in _OPEN:
            environment = lmdb.open(
                str(path), subdir=False, readonly=True, lock=False, readahead=False, meminit=False
            )
            _OPEN[key] = [environment, 0]
    except (OSError, lmdb.Error) as error:
        raise ValueError(
            f"{str(path)!r} is not a readable ASE-LMDB file ({type(error).__name__}: {error})"
        ) from error
    _OPEN[key][1] += 1
    return _OPEN[key][0], key


def _release(key: tuple[int, int], pid: int) -> None:
    """One reader of ``key`` fewer (in process ``pid``); close the environment after the last."""
    if pid != os.getpid() or pid != _OPEN_PID[0] or key not in _OPEN:
        return  # acquired by the parent of this forked process: not ours to count
    _OPEN[key][1] -= 1
    if _OPEN[key][1] <= 0:
        _OPEN.pop(key)[0].close()


class AseLmdbRows:
    """The rows of one ASE-LMDB file, read-only; the environment is opened per process.

    ``len(rows)`` and :meth:`row_id` need no row: the ids are 1 to ``nextid - 1`` less the
    deleted ids, which the file keeps as two values.

    Parameters
    ----------
    path : pathlib.Path
        An existing ``.aselmdb`` file.

    Raises
    ------
    ValueError
        If the file is not an LMDB environment (damaged, truncated, another format) or its
        ``nextid``/``deleted_ids`` cannot be decoded.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._env: Any = None
        self._pid: int | None = None
        nextid = self._value("nextid")
        deleted = self._value("deleted_ids")
        if nextid is None:
            nextid = 1
        if not isinstance(nextid, int) or nextid < 1:
            raise ValueError(f"{str(path)!r} is not an ASE-LMDB file: nextid is {nextid!r}")
        gone = np.unique(np.asarray(deleted if deleted is not None else [], dtype=np.int64))
        gone = gone[(gone >= 1) & (gone < nextid)]
        self._count = nextid - 1 - len(gone)
        # The p-th kept id (0-based) is p + 1 + (number of deleted ids before it); the j-th
        # deleted id d_j comes before it when d_j - j <= p + 1.
        self._gaps = gone - np.arange(len(gone), dtype=np.int64)

    def _environment(self) -> Any:
        """The read-only environment of this process, opened on first use."""
        pid = os.getpid()
        if self._env is None or self._pid != pid:
            self._env, key = _acquire(self.path)
            self._pid = pid
            weakref.finalize(self, _release, key, pid)
        return self._env

    def _value(self, key: str) -> Any:
        """The decoded value stored under ``key``, or ``None`` if there is none."""
        lmdb, aselmdb = _modules()
        environment = self._environment()
        try:
            with environment.begin(write=False) as transaction:
                raw = transaction.get(key.encode("ascii"))
            if raw is None:
                return None
            return aselmdb.decode_bytestream(raw, decompress=True, json_decode=True)
        except (lmdb.Error, zlib.error, ValueError, UnicodeDecodeError) as error:
            raise ValueError(
                f"{str(self.path)!r}: entry {key!r} cannot be read; the file is damaged "
                f"({type(error).__name__}: {error})"
            ) from error

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_env"] = None  # every process opens its own
        state["_pid"] = None
        return state

    def __len__(self) -> int:
        return self._count

    def row_id(self, position: int) -> int:
        """The id of the row at ``position`` (0 to ``len - 1``), found without reading rows."""
        return position + 1 + int(np.searchsorted(self._gaps, position + 1, side="right"))

    def ids(self) -> NDArray[np.int64]:
        """Every row id, in order."""
        kept = np.ones(self._count + len(self._gaps), dtype=bool)
        kept[self._gaps + np.arange(len(self._gaps)) - 1] = False
        return np.flatnonzero(kept).astype(np.int64) + 1

    def record(self, row_id: int) -> dict[str, Any]:
        """The stored dictionary of one row (numbers, positions, results, data, ...)."""
        record = self._value(str(row_id))
        if record is None:
            raise ValueError(f"{str(self.path)!r}: row id {row_id} is missing from the file")
        if not isinstance(record, dict) or "numbers" not in record:
            raise ValueError(f"{str(self.path)!r}: row id {row_id} holds no structure")
        return record

    def row(self, row_id: int) -> AtomsRow:
        """One row as an :class:`ase.db.row.AtomsRow`, the way ``ase.db`` returns it."""
        record = self.record(row_id)
        for name in all_properties:  # results as arrays, as ase-db-backends returns them
            if isinstance(record.get(name), list):
                record[name] = np.array(record[name])
        record["id"] = row_id
        return AtomsRow(record)

    def metadata(self) -> dict[str, Any]:
        """The database's metadata (ASE's ``db.metadata``): title, key descriptions, units."""
        value = self._value("metadata")
        return dict(value) if isinstance(value, dict) else {}

    def select(self, selection: str) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """Ids and atom counts of the rows an ASE selection (``"natoms<10,energy<0"``) picks.

        An ASE-LMDB file has no index: every row is read once, as ``ase.db`` would.
        """
        keys, comparisons = parse_selection(selection)
        chosen: list[tuple[int, int]] = []
        for position in range(self._count):
            row = self.row(self.row_id(position))
            if _matches(row, keys, comparisons):
                chosen.append((row.id, row.natoms))
        table = np.array(chosen, dtype=np.int64).reshape(-1, 2)
        return table[:, 0].copy(), table[:, 1].copy()

    def atom_counts(self) -> NDArray[np.int64]:
        """Atoms per row, in row order: one pass over the rows, in one read transaction.

        Each row is decompressed and parsed as plain JSON, without building its arrays (ASE's
        decoder would): ``numbers`` is ASE's ``{"__ndarray__": [shape, dtype, values]}`` or,
        in files written by older fairchem code, a list.
        """
        counts = np.empty(self._count, dtype=np.int64)
        with self._environment().begin(write=False) as transaction:
            for position in range(self._count):
                row_id = self.row_id(position)
                raw = transaction.get(str(row_id).encode("ascii"))
                try:
                    numbers = json.loads(zlib.decompress(raw))["numbers"]
                    if isinstance(numbers, dict):
                        counts[position] = int(numbers["__ndarray__"][0][0])
                    else:
                        counts[position] = len(numbers)
                except (TypeError, KeyError, IndexError, ValueError, zlib.error) as error:
                    raise ValueError(
                        f"{str(self.path)!r}: row id {row_id} cannot be read; the file is "
                        f"damaged or the row is missing ({type(error).__name__}: {error})"
                    ) from error
        return counts


def _matches(row: AtomsRow, keys: list[str], comparisons: list[tuple[Any, str, Any]]) -> bool:
    """Whether ``row`` passes a parsed ASE selection (as ASE's JSON back end decides)."""
    if any(key not in row for key in keys):
        return False
    for key, op, value in comparisons:
        if isinstance(key, int):  # a count of atoms of that atomic number
            found: Any = int(np.equal(row.get("numbers"), key).sum())
        else:
            found = row.get(key)
            if key == "pbc" and found is not None:
                found = "".join("FT"[int(periodic)] for periodic in found)
        if found is None or not ops[op](found, value):
            return False
    return True


_FOLDER_COUNTS: dict[tuple[str, int, int], dict[str, NDArray[np.int64]] | None] = {}


def folder_atom_counts(folder: Path) -> dict[str, NDArray[np.int64]] | None:
    """Atoms per row of each ``.aselmdb`` shard of ``folder``, from fairchem's ``metadata.npz``.

    fairchem keeps beside its shards a ``metadata.npz`` whose ``natoms`` lists the atoms of every
    row of every shard of the folder, shards sorted by name. Returns ``{shard path: counts}``,
    or ``None`` when the folder has no such file, or it does not match the shards (a warning
    then says so).
    """
    metadata = folder / _METADATA_NPZ
    try:
        stat = metadata.stat()
    except OSError:
        return None
    key = (str(metadata.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _FOLDER_COUNTS:
        _FOLDER_COUNTS[key] = _read_folder_counts(folder, metadata)
    return _FOLDER_COUNTS[key]


def _read_folder_counts(folder: Path, metadata: Path) -> dict[str, NDArray[np.int64]] | None:
    try:
        with np.load(metadata, allow_pickle=False) as archive:
            natoms = np.asarray(archive["natoms"])
    except (OSError, ValueError, KeyError, EOFError) as error:
        message = f"{str(metadata)!r} has no readable 'natoms' ({error}); ignored"
        warnings.warn(message, stacklevel=3)
        return None
    shards = sorted(path for path in folder.iterdir() if path.suffix == ASELMDB_SUFFIX)
    sizes = [len(AseLmdbRows(shard)) for shard in shards]
    if natoms.ndim != 1 or natoms.dtype.kind not in "iu" or len(natoms) != sum(sizes):
        warnings.warn(
            f"{str(metadata)!r}: 'natoms' ({natoms.dtype}, shape {natoms.shape}) does not match "
            f"the {sum(sizes)} rows of the {len(shards)} shards of the folder; ignored",
            stacklevel=3,
        )
        return None
    bounds = np.cumsum([0, *sizes])
    return {
        str(shard.resolve()): natoms[start:stop].astype(np.int64)
        for shard, start, stop in zip(shards, bounds[:-1], bounds[1:], strict=True)
    }
