"""Reading checkpoints with clear errors, and choosing which weights of a checkpoint to load.

A truncated or foreign file becomes one ``ValueError`` that names it (:func:`read_checkpoint`,
:func:`checkpoint_errors`); :func:`load_checkpoint_with_weights` is the one path behind every
task's ``load_from_checkpoint``. Writing checkpoints atomically is ``matsci.training``'s
``AtomicCheckpointIO``. :func:`encoder_state_dict` takes the encoder's weights out of a task's
checkpoint, for a new task built around a pretrained encoder.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Final, Literal, TypeVar

import torch

__all__ = [
    "RAW_WEIGHTS_KEY",
    "Weights",
    "checkpoint_errors",
    "encoder_state_dict",
    "load_checkpoint_with_weights",
    "read_checkpoint",
]

_LOAD_ERRORS: tuple[type[BaseException], ...] = (
    RuntimeError,  # torch's zip reader: "failed finding central directory", ...
    EOFError,
    pickle.UnpicklingError,  # also what weights_only raises for a disallowed object
    zipfile.BadZipFile,
    ValueError,
    KeyError,
    OSError,
)


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


Weights = Literal["evaluation", "raw"]
"""Which weights to load from a checkpoint: those evaluation used (the ``state_dict``, averaged
when the run kept a weight average), or the raw trained weights a resumed run continues from."""

RAW_WEIGHTS_KEY: Final = "current_model_state"
"""Checkpoint key where Lightning's ``WeightAveraging`` callbacks keep the raw weights; the
``state_dict`` then holds the averaged ones."""

LoadedModule = TypeVar("LoadedModule", bound=torch.nn.Module)


def load_checkpoint_with_weights(
    load: Callable[..., LoadedModule],
    checkpoint_path: Any,
    weights: Weights,
    *,
    caller: str,
    **load_kwargs: Any,
) -> LoadedModule:
    """Check a checkpoint, restore a module with ``load`` and apply the chosen weights.

    The one path behind ``load_from_checkpoint`` of every task module: a truncated or foreign
    file gives a ``ValueError`` naming it before Lightning reads it.

    Parameters
    ----------
    load
        Lightning's ``load_from_checkpoint`` of the class being restored.
    checkpoint_path
        Path (or file object) of the checkpoint.
    weights
        ``"evaluation"``: the checkpoint's ``state_dict`` (the averaged weights when training
        kept an average); ``"raw"``: the trained weights kept beside an average
        (:data:`RAW_WEIGHTS_KEY`), or the ``state_dict`` when there is no average.
    caller
        Who loads (starts error messages).
    **load_kwargs
        Passed to ``load``.

    Returns
    -------
    torch.nn.Module
        The restored module.

    Raises
    ------
    ValueError
        If ``weights`` is unknown or the file is not a readable Lightning checkpoint.
    """
    if weights not in ("evaluation", "raw"):
        raise ValueError(
            f"{caller}(weights={weights!r}): expected 'evaluation' (the averaged weights when "
            "the checkpoint has them) or 'raw'"
        )
    checkpoint = read_checkpoint(checkpoint_path, caller=caller, required_keys=("state_dict",))
    module = load(checkpoint_path, **load_kwargs)
    raw = checkpoint.get(RAW_WEIGHTS_KEY)
    if weights == "raw" and raw is not None:
        strict = load_kwargs.get("strict")
        module.load_state_dict(raw, strict=True if strict is None else strict)
    return module


def encoder_state_dict(
    checkpoint: Mapping[str, Any], *, source: Any, caller: str
) -> dict[str, Any]:
    """The encoder's weights in a task checkpoint, without their leading ``encoder.``.

    Only that prefix is removed, so the names are those of the encoder's own ``state_dict``.

    Parameters
    ----------
    checkpoint
        A checkpoint read by :func:`read_checkpoint` (with a ``"state_dict"``).
    source
        Where the checkpoint came from (named in the error).
    caller
        Who reads (starts the error message).

    Returns
    -------
    dict
        ``{name: tensor}``.

    Raises
    ------
    ValueError
        If the checkpoint holds no encoder weights.

    Examples
    --------
    >>> encoder_state_dict({"state_dict": {"encoder.w": 1, "head.w": 2}}, source="x", caller="c")
    {'w': 1}
    """
    prefix = "encoder."
    state = {
        name.removeprefix(prefix): value
        for name, value in checkpoint["state_dict"].items()
        if name.startswith(prefix)
    }
    if not state:
        raise ValueError(f"{caller}: no encoder weights in {source}")
    return state
