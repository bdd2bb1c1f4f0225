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
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from typing_extensions import override

from matsci.tasks.core._checkpoint_io import checkpoint_errors

__all__ = ["AtomicCheckpointIO", "atomic_save"]


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
    >>> from matsci.training import AtomicCheckpointIO
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
    """``torch.save`` into a temporary file beside ``path``, ``fsync`` it, then rename it over.

    Temporary files of an earlier save of the same name (left by a killed process) are
    removed first; the folder is created if needed.

    Parameters
    ----------
    obj
        What to save.
    path
        The target file.
    """
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
