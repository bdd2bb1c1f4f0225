"""A task's normalizers: built from ``normalize_kwargs``, fitted on batches or set from statistics.

The task keeps its :class:`~matsci.tasks.core.Normalizer` s in a module dict (buffers that travel
in checkpoints); these functions build that dict once and fill it, streaming over batches
(:func:`fit_normalizer_statistics`) or from dataset statistics computed in ``matsci.data``
(:func:`apply_dataset_statistics`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from torch import Tensor
from torch_geometric.data import Batch

from matsci.contract import DatasetStatistics
from matsci.tasks.core._normalizer import Normalizer

__all__ = [
    "apply_dataset_statistics",
    "build_normalizers",
    "fit_normalizer_statistics",
    "check_fit_keys",
]


def build_normalizers(
    name: str,
    normalize_kwargs: Mapping[str, Mapping[str, Any]] | None,
    task_keys: Sequence[str],
    normalizer_dim: Callable[[str], int | None],
) -> dict[str, Normalizer]:
    """One normalizer per normalized key, with the given ``mean`` and ``std`` if any.

    Parameters
    ----------
    name
        The task's class name (for messages).
    normalize_kwargs
        ``{key: {"mean": m, "std": s}}`` (numbers or one per target column).
    task_keys
        The task keys.
    normalizer_dim
        The width of a key's normalizer, ``None`` if the key is never normalized.

    Returns
    -------
    dict
        ``{key: Normalizer}`` for every key with a width.

    Raises
    ------
    ValueError
        For an unknown key, a key the task does not normalize, or statistics other than
        ``mean`` and ``std``.

    Examples
    --------
    >>> normalizers = build_normalizers("Task", {"a": {"mean": 1.0}}, ["a", "b"], lambda key: 1)
    >>> sorted(normalizers)
    ['a', 'b']
    """
    given = dict(normalize_kwargs or {})
    unknown = set(given) - set(task_keys)
    if unknown:
        raise ValueError(
            f"{name}(normalize_kwargs): unknown keys {sorted(unknown)}; "
            f"task keys are {list(task_keys)}"
        )
    normalizers: dict[str, Normalizer] = {}
    for key in task_keys:
        dim = normalizer_dim(key)
        if dim is None:
            if key in given:
                raise ValueError(
                    f"{name}(normalize_kwargs): key {key!r} is not normalized by this task"
                )
            continue
        stats = dict(given.get(key, {}))
        if set(stats) - {"mean", "std"}:
            raise ValueError(
                f"{name}(normalize_kwargs[{key!r}]): expected keys 'mean' and "
                f"'std', got {sorted(stats)}"
            )
        normalizers[key] = Normalizer(dim, mean=stats.get("mean"), std=stats.get("std"))
    return normalizers


def check_fit_keys(
    name: str, normalized: Iterable[str], keys: Sequence[str] | None, caller: str
) -> list[str]:
    """The keys to fit or set: ``keys``, or every normalized key when ``None``.

    Raises
    ------
    ValueError
        If a key is not normalized, naming ``name.caller`` and the normalized keys.

    Examples
    --------
    >>> check_fit_keys("Task", ["a", "b"], None, "fit_normalizers")
    ['a', 'b']
    """
    normalized = list(normalized)
    fit_keys = list(keys) if keys is not None else list(normalized)
    for key in fit_keys:
        if key not in normalized:
            raise ValueError(
                f"{name}.{caller}: {key!r} is not normalized by this "
                f"task; normalized keys: {normalized}"
            )
    return fit_keys


def fit_normalizer_statistics(
    normalizers: Mapping[str, Normalizer],
    keys: Sequence[str],
    batches: Iterable[Batch],
    get_target: Callable[[Batch, str], Tensor],
) -> None:
    """Fit the mean and standard deviation of ``keys`` in one streaming pass over batches.

    Parameters
    ----------
    normalizers
        The task's ``{key: Normalizer}``.
    keys
        Keys to fit (checked with :func:`check_fit_keys`); their statistics are reset first.
    batches
        An iterable of batches.
    get_target
        Reads a key's target from a batch (the task's ``get_target``).

    Raises
    ------
    ValueError
        If a key has no present value.
    """
    for key in keys:
        normalizers[key].reset_statistics()
    for batch in batches:
        for key in keys:
            normalizers[key].update(get_target(batch, key))
    for key in keys:
        normalizers[key].finalize()


def apply_dataset_statistics(
    name: str,
    normalizers: Mapping[str, Normalizer],
    keys: Sequence[str],
    statistics: DatasetStatistics,
) -> None:
    """Set the normalizers of ``keys`` from the per-column mean and standard deviation.

    Raises
    ------
    ValueError
        If the statistics lack a key, naming the keys they hold.
    """
    for key in keys:
        if key not in statistics.mean or key not in statistics.std:
            raise ValueError(
                f"{name}.apply_statistics: the statistics have no {key!r}; "
                f"they hold {sorted(statistics.mean)} (compute them with keys=[{key!r}, ...])"
            )
        normalizers[key].load_statistics(
            statistics.mean[key], statistics.std[key], statistics.count.get(key)
        )
