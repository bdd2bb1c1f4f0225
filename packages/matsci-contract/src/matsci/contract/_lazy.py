"""Packages whose public names are imported on first use (PEP 562)."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(
    package: str, module_of: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """A package's ``__getattr__`` and ``__dir__`` that import each name from its module.

    Importing a package then costs nothing beyond its ``__init__``: a name is imported from
    its private module when first used, and stored in the package so later lookups are plain
    attribute reads. ``matsci.contract``, ``matsci.cli`` and ``matsci.simulate`` use it, so
    that the class resolver, ``matsci --help`` and ``import matsci.simulate`` (without any
    simulator installed) stay fast.

    Parameters
    ----------
    package
        The package's ``__name__``; it must define ``__all__``.
    module_of
        ``{public name: module name inside the package}``, such as ``{"Embeddings":
        "_embeddings"}``.

    Returns
    -------
    tuple
        ``(__getattr__, __dir__)``, to assign at the package's top level.

    Examples
    --------
    In a package's ``__init__.py``::

        __all__ = ["Embeddings"]
        __getattr__, __dir__ = lazy_exports(__name__, {"Embeddings": "_embeddings"})
    """
    namespace = sys.modules[package].__dict__

    def attribute(name: str) -> Any:
        module = module_of.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module}"), name)
        namespace[name] = value  # later lookups skip this function
        return value

    def names() -> list[str]:
        return sorted(namespace["__all__"])

    return attribute, names
