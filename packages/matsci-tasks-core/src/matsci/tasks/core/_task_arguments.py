"""Checks of a task's keyed constructor arguments: task keys, losses, per-key values, pooling.

Each check runs once in the task's ``__init__`` and raises a ``ValueError`` that names the task
class, the argument and what is allowed, so a bad argument fails before the first batch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, Literal

from torch import nn

from matsci.contract import ClassConfig, module_config

__all__ = [
    "REDUCTIONS",
    "Reduction",
    "check_keyed",
    "check_reduction",
    "check_task_keys",
    "loss_configs",
]

Reduction = Literal["mean", "sum", "max"]
REDUCTIONS: Final = ("mean", "sum", "max")
"""The ways atom embeddings can be pooled into a structure embedding."""


def check_task_keys(
    name: str, task_keys: Sequence[str] | None, fixed: Sequence[str] | None
) -> list[str]:
    """The task keys as a list: non-empty, without duplicates, ``fixed`` when the task has them.

    Parameters
    ----------
    name
        The task's class name (for messages).
    task_keys
        The ``task_keys`` argument.
    fixed
        The task's ``fixed_task_keys``, or ``None``.

    Returns
    -------
    list of str
        The keys, in order.

    Raises
    ------
    ValueError
        On no keys, a string, duplicates, or keys other than the fixed ones.

    Examples
    --------
    >>> check_task_keys("Task", ("a", "b"), None)
    ['a', 'b']
    >>> check_task_keys("Task", None, ("energy",))
    ['energy']
    """
    if fixed is not None:
        if task_keys is not None and list(task_keys) != list(fixed):
            raise ValueError(f"{name}(task_keys={task_keys!r}): the only key is {list(fixed)}")
        task_keys = list(fixed)
    if task_keys is None or isinstance(task_keys, str) or len(task_keys) == 0:
        raise ValueError(f"{name}(task_keys={task_keys!r}): expected a non-empty list of keys")
    ordered = list(task_keys)
    duplicates = sorted({key for key in ordered if ordered.count(key) > 1})
    if duplicates:
        raise ValueError(f"{name}(task_keys): duplicate keys {duplicates}")
    return ordered


def check_reduction(name: str, reduction: Reduction | None, pools: bool) -> Reduction:
    """The pooling of atom embeddings: ``reduction``, or ``"mean"`` when not given.

    Parameters
    ----------
    name
        The task's class name (for messages).
    reduction
        The ``embedding_reduction_type`` argument.
    pools
        Whether the task's heads read a pooled structure embedding at all.

    Returns
    -------
    str
        One of :data:`REDUCTIONS`.

    Raises
    ------
    ValueError
        On an unknown reduction, or any reduction for a task that pools nothing.

    Examples
    --------
    >>> check_reduction("Task", None, True)
    'mean'
    """
    if reduction is not None and not pools:
        raise ValueError(
            f"{name}(embedding_reduction_type={reduction!r}): this task's heads read atom "
            "embeddings and pool nothing; leave embedding_reduction_type unset"
        )
    if reduction is not None and reduction not in REDUCTIONS:
        raise ValueError(
            f"{name}(embedding_reduction_type={reduction!r}): expected one of {REDUCTIONS}"
        )
    return "mean" if reduction is None else reduction


def check_keyed(
    name: str,
    values: Mapping[str, float] | None,
    argument: str,
    default: float,
    task_keys: Sequence[str],
) -> dict[str, float]:
    """One number per task key, ``default`` for the keys ``values`` leaves out.

    Raises
    ------
    ValueError
        If ``values`` has a key that is not a task key.

    Examples
    --------
    >>> check_keyed("Task", {"b": 2}, "task_loss_scaling", 1.0, ["a", "b"])
    {'a': 1.0, 'b': 2.0}
    """
    given = dict(values or {})
    unknown = set(given) - set(task_keys)
    if unknown:
        raise ValueError(
            f"{name}({argument}): keys {sorted(unknown)} are not task keys {list(task_keys)}"
        )
    return {key: float(given.get(key, default)) for key in task_keys}


def loss_configs(
    name: str,
    loss_func: Any,
    task_keys: Sequence[str],
    default_config: Callable[[str], ClassConfig],
) -> dict[str, ClassConfig]:
    """The loss of each task key as a ``{"class_path", "init_args"}`` config.

    Parameters
    ----------
    name
        The task's class name (for messages).
    loss_func
        ``None`` (each key's ``default_config``), one loss for every key, or ``{key: loss}``.
    task_keys
        The task keys.
    default_config
        The default loss of a key (the task's ``default_loss_config``).

    Returns
    -------
    dict
        ``{key: config}`` for every task key.

    Raises
    ------
    ValueError
        If a dict of losses misses a key or names an unknown one, or a loss is not a module.

    Examples
    --------
    >>> loss_configs("Task", "L1Loss", ["a"], lambda key: {})["a"]["class_path"]
    'torch.nn.modules.loss.L1Loss'
    """
    per_key = isinstance(loss_func, Mapping) and "class_path" not in loss_func
    if loss_func is None:
        return {key: default_config(key) for key in task_keys}
    if not per_key:
        config = module_config(
            loss_func, nn.Module, argument="loss_func", default_module="torch.nn"
        )
        return {key: config for key in task_keys}
    missing = [key for key in task_keys if key not in loss_func]
    extra = [key for key in loss_func if key not in task_keys]
    if missing or extra:
        raise ValueError(
            f"{name}(loss_func): keys without a loss {missing}, losses without a key {extra}; "
            f"task keys are {list(task_keys)}"
        )
    return {
        key: module_config(
            loss_func[key], nn.Module, argument=f"loss_func[{key!r}]", default_module="torch.nn"
        )
        for key in task_keys
    }
