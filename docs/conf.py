"""Sphinx configuration for the matsci documentation.

Build the HTML pages and run every example with::

    uv run --group docs sphinx-build -E -W -b html docs docs/_build/html
    uv run --group docs sphinx-build -E -W -b doctest docs docs/_build/doctest
"""

import sys

project = "matsci"
author = "matsci contributors"
copyright = "matsci contributors"

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.doctest",
    "sphinx.ext.viewcode",
]

# The docs are built offline: no intersphinx, no remote images.
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
root_doc = "index"
nitpicky = False

# -- autodoc / napoleon ------------------------------------------------------
autodoc_member_order = "bysource"
autodoc_typehints = "description"
# Types go next to the parameters and returns that the docstring describes,
# and a return type is not repeated when the Returns section already names it.
autodoc_typehints_description_target = "documented"
# Show defaults as written (``block_type=OutputBlock``), not as a repr.
autodoc_preserve_defaults = True
autodoc_default_options = {
    "show-inheritance": True,
    # torch.nn.Module's own docstring for it says nothing about our modules.
    "exclude-members": "extra_repr",
}
napoleon_google_docstring = False
napoleon_numpy_docstring = True

# -- doctest -----------------------------------------------------------------
# Runs before every ``testcode``/``doctest`` group and before the ``>>>``
# examples of the docstrings pulled in by autodoc.
doctest_global_setup = """
import importlib.util

import torch

torch.manual_seed(0)
# The examples are small: one thread is faster than several contending for a
# shared machine's cores (and the same on every machine).
torch.set_num_threads(1)
HAS_E3NN = importlib.util.find_spec("e3nn") is not None
"""

# -- HTML --------------------------------------------------------------------
html_theme = "furo"
html_title = "matsci"


# -- private base classes ----------------------------------------------------
def _skip_private_bases(app, name, obj, options, bases):
    """Show a private matsci base class as the public classes it derives from.

    A base like ``matsci.data._device_transfer.SkipsTransferWhenThere`` is an
    implementation detail with no page of its own; readers want the public
    class behind it (``LightningDataModule``).
    """
    shown = []
    for base in bases:
        while _is_private_matsci(base):
            base = base.__bases__[0]
        shown.append(base)
    bases[:] = shown


def _is_private_matsci(cls):
    """Whether ``cls`` is a matsci class that its package does not export."""
    module = getattr(cls, "__module__", "")
    if not module.startswith("matsci.") or "._" not in module:
        return False
    package = sys.modules.get(module.split("._")[0])
    return cls.__name__ not in getattr(package, "__all__", ())


def setup(app):
    """Register the hooks above."""
    app.connect("autodoc-process-bases", _skip_private_bases)
