"""Paths of the example datasets that ship with matsci-data."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Final, Literal, get_args

BundledName = Literal["emt", "spacegroup"]
"""Names of the bundled databases."""

BundledSplitName = Literal["emt-train", "emt-val", "emt-test"]
"""Names of the bundled extxyz files: the EMT data as a train, val and test triple."""

BUNDLED_NAMES: Final[tuple[BundledName, ...]] = get_args(BundledName)

BUNDLED_SPLIT_NAMES: Final[tuple[BundledSplitName, ...]] = get_args(BundledSplitName)

BUNDLED_NUM_STRUCTURES: Final[dict[BundledName | BundledSplitName, int]] = {
    "emt": 300,
    "spacegroup": 300,
    "emt-train": 120,
    "emt-val": 30,
    "emt-test": 30,
}
"""Structures in each bundled file: the generators' defaults, with ``seed=0``."""


def bundled_dataset_path(name: BundledName | BundledSplitName) -> Path:
    """Path of a bundled example dataset, installed with matsci-data.

    ``"emt"`` holds 300 rattled, strained and alloyed metal supercells with EMT energies, forces
    and stresses and the binary label ``compressed`` (:func:`make_emt_dataset` with its
    defaults); ``"spacegroup"`` holds 300 random
    crystals, 50 in each of the space groups 14, 62, 139, 166, 194 and 225, with their
    ``spacegroup`` labels (:func:`make_spacegroup_dataset` with its defaults). Both were made
    with ``seed=0`` and are ASE SQLite databases. ``"emt-train"``, ``"emt-val"`` and
    ``"emt-test"`` are the EMT data as three extxyz files, the layout most training sets come
    in: the val and test files hold the 30 + 30 structures of the default split of
    :class:`~matsci.data.AtomsDataModule` (``split=(0.8, 0.1, 0.1)``, ``seed=0``) and the train
    file the first 120 of its 240 training structures (:func:`write_split_files`). The files
    are part of the installed package: open them for reading only (copy one before writing to
    it).

    Parameters
    ----------
    name
        ``"emt"``, ``"spacegroup"``, ``"emt-train"``, ``"emt-val"`` or ``"emt-test"``.

    Returns
    -------
    Path
        The file.

    Raises
    ------
    ValueError
        If ``name`` is not a bundled dataset.

    Examples
    --------
    >>> import ase.db, ase.io
    >>> from matsci.data.examples import bundled_dataset_path
    >>> database = ase.db.connect(bundled_dataset_path("emt"))
    >>> database.count()
    300
    >>> row = database.get(id=1)
    >>> sorted(row.key_value_pairs), row.calculator
    (['compressed', 'structure_type'], 'emt')
    >>> bundled_dataset_path("emt-test").name
    'emt-test.extxyz'
    >>> len(ase.io.read(bundled_dataset_path("emt-test"), index=":"))
    30
    """
    if name in BUNDLED_NAMES:
        file_name = f"{name}.db"
    elif name in BUNDLED_SPLIT_NAMES:
        file_name = f"{name}.extxyz"
    else:
        raise ValueError(
            f"bundled_dataset_path(name={name!r}): unknown dataset; expected one of "
            f"{[*BUNDLED_NAMES, *BUNDLED_SPLIT_NAMES]}"
        )
    resource = files("matsci.data.examples").joinpath("_bundled", file_name)
    if not isinstance(resource, Path):
        raise RuntimeError(
            f"bundled_dataset_path(name={name!r}): matsci-data is not installed as files on "
            f"disk ({resource!r}); SQLite needs a real file"
        )
    return resource
