"""Datasets as the field stores them: one file, a folder of shards, or a list of either.

:func:`open_dataset` turns a source into one dataset: a plain file gives an
:class:`~matsci.data.AseDbDataset` or :class:`~matsci.data.ExtxyzDataset`; a folder (every shard
inside with a known suffix, sorted by name, the way fairchem's data sets are downloaded) or a
list gives a :class:`ShardedDataset`, the shards read one after the other. Shards are checked
together when the dataset is made: each one's first row holds the requested keys, all hold the
same targets and declare the same units, so mistakes surface before training.
"""

from __future__ import annotations

import bisect
import operator
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final, SupportsIndex, TypeAlias

import numpy as np
from numpy.typing import NDArray
from torch.utils.data import Dataset
from torch_geometric.data import Data

from matsci.data._ase_db_dataset import AseDbDataset
from matsci.data._aselmdb import ASELMDB_SUFFIX
from matsci.data._atoms_dataset import Transform
from matsci.data._extxyz_dataset import ExtxyzDataset

__all__ = ["AtomsDataset", "ShardedDataset", "Source", "open_dataset"]

_DB_SUFFIXES: Final = (".db", ".json", ASELMDB_SUFFIX)
_XYZ_SUFFIXES: Final = (".xyz", ".extxyz")
SHARD_SUFFIXES: Final = (*_DB_SUFFIXES, *_XYZ_SUFFIXES)
"""File suffixes read as shards, in a folder or given by name."""

Shard: TypeAlias = AseDbDataset | ExtxyzDataset
Source: TypeAlias = str | os.PathLike[str] | Sequence[str | os.PathLike[str]]
"""A file, a database URL, a folder of shards, or a list or tuple of those."""


class ShardedDataset(Dataset[Data]):
    """Several shard datasets read as one, in order (item ``i`` of shard 1 follows shard 0).

    The shards must hold the same targets: with explicit ``keys`` each shard's first row is
    checked for them; without, every shard must offer the same :attr:`available_keys`. Shards
    of ASE databases must not declare different units for a key in their metadata
    (``metadata["units"]`` or the unit of ``metadata["key_descriptions"]``).

    Parameters
    ----------
    shards : sequence of AseDbDataset or ExtxyzDataset
        The shards, in order; at least one.

    Raises
    ------
    ValueError
        If there is no shard, the shards offer different targets, or declare different units;
        the message names the shards.

    Examples
    --------
    >>> import tempfile, pathlib, ase.io
    >>> from ase.build import bulk
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> for name, symbol in [("a.extxyz", "Cu"), ("b.extxyz", "Al")]:
    ...     atoms = bulk(symbol, cubic=True)
    ...     atoms.info["energy"] = -1.0
    ...     ase.io.write(folder / name, [atoms, atoms])
    >>> dataset = open_dataset(folder, keys=["energy"])
    >>> len(dataset), dataset.atom_counts().tolist(), [p.rsplit("/", 1)[1] for p in dataset.paths]
    (4, [4, 4, 4, 4], ['a.extxyz', 'b.extxyz'])
    """

    def __init__(self, shards: Sequence[Shard]) -> None:
        if not shards:
            raise ValueError("ShardedDataset: no shards given; expected at least one dataset")
        self.shards: tuple[Shard, ...] = tuple(shards)
        self._ends = np.cumsum([len(shard) for shard in self.shards]).tolist()
        self._atom_counts: NDArray[np.int64] | None = None
        _check_same_keys(self.shards)
        _check_same_units(self.shards)

    @property
    def paths(self) -> tuple[str, ...]:
        """The shards' files, in order."""
        return tuple(shard.path for shard in self.shards)

    @property
    def keys(self) -> tuple[str, ...]:
        """Targets each item holds (those of the first shard; all shards hold the same)."""
        return self.shards[0].keys

    @property
    def available_keys(self) -> tuple[str, ...]:
        """Targets every shard's first structure holds, sorted."""
        common = set(self.shards[0].available_keys)
        for shard in self.shards[1:]:
            if len(shard):
                common &= set(shard.available_keys)
        return tuple(sorted(common))

    def __len__(self) -> int:
        return int(self._ends[-1])

    def locate(self, index: int) -> tuple[int, int]:
        """``(shard number, position in that shard)`` of item ``index`` (0 to ``len - 1``)."""
        shard = bisect.bisect_right(self._ends, index)
        return shard, index - (self._ends[shard - 1] if shard else 0)

    def __getitem__(self, index: SupportsIndex) -> Data:
        position = operator.index(index)
        length = len(self)
        if not -length <= position < length:
            raise IndexError(
                f"ShardedDataset: index {position} out of range for {length} structures"
            )
        shard, inner = self.locate(position % length)
        return self.shards[shard][inner]

    def column(self, name: str) -> list[Any]:
        """Values of one key-value column or comment-line key, shard after shard."""
        return [value for shard in self.shards for value in shard.column(name)]

    def atom_counts(self) -> NDArray[np.int64]:
        """Atoms of each structure, in item order: ``int64`` [len(self)] (see the shards')."""
        if self._atom_counts is None:
            counts = np.concatenate([shard.atom_counts() for shard in self.shards])
            counts.flags.writeable = False
            self._atom_counts = counts.astype(np.int64, copy=False)
        return self._atom_counts

    def __repr__(self) -> str:
        names = [Path(path).name if "://" not in path else path for path in self.paths]
        shown = names if len(names) <= 4 else [*names[:2], "...", names[-1]]
        return (
            f"ShardedDataset({len(self.shards)} shards {shown}, structures={len(self)}, "
            f"keys={self.keys})"
        )


AtomsDataset: TypeAlias = AseDbDataset | ExtxyzDataset | ShardedDataset
"""What :func:`open_dataset` returns."""


def _check_same_keys(shards: Sequence[Shard]) -> None:
    """Every non-empty shard holds the same targets as the first non-empty one."""
    filled = [shard for shard in shards if len(shard)]
    if not filled:
        return
    first = filled[0]
    for shard in filled[1:]:
        if shard.keys != first.keys:
            missing = sorted(set(first.keys) - set(shard.keys))
            extra = sorted(set(shard.keys) - set(first.keys))
            common = sorted(set(first.keys) & set(shard.keys))
            raise ValueError(
                f"ShardedDataset: shard {shard.path!r} holds other targets than "
                f"{first.path!r} (first row of each): missing {missing}, extra {extra}; "
                f"pass keys= with the ones to use, e.g. keys={common}"
            )


def _declared_units(metadata: Mapping[str, Any]) -> dict[str, str]:
    """``{key: unit}`` an ASE database's metadata declares (``units``, ``key_descriptions``)."""
    units: dict[str, str] = {}
    descriptions = metadata.get("key_descriptions")
    if isinstance(descriptions, Mapping):
        for key, description in descriptions.items():
            if isinstance(description, list | tuple) and len(description) >= 3 and description[2]:
                units[str(key)] = str(description[2])
    declared = metadata.get("units")
    if isinstance(declared, Mapping):
        units.update({str(key): str(unit) for key, unit in declared.items()})
    return units


def _check_same_units(shards: Sequence[Shard]) -> None:
    """No key has two different units in the metadata of two database shards."""
    seen: dict[str, tuple[str, str]] = {}  # key -> (unit, shard that declared it)
    for shard in shards:
        if not isinstance(shard, AseDbDataset):
            continue
        for key, unit in _declared_units(shard.metadata).items():
            if key in seen and seen[key][0] != unit:
                raise ValueError(
                    f"ShardedDataset: shard {shard.path!r} declares {key!r} in {unit!r} but "
                    f"{seen[key][1]!r} declares it in {seen[key][0]!r}; convert one of them"
                )
            seen.setdefault(key, (unit, shard.path))


def _shard_files(source: Source) -> tuple[list[str], bool]:
    """The shard files (or URLs) of ``source``, and whether it was a single plain file."""
    if isinstance(source, str | os.PathLike):
        text = os.fspath(source)
        if "://" in text:
            return [text], True
        path = Path(text)
        if path.is_dir():
            found = sorted(path.iterdir())
            shards = [
                str(item)
                for item in found
                if item.is_file() and _is_shard(item) and not item.name.startswith(".")
            ]
            if not shards:
                listed = [item.name for item in found[:20]]
                raise ValueError(
                    f"open_dataset: folder {text!r} holds no shard (files ending in "
                    f"{list(SHARD_SUFFIXES)}); it holds {listed}"
                    + (f" and {len(found) - 20} more" if len(found) > 20 else "")
                )
            return shards, False
        if not path.exists():
            raise FileNotFoundError(f"open_dataset: {text!r} does not exist")
        if not _is_shard(path):
            raise ValueError(
                f"open_dataset: {text!r} has an unknown suffix {path.suffix!r}; expected an ASE "
                f"database {list(_DB_SUFFIXES)} or URL, an extxyz file {list(_XYZ_SUFFIXES)}, "
                "or a folder of them"
            )
        return [text], True
    if isinstance(source, Sequence):
        if not source:
            raise ValueError("open_dataset: the list of sources is empty")
        files: list[str] = []
        for item in source:
            if not isinstance(item, str | os.PathLike):
                raise TypeError(
                    f"open_dataset: {item!r} in the list is not a path; expected files, "
                    "folders or database URLs"
                )
            files.extend(_shard_files(item)[0])
        return files, False
    raise TypeError(
        f"open_dataset(source={source!r}): expected a path, a database URL, a folder or a "
        "list of them"
    )


def _is_shard(path: Path) -> bool:
    return path.suffix.lower() in SHARD_SUFFIXES


def open_dataset(
    source: Source,
    *,
    keys: Sequence[str] | None = None,
    key_map: Mapping[str, str] | None = None,
    transform: Transform | None = None,
    pre_transform: Transform | None = None,
    in_memory: bool = False,
) -> AtomsDataset:
    """Open a file, a folder of shards or a list of them as one dataset.

    Parameters
    ----------
    source : str, os.PathLike or sequence of them
        An ASE database (``.db``, ``.json``, ``.aselmdb`` or a URL) or extxyz file (``.xyz``,
        ``.extxyz``); a folder, whose shards are every file inside with one of those suffixes,
        sorted by name (other files, such as fairchem's ``metadata.npz``, and hidden files are
        ignored; subfolders are not searched); or a
        list or tuple of files and folders, concatenated in order.
    keys : sequence of str, optional
        Targets every item holds (see :func:`~matsci.data.atoms_to_data`); ``None`` keeps
        all, which must then be the same in every shard.
    key_map : mapping of str to str, optional
        Targets stored under other names, ``{target: stored name}``, e.g.
        ``{"energy": "ref_energy"}``.
    transform, pre_transform : callable, optional
        As for :class:`~matsci.data.AseDbDataset`, applied in every shard.
    in_memory : bool
        Read every structure once, when the dataset is made, and keep them.

    Returns
    -------
    AseDbDataset or ExtxyzDataset or ShardedDataset
        The dataset of a single plain file; a :class:`ShardedDataset` for a folder or a list
        (even of one shard).

    Raises
    ------
    FileNotFoundError
        If a file or folder does not exist.
    ValueError
        If a folder holds no shard (the message lists what it holds), a shard is damaged or
        not of its format, a shard's first row lacks a requested key, or shards hold different
        targets or declare different units; each message names the file (and the row).
    TypeError
        If ``source`` is neither a path nor a list of paths.

    Examples
    --------
    >>> import tempfile, pathlib, ase.db
    >>> from ase.build import bulk
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> for shard in range(2):
    ...     with ase.db.connect(folder / f"part{shard}.db") as db:
    ...         _ = db.write(bulk("Cu"), total_energy=-3.5 - shard)
    >>> dataset = open_dataset(folder, keys=["energy"], key_map={"energy": "total_energy"})
    >>> type(dataset).__name__, len(dataset), dataset[1].energy
    ('ShardedDataset', 2, tensor([-4.5000]))
    """
    files, single = _shard_files(source)
    options: dict[str, Any] = {
        "keys": keys,
        "transform": transform,
        "pre_transform": pre_transform,
        "in_memory": in_memory,
        "key_map": key_map,
    }
    shards: list[Shard] = []
    for file in files:
        if "://" in file or Path(file).suffix.lower() in _DB_SUFFIXES:
            shards.append(AseDbDataset(file, **options))
        else:
            shards.append(ExtxyzDataset(file, **options))
    if single:
        return shards[0]
    return ShardedDataset(shards)
