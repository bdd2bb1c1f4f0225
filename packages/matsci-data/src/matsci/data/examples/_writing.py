"""Writing generated structures to an ASE SQLite database, reproducibly and atomically."""

# ASE is partly annotated; its unannotated functions are fine to call.
# mypy: untyped-calls-exclude=ase

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import ase.db
from ase import Atoms
from ase.db.core import now
from ase.db.row import AtomsRow

KeyValue = str | int | float | bool
"""A value ASE stores in a row's ``key_value_pairs``."""


def check_destination(path: str | os.PathLike[str], *, overwrite: bool, caller: str) -> Path:
    """Return ``path`` as a :class:`Path`; refuse an existing file unless ``overwrite``."""
    destination = Path(path)
    if destination.exists() and not overwrite:
        raise FileExistsError(
            f"{caller}(path={str(destination)!r}): the file exists; "
            "pass overwrite=True to replace it"
        )
    if destination.is_dir():
        raise IsADirectoryError(f"{caller}(path={str(destination)!r}): the path is a directory")
    return destination


def write_rows(
    destination: Path,
    rows: Iterable[tuple[Atoms, Mapping[str, KeyValue]]],
    *,
    id_namespace: str,
    calculator: str | None = None,
) -> int:
    """Write ``(atoms, key_value_pairs)`` rows into a new database at ``destination``.

    The rows go into a temporary file beside ``destination`` in one transaction, which then
    replaces ``destination``: an interrupted run leaves no half-written database. Each row's
    ``unique_id`` is derived from ``id_namespace`` and the row's index, so the same generator
    settings give the same ids; only ``ctime`` and ``user`` record when and by whom a file was
    written. ``calculator`` names the calculator behind the stored results.

    Returns the number of rows written.
    """
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(destination.name + ".partial")
    partial.unlink(missing_ok=True)
    count = 0
    try:
        database = ase.db.connect(str(partial), type="db", use_lock_file=False, append=False)
        with database:
            for atoms, key_value_pairs in rows:
                row = AtomsRow(atoms)
                digest = hashlib.sha256(f"{id_namespace}:{count}".encode()).hexdigest()
                # AtomsRow keeps its columns as instance attributes.
                vars(row).update(unique_id=digest[:32], ctime=now(), user=os.getenv("USER"))
                if calculator is not None:
                    vars(row).update(calculator=calculator, calculator_parameters={})
                database.write(row, key_value_pairs=dict(key_value_pairs))
                count += 1
        os.replace(partial, destination)
    finally:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
    return count
