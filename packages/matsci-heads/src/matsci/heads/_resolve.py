"""Turn user-facing module specifications (instances, classes, dotted names) into modules.

Names are resolved only inside allow-listed namespaces (``torch.nn`` by default), so a
configuration file can name ``"torch.nn.SiLU"`` but can never make us import arbitrary code.
"""

from __future__ import annotations

import importlib
from typing import TypeAlias

from torch import nn

ModuleSpec: TypeAlias = nn.Module | type[nn.Module] | str
"""An activation or normalization: a module instance, a module class, or a dotted class name."""

_allowed_namespaces: list[str] = ["torch.nn"]


def allowed_namespaces() -> tuple[str, ...]:
    """Return the module namespaces in which dotted names are resolved.

    Returns
    -------
    tuple of str
        Importable module paths, ``("torch.nn",)`` unless more were registered.
    """
    return tuple(_allowed_namespaces)


def register_namespace(namespace: str) -> None:
    """Allow dotted names under ``namespace`` (for example ``"mypackage.activations"``).

    Only classes defined directly in that module and derived from :class:`torch.nn.Module`
    are ever returned.

    Parameters
    ----------
    namespace
        An importable module path.

    Raises
    ------
    ValueError
        If ``namespace`` is not a dotted module path.

    Examples
    --------
    >>> from matsci.heads import allowed_namespaces, register_namespace
    >>> register_namespace("torch.nn.modules.activation")
    >>> "torch.nn.modules.activation" in allowed_namespaces()
    True
    """
    if not namespace or not all(part.isidentifier() for part in namespace.split(".")):
        raise ValueError(f"register_namespace: {namespace!r} is not a dotted module path")
    if namespace not in _allowed_namespaces:
        _allowed_namespaces.append(namespace)


def resolve_module_class(name: str, *, argument: str) -> type[nn.Module]:
    """Find the :class:`torch.nn.Module` subclass that a dotted name refers to.

    Parameters
    ----------
    name
        ``"torch.nn.SiLU"``, or a bare class name such as ``"SiLU"`` (looked up in ``torch.nn``).
    argument
        The argument being resolved, named in error messages (e.g. ``"OutputBlock(activation)"``).

    Returns
    -------
    type of torch.nn.Module
        The class, not yet instantiated.

    Raises
    ------
    ValueError
        If the namespace is not allowed or the class does not exist there or is not a module.

    Examples
    --------
    >>> from matsci.heads import resolve_module_class
    >>> resolve_module_class("torch.nn.SiLU", argument="activation")
    <class 'torch.nn.modules.activation.SiLU'>
    """
    namespace, _, class_name = name.rpartition(".")
    namespace = namespace or "torch.nn"
    if namespace not in _allowed_namespaces:
        raise ValueError(
            f"{argument}: {name!r} is outside the allowed namespaces "
            f"{allowed_namespaces()}; pass a module instance or class, or call "
            "matsci.heads.register_namespace() first"
        )
    candidate = getattr(importlib.import_module(namespace), class_name, None)
    if not (isinstance(candidate, type) and issubclass(candidate, nn.Module)):
        raise ValueError(f"{argument}: {name!r} is not a torch.nn.Module subclass in {namespace!r}")
    return candidate


def build_module(spec: ModuleSpec | None, *args: object, argument: str) -> nn.Module:
    """Build a module from a specification; ``None`` gives :class:`torch.nn.Identity`.

    Parameters
    ----------
    spec
        A module instance (used as it is), a module class or a dotted name (instantiated with
        ``*args``), or ``None``.
    *args
        Constructor arguments for classes and names, such as the feature size of a norm.
    argument
        The argument being resolved, used in error messages.

    Returns
    -------
    torch.nn.Module
        The module.

    Raises
    ------
    TypeError
        If ``spec`` is of another type.
    """
    if spec is None:
        return nn.Identity()
    if isinstance(spec, nn.Module):
        return spec
    if isinstance(spec, str):
        return resolve_module_class(spec, argument=argument)(*args)
    if isinstance(spec, type) and issubclass(spec, nn.Module):
        return spec(*args)
    raise TypeError(
        f"{argument}: expected an nn.Module instance, an nn.Module class, a dotted name or None, "
        f"got {type(spec).__name__}"
    )
