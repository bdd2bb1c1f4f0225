"""Example datasets with physics from established codes: EMT metals and space-group crystals.

Two generators write ASE SQLite databases that :mod:`matsci.data` reads: metal supercells
labelled by ASE's effective-medium theory calculator (energies, forces, stresses), and random
crystals of chosen space groups from pyxtal, labelled by spglib. A small copy of each ships with
the package (:func:`bundled_dataset_path`); ``python -m matsci.data.examples`` writes new ones.
"""

from matsci.data.examples._emt import EMT_ELEMENTS, make_emt_dataset
from matsci.data.examples._resources import BUNDLED_NAMES, bundled_dataset_path
from matsci.data.examples._spacegroup import DEFAULT_SPACEGROUPS, make_spacegroup_dataset

__all__ = [
    "BUNDLED_NAMES",
    "DEFAULT_SPACEGROUPS",
    "EMT_ELEMENTS",
    "bundled_dataset_path",
    "make_emt_dataset",
    "make_spacegroup_dataset",
]
