"""Paths in configs: the bundled example data and run folders."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Final

from jsonargparse import Namespace

from matsci.cli._errors import ConfigError
from matsci.data.examples import BUNDLED_NAMES, BUNDLED_SPLIT_NAMES, bundled_dataset_path

BUNDLED_PREFIX: Final = "bundled:"
"""A config string ``"bundled:emt"`` stands for the path of that bundled example dataset."""

_BUNDLED: Final = (*BUNDLED_NAMES, *BUNDLED_SPLIT_NAMES)

_VERSION: Final = re.compile(r"version_(\d+)")


def resolve_bundled(value: Any) -> Any:
    """Replace every ``"bundled:<name>"`` string in a config by the bundled dataset's path.

    The configs in ``examples/`` name the data that ships with ``matsci-data`` this way, so
    they run from any folder and on any installation; the saved config keeps the short form.
    The names are the databases ``emt`` and ``spacegroup`` and the EMT data as three extxyz
    files, ``emt-train``, ``emt-val`` and ``emt-test``
    (:func:`~matsci.data.examples.bundled_dataset_path`); strings inside lists and mappings
    are replaced too (``train: [bundled:emt-train, more.extxyz]``).

    Parameters
    ----------
    value
        A config: a jsonargparse ``Namespace``, dict, list or plain value.

    Returns
    -------
    object
        A copy with the strings replaced (the input is not changed).

    Raises
    ------
    ConfigError
        If a name is not one of the bundled datasets.

    Examples
    --------
    >>> resolve_bundled({"dataset": "bundled:emt", "seed": 0})["dataset"].endswith("emt.db")
    True
    >>> [Path(path).name for path in resolve_bundled({"train": ["bundled:emt-train"]})["train"]]
    ['emt-train.extxyz']
    """
    if isinstance(value, str) and value.startswith(BUNDLED_PREFIX):
        name = value.removeprefix(BUNDLED_PREFIX)
        if name not in _BUNDLED:
            raise ConfigError(
                f"{value!r}: no bundled dataset {name!r}; bundled datasets are "
                f"{[BUNDLED_PREFIX + known for known in _BUNDLED]}"
            )
        return str(bundled_dataset_path(name))
    if isinstance(value, Namespace):
        items = {key: resolve_bundled(item) for key, item in vars(value).items()}
        return Namespace(**items)  # type: ignore[no-untyped-call]
    if isinstance(value, dict):
        return {key: resolve_bundled(item) for key, item in value.items()}
    if isinstance(value, list):
        return [resolve_bundled(item) for item in value]
    return value


def next_version(runs_dir: str | Path, name: str) -> int:
    """The first free ``N`` of ``<runs_dir>/<name>/version_N`` (0 for a new run name).

    Parameters
    ----------
    runs_dir
        Folder holding all runs.
    name
        The run's name.

    Returns
    -------
    int
        One more than the largest existing version, or 0.

    Examples
    --------
    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp())
    >>> next_version(root, "demo")
    0
    >>> (root / "demo" / "version_3").mkdir(parents=True)
    >>> next_version(root, "demo")
    4
    """
    versions = [
        int(match.group(1))
        for path in (Path(runs_dir) / name).glob("version_*")
        if path.is_dir() and (match := _VERSION.fullmatch(path.name)) is not None
    ]
    return max(versions, default=-1) + 1
