"""What the indexed datasets of ASE structures share: item access, conversion, transforms, keys.

:class:`~matsci.data.AseDbDataset` (ASE databases: SQLite, ASE-LMDB, ...) and
:class:`~matsci.data.ExtxyzDataset` (extxyz files) both read one structure per item, convert it
with :func:`~matsci.data.atoms_to_data` and apply an optional ``pre_transform`` then an
optional ``transform``; nothing is loaded up front but the index (database row ids or the byte
offsets of the frames in a file), unless ``in_memory`` asks to read every structure once
(through ``pre_transform``) and keep it. Building the index costs the same at any size for
databases (no row is read), and once per file for extxyz, whose index is kept in a small cache
file (see :mod:`matsci.data._index_cache`). Neither ever writes to the file it reads.
"""

from __future__ import annotations

import copy
import operator
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Final, SupportsIndex, TypeAlias

import numpy as np
from ase import Atoms
from numpy.typing import NDArray
from torch.utils.data import Dataset
from torch_geometric.data import Data
from torch_geometric.transforms import BaseTransform

from matsci.contract import keys as K
from matsci.data._convert import atoms_to_data

__all__ = ["Transform"]

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
