"""From ASE structures to matsci training batches."""

from importlib.metadata import version as _version

from matsci.data._ase_db_dataset import AseDbDataset
from matsci.data._budget_sampler import BudgetBatchSampler, edge_counts
from matsci.data._convert import atoms_to_data, data_to_atoms
from matsci.data._datamodule import AtomsDataModule
from matsci.data._distributed_sampler import UnpaddedDistributedSampler
from matsci.data._extxyz_dataset import ExtxyzDataset
from matsci.data._mixture import DatasetMixture, MixtureSampler
from matsci.data._multi_datamodule import MultiDataModule
from matsci.data._resumable_loader import ResumableDataLoader, SeededRandomSampler
from matsci.data._sources import AtomsDataset, ShardedDataset, open_dataset
from matsci.data._statistics import DatasetStatistics, compute_statistics, fit_reference_energies

__version__ = _version("matsci-data")

__all__: list[str] = [
    "AseDbDataset",
    "AtomsDataModule",
    "AtomsDataset",
    "BudgetBatchSampler",
    "DatasetMixture",
    "DatasetStatistics",
    "ExtxyzDataset",
    "MixtureSampler",
    "MultiDataModule",
    "ResumableDataLoader",
    "SeededRandomSampler",
    "ShardedDataset",
    "UnpaddedDistributedSampler",
    "__version__",
    "atoms_to_data",
    "compute_statistics",
    "data_to_atoms",
    "edge_counts",
    "fit_reference_energies",
    "open_dataset",
]
