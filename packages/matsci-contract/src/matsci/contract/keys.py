"""Names of batch attributes (the data contract), one constant each, with its shape.

Every package reads and writes batch attributes through these names.

N atoms, E edges and B structures in a batch; ``k`` is a target's width.
"""

from typing import Final

POS: Final = "pos"
"""[N, 3] float, Cartesian positions in Å."""
MAX_ABS_POSITION: Final = 1.0e5
"""Å, the largest absolute coordinate of ``pos`` the data contract accepts.

Larger ones are refused as corrupt data: float32 resolves only about 0.01 Å there, and
neighbour lists break."""
ATOMIC_NUMBERS: Final = "atomic_numbers"
"""[N] long, atomic numbers Z."""
MAX_ATOMIC_NUMBER: Final = 118
"""The largest Z of ``atomic_numbers``; the contract accepts 1 to 118 (no dummy atoms, Z = 0)."""
CELL: Final = "cell"
"""[B, 3, 3] float, lattice vectors as rows in Å (``[1, 3, 3]`` per structure)."""
PBC: Final = "pbc"
"""[B, 3] bool, periodic directions (``[1, 3]`` per structure)."""
EDGE_INDEX: Final = "edge_index"
"""[2, E] long, neighbour pairs (source, target)."""
CELL_OFFSETS: Final = "cell_offsets"
"""[E, 3] float, integer image shifts, so that ``vec = pos[j] - pos[i] + offsets @ cell``."""
NATOMS: Final = "natoms"
"""[B] long, atoms per structure (``[1]`` per structure)."""
BATCH: Final = "batch"
"""[N] long, index of each atom's structure, added by PyG when collating."""
STRUCTURE_ID: Final = "structure_id"
"""[B] long, the row id (database) or frame index (file) of each structure, to trace bad data."""
NOISY_POS: Final = "noisy_pos"
"""[N, 3] float, positions with noise added by ``NoisyPositions``."""
PRIMITIVE_CELL: Final = "primitive_cell"
"""[B, 3, 3] float, primitive lattice vectors as rows in Å, added by ``PrimitiveCell``."""

ENERGY: Final = "energy"
"""[B] float, total energy in eV."""
FORCE: Final = "force"
"""[N, 3] float, forces in eV/Å."""
STRESS: Final = "stress"
"""[B, 3, 3] float, stress in eV/Å³ with ASE's sign convention."""
SPACEGROUP: Final = "spacegroup"
"""[B] long, space group number in 1..230."""
DENOISE: Final = "denoise"
"""[N, 3] float, the noise added to positions (the denoising target)."""

STRUCTURE_KEYS: Final = frozenset(
    {POS, ATOMIC_NUMBERS, CELL, PBC, NATOMS, EDGE_INDEX, CELL_OFFSETS, BATCH, STRUCTURE_ID}
    | {NOISY_POS, PRIMITIVE_CELL}
)
"""Attributes that describe a structure or its graph, never a target."""
