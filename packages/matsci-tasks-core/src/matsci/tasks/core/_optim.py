"""Build optimizers and learning-rate schedulers from plain, checkpoint-safe descriptions."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler, ReduceLROnPlateau

from matsci.contract import build_from_config, class_path, import_class, to_plain

_SCHEDULER_KEYS = {"class_path", "init_args", "interval", "frequency", "monitor"}


def optimizer_path(optimizer: str | type[Optimizer]) -> str:
    """Resolve an optimizer name (``"AdamW"``, ``"torch.optim.SGD"``) or class to a dotted path.

    Parameters
    ----------
    optimizer
        A class name from ``torch.optim``, a dotted path, or a class.

    Returns
    -------
    str
        The dotted path.

    Raises
    ------
    ValueError
        If it does not name a ``torch.optim.Optimizer`` subclass.
    """
    if isinstance(optimizer, type):
        return class_path(optimizer)
    cls = import_class(optimizer, Optimizer, argument="optimizer", default_module="torch.optim")
    return class_path(cls)


def check_scheduler_kwargs(scheduler_kwargs: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Validate a scheduler description and return it as plain data.

    The description is ``{"class_path": ..., "init_args": {...}}`` plus Lightning's
    ``interval`` (``"epoch"`` or ``"step"``), ``frequency`` and ``monitor`` (required for
    ``ReduceLROnPlateau``). Bare class names are looked up in ``torch.optim.lr_scheduler``.
    Schedulers that take other schedulers (``SequentialLR``, ``ChainedScheduler``) get them as
    a list of ``{"class_path", "init_args"}`` dicts under ``init_args["schedulers"]``.

    Parameters
    ----------
    scheduler_kwargs
        The description, or ``None`` for a constant learning rate.

    Returns
    -------
    dict or None
        The description with full class paths.

    Raises
    ------
    ValueError
        On unknown keys or classes, a bad ``interval``, or ``ReduceLROnPlateau`` without
        ``monitor``.

    Examples
    --------
    >>> from matsci.tasks.core import check_scheduler_kwargs
    >>> check_scheduler_kwargs({"class_path": "StepLR", "init_args": {"step_size": 10}})[
    ...     "class_path"]
    'torch.optim.lr_scheduler.StepLR'
    """
    if scheduler_kwargs is None:
        return None
    unknown = set(scheduler_kwargs) - _SCHEDULER_KEYS
    if unknown or "class_path" not in scheduler_kwargs:
        raise ValueError(
            f"scheduler_kwargs: unknown keys {sorted(unknown)} or no 'class_path'; expected keys "
            f"from {sorted(_SCHEDULER_KEYS)}"
        )
    config: dict[str, Any] = to_plain(dict(scheduler_kwargs), argument="scheduler_kwargs")
    config["class_path"] = _scheduler_path(config["class_path"])
    init_args = dict(config.get("init_args") or {})
    if "schedulers" in init_args:
        init_args["schedulers"] = [
            {
                "class_path": _scheduler_path(inner["class_path"]),
                "init_args": _inner_init_args(inner),
            }
            for inner in init_args["schedulers"]
        ]
    config["init_args"] = init_args
    if config.setdefault("interval", "epoch") not in ("epoch", "step"):
        raise ValueError(
            f"scheduler_kwargs: interval {config['interval']!r} is not 'epoch' or 'step'"
        )
    plateau = issubclass(
        import_class(config["class_path"], object, argument="scheduler_kwargs"), ReduceLROnPlateau
    )
    if plateau and "monitor" not in config:
        raise ValueError("scheduler_kwargs: ReduceLROnPlateau needs 'monitor', e.g. 'val/loss'")
    return config


def _inner_init_args(inner: Mapping[str, Any]) -> dict[str, Any]:
    """An inner scheduler's arguments without ``optimizer``, which the task supplies.

    A config parser that knows the class fills its defaults in, ``optimizer: None`` among them.
    """
    init_args = dict(inner.get("init_args") or {})
    if init_args.pop("optimizer", None) is not None:
        raise ValueError(
            "scheduler_kwargs: an inner scheduler's 'optimizer' is the task's own; leave it out"
        )
    return init_args


def _scheduler_path(path: str) -> str:
    cls = import_class(
        path, object, argument="scheduler_kwargs", default_module="torch.optim.lr_scheduler"
    )
    if not (issubclass(cls, LRScheduler) or issubclass(cls, ReduceLROnPlateau)):
        raise ValueError(f"scheduler_kwargs: {path!r} is not a learning-rate scheduler")
    return class_path(cls)


def build_optimizer(
    path: str, param_groups: Iterable[dict[str, Any]], lr: float, weight_decay: float
) -> Optimizer:
    """Instantiate the optimizer at ``path`` on parameter groups.

    Parameters
    ----------
    path
        Dotted path of a ``torch.optim.Optimizer`` subclass.
    param_groups
        Parameter groups (dicts with ``params`` and optional per-group settings).
    lr
        Learning rate of groups that set none.
    weight_decay
        Weight decay of groups that set none.

    Returns
    -------
    torch.optim.Optimizer
        The optimizer.
    """
    return build_from_config(
        {"class_path": path, "init_args": {"lr": lr, "weight_decay": weight_decay}},
        Optimizer,
        argument="optimizer",
        params=list(param_groups),
    )


def build_scheduler(
    config: Mapping[str, Any],
    optimizer: Optimizer,
    run_length: Callable[[], int] | None = None,
) -> dict[str, Any]:
    """Instantiate a checked scheduler description as Lightning's ``lr_scheduler`` dict.

    A scheduler that takes ``total_steps`` (:class:`~matsci.tasks.core.WarmupCosineLR`,
    ``OneCycleLR``) and whose description gives neither ``total_steps`` nor ``epochs`` gets
    ``run_length()``: the number of optimizer steps of the whole run, so its schedule ends
    with the run; that needs ``"interval": "step"``.

    Parameters
    ----------
    config
        Output of :func:`check_scheduler_kwargs`.
    optimizer
        The optimizer to schedule.
    run_length
        Returns the run's number of optimizer steps; called only when a scheduler needs it
        (tasks pass the trainer's ``estimated_stepping_batches``).

    Returns
    -------
    dict
        ``{"scheduler": ..., "interval": ..., "frequency": ..., "monitor": ...}``.

    Raises
    ------
    ValueError
        If a scheduler needs the run's length and ``run_length`` is ``None`` or the scheduler
        steps per epoch.
    """
    init_args = dict(config["init_args"])
    if config["interval"] != "step":
        run_length = None  # the run's length is counted in optimizer steps
    if "schedulers" in init_args:
        init_args["schedulers"] = [
            _build_one(inner, optimizer, run_length) for inner in init_args["schedulers"]
        ]
    scheduler = _build_one(
        {"class_path": config["class_path"], "init_args": init_args}, optimizer, run_length
    )
    out: dict[str, Any] = {
        "scheduler": scheduler,
        "interval": config["interval"],
        "frequency": int(config.get("frequency", 1)),
    }
    if "monitor" in config:
        out["monitor"] = config["monitor"]
    return out


def _build_one(
    config: Mapping[str, Any], optimizer: Optimizer, run_length: Callable[[], int] | None
) -> Any:
    """One scheduler, with ``total_steps`` filled from ``run_length`` where it is left out."""
    init_args = dict(config["init_args"])
    cls = import_class(config["class_path"], object, argument="scheduler_kwargs")
    # OneCycleLR also accepts epochs and steps_per_epoch instead of total_steps.
    if "total_steps" in inspect.signature(cls).parameters and not (
        {"total_steps", "epochs"} & set(init_args)
    ):
        if run_length is None:
            raise ValueError(
                f"scheduler_kwargs: {config['class_path']} needs the run's total_steps; give "
                "it in init_args, or step it per optimizer step ('interval': 'step') under a "
                "Trainer, which knows the number of steps"
            )
        init_args["total_steps"] = run_length()
    return build_from_config(
        {"class_path": config["class_path"], "init_args": init_args},
        object,
        argument="scheduler_kwargs",
        optimizer=optimizer,
    )


def optimization_config(
    path: str,
    param_groups: Iterable[dict[str, Any]],
    lr: float,
    weight_decay: float,
    scheduler_config: Mapping[str, Any] | None,
    run_length: Callable[[], int] | None = None,
) -> Any:
    """What ``configure_optimizers`` returns: the optimizer, with its scheduler if one is set.

    Parameters
    ----------
    path
        Dotted path of the optimizer class.
    param_groups
        Parameter groups.
    lr
        Default learning rate.
    weight_decay
        Default weight decay.
    scheduler_config
        A checked scheduler configuration (see :func:`check_scheduler_kwargs`) or ``None``.
    run_length
        The run's number of optimizer steps, for schedulers that end with the run (see
        :func:`build_scheduler`).

    Returns
    -------
    torch.optim.Optimizer or dict
        The optimizer alone, or ``{"optimizer", "lr_scheduler"}``.
    """
    optimizer = build_optimizer(path, param_groups, lr, weight_decay)
    if scheduler_config is None:
        return optimizer
    return {
        "optimizer": optimizer,
        "lr_scheduler": build_scheduler(scheduler_config, optimizer, run_length),
    }
