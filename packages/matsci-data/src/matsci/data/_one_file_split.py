"""One file split into train, val and test: at random by fractions, or by a split column.

The one-file form of :class:`~matsci.data.AtomsDataModule`. A random split is a permutation
drawn from a seed, so the same arguments give the same split on every run and every rank; a
column split reads each structure's ``"train"``, ``"val"`` or ``"test"`` from a key-value
column (database) or comment-line key (extxyz).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Final

import numpy as np

__all__ = ["SPLITS", "column_split", "random_split", "split_fractions"]

SPLITS: Final = ("train", "val", "test")
"""The split names, in order."""
_DEFAULT_SPLIT: Final = (0.8, 0.1, 0.1)


def split_fractions(split: Sequence[float] | None) -> tuple[float, ...]:
    """``split`` (by default ``(0.8, 0.1, 0.1)``) as three checked floats."""
    fractions = tuple(float(f) for f in (split if split is not None else _DEFAULT_SPLIT))
    if (
        len(fractions) != 3
        or not all(0.0 <= f <= 1.0 for f in fractions)
        or sum(fractions) > 1.0 + 1e-9
    ):
        raise ValueError(
            f"AtomsDataModule(split={split!r}): expected three fractions (train, val, "
            "test), each in [0, 1], summing to at most 1"
        )
    return fractions


def random_split(length: int, fractions: Sequence[float], seed: int) -> dict[str, list[int]]:
    """``{"train", "val", "test"}`` sorted positions, drawn by ``seed``.

    When the fractions sum to 1 the rounding remainder goes to train.
    """
    counts = [math.floor(f * length) for f in fractions]
    if math.isclose(sum(fractions), 1.0, abs_tol=1e-9):
        counts[0] = length - counts[1] - counts[2]
    order = np.random.default_rng(seed).permutation(length).tolist()
    bounds = np.cumsum([0, *counts]).tolist()
    return {
        name: sorted(order[start:stop])
        for name, start, stop in zip(SPLITS, bounds[:-1], bounds[1:], strict=True)
    }


def column_split(dataset: Any, column: str, path: object) -> dict[str, list[int]]:
    """``{"train", "val", "test"}`` positions by the values of ``dataset.column(column)``.

    ``path`` names the data in the error on a value that is not a split name.
    """
    indices: dict[str, list[int]] = {name: [] for name in SPLITS}
    for position, value in enumerate(dataset.column(column)):
        if value not in indices:
            raise ValueError(
                f"AtomsDataModule(split_column={column!r}): structure "
                f"{position} of {path!r} has {value!r}; expected one of {list(SPLITS)}"
            )
        indices[value].append(position)
    return indices
