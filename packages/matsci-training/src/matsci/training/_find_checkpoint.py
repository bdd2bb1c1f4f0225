"""The checkpoint a user means: a file, or the best (else last) one of a run folder."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final

__all__ = ["find_checkpoint"]

_VERSION: Final = re.compile(r"version_(\d+)")


def find_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or the best (else last) checkpoint of a run folder's newest version.

    ``runs/denoise_pretrain`` becomes ``runs/denoise_pretrain/version_N/checkpoints/best.ckpt``
    for the largest ``N`` that has one, so a fine-tuning config can name the pretraining run.

    Parameters
    ----------
    path
        A ``.ckpt`` file, a run version folder or a run name folder.

    Returns
    -------
    Path
        The checkpoint file.

    Raises
    ------
    FileNotFoundError
        If nothing fits.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from matsci.training import find_checkpoint
    >>> run = Path(tempfile.mkdtemp()) / "pretrain"
    >>> for version in ("version_0", "version_1"):
    ...     (run / version / "checkpoints").mkdir(parents=True)
    ...     (run / version / "checkpoints" / "last.ckpt").touch()
    >>> find_checkpoint(run).relative_to(run).as_posix()
    'version_1/checkpoints/last.ckpt'
    """
    given = Path(path)
    if given.is_file():
        return given
    if not given.is_dir():
        raise FileNotFoundError(f"checkpoint {str(given)!r}: no such file or folder")
    folders = [given] if (given / "checkpoints").is_dir() else []
    versions = [
        (int(match.group(1)), folder)
        for folder in given.glob("version_*")
        if (match := _VERSION.fullmatch(folder.name)) is not None
    ]
    folders += [folder for _, folder in sorted(versions, reverse=True)]
    for folder in folders:
        for name in ("best.ckpt", "last.ckpt"):
            candidate = folder / "checkpoints" / name
            if candidate.is_file():
                return candidate
    raise FileNotFoundError(
        f"checkpoint {str(given)!r}: no checkpoints/best.ckpt or checkpoints/last.ckpt in it or "
        "in its version_N folders; has its training run finished?"
    )
