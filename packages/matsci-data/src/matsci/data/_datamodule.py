"""A LightningDataModule over one file of structures, split into train, val and test."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np
from torch.utils.data import Dataset, Subset
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader
from typing_extensions import override

from matsci.data._datasets import AseDbDataset, ExtxyzDataset, Transform
from matsci.data._device_transfer import SkipsTransferWhenThere
from matsci.data._distributed_sampler import UnpaddedDistributedSampler
from matsci.data._resumable_loader import ResumableDataLoader
from matsci.data._statistics import DatasetStatistics, compute_statistics
from matsci.transforms import PeriodicRadiusGraph

__all__ = ["AtomsDataModule"]

_SPLITS: Final = ("train", "val", "test")
_DB_SUFFIXES: Final = frozenset({".db", ".json", ".aselmdb"})
_XYZ_SUFFIXES: Final = frozenset({".xyz", ".extxyz"})
_DEFAULT_SPLIT: Final = (0.8, 0.1, 0.1)


def _dataset_class(path: str, argument: str) -> type[AseDbDataset | ExtxyzDataset]:
    """The dataset class for ``path``, chosen by its suffix (or a database URL)."""
    suffix = Path(path).suffix.lower()
    if "://" in path or suffix in _DB_SUFFIXES:
        return AseDbDataset
    if suffix in _XYZ_SUFFIXES:
        return ExtxyzDataset
    raise ValueError(
        f"AtomsDataModule({argument}={path!r}): unknown file type {suffix!r}; expected an ASE "
        f"database {sorted(_DB_SUFFIXES)} or URL, or an extxyz file {sorted(_XYZ_SUFFIXES)}"
    )


def _radius_graph_settings(transform: object) -> dict[str, float | int | None] | None:
    """``{"cutoff", "max_neighbors"}`` of the last ``PeriodicRadiusGraph`` in ``transform``."""
    if isinstance(transform, PeriodicRadiusGraph):
        return {"cutoff": transform.cutoff, "max_neighbors": transform.max_neighbors}
    settings = None
    for inner in getattr(transform, "transforms", None) or ():  # a PyG Compose
        settings = _radius_graph_settings(inner) or settings
    return settings


class AtomsDataModule(SkipsTransferWhenThere):
    """Train, val and test loaders over one ASE database or extxyz file.

    The split is either random by fractions (a permutation drawn from ``seed``, so the same
    arguments give the same split on every run and every rank) or given by a column whose
    values are ``"train"``, ``"val"`` or ``"test"``. :meth:`setup` only indexes the file
    (row ids or frame offsets; plus the split column when one is named) and the loaders read
    the structures, unless ``in_memory`` asks :meth:`setup` to read them all once.

    Parameters
    ----------
    dataset : str or os.PathLike
        An ASE database (``.db``, ``.json``, ``.aselmdb`` or a URL) or an extxyz file
        (``.xyz``, ``.extxyz``).
    keys : sequence of str, optional
        Targets every structure must hold (see :func:`~matsci.data.atoms_to_data`).
    transform : callable, optional
        Applied to each ``Data`` every time it is loaded, e.g. a
        ``torch_geometric.transforms.Compose``; random transforms
        (:class:`~matsci.transforms.NoisyPositions`) belong here. The settings of a
        :class:`~matsci.transforms.PeriodicRadiusGraph` in it or in ``pre_transform``
        (itself, or the last one in a ``Compose``; ``transform`` runs last, so its graph
        wins) are saved as plain data in ``hparams["radius_graph"]`` (``{"cutoff": float,
        "max_neighbors": int | None}``, ``None`` without one), so a checkpoint records how the
        model's neighbour graph was built.
    pre_transform : callable, optional
        Applied to each ``Data`` after conversion and before ``transform``; with
        ``in_memory``, once per structure. It must be deterministic: a neighbour graph.
    in_memory : bool
        Read, convert and ``pre_transform`` every structure of the file once, in
        :meth:`setup`, and keep them, so that the loaders only run ``transform`` and collate.
        For files that fit in memory; the default example's data wait falls from about a
        quarter of the step time to a few percent (see the benchmarks page).
    split : sequence of three floats, optional
        Train, val and test fractions, each in [0, 1] and summing to at most 1; when they sum
        to 1 the rounding remainder goes to train, so every structure is used. Defaults to
        ``(0.8, 0.1, 0.1)`` unless ``split_column`` is given.
    split_column : str, optional
        A key-value column (database) or comment-line key (extxyz) holding each structure's
        split: ``"train"``, ``"val"`` or ``"test"``.
    seed : int
        Seed of the random split.
    batch_size : int
        Structures per batch.
    num_workers : int
        ``DataLoader`` worker processes.
    pin_memory : bool
        Pin batches in page-locked memory.
    predict_path : str or os.PathLike, optional
        A file to predict on; the test split when ``None``.

    Raises
    ------
    ValueError
        If the fractions are invalid, both ``split`` and ``split_column`` are given, a file
        type is unknown, or (in :meth:`setup`) a split column value is not a split name.
    FileNotFoundError
        If ``dataset`` or ``predict_path`` does not exist.

    Examples
    --------
    >>> import tempfile, pathlib, ase.db
    >>> from ase.build import bulk
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "ten.db"
    >>> with ase.db.connect(path) as db:
    ...     for i in range(10):
    ...         _ = db.write(bulk("Cu", a=3.6 + 0.01 * i), target=float(i))
    >>> module = AtomsDataModule(path, keys=["target"], batch_size=4)
    >>> module.setup("fit")
    >>> [len(module.split_indices[name]) for name in ("train", "val", "test")]
    [8, 1, 1]
    >>> next(iter(module.val_dataloader())).target.shape
    torch.Size([1])
    """

    def __init__(
        self,
        dataset: str | os.PathLike[str],
        keys: Sequence[str] | None = None,
        transform: Transform | None = None,
        pre_transform: Transform | None = None,
        in_memory: bool = False,
        split: Sequence[float] | None = None,
        split_column: str | None = None,
        seed: int = 0,
        batch_size: int = 32,
        num_workers: int = 0,
        pin_memory: bool = False,
        predict_path: str | os.PathLike[str] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["transform", "pre_transform"])
        # Plain strings only: checkpoints load with weights_only=True, which refuses Path objects.
        self.hparams["dataset"] = os.fspath(dataset)
        self.hparams["predict_path"] = None if predict_path is None else os.fspath(predict_path)
        self.hparams["split"] = None if split is None else [float(f) for f in split]
        self.hparams["keys"] = None if keys is None else list(keys)
        self.hparams["radius_graph"] = _radius_graph_settings(transform) or _radius_graph_settings(
            pre_transform
        )
        if split is not None and split_column is not None:
            raise ValueError(
                f"AtomsDataModule(split={split!r}, split_column={split_column!r}): give "
                "fractions or a split column, not both"
            )
        fractions = tuple(float(f) for f in (split if split is not None else _DEFAULT_SPLIT))
        if (
            len(fractions) != 3
            or not all(0.0 <= f <= 1.0 for f in fractions)
            or sum(fractions) > 1.0 + 1e-9
        ):
            raise ValueError(
                f"AtomsDataModule(split={split!r}): expected three fractions (train, val, "
                "test), each in [0, 1], summing to at most 1"
            )
        if batch_size < 1:
            raise ValueError(f"AtomsDataModule(batch_size={batch_size}): must be at least 1")
        if num_workers < 0:
            raise ValueError(f"AtomsDataModule(num_workers={num_workers}): must be at least 0")
        self.path = os.fspath(dataset)
        self.predict_path = None if predict_path is None else os.fspath(predict_path)
        for argument, value in (("dataset", self.path), ("predict_path", self.predict_path)):
            if value is not None and "://" not in value and not Path(value).is_file():
                raise FileNotFoundError(f"AtomsDataModule({argument}={value!r}): no such file")
        self._dataset_class = _dataset_class(self.path, "dataset")
        self._predict_class = (
            None if self.predict_path is None else _dataset_class(self.predict_path, "predict_path")
        )
        self.keys = None if keys is None else list(keys)
        self.transform = transform
        self.pre_transform = pre_transform
        self.in_memory = in_memory
        self.fractions = fractions
        self.split_column = split_column
        self.seed = seed
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.dataset: AseDbDataset | ExtxyzDataset | None = None
        self.split_indices: dict[str, list[int]] = {}
        self._predict_dataset: AseDbDataset | ExtxyzDataset | None = None

    @override
    def setup(self, stage: str) -> None:
        """Index the file and draw the split (once; later calls do nothing)."""
        if self.dataset is None:
            self.dataset = self._dataset_class(self.path, **self._dataset_options())
            self.split_indices = (
                self._column_split(self.dataset)
                if self.split_column is not None
                else self._random_split(len(self.dataset))
            )
        if stage == "predict" and self._predict_class is not None and self._predict_dataset is None:
            assert self.predict_path is not None
            self._predict_dataset = self._predict_class(
                self.predict_path, **self._dataset_options()
            )

    def _dataset_options(self) -> dict[str, Any]:
        return {
            "keys": self.keys,
            "transform": self.transform,
            "pre_transform": self.pre_transform,
            "in_memory": self.in_memory,
        }

    def _random_split(self, length: int) -> dict[str, list[int]]:
        counts = [math.floor(f * length) for f in self.fractions]
        if math.isclose(sum(self.fractions), 1.0, abs_tol=1e-9):
            counts[0] = length - counts[1] - counts[2]
        order = np.random.default_rng(self.seed).permutation(length).tolist()
        bounds = np.cumsum([0, *counts]).tolist()
        return {
            name: sorted(order[start:stop])
            for name, start, stop in zip(_SPLITS, bounds[:-1], bounds[1:], strict=True)
        }

    def _column_split(self, dataset: AseDbDataset | ExtxyzDataset) -> dict[str, list[int]]:
        assert self.split_column is not None
        indices: dict[str, list[int]] = {name: [] for name in _SPLITS}
        for position, value in enumerate(dataset.column(self.split_column)):
            if value not in indices:
                raise ValueError(
                    f"AtomsDataModule(split_column={self.split_column!r}): structure "
                    f"{position} of {self.path!r} has {value!r}; expected one of {list(_SPLITS)}"
                )
            indices[value].append(position)
        return indices

    def _loader(self, name: str, *, shuffle: bool) -> DataLoader:
        if self.dataset is None:
            raise RuntimeError(
                f"AtomsDataModule: call setup() before {name}_dataloader() (the Trainer does)"
            )
        return self._make_loader(Subset(self.dataset, self.split_indices[name]), shuffle=shuffle)

    def _make_loader(self, dataset: Dataset[Data], *, shuffle: bool) -> DataLoader:
        # Training resumes mid-epoch from checkpoints (the order depends on seed and epoch
        # only); evaluation gives each structure to one DDP rank, without padded repeats.
        return ResumableDataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            seed=self.seed,
            sampler=None if shuffle else UnpaddedDistributedSampler(dataset),  # type: ignore[arg-type]
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )

    @override
    def train_dataloader(self) -> DataLoader:
        """Shuffled batches of the train split."""
        return self._loader("train", shuffle=True)

    @override
    def val_dataloader(self) -> DataLoader:
        """Batches of the val split, in file order."""
        return self._loader("val", shuffle=False)

    @override
    def test_dataloader(self) -> DataLoader:
        """Batches of the test split, in file order."""
        return self._loader("test", shuffle=False)

    @override
    def predict_dataloader(self) -> DataLoader:
        """Batches of ``predict_path`` in file order, or else of the test split."""
        if self.predict_path is None:
            return self._loader("test", shuffle=False)
        if self._predict_dataset is None:
            raise RuntimeError(
                "AtomsDataModule: call setup('predict') before predict_dataloader() "
                "(the Trainer does)"
            )
        return self._make_loader(self._predict_dataset, shuffle=False)

    def statistics(
        self,
        keys: Sequence[str] | None = None,
        cutoff: float | None = None,
        elements: Sequence[int] | None = None,
    ) -> DatasetStatistics:
        """Statistics of the train split, in one streaming pass, for setting tasks up.

        Runs :func:`~matsci.data.compute_statistics` over the train split in file order, in
        batches of ``batch_size`` read by ``num_workers`` workers. Every DDP rank reads the
        whole split (no distributed sampler), so every rank gets the same numbers.

        Parameters
        ----------
        keys : sequence of str, optional
            Targets to describe; by default the module's ``keys`` (or, without them, every
            target of the first structure).
        cutoff : float, optional
            Radius (Å) for the average neighbour count of structures without ``edge_index``.
        elements : sequence of int, optional
            Atomic numbers the model should cover; those without data are reported missing.

        Returns
        -------
        DatasetStatistics
            As :func:`~matsci.data.compute_statistics` returns it.

        Raises
        ------
        RuntimeError
            If :meth:`setup` has not run.
        ValueError
            As :func:`~matsci.data.compute_statistics`, e.g. for an empty train split.

        Examples
        --------
        >>> import tempfile, pathlib, ase.db
        >>> from ase.build import bulk
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "five.db"
        >>> with ase.db.connect(path) as db:
        ...     for i in range(5):
        ...         _ = db.write(bulk("Cu"), target=float(i))
        >>> module = AtomsDataModule(path, keys=["target"], split=[1.0, 0.0, 0.0])
        >>> module.setup("fit")
        >>> stats = module.statistics()
        >>> stats.mean["target"], stats.std["target"]
        (tensor([2.], dtype=torch.float64), tensor([1.4142], dtype=torch.float64))
        """
        if self.dataset is None:
            raise RuntimeError(
                "AtomsDataModule: call setup() before statistics() (the Trainer does)"
            )
        loader = DataLoader(
            Subset(self.dataset, self.split_indices["train"]),
            batch_size=self.batch_size,
            num_workers=self.num_workers,
        )
        return compute_statistics(
            loader, keys=self.keys if keys is None else keys, cutoff=cutoff, elements=elements
        )

    def __repr__(self) -> str:
        return (
            f"AtomsDataModule({self.path!r}, split={self.split_column or self.fractions}, "
            f"seed={self.seed}, batch_size={self.batch_size})"
        )
