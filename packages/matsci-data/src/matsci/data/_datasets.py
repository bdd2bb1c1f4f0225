# mypy: untyped-calls-exclude=ase
"""Indexed datasets of ASE structures: ASE databases and extxyz files.

Both read one structure per item, convert it with :func:`~matsci.data.atoms_to_data` and apply
an optional ``pre_transform`` then an optional ``transform``; nothing is loaded up front but the
index (database row ids or the byte offsets of the frames in a file), unless ``in_memory`` asks
to read every structure once (through ``pre_transform``) and keep it. Both never write to the
file they read.
"""

from __future__ import annotations

import copy
import io
import operator
import os
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final, SupportsIndex, TypeAlias

import ase.db
import ase.io
from ase import Atoms
from ase.io.extxyz import key_val_str_to_dict
from torch.utils.data import Dataset
from torch_geometric.data import Data
from torch_geometric.transforms import BaseTransform

from matsci.contract import keys as K
from matsci.data._convert import atoms_to_data

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
    ) -> None:
        self.path = path
        self.transform = transform
        self.pre_transform = pre_transform
        self.in_memory = in_memory
        self._requested = None if keys is None else tuple(keys)
        self._available: tuple[str, ...] = ()
        self._held: list[Data] | None = None
        if isinstance(keys, str):
            raise TypeError(
                f"{type(self).__name__}(keys={keys!r}): keys is a sequence of key names, "
                f"e.g. [{keys!r}]"
            )

    def _finish_init(self) -> None:
        """Check the keys on the first structure, then read them all if ``in_memory``."""
        self._available = self._check_keys()
        if self.in_memory:
            self._held = [self._prepared(position) for position in range(len(self))]

    def _check_keys(self) -> tuple[str, ...]:
        """Convert the first structure: fail now on a missing key; return its targets."""
        if len(self) == 0:
            return ()
        data = self._convert(0, keys=None)
        available = tuple(sorted(key for key in data.keys() if key not in _NOT_TARGETS))  # noqa: SIM118
        if self._requested is not None:
            self._convert(0, keys=self._requested)
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

    @property
    def keys(self) -> tuple[str, ...]:
        """Targets each item holds: the requested keys, or else :attr:`available_keys`."""
        return self._requested if self._requested is not None else self.available_keys

    @property
    def available_keys(self) -> tuple[str, ...]:
        """Sorted targets of the first structure (energy, force, stress, info, array names)."""
        return self._available

    def _convert(self, position: int, *, keys: Sequence[str] | None) -> Data:
        atoms, structure_id = self._read(position)
        try:
            return atoms_to_data(atoms, keys=keys, index=structure_id)
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


def _checked_file(path: str | os.PathLike[str], caller: str) -> Path:
    file = Path(path)
    if not file.is_file():
        what = "is a directory, not a file" if file.is_dir() else "does not exist"
        raise FileNotFoundError(f"{caller}: {str(file)!r} {what}")
    return file


class AseDbDataset(_AtomsDataset):
    """Structures of an ASE database (:mod:`ase.db`), one ``Data`` per row.

    A SQLite file (``.db``) is opened read-only (``file:...?mode=ro``), so reading never
    changes it; other ASE back ends (``.json``, ``postgresql://...``) go through
    :func:`ase.db.connect`. The row ids are read once; rows are read one per item. Each
    process connects on its first item, so the dataset works with ``DataLoader`` workers.
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
    pre_transform : callable, optional
        Applied to each ``Data`` after conversion; with ``in_memory``, once per structure.
        It must be deterministic, e.g. a
        :class:`~matsci.transforms.PeriodicRadiusGraph`.
    in_memory : bool
        Read, convert and ``pre_transform`` every structure once, when the dataset is made,
        and keep them; items then skip the database. Holds the whole selection in memory.
        Transforms must not change tensors in place (PyG's rule): items share them.
    selection : str, optional
        An ASE selection (``"natoms<10,energy<0"``) choosing the rows.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
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
    >>> len(dataset), dataset.available_keys
    (1, ('energy_per_atom',))
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
    ) -> None:
        text = os.fspath(path)
        self._is_url = "://" in text
        if not self._is_url:
            text = str(_checked_file(text, "AseDbDataset"))
        super().__init__(text, keys, transform, pre_transform, in_memory)
        self.selection = selection
        self._db: Any = None
        self._pid: int | None = None
        try:
            self._ids = [row.id for row in self._select(["id"])]
        except sqlite3.Error as error:
            raise ValueError(
                f"AseDbDataset: {text!r} is not a readable ASE database ({error})"
            ) from error
        self._finish_init()

    def _database(self) -> Any:
        """The connection of this process, made on first use (workers make their own)."""
        pid = os.getpid()
        if self._db is None or self._pid != pid:
            if self._is_url or Path(self.path).suffix != ".db":
                self._db = ase.db.connect(self.path, use_lock_file=False)
            else:
                uri = Path(self.path).resolve().as_uri() + "?mode=ro"
                database = ase.db.connect(self.path, type="db", use_lock_file=False)
                # Every query goes through one read-only connection held for this process.
                database._connect = lambda: sqlite3.connect(uri, uri=True, timeout=20)
                self._db = database.__enter__()
            self._pid = pid
        return self._db

    def _select(self, columns: list[str]) -> list[Any]:
        database = self._database()
        if self._is_url or Path(self.path).suffix != ".db":
            return list(database.select(self.selection, include_data=False))
        return list(database.select(self.selection, include_data=False, columns=columns))

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_db"] = None
        state["_pid"] = None
        return state

    def __len__(self) -> int:
        return len(self._ids)

    def _name(self, structure_id: int) -> str:
        return f"row id {structure_id}"

    def _read(self, position: int) -> tuple[Atoms, int]:
        row_id = self._ids[position]
        try:
            row = self._database().get(id=row_id)
        except sqlite3.Error as error:  # a damaged file: malformed pages, undecodable text
            raise ValueError(
                f"AseDbDataset({self.path!r}): row id {row_id} cannot be read; the database is "
                f"damaged ({type(error).__name__}: {error})"
            ) from error
        atoms = row.toatoms()
        atoms.info.update(row.key_value_pairs)
        for name, value in row.get("data", {}).items():
            atoms.info.setdefault(name, value)
        return atoms, row_id

    def column(self, name: str) -> list[Any]:
        """Values of one key-value column, one per structure (``None`` where a row lacks it).

        Reads only the rows' key-value pairs, not their structures.

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
        rows = {row.id: row for row in self._select(["id", "key_value_pairs"])}
        return [rows[row_id].key_value_pairs.get(name) for row_id in self._ids]


class ExtxyzDataset(_AtomsDataset):
    """Frames of an extended XYZ file, one ``Data`` per frame.

    The file is scanned once for the byte offset of each frame; each item then seeks to its
    frame and parses only that one with :func:`ase.io.read`. The file is opened read-only
    for every item, so the dataset works with ``DataLoader`` workers.

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
    >>> frames = [bulk("Cu"), bulk("Al")]
    >>> for frame, energy in zip(frames, [-0.1, -0.2]):
    ...     frame.info["energy"] = energy
    >>> ase.io.write(path, frames)
    >>> dataset = ExtxyzDataset(path, keys=["energy"])
    >>> len(dataset), dataset[1].energy
    (2, tensor([-0.2000]))
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        keys: Sequence[str] | None = None,
        transform: Transform | None = None,
        *,
        pre_transform: Transform | None = None,
        in_memory: bool = False,
    ) -> None:
        path = str(_checked_file(path, "ExtxyzDataset"))
        super().__init__(path, keys, transform, pre_transform, in_memory)
        self._offsets, self._end = self._scan()
        self._finish_init()

    def _scan(self) -> tuple[list[int], int]:
        """Byte offsets of the frames, and the file's size."""
        offsets: list[int] = []
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
            end = file.tell()
        if not offsets:
            raise ValueError(f"ExtxyzDataset: {self.path!r} holds no frames")
        return offsets, end

    def __len__(self) -> int:
        return len(self._offsets)

    def _name(self, structure_id: int) -> str:
        return f"frame {structure_id}"

    def _frame_text(self, position: int) -> str:
        start = self._offsets[position]
        stop = self._offsets[position + 1] if position + 1 < len(self._offsets) else self._end
        with open(self.path, "rb") as file:
            file.seek(start)
            return file.read(stop - start).decode()

    def _read(self, position: int) -> tuple[Atoms, int]:
        try:
            atoms = ase.io.read(io.StringIO(self._frame_text(position)), format="extxyz")
        except (ValueError, KeyError, IndexError, OSError) as error:
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
            for offset in self._offsets:
                file.seek(offset)
                file.readline()
                comment = file.readline().decode()
                values.append(key_val_str_to_dict(comment).get(name))
        return values
