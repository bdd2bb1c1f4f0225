"""Output heads for atomistic models.

Dense blocks (:class:`OutputBlock`), equivariant blocks on e3nn irreps (:class:`IrrepOutputBlock`,
needs the ``[e3nn]`` extra), :class:`OutputHead`, the stack that maps an embedding to
predictions, and :class:`EdgeVectorReadout`, rotation-equivariant vectors per atom (forces,
displacements) from invariant atom embeddings and edge vectors. Depends on torch and the
class resolver of :mod:`matsci.contract`.
"""

from importlib.metadata import version as _version

from matsci.heads._edge_vector_readout import EdgeVectorReadout
from matsci.heads._irrep_output_block import IrrepOutputBlock
from matsci.heads._output_block import OutputBlock
from matsci.heads._output_head import BLOCK_TYPES, OutputHead
from matsci.heads._resolve import ModuleSpec, resolve_module_class

__version__ = _version("matsci-heads")

__all__ = [
    "BLOCK_TYPES",
    "EdgeVectorReadout",
    "IrrepOutputBlock",
    "ModuleSpec",
    "OutputBlock",
    "OutputHead",
    "__version__",
    "resolve_module_class",
]
