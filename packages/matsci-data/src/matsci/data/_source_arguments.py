"""The data sources :class:`~matsci.data.AtomsDataModule` is given, as plain data, checked.

Sources (``dataset``, ``train``, ``val``, ``test``, ``predict``) come as paths, lists of paths
or, for ``train``, ``{name: source}``. They are kept as plain strings, lists and dicts (the
hyperparameters of a checkpoint load with ``weights_only=True``, which refuses ``Path``
objects) and checked when the module is made: one of the two forms (one file to split, or
separate sources), complete; every file exists and has a known type; mixture arguments fit the
named training sources. Nothing is opened here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeAlias

from matsci.data._sources import SHARD_SUFFIXES

__all__ = [
    "MixtureWeights",
    "PlainSource",
    "Source",
    "TrainSource",
    "check_form",
    "check_mixture",
    "plain_source",
    "plain_train",
    "sources_of",
]

# Lists and mappings come first: the CLI (jsonargparse) tries a union's members in order, and
# a ``str`` first would take a YAML list such as ``[a.extxyz, b.extxyz]`` for a file name.
_Path: TypeAlias = str | os.PathLike[str]
Source: TypeAlias = Sequence[_Path] | _Path
"""A file, a folder of shards, or a list of them (read one after the other)."""
TrainSource: TypeAlias = Mapping[str, Source] | Source
"""A :data:`Source`, or ``{name: Source}``: several training sets mixed into one."""
MixtureWeights: TypeAlias = Mapping[str, float] | Literal["balanced", "temperature"]
"""Fixed weights per training source, ``"balanced"`` or ``"temperature"`` sampling."""

PlainSource: TypeAlias = str | list[str]
"""A :data:`Source` as plain strings: one path, or a list of them."""


def plain_source(source: Source, argument: str) -> PlainSource:
    """``source`` as plain strings (checkpoints load with weights_only, which refuses Paths)."""
    if isinstance(source, str | os.PathLike):
        return os.fspath(source)
    if isinstance(source, Sequence) and all(isinstance(p, str | os.PathLike) for p in source):
        if not source:
            raise ValueError(f"AtomsDataModule({argument}=[]): give at least one file or folder")
        return [os.fspath(path) for path in source]
    raise TypeError(
        f"AtomsDataModule({argument}={source!r}): expected a file or folder path, or a list of them"
    )


def plain_train(source: TrainSource) -> PlainSource | dict[str, PlainSource]:
    """``train`` as plain data; a mapping keeps its names, in their order."""
    if not isinstance(source, Mapping):
        return plain_source(source, "train")
    if not source:
        raise ValueError("AtomsDataModule(train={}): give at least one named training source")
    for name in source:
        if not isinstance(name, str) or not name:
            raise TypeError(f"AtomsDataModule(train=...): source name {name!r} is not a string")
    return {name: plain_source(value, f"train[{name!r}]") for name, value in source.items()}


def check_form(
    plain: Mapping[str, Any], *, split: Sequence[float] | None, split_column: str | None
) -> None:
    """One of the two forms, complete; ``predict`` or its old name, not both."""
    separate = [name for name in ("train", "val", "test") if plain[name] is not None]
    if plain["dataset"] is not None and separate:
        raise ValueError(
            f"AtomsDataModule(dataset=..., {'=..., '.join(separate)}=...): give one file to "
            "split (dataset=, with split= or split_column=) or separate sources (train=, "
            "val=, test=), not both"
        )
    if plain["dataset"] is None:
        if plain["train"] is None or plain["val"] is None:
            given = ", ".join(f"{name}=..." for name in separate) or "no data"
            raise ValueError(
                f"AtomsDataModule({given}): give train= and val= (and optionally test=), "
                "or one file to split as dataset="
            )
        if split is not None or split_column is not None:
            raise ValueError(
                "AtomsDataModule(train=..., split/split_column=...): split= and "
                "split_column= split the one file of dataset=; separate sources need none"
            )
    if split is not None and split_column is not None:
        raise ValueError(
            f"AtomsDataModule(split={split!r}, split_column={split_column!r}): give "
            "fractions or a split column, not both"
        )
    if plain["predict"] is not None and plain["predict_path"] is not None:
        raise ValueError(
            "AtomsDataModule(predict=..., predict_path=...): predict_path is the old name "
            "of predict; give one of them"
        )


def check_mixture(
    train: Any,
    weights: MixtureWeights | None,
    temperature: float | None,
    samples: int | None,
) -> None:
    """Mixture arguments only with named training sources, one weight for each of them."""
    if weights is None:
        if temperature is not None or samples is not None:
            raise ValueError(
                "AtomsDataModule(mixture_temperature=/mixture_samples=...): these set up a "
                "mixture; give mixture_weights too"
            )
        return
    if not isinstance(train, dict):
        raise ValueError(
            f"AtomsDataModule(mixture_weights={weights!r}): a mixture needs several named "
            "training sources, train={name: source, ...}"
        )
    if isinstance(weights, Mapping):
        if set(weights) != set(train):
            raise ValueError(
                f"AtomsDataModule(mixture_weights={dict(weights)!r}): expected one weight "
                f"for each training source {list(train)}"
            )
        if any(not w >= 0 for w in weights.values()) or not sum(weights.values()) > 0:
            raise ValueError(
                f"AtomsDataModule(mixture_weights={dict(weights)!r}): weights must be "
                "non-negative with a positive sum"
            )
    elif weights not in ("balanced", "temperature"):
        raise ValueError(
            f"AtomsDataModule(mixture_weights={weights!r}): expected {{name: weight}}, "
            "'balanced' or 'temperature'"
        )
    if (weights == "temperature") != (temperature is not None):
        raise ValueError(
            f"AtomsDataModule(mixture_weights={weights!r}, mixture_temperature="
            f"{temperature!r}): give a temperature exactly with mixture_weights='temperature'"
        )
    if temperature is not None and not temperature > 0:
        raise ValueError(f"AtomsDataModule(mixture_temperature={temperature}): must be positive")


def sources_of(plain: Mapping[str, Any]) -> dict[str, Any]:
    """``{name: plain source}`` of the sources given, each file checked; ``predict`` last.

    ``predict`` is the ``predict`` source, or else ``predict_path`` (its older name).
    """
    sources: dict[str, Any] = {
        name: plain[name] for name in ("dataset", "train", "val", "test") if plain[name]
    }
    predict = plain["predict"] if plain["predict"] is not None else plain["predict_path"]
    if predict is not None:
        sources["predict"] = predict
    for name, source in sources.items():
        argument = "predict_path" if name == "predict" and plain["predict"] is None else name
        if isinstance(source, dict):
            for part, value in source.items():
                _check_paths(f"{argument}[{part!r}]", value)
        else:
            _check_paths(argument, source)
    return sources


def _check_paths(argument: str, source: PlainSource) -> None:
    """Every file or folder of ``source`` exists, and every file has a known type."""
    for path in [source] if isinstance(source, str) else source:
        if "://" in path:  # a database URL
            continue
        file = Path(path)
        if file.is_dir():  # a folder of shards: its content is checked when opened
            continue
        which = "" if isinstance(source, str) else f" {path!r}"
        if not file.exists():
            raise FileNotFoundError(
                f"AtomsDataModule({argument}={source!r}): no such file or folder{which}"
            )
        suffix = file.suffix.lower()
        if suffix not in SHARD_SUFFIXES:
            raise ValueError(
                f"AtomsDataModule({argument}={source!r}): unknown file type {suffix!r}{which}; "
                f"expected an ASE database or extxyz file {list(SHARD_SUFFIXES)}, a database "
                "URL, or a folder of them"
            )
