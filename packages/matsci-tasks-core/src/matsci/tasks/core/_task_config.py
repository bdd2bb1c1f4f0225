"""A task's constructor arguments as plain data: the encoder, losses and head settings.

Checkpoints load with ``weights_only=True``, so what a task stores of its arguments must be
plain data that the constructor accepts again and that rebuilds the same task.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from matsci.contract import (
    ClassConfig,
    class_path,
    import_class,
    instance_config,
    module_config,
    to_plain,
)


def build_encoder(
    name: str,
    encoder: nn.Module | None,
    encoder_class: str | type[nn.Module] | None,
    encoder_kwargs: Mapping[str, Any] | None,
) -> tuple[nn.Module, ClassConfig | None]:
    """The task's encoder and its plain description (``None`` when it cannot be recorded).

    An encoder built from ``encoder_class`` is described by that class and ``encoder_kwargs``;
    an instance by :func:`~matsci.contract.instance_config` (its ``init_args`` or attributes),
    so that the checkpoint alone rebuilds an encoder of the same size and cutoff. An instance
    that cannot be described (a class defined in a function, arguments not kept) is recorded
    as ``None``: such a task reloads only with ``load_from_checkpoint(path, encoder=...)``.

    Parameters
    ----------
    name
        The task's class name (for messages).
    encoder, encoder_class, encoder_kwargs
        The task's arguments.

    Returns
    -------
    tuple
        ``(encoder, config)``.

    Raises
    ------
    ValueError
        With neither ``encoder`` nor ``encoder_class``, an instance of another class than
        ``encoder_class``, or an encoder without ``embedding_dim``.
    """
    if encoder is None and encoder_class is None:
        raise ValueError(
            f"{name}: give encoder= (an instance) or encoder_class= (with encoder_kwargs); a "
            "checkpoint of a task whose encoder instance could not be recorded reloads with "
            "load_from_checkpoint(path, encoder=...)"
        )
    config: ClassConfig | None
    if encoder_class is not None:
        path = encoder_class if isinstance(encoder_class, str) else class_path(encoder_class)
        kwargs = dict(encoder_kwargs or {})
        config = {"class_path": path, "init_args": to_plain(kwargs, argument="encoder_kwargs")}
        if encoder is None:
            encoder = import_class(path, nn.Module, argument=f"{name}(encoder_class)")(**kwargs)
        elif not _is_instance_of(encoder, path):
            raise ValueError(
                f"{name}: encoder is a {class_path(type(encoder))} but encoder_class is {path}"
            )
    else:
        assert encoder is not None
        config = _recordable(encoder, name)
    if not hasattr(encoder, "embedding_dim"):
        raise ValueError(
            f"{name}: the encoder {type(encoder).__name__} has no embedding_dim attribute "
            "(an int, or e3nn Irreps), which the heads need"
        )
    return encoder, config


def _is_instance_of(encoder: nn.Module, path: str) -> bool:
    """Whether ``encoder`` is of the class at ``path`` (a re-exported name counts).

    With both an instance and a path (``load_from_checkpoint(path, encoder=...)`` adds an
    instance to the stored path), the path need not import: the instance is why it is given.
    """
    try:
        return isinstance(encoder, import_class(path, nn.Module, argument="encoder_class"))
    except ValueError:
        return path == class_path(type(encoder))


def _recordable(encoder: nn.Module, name: str) -> ClassConfig | None:
    """The instance's description, when its class imports again by that path."""
    try:
        config = instance_config(encoder, argument=f"{name}(encoder)")
        import_class(config["class_path"], nn.Module, argument=f"{name}(encoder)")
    except ValueError:
        return None
    return config


def plain_loss_func(loss_func: Any) -> Any:
    """``loss_func`` as plain data: ``None``, one ``{"class_path", "init_args"}`` or one per key."""
    if loss_func is None:
        return None
    if isinstance(loss_func, Mapping) and "class_path" not in loss_func:
        return {key: _plain_module(spec, f"loss_func[{key!r}]") for key, spec in loss_func.items()}
    return _plain_module(loss_func, "loss_func")


def _plain_module(spec: Any, argument: str) -> ClassConfig:
    return module_config(spec, nn.Module, argument=argument, default_module="torch.nn")


def plain_output_kwargs(output_kwargs: dict[str, Any]) -> dict[str, Any]:
    """Head arguments as plain data: ``torch.nn`` classes become their dotted names."""
    plain: dict[str, Any] = {}
    for name, value in output_kwargs.items():
        torch_nn_name = getattr(value, "__name__", "")
        if isinstance(value, type) and getattr(nn, torch_nn_name, None) is value:
            plain[name] = f"torch.nn.{torch_nn_name}"
        else:
            plain[name] = to_plain(value, argument=f"output_kwargs[{name!r}]")
    return plain


def plain_hparams(
    hparams: Mapping[str, Any],
    *,
    encoder_config: ClassConfig | None,
    loss_func: Any,
    optimizer_path: str,
    scheduler_config: Mapping[str, Any] | None,
    output_kwargs: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The task's recorded arguments with those that are not plain data in their plain form.

    Each replacement is an argument the constructor takes as well, so the checkpoint loads
    with ``weights_only=True`` and rebuilds the same task.

    Parameters
    ----------
    hparams
        The arguments Lightning recorded (the subclass's too).
    encoder_config
        The encoder's description from :func:`build_encoder`, or ``None``.
    loss_func, output_kwargs
        The task's arguments as given.
    optimizer_path, scheduler_config
        The resolved optimizer path and checked schedule.

    Returns
    -------
    dict
        The arguments to record.
    """
    return {
        **hparams,
        "encoder_class": None if encoder_config is None else encoder_config["class_path"],
        "encoder_kwargs": None if encoder_config is None else encoder_config["init_args"],
        "loss_func": plain_loss_func(loss_func),
        "optimizer": optimizer_path,
        "scheduler_kwargs": scheduler_config,
        "output_kwargs": plain_output_kwargs(dict(output_kwargs or {})),
    }
