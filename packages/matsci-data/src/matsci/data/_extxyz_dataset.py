# mypy: untyped-calls-exclude=ase
"""An indexed dataset of the frames of an extended XYZ file.

The file is scanned once for the byte offset and atom count of each frame; that index is kept
in a small cache file (see :mod:`matsci.data._index_cache`), so later opens cost the same at any
file size, and each item parses only its own frame. The file is only read, never written. What
every dataset of structures shares (conversion, transforms, ``in_memory``, ``keys``) lives in
:mod:`matsci.data._atoms_dataset`.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import ase.io
import numpy as np
from ase import Atoms
from ase.io.extxyz import key_val_str_to_dict
from numpy.typing import NDArray

from matsci.data._atoms_dataset import Transform, _AtomsDataset, _checked_file
from matsci.data._index_cache import load_index, store_index

__all__ = ["ExtxyzDataset"]


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
