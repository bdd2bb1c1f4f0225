"""Paths of the example datasets that ship with matsci-data."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Final, Literal, get_args

BundledName = Literal["emt", "spacegroup"]
"""Names of the bundled datasets."""

BUNDLED_NAMES: Final[tuple[BundledName, ...]] = get_args(BundledName)

BUNDLED_NUM_STRUCTURES: Final[dict[BundledName, int]] = {"emt": 300, "spacegroup": 300}
"""Rows of each bundled database: the generators' defaults, with ``seed=0``."""


def bundled_dataset_path(name: BundledName) -> Path:
    """Path of a bundled example database (ASE SQLite), installed with matsci-data.

    ``"emt"`` holds 300 rattled, strained and alloyed metal supercells with EMT energies, forces
    and stresses and the binary label ``compressed`` (:func:`make_emt_dataset` with its
    defaults); ``"spacegroup"`` holds 300 random
    crystals, 50 in each of the space groups 14, 62, 139, 166, 194 and 225, with their
    ``spacegroup`` labels (:func:`make_spacegroup_dataset` with its defaults). Both were made
    with ``seed=0``. The files are part of the installed package: open them for reading only
    (copy one before writing to it).

    Parameters
    ----------
    name
        ``"emt"`` or ``"spacegroup"``.

    Returns
    -------
    Path
        The database file.

    Raises
    ------
    ValueError
        If ``name`` is not a bundled dataset.

    Examples
    --------
    >>> import ase.db
    >>> from matsci.data.examples import bundled_dataset_path
    >>> database = ase.db.connect(bundled_dataset_path("emt"))
    >>> database.count()
    300
    >>> row = database.get(id=1)
    >>> sorted(row.key_value_pairs), row.calculator
    (['compressed', 'structure_type'], 'emt')
    """
    if name not in BUNDLED_NAMES:
        raise ValueError(
            f"bundled_dataset_path(name={name!r}): unknown dataset; expected one of "
            f"{list(BUNDLED_NAMES)}"
        )
    resource = files("matsci.data.examples").joinpath("_bundled", f"{name}.db")
    if not isinstance(resource, Path):
        raise RuntimeError(
            f"bundled_dataset_path(name={name!r}): matsci-data is not installed as files on "
            f"disk ({resource!r}); SQLite needs a real file"
        )
    return resource
