"""The data contract of matsci: batch keys, batch checks, encoder output and the class resolver.

Every other matsci package depends on this one and on nothing above it: heads, transforms,
encoders, datasets and tasks agree here on what a batch holds (:mod:`matsci.contract.keys`,
:class:`AttributeSpec`, :func:`validate_batch`), what an encoder returns (:class:`Embeddings`,
:class:`Encoder`), what dataset statistics are (:class:`DatasetStatistics`) and how they are
computed (:class:`StreamingMoments`, :class:`StreamingRMS`, :class:`ReferenceEnergyFit`), and how
a dotted class name becomes a class (:func:`import_class` and its companions).

Names are imported on first use (PEP 562), so a package that needs only the class resolver
(:mod:`matsci.heads`) does not import PyTorch Geometric, which takes seconds.
"""

from __future__ import annotations

from importlib.metadata import version as _version
from typing import TYPE_CHECKING

from matsci.contract import keys
from matsci.contract._lazy import lazy_exports

if TYPE_CHECKING:
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
    from matsci.contract._schema import (
        STRUCTURE_SPECS,
        AttributeSpec,
        BatchSizes,
        ValueCheck,
        validate_batch,
        values_within,
    )
    from matsci.contract._streaming import StreamingMoments, StreamingRMS

__version__ = _version("matsci-contract")

_MODULE_OF: dict[str, str] = {
    "NUM_ELEMENTS": "_dataset_statistics",
    "DatasetStatistics": "_dataset_statistics",
    "Embeddings": "_embeddings",
    "Encoder": "_embeddings",
    "ReferenceEnergyFit": "_reference_energies",
    "ClassConfig": "_resolver",
    "build_from_config": "_resolver",
    "class_path": "_resolver",
    "import_class": "_resolver",
    "instance_config": "_resolver",
    "module_config": "_resolver",
    "to_plain": "_resolver",
    "STRUCTURE_SPECS": "_schema",
    "AttributeSpec": "_schema",
    "BatchSizes": "_schema",
    "ValueCheck": "_schema",
    "validate_batch": "_schema",
    "values_within": "_schema",
    "StreamingMoments": "_streaming",
    "StreamingRMS": "_streaming",
}

__all__ = [
    "NUM_ELEMENTS",
    "STRUCTURE_SPECS",
    "AttributeSpec",
    "BatchSizes",
    "ClassConfig",
    "DatasetStatistics",
    "Embeddings",
    "Encoder",
    "ReferenceEnergyFit",
    "StreamingMoments",
    "StreamingRMS",
    "ValueCheck",
    "__version__",
    "build_from_config",
    "class_path",
    "import_class",
    "instance_config",
    "keys",
    "lazy_exports",
    "module_config",
    "to_plain",
    "validate_batch",
    "values_within",
]


__getattr__, __dir__ = lazy_exports(__name__, _MODULE_OF)
