"""Import e3nn on demand so that ``matsci.heads`` works without the ``[e3nn]`` extra."""

from __future__ import annotations

from types import ModuleType


def require_e3nn(feature: str) -> ModuleType:
    """Return the ``e3nn`` module, or explain how to install it.

    Parameters
    ----------
    feature
        What needs e3nn, named in the error message.

    Returns
    -------
    module
        The imported ``e3nn`` package.

    Raises
    ------
    ImportError
        If e3nn is not installed; the message names the ``matsci-heads[e3nn]`` extra.
    """
    try:
        import e3nn
        import e3nn.nn
        import e3nn.o3
    except ImportError as error:
        raise ImportError(
            f"{feature} needs e3nn, which is not installed; install the extra with "
            "`pip install 'matsci-heads[e3nn]'` (or `uv add 'matsci-heads[e3nn]'`)"
        ) from error
    module: ModuleType = e3nn
    return module
