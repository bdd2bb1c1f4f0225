"""The data contract of matsci: batch keys, batch checks, encoder output and the class resolver.

Every other matsci package depends on this one and on nothing above it: heads, transforms,
encoders, datasets and tasks agree here on what a batch holds (:mod:`matsci.contract.keys`,
:class:`AttributeSpec`, :func:`validate_batch`), what an encoder returns (:class:`Embeddings`,
:class:`Encoder`), what dataset statistics are (:class:`DatasetStatistics`) and how they are
computed (:class:`StreamingMoments`, :class:`StreamingRMS`, :class:`ReferenceEnergyFit`), and how
a dotted class name becomes a class (:func:`import_class` and its companions).
"""

from importlib.metadata import version as _version

from matsci.contract import keys
from matsci.contract._dataset_statistics import NUM_ELEMENTS, DatasetStatistics
from matsci.contract._embeddings import Embeddings, Encoder
from matsci.contract._reference_energies import ReferenceEnergyFit
from matsci.contract._resolver import (
    ClassConfig,
    build_from_config,
    class_path,
    import_class,
    instance_config,
    module_config,
    to_plain,
)
from matsci.contract._schema import STRUCTURE_SPECS, AttributeSpec, validate_batch
from matsci.contract._streaming import StreamingMoments, StreamingRMS

__version__ = _version("matsci-contract")

__all__ = [
    "NUM_ELEMENTS",
    "STRUCTURE_SPECS",
    "AttributeSpec",
    "ClassConfig",
    "DatasetStatistics",
    "Embeddings",
    "Encoder",
    "ReferenceEnergyFit",
    "StreamingMoments",
    "StreamingRMS",
    "__version__",
    "build_from_config",
    "class_path",
    "import_class",
    "instance_config",
    "keys",
    "module_config",
    "to_plain",
    "validate_batch",
]
