# mypy: untyped-calls-exclude=ase
"""``matsci predict`` with an exported model: torch, ASE and NumPy only, started in seconds.

A ``.pt2`` file of ``matsci export --format torch-export`` or a ``.pt`` file of ``--format
metatomic`` holds the whole model (weights, cutoff, known elements), so predicting with it needs
neither the checkpoint's task classes nor Lightning nor PyTorch Geometric. The command's entry
point routes ``matsci predict --ckpt_path MODEL.pt2|MODEL.pt`` here before importing any of
them; the table has the columns of a checkpoint's predictions (``energy``, ``force_max_norm``,
``stress_xx`` ... in the same units and signs).
"""

from __future__ import annotations

import argparse
import os
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Final

import ase.db
import ase.io
import numpy as np
from ase import Atoms
from ase.stress import voigt_6_to_full_3x3_stress

from matsci.cli._prediction_table import (
    DB_SUFFIXES,
    PER_ATOM,
    XYZ_SUFFIXES,
    check_output,
    formula,
    write_predictions,
)

__all__ = ["EXPORTED_SUFFIXES", "predict_program_main", "predict_program_to_file"]

_PROGRAM_SUFFIX: Final = ".pt2"
_METATOMIC_SUFFIX: Final = ".pt"
EXPORTED_SUFFIXES: Final = (_PROGRAM_SUFFIX, _METATOMIC_SUFFIX)
"""Suffixes of exported models (``torch.export`` program, metatomic model) that ``matsci
predict`` runs without the training stack."""

_JSON_SUFFIXES: Final = (".json",)
_OWNER: Final = "matsci predict"


def predict_program_main(args: Sequence[str]) -> None:
    """Run ``matsci predict --ckpt_path MODEL.pt2 --data FILE [--output OUT]``.

    Parameters
    ----------
    args
        Command-line arguments without ``predict``.

    Raises
    ------
    ValueError
        On an input or output this path cannot handle, or an element the model never saw.
    """
    parser = argparse.ArgumentParser(
        prog="matsci predict",
        description="Predict with a model exported by `matsci export` (.pt2 or metatomic .pt).",
    )
    parser.add_argument("--ckpt_path", required=True, help="The exported .pt2 or .pt file.")
    parser.add_argument(
        "--data", required=True, help="An ASE database, an extxyz file or a bundled:NAME file."
    )
    parser.add_argument("--output", default=None, help="A .csv or .db file.")
    config = parser.parse_args(list(args))
    if str(config.data).startswith("bundled:"):
        from matsci.cli._paths import resolve_bundled  # imports matsci.data, only for these

        config.data = str(resolve_bundled(config.data))
    output = config.output or f"{Path(config.data).stem}_predictions.csv"
    count = predict_program_to_file(config.ckpt_path, config.data, output)
    print(f"matsci: {count} predictions written to {output}")


def predict_program_to_file(
    program: str | os.PathLike[str],
    data: str | os.PathLike[str],
    output: str | os.PathLike[str],
) -> int:
    """Write the predictions of an exported model for every structure of ``data`` (on the CPU).

    Parameters
    ----------
    program
        A ``.pt2`` file of ``matsci export --format torch-export``, or a ``.pt`` file of
        ``--format metatomic`` (run by metatomic-ase; energy models).
    data
        An ASE database (``.db``, ``.json``) or an extxyz file (``.xyz``, ``.extxyz``).
    output
        A ``.csv`` file (one row per structure) or a ``.db`` file, as for a checkpoint.

    Returns
    -------
    int
        The number of structures.

    Raises
    ------
    ValueError
        On another kind of input or output, an output that is the input, a file that is not an
        exported matsci model, or a structure with an element the model never saw.
    ImportError
        Without ``matsci-ase`` or ``metatomic-ase`` (installed with ``matsci-cli[export]``).
    """
    data_path, output_path = Path(data), Path(output)
    check_output(data_path, output_path, owner=_OWNER)
    calculator, conservative = _calculator(Path(program))
    rows = [
        _row(identifier, atoms, calculator, conservative)
        for identifier, atoms in _structures(data_path)
    ]
    write_predictions(rows, data_path, output_path)
    return len(rows)


def _calculator(path: Path) -> tuple[Any, bool]:
    """The ASE calculator of an exported model, and whether it gives energies (and stress)."""
    if not path.is_file():
        raise ValueError(f"{_OWNER} --ckpt_path {str(path)!r}: no such file")
    # Both formats are zip archives; anything else would end in torch's own traceback.
    if path.suffix not in EXPORTED_SUFFIXES or not zipfile.is_zipfile(path):
        raise ValueError(
            f"{_OWNER} --ckpt_path {str(path)!r}: not a model exported by `matsci export` (a "
            ".pt2 archive of --format torch-export or a .pt file of --format metatomic)"
        )
    try:
        if path.suffix == _PROGRAM_SUFFIX:
            from matsci.ase import ProgramCalculator

            program = ProgramCalculator(path)
            return program, program.conservative
        from metatomic_ase import MetatomicCalculator  # type: ignore[import-untyped]
    except ImportError as error:
        raise ImportError(
            f"{_OWNER}: exported models run through matsci-ase and metatomic-ase; install "
            "matsci-cli[export]"
        ) from error
    try:
        return MetatomicCalculator(path, device="cpu"), True
    except RuntimeError as error:  # TorchScript's refusal of a file that is no model
        raise ValueError(
            f"{_OWNER} --ckpt_path {str(path)!r}: not a metatomic model ({error})"
        ) from error


def _structures(path: Path) -> Iterator[tuple[int, Atoms]]:
    """``(structure id, atoms)``: database row ids, or frame indices of an extxyz file."""
    if not path.is_file():
        raise ValueError(f"{_OWNER} --data {str(path)!r}: no such file")
    if path.suffix in DB_SUFFIXES + _JSON_SUFFIXES:
        with ase.db.connect(path) as database:
            for row in database.select():
                yield int(row.id), row.toatoms()
        return
    if path.suffix in XYZ_SUFFIXES:
        yield from enumerate(ase.io.iread(path, index=":", format="extxyz"))
        return
    raise ValueError(
        f"{_OWNER} --data {str(path)!r}: an exported model reads an ASE database "
        f"({', '.join(DB_SUFFIXES + _JSON_SUFFIXES)}) or an extxyz file "
        f"({', '.join(XYZ_SUFFIXES)}); predict from folders of shards with the checkpoint"
    )


def _row(identifier: int, atoms: Atoms, calculator: Any, conservative: bool) -> dict[str, Any]:
    """One structure's row: the checkpoint's keys, units and stress sign (ASE's)."""
    atoms.calc = calculator
    row: dict[str, Any] = {
        "structure_id": identifier,
        "formula": formula(atoms.numbers),
        "natoms": len(atoms),
        PER_ATOM: {"force"},
    }
    if conservative:
        row["energy"] = np.asarray(atoms.get_potential_energy())
    row["force"] = np.asarray(atoms.get_forces())
    if conservative and bool(atoms.pbc.all()):
        row["stress"] = voigt_6_to_full_3x3_stress(atoms.get_stress())
    return row
