"""Turn user-facing module specifications (instances, classes, dotted names) into modules.

Dotted names go through matsci's one class resolver, :func:`matsci.contract.import_class`:
installed classes only, and only subclasses of :class:`torch.nn.Module`.
"""

from __future__ import annotations

from typing import TypeAlias

from torch import nn

from matsci.contract import import_class

ModuleSpec: TypeAlias = nn.Module | type[nn.Module] | str
"""An activation or normalization: a module instance, a module class, or a dotted class name."""


def resolve_module_class(name: str, *, argument: str) -> type[nn.Module]:
    """Find the :class:`torch.nn.Module` subclass that a dotted name refers to.

    The one class resolver of matsci, :func:`matsci.contract.import_class`, does the work:
    installed code only, and the result must derive from :class:`torch.nn.Module`, so a
    configuration can name ``"torch.nn.SiLU"`` or ``"mypackage.MyActivation"`` but never a
    function such as ``"os.system"``.

    Parameters
    ----------
    name
        ``"torch.nn.SiLU"``, ``"mypackage.layers.MyNorm"``, or a bare class name such as
        ``"SiLU"`` (looked up in ``torch.nn``).
    argument
        The argument being resolved, named in error messages (e.g. ``"OutputBlock(activation)"``).

    Returns
    -------
    type of torch.nn.Module
        The class, not yet instantiated.

    Raises
    ------
    ValueError
        If the name does not lead to an importable :class:`torch.nn.Module` subclass.

    Examples
    --------
    >>> from matsci.heads import resolve_module_class
    >>> resolve_module_class("torch.nn.SiLU", argument="activation")
    <class 'torch.nn.modules.activation.SiLU'>
    """
    return import_class(name, nn.Module, argument=argument, default_module="torch.nn")


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
