# mypy: untyped-calls-exclude=ase
"""The files ``matsci predict`` writes: a CSV table or an ASE database of predictions.

Rows are dicts of one structure each: ``structure_id``, ``formula``, ``natoms`` (and
``source`` for a folder of shards), then ``{key: NumPy array}`` predictions, with the per-atom
keys listed under :data:`PER_ATOM`. Imports neither Lightning nor PyTorch Geometric, so the
prediction of an exported model starts fast.
"""

from __future__ import annotations

import csv
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final

import ase.db
import ase.io
import numpy as np
from ase import Atoms

__all__ = [
    "CSV_SUFFIXES",
    "DB_SUFFIXES",
    "IDENTIFIERS",
    "PER_ATOM",
    "SOURCE",
    "XYZ_SUFFIXES",
    "check_output",
    "formula",
    "write_csv",
    "write_db",
    "write_predictions",
]

DB_SUFFIXES: Final = (".db",)
"""An SQLite ASE database: a ``.db`` output of one is a copy with predictions added."""
XYZ_SUFFIXES: Final = (".xyz", ".extxyz")
"""extxyz files (rows are frame indices)."""
CSV_SUFFIXES: Final = (".csv",)
"""A table of one row per structure."""
SOURCE: Final = "source"
"""The row key naming a structure's shard."""
IDENTIFIERS: Final = (SOURCE, "structure_id", "formula", "natoms")
"""The row keys that identify a structure (every other key is a prediction)."""
PER_ATOM: Final = "_per_atom"
"""The row key holding the set of per-atom prediction keys."""
_VOIGT: Final = {"xx": (0, 0), "yy": (1, 1), "zz": (2, 2), "yz": (1, 2), "xz": (0, 2), "xy": (0, 1)}


def formula(numbers: np.ndarray[Any, Any]) -> str:
    """The chemical formula of atomic numbers (ASE's Hill-like order, e.g. ``Cu3Au``)."""
    text: str = Atoms(numbers=numbers).get_chemical_formula()
    return text


def check_output(
    data: Path, output: Path, *, owner: str, error: type[Exception] = ValueError
) -> None:
    """Refuse an output ``matsci predict`` cannot write: another suffix, or the input itself.

    Parameters
    ----------
    data
        The input file (or folder) of structures.
    output
        The file to write: a ``.csv`` or ``.db`` name.
    owner
        The command named in the messages (``"matsci predict"``).
    error
        The exception class to raise (the checkpoint path's ``ConfigError``, which this
        module cannot import without Lightning).

    Raises
    ------
    Exception
        ``error``, naming ``--output``, if its suffix is neither ``.csv`` nor ``.db`` or it
        is the same file as ``data``.

    Examples
    --------
    >>> check_output(Path("in.db"), Path("out.txt"), owner="matsci predict")
    Traceback (most recent call last):
    ...
    ValueError: matsci predict --output 'out.txt': expected a .csv or .db file name
    """
    if output.suffix not in CSV_SUFFIXES + DB_SUFFIXES:
        raise error(f"{owner} --output {str(output)!r}: expected a .csv or .db file name")
    if output.exists() and output.resolve() == data.resolve():
        raise error(f"{owner} --output {str(output)!r} is the input file")


def _csv_columns(key: str, value: np.ndarray[Any, Any], per_atom: bool) -> dict[str, Any]:
    """Columns of one prediction: a number, its components, or a per-atom summary."""
    if per_atom:
        norms = np.linalg.norm(value.reshape(value.shape[0], -1), axis=1)
        return {f"{key}_max_norm": float(norms.max()) if norms.size else 0.0}
    flat = value.reshape(-1)
    if flat.size == 1:
        return {key: flat[0].item()}
    if value.shape == (3, 3):  # symmetric: ASE's Voigt order xx, yy, zz, yz, xz, xy
        return {f"{key}_{name}": float(value[i, j]) for name, (i, j) in _VOIGT.items()}
    return {f"{key}_{index}": item.item() for index, item in enumerate(flat)}


def write_csv(rows: list[dict[str, Any]], output: Path) -> None:
    """Write one line per row: identifiers, numbers, components, per-atom maximum norms."""
    table: list[dict[str, Any]] = []
    for row in rows:
        line: dict[str, Any] = {name: row[name] for name in IDENTIFIERS if name in row}
        for key, value in row.items():
            if key not in IDENTIFIERS and key != PER_ATOM:
                line.update(_csv_columns(key, value, key in row[PER_ATOM]))
        table.append(line)
    columns = list(dict.fromkeys(name for line in table for name in line))
    output.parent.mkdir(parents=True, exist_ok=True)
    with output.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=columns)
        writer.writeheader()
        writer.writerows(table)


def write_db(rows: list[dict[str, Any]], data: Path, output: Path) -> None:
    """Write ``predicted_<key>`` values: into a copy of an SQLite input, else a new database."""
    output.parent.mkdir(parents=True, exist_ok=True)
    if output.exists():
        output.unlink()
    if data.suffix in DB_SUFFIXES:  # an SQLite file: a copy with the predictions added
        shutil.copyfile(data, output)
        with ase.db.connect(output, type="db") as database:
            for row in rows:
                numbers, arrays = _db_values(row)
                database.update(row["structure_id"], data=arrays or None, **numbers)
        return
    if data.suffix in XYZ_SUFFIXES:
        frames: Iterable[Atoms] = ase.io.iread(data, index=":", format="extxyz")
    else:  # shards or another database: the structures as the dataset reads them
        from matsci.data import data_to_atoms, open_dataset  # PyG: only for these sources

        source = open_dataset(data, keys=None)
        frames = (data_to_atoms(source[position]) for position in range(len(source)))
    with ase.db.connect(output, type="db") as database:
        for row, atoms in zip(rows, frames, strict=True):
            numbers, arrays = _db_values(row)
            origin: dict[str, Any] = (
                {"frame": row["structure_id"]}
                if data.suffix in XYZ_SUFFIXES
                else {"source_row": row["structure_id"]}
            )
            if SOURCE in row:
                origin[SOURCE] = row[SOURCE]
            database.write(atoms, data=arrays, **origin, **numbers)


def write_predictions(rows: list[dict[str, Any]], data: Path, output: Path) -> None:
    """Write the rows as :func:`check_output` allows: a CSV table or a ``.db`` database.

    Parameters
    ----------
    rows
        One dict per structure, in the order of ``data``.
    data
        The input the rows were predicted from (a ``.db`` output copies an SQLite input).
    output
        A ``.csv`` file (:func:`write_csv`), else a ``.db`` file (:func:`write_db`).
    """
    if output.suffix in CSV_SUFFIXES:
        write_csv(rows, output)
    else:
        write_db(rows, data, output)


def _db_values(row: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``predicted_<key>`` numbers (key-value pairs) and arrays (row data) of one structure."""
    numbers: dict[str, Any] = {}
    arrays: dict[str, Any] = {}
    for key, value in row.items():
        if key in IDENTIFIERS or key == PER_ATOM:
            continue
        if value.size == 1:
            numbers[f"predicted_{key}"] = value.reshape(-1)[0].item()
        else:
            arrays[f"predicted_{key}"] = np.asarray(value, dtype=np.float64)
    return numbers, arrays
