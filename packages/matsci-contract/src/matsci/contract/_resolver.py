"""Serializable descriptions of classes: dotted paths and ``{"class_path", "init_args"}`` dicts.

Checkpoints are loaded with ``weights_only=True``, so hyperparameters may hold only plain data.
Every class a task is built from (encoder, losses, optimizer, scheduler) is therefore recorded as
a dotted path plus plain constructor arguments, the same shape ``LightningCLI`` uses in YAML.
Loading a checkpoint imports the modules those paths name (installed code only, never code from
the checkpoint file).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping
from typing import Any, TypeAlias, TypeVar

import torch
from torch import nn

ClassConfig: TypeAlias = dict[str, Any]
"""``{"class_path": "package.module.Class", "init_args": {...}}`` with plain-data arguments."""

T = TypeVar("T")

_PLAIN = (bool, int, float, str, type(None))


def class_path(cls: type) -> str:
    """Return the dotted path that :func:`import_class` turns back into ``cls``.

    Parameters
    ----------
    cls
        A class defined at module level.

    Returns
    -------
    str
        ``"module.QualifiedName"``.

    Raises
    ------
    ValueError
        If the class is defined inside a function (it could not be imported again).

    Examples
    --------
    >>> import torch
    >>> from matsci.contract import class_path
    >>> class_path(torch.nn.MSELoss)
    'torch.nn.modules.loss.MSELoss'
    """
    if "<locals>" in cls.__qualname__:
        raise ValueError(
            f"class {cls.__qualname__} is defined inside a function; define it at module level "
            "so that checkpoints can name it"
        )
    return f"{cls.__module__}.{cls.__qualname__}"


def import_class(path: str, base: type[T], *, argument: str, default_module: str = "") -> type[T]:
    """Import the class a dotted path names and check that it derives from ``base``.

    Parameters
    ----------
    path
        ``"package.module.Class"``, or a bare ``"Class"`` looked up in ``default_module``.
    base
        The class the result must derive from.
    argument
        The argument being resolved, named in error messages.
    default_module
        Module searched for bare names (for example ``"torch.optim"``).

    Returns
    -------
    type
        The class.

    Raises
    ------
    ValueError
        If the path does not name an importable subclass of ``base``.

    Examples
    --------
    >>> import torch
    >>> from matsci.contract import import_class
    >>> import_class("AdamW", torch.optim.Optimizer, argument="optimizer",
    ...              default_module="torch.optim")
    <class 'torch.optim.adamw.AdamW'>
    """
    module_name, _, name = path.rpartition(".")
    module_name = module_name or default_module
    candidate: Any = None
    if module_name:
        try:
            candidate = importlib.import_module(module_name)
        except ImportError:
            # The path may name a nested class (module.Outer.Inner): try shorter module paths.
            head, _, rest = module_name.rpartition(".")
            candidate = _import_attribute(head, f"{rest}.{name}") if head else None
            name = ""
        for part in name.split(".") if name else []:
            candidate = getattr(candidate, part, None)
    if not (isinstance(candidate, type) and issubclass(candidate, base)):
        raise ValueError(f"{argument}: {path!r} does not name a subclass of {class_path(base)}")
    return candidate


def _import_attribute(module_name: str, attribute: str) -> Any:
    try:
        value: Any = importlib.import_module(module_name)
    except ImportError:
        return None
    for part in attribute.split("."):
        value = getattr(value, part, None)
    return value


def to_plain(value: Any, *, argument: str) -> Any:
    """Convert tensors, tuples and mappings into plain lists, dicts and numbers.

    Objects with an ``as_dict()`` method (jsonargparse's ``Namespace``, which the ``matsci``
    command gives for nested dicts of a YAML file) count as mappings.

    Parameters
    ----------
    value
        A constructor argument.
    argument
        Named in the error message.

    Returns
    -------
    object
        The same value as plain data, safe for ``weights_only`` checkpoints.

    Raises
    ------
    ValueError
        If the value holds something that is not plain data (a module, a function, ...).
    """
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().tolist()
    if isinstance(value, _PLAIN):
        return value
    if isinstance(value, list | tuple):
        return [to_plain(item, argument=argument) for item in value]
    if isinstance(value, Mapping):
        return {str(k): to_plain(v, argument=argument) for k, v in value.items()}
    as_dict = getattr(value, "as_dict", None)
    if callable(as_dict):
        # A config namespace (jsonargparse's, for nested dicts of a YAML file) is a mapping.
        return to_plain(as_dict(), argument=argument)
    raise ValueError(
        f"{argument}: {type(value).__name__} is not plain data; give numbers, strings, lists "
        "or dicts so the checkpoint can be loaded with weights_only=True"
    )


def module_config(
    spec: Any, base: type[nn.Module], *, argument: str, default_module: str
) -> ClassConfig:
    """Describe a module given as a dotted name, a class, an instance or a config dict.

    An instance is described by its class and the constructor arguments that it keeps as
    attributes of the same name (how every ``torch.nn`` loss stores them); tensor arguments
    such as ``pos_weight`` become lists.

    Parameters
    ----------
    spec
        ``"torch.nn.MSELoss"``, ``torch.nn.MSELoss``, ``torch.nn.MSELoss()``, or a
        :data:`ClassConfig`.
    base
        The class the module must derive from.
    argument
        Named in error messages.
    default_module
        Module searched for bare names.

    Returns
    -------
    ClassConfig
        A plain-data description.

    Raises
    ------
    ValueError
        If ``spec`` cannot be described as plain data.
    TypeError
        If ``spec`` is of another type.

    Examples
    --------
    >>> import torch
    >>> from matsci.contract import module_config
    >>> module_config(torch.nn.HuberLoss(delta=0.5), torch.nn.Module, argument="loss_func",
    ...               default_module="torch.nn")["init_args"]["delta"]
    0.5
    """
    if isinstance(spec, str):
        cls = import_class(spec, base, argument=argument, default_module=default_module)
        return {"class_path": class_path(cls), "init_args": {}}
    if isinstance(spec, type):
        cls = import_class(class_path(spec), base, argument=argument)
        return {"class_path": class_path(cls), "init_args": {}}
    if isinstance(spec, Mapping):
        if set(spec) - {"class_path", "init_args"} or "class_path" not in spec:
            raise ValueError(
                f"{argument}: a config dict needs the keys 'class_path' and optionally "
                f"'init_args', got {sorted(spec)}"
            )
        cls = import_class(
            str(spec["class_path"]), base, argument=argument, default_module=default_module
        )
        init_args = to_plain(dict(spec.get("init_args") or {}), argument=argument)
        return {"class_path": class_path(cls), "init_args": init_args}
    if isinstance(spec, base):
        return {"class_path": class_path(type(spec)), "init_args": _init_args_of(spec, argument)}
    raise TypeError(
        f"{argument}: expected a dotted name, a class, an instance of "
        f"{base.__qualname__} or a {{'class_path', 'init_args'}} dict, got {type(spec).__name__}"
    )


def _init_args_of(instance: nn.Module, argument: str) -> dict[str, Any]:
    """Read back the constructor arguments an instance stores under their own names."""
    signature = inspect.signature(type(instance).__init__)
    init_args: dict[str, Any] = {}
    for name, parameter in signature.parameters.items():
        if name == "self" or parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        if name in ("size_average", "reduce"):  # deprecated torch aliases of `reduction`
            continue
        if not hasattr(instance, name):
            if parameter.default is inspect.Parameter.empty:
                raise ValueError(
                    f"{argument}: cannot read back the required argument {name!r} of "
                    f"{type(instance).__qualname__}; pass {{'class_path': ..., 'init_args': ...}}"
                )
            continue
        value = getattr(instance, name)
        if not isinstance(value, torch.Tensor) and value == parameter.default:
            continue
        init_args[name] = to_plain(value, argument=argument)
    return init_args


def instance_config(instance: nn.Module, *, argument: str) -> ClassConfig:
    """Describe a module instance by its class and every argument it was built with.

    Stricter than :func:`module_config`: an instance that keeps its constructor arguments in an
    ``init_args`` mapping is described by it; otherwise every constructor parameter must be
    readable as an attribute of the same name (a parameter left at its default is still read,
    so that a changed attribute is never mistaken for the default). This is how a task records
    an encoder given as an instance, so that a checkpoint alone rebuilds the same encoder.

    Parameters
    ----------
    instance
        The module.
    argument
        Named in error messages.

    Returns
    -------
    ClassConfig
        ``{"class_path": ..., "init_args": ...}`` in plain data.

    Raises
    ------
    ValueError
        If the class is defined inside a function, or an argument cannot be read back or is
        not plain data.

    Examples
    --------
    >>> import torch
    >>> from matsci.contract import instance_config
    >>> instance_config(torch.nn.Dropout(p=0.25), argument="encoder")
    {'class_path': 'torch.nn.modules.dropout.Dropout', 'init_args': {'p': 0.25, 'inplace': False}}
    """
    path = class_path(type(instance))
    recorded = getattr(instance, "init_args", None)
    if isinstance(recorded, Mapping):
        return {"class_path": path, "init_args": to_plain(dict(recorded), argument=argument)}
    signature = inspect.signature(type(instance).__init__)
    init_args: dict[str, Any] = {}
    for name, parameter in signature.parameters.items():
        if name == "self" or parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        if not hasattr(instance, name):
            raise ValueError(
                f"{argument}: {type(instance).__qualname__} keeps no attribute {name!r}, so the "
                "argument it was built with cannot be read back; give the instance an "
                "'init_args' dict of its constructor arguments"
            )
        init_args[name] = to_plain(getattr(instance, name), argument=f"{argument}.{name}")
    return {"class_path": path, "init_args": init_args}


def build_from_config(config: ClassConfig, base: type[T], *, argument: str, **extra: Any) -> T:
    """Instantiate a :data:`ClassConfig`, turning list arguments back into tensors where needed.

    Parameters
    ----------
    config
        ``{"class_path": ..., "init_args": ...}``.
    base
        The class the result must derive from.
    argument
        Named in error messages.
    **extra
        Further constructor arguments not stored in the config (such as ``params`` of an
        optimizer).

    Returns
    -------
    object
        The new instance.

    Raises
    ------
    ValueError
        If the class rejects its arguments.
    """
    cls = import_class(config["class_path"], base, argument=argument)
    init_args = dict(config.get("init_args") or {})
    signature = inspect.signature(cls.__init__)
    for name, value in init_args.items():
        parameter = signature.parameters.get(name)
        # Tensor-valued arguments of torch losses (weight, pos_weight) are stored as lists.
        if (
            parameter is not None
            and isinstance(value, list)
            and "Tensor" in str(parameter.annotation)
        ):
            init_args[name] = torch.tensor(value)
    try:
        return cls(**init_args, **extra)
    except TypeError as error:
        raise ValueError(
            f"{argument}: {config['class_path']} rejected {init_args}: {error}"
        ) from error
