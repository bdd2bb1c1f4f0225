"""Example datasets with physics from established codes: EMT metals and space-group crystals.

Two generators write ASE SQLite databases that :mod:`matsci.data` reads: metal supercells
labelled by ASE's effective-medium theory calculator (energies, forces, stresses), and random
crystals of chosen space groups from pyxtal, labelled by spglib. A small copy of each ships with
the package (:func:`bundled_dataset_path`), and the EMT data also as a train, val and test
triple of extxyz files (:func:`write_split_files`); ``python -m matsci.data.examples`` writes
new ones.
"""

from matsci.data.examples._emt import EMT_ELEMENTS, make_emt_dataset
from matsci.data.examples._resources import (
    BUNDLED_NAMES,
    BUNDLED_SPLIT_NAMES,
    bundled_dataset_path,
)
from matsci.data.examples._spacegroup import DEFAULT_SPACEGROUPS, make_spacegroup_dataset
from matsci.data.examples._split_files import write_split_files

__all__ = [
    "BUNDLED_NAMES",
    "BUNDLED_SPLIT_NAMES",
    "DEFAULT_SPACEGROUPS",
    "EMT_ELEMENTS",
    "bundled_dataset_path",
    "make_emt_dataset",
    "make_spacegroup_dataset",
    "write_split_files",
]
