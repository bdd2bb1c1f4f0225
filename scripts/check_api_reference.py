"""Check that every public name of every matsci package is documented in the API reference.

For each import path in ``IMPORT_PATHS`` of ``noxfile.py`` (and each public submodule below it,
such as ``matsci.data.examples``), every name in ``__all__`` must

* have a docstring of its own: classes, functions and modules (constants and type aliases have
  none to give; a ``.. py:data::`` entry documents them), and
* appear in the built Sphinx inventory, ``docs/_build/html/objects.inv``, under the package's
  path or, for a re-export, under the path of another package that documents the same object.

Run after the HTML build (``nox -s docs`` does)::

    uv run python scripts/check_api_reference.py                   # every package
    uv run python scripts/check_api_reference.py matsci-heads      # some distributions only

Exits with status 1 and lists the names that fail.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import inspect
import pkgutil
import sys
import types
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOXFILE = ROOT / "noxfile.py"
INVENTORY = ROOT / "docs" / "_build" / "html" / "objects.inv"


def import_paths(noxfile: Path = NOXFILE) -> dict[str, str]:
    """Read the ``IMPORT_PATHS`` dict of the noxfile without importing nox."""
    tree = ast.parse(noxfile.read_text(encoding="utf-8"))
    for node in tree.body:
        target = node.targets[0] if isinstance(node, ast.Assign) else getattr(node, "target", None)
        if isinstance(target, ast.Name) and target.id == "IMPORT_PATHS" and node.value is not None:
            value = ast.literal_eval(node.value)
            if isinstance(value, dict):
                return {str(key): str(path) for key, path in value.items()}
    raise SystemExit(f"{noxfile}: no IMPORT_PATHS dict found")


def read_inventory(path: Path) -> set[str]:
    """Names of the Python objects in a Sphinx ``objects.inv`` (version 2: zlib after 4 lines)."""
    if not path.is_file():
        raise SystemExit(f"{path} does not exist: build the HTML documentation first")
    raw = path.read_bytes()
    header_end = 0
    for _ in range(4):
        header_end = raw.index(b"\n", header_end) + 1
    if not raw.startswith(b"# Sphinx inventory version 2"):
        raise SystemExit(f"{path}: not a version 2 Sphinx inventory")
    names = set()
    for line in zlib.decompress(raw[header_end:]).decode("utf-8").splitlines():
        # "name domain:role priority uri display-name"; names contain no spaces for Python.
        name, role, *_ = line.split(" ", 2)
        if role.startswith("py:"):
            names.add(name)
    return names


def public_modules(import_path: str) -> Iterator[types.ModuleType]:
    """The package and its submodules whose dotted names have no ``_``-prefixed part."""
    package = importlib.import_module(import_path)
    yield package
    if not hasattr(package, "__path__"):
        return
    for info in pkgutil.walk_packages(package.__path__, prefix=f"{import_path}."):
        if not any(part.startswith("_") for part in info.name.split(".")):
            yield importlib.import_module(info.name)


def exported_names(module: types.ModuleType) -> list[str]:
    """``__all__`` of a module or, without one, the public names it defines itself."""
    names = getattr(module, "__all__", None)
    if names is not None:
        return list(names)
    return [
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and getattr(value, "__module__", module.__name__) == module.__name__
    ]


def own_docstring(value: object) -> str | None:
    """The docstring a class, function or module defines itself; ``None`` if it has none."""
    if isinstance(value, type):
        doc = value.__dict__.get("__doc__")
        # dataclasses write "Name(field, ...)" when a class has no docstring.
        if isinstance(doc, str) and doc.startswith(f"{value.__name__}("):
            return None
    else:
        doc = getattr(value, "__doc__", None)
    return doc.strip() if isinstance(doc, str) and doc.strip() else None


def has_docstring_of_its_own(value: object) -> bool:
    """Whether the object is a kind that carries a docstring (class, function, module)."""
    return isinstance(value, type | types.ModuleType) or inspect.isroutine(value)


@dataclass(frozen=True)
class Entry:
    """One public name: where it is exported and what it is."""

    distribution: str
    qualified_name: str
    value: object


def collect(paths: dict[str, str]) -> list[Entry]:
    """Every exported name of the given packages and of their public submodules, once each."""

    def owner(module_name: str, fallback: str) -> str:
        # A module exported by another package (``matsci.tasks.core.keys`` is
        # ``matsci.contract.keys``) belongs to the distribution whose import path it is under.
        matches = [
            (len(path), dist)
            for dist, path in paths.items()
            if module_name == path or module_name.startswith(f"{path}.")
        ]
        return max(matches)[1] if matches else fallback

    entries = []
    seen_modules: set[str] = set()
    for distribution, import_path in paths.items():
        pending = list(public_modules(import_path))
        while pending:
            module = pending.pop(0)
            if module.__name__ in seen_modules:
                continue
            seen_modules.add(module.__name__)
            for name in exported_names(module):
                if not hasattr(module, name):
                    raise SystemExit(f"{module.__name__}.__all__ names missing {name!r}")
                value = getattr(module, name)
                dist = owner(module.__name__, distribution)
                entries.append(Entry(dist, f"{module.__name__}.{name}", value))
                # A module exported by name (``keys``): its own names are public too.
                if isinstance(value, types.ModuleType):
                    pending.append(value)
    return entries


def problems(entries: list[Entry], documented: set[str]) -> list[tuple[Entry, str]]:
    """The entries that lack a docstring or are not in the inventory, with the reason."""
    # A re-exported class, function or module counts as documented when any of its public paths
    # (including a module's own ``__name__``) is in the inventory.
    aliases: dict[int, set[str]] = {}
    for entry in entries:
        if has_docstring_of_its_own(entry.value):
            aliases.setdefault(id(entry.value), set()).add(entry.qualified_name)
            if isinstance(entry.value, types.ModuleType):
                aliases[id(entry.value)].add(entry.value.__name__)
    found = []
    for entry in entries:
        if has_docstring_of_its_own(entry.value) and own_docstring(entry.value) is None:
            found.append((entry, "no docstring"))
        names = aliases.get(id(entry.value), {entry.qualified_name})
        if not names & documented:
            found.append((entry, "not in the API reference"))
    return found


def main(argv: list[str] | None = None) -> int:
    """Check the packages named on the command line (all of ``IMPORT_PATHS`` by default)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("distributions", nargs="*", help="distributions to check (default: all)")
    parser.add_argument("--inventory", type=Path, default=INVENTORY, help="objects.inv to read")
    args = parser.parse_args(argv)

    paths = import_paths()
    unknown = sorted(set(args.distributions) - set(paths))
    if unknown:
        parser.error(f"unknown distributions {unknown}; IMPORT_PATHS has {sorted(paths)}")
    # Aliases are looked up across every package, so collect them all and report the chosen.
    entries = collect(paths)
    chosen = set(args.distributions or paths)
    documented = read_inventory(args.inventory)
    failures = [item for item in problems(entries, documented) if item[0].distribution in chosen]
    checked = sum(entry.distribution in chosen for entry in entries)
    if failures:
        print(f"{len(failures)} problem(s) in the API reference ({args.inventory}):")
        for entry, reason in failures:
            print(f"  {entry.distribution}: {entry.qualified_name}: {reason}")
        return 1
    print(f"API reference complete: {checked} public names of {len(chosen)} distributions")
    return 0


if __name__ == "__main__":
    sys.exit(main())
