"""Small cache files of per-file indices (extxyz byte offsets, atom counts), beside the data.

An index is costly to build for a large file (one pass over it) and cheap to keep: a few
numbers per structure. It is stored in ``<file>.matsci-<kind>.npz`` beside the file, or, when
that folder is not writable, under ``$XDG_CACHE_HOME/matsci`` (``~/.cache/matsci``) in a file
named after a hash of the absolute path. Each cache records the file's size, modification
time and a hash of its first and last bytes; a cache that does not match the file, or that
cannot be read, is ignored and built anew. The data file itself is never written.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

__all__ = ["cache_paths", "load_index", "store_index"]

_VERSION: Final = 1
_EDGE_BYTES: Final = 65536
"""Bytes hashed at each end of the file, besides its size and modification time."""


def _fingerprint(path: Path) -> NDArray[np.uint8]:
    """Size, modification time and a hash of the first and last bytes, as one byte array."""
    stat = path.stat()
    digest = hashlib.sha256(f"{_VERSION}:{stat.st_size}:{stat.st_mtime_ns}:".encode())
    with open(path, "rb") as file:
        digest.update(file.read(_EDGE_BYTES))
        if stat.st_size > _EDGE_BYTES:
            file.seek(max(_EDGE_BYTES, stat.st_size - _EDGE_BYTES))
            digest.update(file.read(_EDGE_BYTES))
    return np.frombuffer(digest.digest(), dtype=np.uint8)


def _user_cache_folder() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "matsci"


def cache_paths(path: Path, kind: str) -> tuple[Path, Path]:
    """Where the ``kind`` index of ``path`` is kept: beside it, else in the user's cache."""
    absolute = path.resolve()
    beside = absolute.with_name(f"{absolute.name}.matsci-{kind}.npz")
    key = hashlib.sha256(str(absolute).encode()).hexdigest()[:32]
    return beside, _user_cache_folder() / f"{absolute.name}.{key}.matsci-{kind}.npz"


def load_index(path: Path, kind: str) -> dict[str, NDArray[np.int64]] | None:
    """The cached ``kind`` index of ``path``, or ``None`` if none matches the file as it is."""
    fingerprint = _fingerprint(path)
    for candidate in cache_paths(path, kind):
        if not candidate.is_file():
            continue
        try:
            with np.load(candidate, allow_pickle=False) as archive:
                arrays = {name: archive[name] for name in archive.files}
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            continue  # damaged or foreign: never trusted
        stored = arrays.pop("fingerprint", None)
        if stored is None or not np.array_equal(stored, fingerprint):
            continue
        if all(array.dtype == np.int64 for array in arrays.values()):
            return arrays
    return None


def store_index(path: Path, kind: str, arrays: Mapping[str, NDArray[np.int64]]) -> Path | None:
    """Keep ``arrays`` as the ``kind`` index of ``path``; where it went (``None``: nowhere).

    Written to a temporary file, then renamed over the cache, so that processes building
    the same index at once (ranks, workers) never read a half-written one.
    """
    payload: dict[str, Any] = {"fingerprint": _fingerprint(path), **arrays}
    for candidate in cache_paths(path, kind):
        try:
            candidate.parent.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(
                prefix=f".{candidate.name}.", suffix=".tmp", dir=candidate.parent
            )
        except OSError:
            continue  # not writable: try the next place
        try:
            with os.fdopen(handle, "wb") as file:
                np.savez(file, **payload)
            os.chmod(temporary, 0o644)  # readable by the others who read the data
            os.replace(temporary, candidate)
        except OSError:
            Path(temporary).unlink(missing_ok=True)
            continue
        return candidate
    return None
