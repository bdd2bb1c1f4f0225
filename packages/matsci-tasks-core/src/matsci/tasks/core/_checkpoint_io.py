"""Checkpoints that are never half written, and clear errors for files that are.

Lightning's default checkpoint writer saves through ``fsspec``: the bytes go to a temporary
file in the system's temp folder, then move to the target. A move between file systems is a
copy, and nothing is flushed to disk, so a kill or power loss at the wrong moment can leave a
truncated ``last.ckpt``. :class:`AtomicCheckpointIO` writes next to the target, flushes and
``fsync`` s the file, then renames it over the target with :func:`os.replace` (atomic on POSIX
and Windows): a reader sees the old checkpoint or the new one, never a part of one.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from typing_extensions import override

__all__ = ["AtomicCheckpointIO", "checkpoint_errors", "read_checkpoint"]

_LOAD_ERRORS: tuple[type[BaseException], ...] = (
    RuntimeError,  # torch's zip reader: "failed finding central directory", ...
    EOFError,
    pickle.UnpicklingError,  # also what weights_only raises for a disallowed object
    zipfile.BadZipFile,
    ValueError,
    KeyError,
    OSError,
)


class AtomicCheckpointIO(TorchCheckpointIO):
    """A checkpoint writer that replaces the target atomically, so ``last.ckpt`` is never torn.

    Give it to the trainer as a plugin: ``Trainer(plugins=[AtomicCheckpointIO()])``. Each save
    writes ``.<name>.<random>.tmp`` in the target's folder, ``fsync`` s it, renames it over the
    target (:func:`os.replace`) and ``fsync`` s the folder. A process killed while saving leaves
    the previous checkpoint intact and a temporary file that Lightning's
    ``ckpt_path="last"`` ignores; the next save of the same name removes it. Remote paths
    (``s3://`` and other ``fsspec`` URLs) are written by Lightning's own writer.

    Loading raises a ``ValueError`` naming the file when it is truncated or not a checkpoint.

    Examples
    --------
    >>> import tempfile, pathlib, torch
    >>> from matsci.tasks.core import AtomicCheckpointIO
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> io = AtomicCheckpointIO()
    >>> io.save_checkpoint({"step": torch.tensor(3)}, folder / "last.ckpt")
    >>> io.load_checkpoint(folder / "last.ckpt")["step"]
    tensor(3)
    >>> sorted(path.name for path in folder.iterdir())
    ['last.ckpt']
    """

    @override
    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        """Write ``checkpoint`` to ``path`` atomically.

        Parameters
        ----------
        checkpoint
            The state to save.
        path
            The target file.
        storage_options
            Not supported (as for Lightning's ``TorchCheckpointIO``).

        Raises
        ------
        TypeError
            If ``storage_options`` is given.
        """
        if storage_options is not None or _is_remote(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        atomic_save(checkpoint, Path(path))

    @override
    def load_checkpoint(
        self,
        path: Any,
        map_location: Callable[..., Any] | None = lambda storage, loc: storage,
        weights_only: bool | None = None,
    ) -> dict[str, Any]:
        """Load a checkpoint; a truncated or foreign file is a ``ValueError`` naming it.

        Parameters
        ----------
        path
            The checkpoint file.
        map_location
            As for :func:`torch.load`.
        weights_only
            As for :func:`torch.load`.

        Returns
        -------
        dict
            The checkpoint.

        Raises
        ------
        FileNotFoundError
            If the file does not exist.
        ValueError
            If it cannot be read as a checkpoint.
        """
        with checkpoint_errors(path, "AtomicCheckpointIO"):
            checkpoint: dict[str, Any] = super().load_checkpoint(path, map_location, weights_only)
        return checkpoint


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` into a temporary file beside ``path``, ``fsync``, then rename it over."""
    folder = path.parent
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob(f".{path.name}.*.tmp"):  # left by a process killed while saving
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(handle, "wb") as file:
            torch.save(obj, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    _fsync_folder(folder)


def read_checkpoint(
    path: str | os.PathLike[str] | IO[bytes],
    *,
    map_location: Any = "cpu",
    weights_only: bool = True,
    caller: str = "read_checkpoint",
    required_keys: Sequence[str] = (),
) -> dict[str, Any]:
    """Read a checkpoint file, memory-mapping its tensors when it is a path.

    With a path the tensors are not read into memory until used, so checking a large file is
    cheap; a file object is read and put back where it was. A truncated or foreign file
    becomes a ``ValueError`` that names it.

    Parameters
    ----------
    path
        A checkpoint file, or a binary file object.
    map_location
        As for :func:`torch.load`.
    weights_only
        As for :func:`torch.load`.
    caller
        Who reads (starts the error message).
    required_keys
        Top-level keys the checkpoint must have (a Lightning checkpoint has ``"state_dict"``).

    Returns
    -------
    dict
        The checkpoint.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        If the file is not a readable checkpoint (a dict saved by ``torch.save``) or lacks a
        required key.

    Examples
    --------
    >>> import tempfile, pathlib, torch
    >>> from matsci.tasks.core import read_checkpoint
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "broken.ckpt"
    >>> torch.save({"state_dict": {}}, path)
    >>> path.write_bytes(path.read_bytes()[:100])
    100
    >>> read_checkpoint(path)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: read_checkpoint: '.../broken.ckpt' is not a readable checkpoint (truncated or ...
    """
    is_path = isinstance(path, str | os.PathLike)
    if is_path and not Path(path).is_file():  # type: ignore[arg-type]
        raise FileNotFoundError(f"{caller}: checkpoint {os.fspath(path)!r} does not exist")  # type: ignore[arg-type]
    start = None if is_path else path.tell()  # type: ignore[union-attr]
    with checkpoint_errors(path, caller):
        loaded = torch.load(
            path, map_location=map_location, weights_only=weights_only, mmap=is_path
        )
        if not isinstance(loaded, dict):
            raise ValueError(f"it holds a {type(loaded).__name__}, not a dict")
        missing = [key for key in required_keys if key not in loaded]
        if missing:
            raise ValueError(f"it has no {missing} (top-level keys: {sorted(map(str, loaded))})")
    if start is not None:
        path.seek(start)  # type: ignore[union-attr]
    return loaded


@contextlib.contextmanager
def checkpoint_errors(path: Any, caller: str) -> Iterator[None]:
    """Turn the errors of reading a broken checkpoint into one ``ValueError`` naming the file.

    Parameters
    ----------
    path
        The file being read (for the message).
    caller
        Who reads (starts the message).

    Raises
    ------
    ValueError
        From any error of the wrapped block except ``FileNotFoundError``.
    """
    try:
        yield
    except FileNotFoundError:
        raise
    except _LOAD_ERRORS as error:
        name = os.fspath(path) if isinstance(path, str | os.PathLike) else repr(path)
        raise ValueError(
            f"{caller}: {name!r} is not a readable checkpoint (truncated or corrupted, or not "
            f"written by torch.save): {type(error).__name__}: {error}"
        ) from error


def _is_remote(path: Any) -> bool:
    text = os.fspath(path) if isinstance(path, str | os.PathLike) else str(path)
    return "://" in text and not text.startswith("file://")


def _fsync_folder(folder: Path) -> None:
    """Make the rename durable: ``fsync`` the folder (not possible on Windows, skipped there)."""
    with contextlib.suppress(OSError, AttributeError):
        handle = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(handle)
        finally:
            os.close(handle)
