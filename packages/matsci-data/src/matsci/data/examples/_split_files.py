"""One database written as three extxyz files, train, val and test, the layout users have."""

# ASE is partly annotated; its unannotated functions are fine to call.
# mypy: untyped-calls-exclude=ase

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import ase.db
import ase.io

from matsci.data._datamodule import AtomsDataModule
from matsci.data.examples._writing import check_destination

__all__ = ["write_split_files"]

_SPLITS: Final = ("train", "val", "test")


def write_split_files(
    database: str | os.PathLike[str],
    folder: str | os.PathLike[str],
    *,
    prefix: str = "emt",
    split: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    max_train: int | None = None,
    overwrite: bool = False,
) -> dict[str, Path]:
    """Write the train, val and test splits of an ASE database as three extxyz files.

    The split is the one :class:`~matsci.data.AtomsDataModule` draws from ``split`` and
    ``seed`` (the same structures, in file order), so a run on the three files tests on the
    same structures as a run on the database with that split. Each frame keeps the row's
    atoms, cell, periodicity, calculator results (energy, forces, stress) and key-value pairs.
    Each file is written beside itself and then renamed, so an interrupted run leaves no
    half-written file. The bundled ``emt-train``, ``emt-val`` and ``emt-test`` files are
    ``write_split_files(bundled_dataset_path("emt"), folder, max_train=120)``.

    Parameters
    ----------
    database
        An ASE database.
    folder
        Where to write ``<prefix>-train.extxyz``, ``<prefix>-val.extxyz`` and
        ``<prefix>-test.extxyz`` (created if needed).
    prefix
        Start of the file names.
    split
        Train, val and test fractions, as for :class:`~matsci.data.AtomsDataModule`.
    seed
        Seed of the split.
    max_train
        Keep only the first ``max_train`` structures of the training split (all by default).
    overwrite
        Replace existing files.

    Returns
    -------
    dict
        ``{"train": path, "val": path, "test": path}``.

    Raises
    ------
    FileExistsError
        If a file exists and ``overwrite`` is false (nothing is written then).
    ValueError
        If ``max_train`` is below 1, or as :class:`~matsci.data.AtomsDataModule` for the split.

    Examples
    --------
    >>> import tempfile
    >>> import ase.io
    >>> from matsci.data.examples import bundled_dataset_path, write_split_files
    >>> paths = write_split_files(bundled_dataset_path("emt"), tempfile.mkdtemp(), max_train=50)
    >>> {name: len(ase.io.read(path, index=":")) for name, path in paths.items()}
    {'train': 50, 'val': 30, 'test': 30}
    """
    if max_train is not None and max_train < 1:
        raise ValueError(f"write_split_files(max_train={max_train}): must be at least 1")
    destination = Path(folder)
    paths = {
        name: check_destination(
            destination / f"{prefix}-{name}.extxyz", overwrite=overwrite, caller="write_split_files"
        )
        for name in _SPLITS
    }
    module = AtomsDataModule(database, split=split, seed=seed)
    module.setup("fit")
    indices = dict(module.split_indices)
    if max_train is not None:
        indices["train"] = indices["train"][:max_train]
    rows = list(ase.db.connect(os.fspath(database)).select())
    destination.mkdir(parents=True, exist_ok=True)
    for name, path in paths.items():
        frames = []
        for position in indices[name]:
            row = rows[position]
            atoms = row.toatoms()
            atoms.info.update(row.key_value_pairs)
            frames.append(atoms)
        partial = path.with_name(path.name + ".partial")
        try:
            ase.io.write(partial, frames, format="extxyz")
            os.replace(partial, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                partial.unlink()
    return paths
