"""A LightningDataModule over train, val and test sources, or over one file that it splits."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray
from torch.utils.data import ConcatDataset, Dataset, Subset
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader
from typing_extensions import override

from matsci.data._atoms_dataset import Transform
from matsci.data._budget_sampler import BudgetBatchSampler, edge_counts
from matsci.data._device_transfer import SkipsTransferWhenThere
from matsci.data._loader_factory import (
    atom_counts_of,
    check_loader_arguments,
    evaluation_loader,
    training_loader,
    training_mixture,
)
from matsci.data._mixture import DatasetMixture
from matsci.data._one_file_split import SPLITS, column_split, random_split, split_fractions
from matsci.data._source_arguments import (
    MixtureWeights,
    PlainSource,
    Source,
    TrainSource,
    check_form,
    check_mixture,
    plain_source,
    plain_train,
    sources_of,
)
from matsci.data._sources import open_dataset
from matsci.data._statistics import DatasetStatistics, compute_statistics
from matsci.transforms import PeriodicRadiusGraph

__all__ = ["AtomsDataModule"]

_DEFAULT_BATCH_SIZE: Final = 32


def _radius_graph_settings(transform: object) -> dict[str, float | int | None] | None:
    """``{"cutoff", "max_neighbors"}`` of the last ``PeriodicRadiusGraph`` in ``transform``."""
    if isinstance(transform, PeriodicRadiusGraph):
        return {"cutoff": transform.cutoff, "max_neighbors": transform.max_neighbors}
    settings = None
    for inner in getattr(transform, "transforms", None) or ():  # a PyG Compose
        settings = _radius_graph_settings(inner) or settings
    return settings


class AtomsDataModule(SkipsTransferWhenThere):
    r"""Train, val, test and predict loaders over structure files: separate ones, or one split.

    The data comes in one of two forms:

    - **separate sources** (``train``, ``val`` and optionally ``test`` and ``predict``), the
      layout most training sets come in (``train.extxyz``, ``val.extxyz``, ``test.extxyz``).
      Each source is a file (an ASE database ``.db``, ``.json``, ``.aselmdb`` or URL, or an
      extxyz file ``.xyz``, ``.extxyz``), a folder of shards (every such file inside, in name
      order, e.g. fairchem's folders of ``.aselmdb`` files), or a list of files and folders
      read one after the other (:func:`matsci.data._sources.open_dataset`). ``train`` may
      also be ``{name: source}``: several training sets, concatenated, or mixed by
      ``mixture_weights``;
    - **one file and a split** (``dataset`` with ``split`` or ``split_column``): the split is
      either random by fractions (a permutation drawn from ``seed``, so the same arguments
      give the same split on every run and every rank) or given by a column whose values are
      ``"train"``, ``"val"`` or ``"test"``.

    :meth:`setup` only indexes the sources (row ids or frame offsets; plus the split column
    when one is named) and the loaders read the structures, unless ``in_memory`` asks
    :meth:`setup` to read them all once. The training loader shuffles (by ``seed`` and epoch;
    it resumes mid-epoch from a checkpoint, see :class:`~matsci.data.ResumableDataLoader`);
    evaluation loaders keep file order and, under DDP, give each structure to one rank.

    Batches hold ``batch_size`` structures, or, with ``max_atoms`` and/or ``max_edges``, as
    many as fit in that budget (:class:`~matsci.data.BudgetBatchSampler`): structures are
    sorted into size buckets and packed, so that a batch of large structures holds few and a
    batch of small ones many, and the memory a batch needs is bounded. Evaluation loaders
    batch by the same budget, without shuffling.

    Parameters
    ----------
    dataset : str, os.PathLike or list, optional
        The one-file form: a file (or folder of shards, or list) to split by ``split`` or
        ``split_column``. Not together with ``train``, ``val`` or ``test``.
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
        Read, convert and ``pre_transform`` every structure once, in :meth:`setup`, and keep
        them, so that the loaders only run ``transform`` and collate. For data that fits in
        memory; the default example's data wait falls from about a quarter of the step time
        to a few percent (see the benchmarks page).
    split : sequence of three floats, optional
        One-file form: train, val and test fractions, each in [0, 1] and summing to at most
        1; when they sum to 1 the rounding remainder goes to train, so every structure is
        used. Defaults to ``(0.8, 0.1, 0.1)`` unless ``split_column`` is given.
    split_column : str, optional
        One-file form: a key-value column (database) or comment-line key (extxyz) holding
        each structure's split: ``"train"``, ``"val"`` or ``"test"``.
    seed : int
        Seed of the random split, of the training order and of mixture draws.
    batch_size : int, optional
        Structures per batch: 32 when ``None``. With ``max_atoms`` or ``max_edges``, the most
        structures per batch (no limit when ``None``).
    num_workers : int
        ``DataLoader`` worker processes.
    pin_memory : bool
        Pin batches in page-locked memory.
    predict_path : str or os.PathLike or list, optional
        The same as ``predict`` (its older name); give one of the two.
    train : str, os.PathLike, list or dict, optional
        Separate-sources form: the training data; ``{name: source}`` for several sets.
    val : str, os.PathLike or list, optional
        Separate-sources form: the validation data (needed with ``train``).
    test : str, os.PathLike or list, optional
        Separate-sources form: the test data (``trainer.test`` needs it).
    predict : str, os.PathLike or list, optional
        Data to predict on; the test data (or test split) when ``None``.
    key_map : mapping of str to str, optional
        ``{matsci target name: name stored in the files}``, e.g. ``{"energy":
        "total_energy"}``, for every source (see :func:`~matsci.data.atoms_to_data`).
    max_atoms : int, optional
        Atoms per batch: batches are packed up to this budget instead of ``batch_size``.
    max_edges : int, optional
        Neighbour pairs per batch (needs a ``PeriodicRadiusGraph`` in ``transform`` or
        ``pre_transform``). The edges of every structure are counted once, when its loader is
        first made: one pass over the data, unlike ``max_atoms``, which reads only the index.
    mixture_weights : dict, "balanced" or "temperature", optional
        With ``train`` as ``{name: source}``: draw the training structures of each epoch from
        the sources with fixed weights ``{name: weight}``, equally often (``"balanced"``), or
        with probabilities :math:`p_s \propto n_s^{1/T}` (``"temperature"``, with
        ``mixture_temperature`` :math:`T`; :math:`T = 1` follows the sizes :math:`n_s`, large
        :math:`T` tends to balanced) (:class:`~matsci.data.DatasetMixture`). Without it the
        sources are concatenated and every structure is seen once per epoch.
    mixture_temperature : float, optional
        :math:`T > 0` of ``mixture_weights="temperature"``.
    mixture_samples : int, optional
        Structures drawn per epoch from a mixture (default: all sources' sizes summed).

    Attributes
    ----------
    dataset : Dataset or None
        After :meth:`setup`: the opened file of the one-file form (every split), or the
        training data of the separate-sources form.
    split_indices : dict
        One-file form, after :meth:`setup`: ``{"train", "val", "test"}`` positions in
        ``dataset``; empty in the separate-sources form.
    path : str, list or dict
        Where the training data comes from: ``dataset`` or ``train``, as plain strings.

    Raises
    ------
    ValueError
        If the two forms are mixed or ``train``/``val`` is missing, the fractions are
        invalid, both ``split`` and ``split_column`` are given, a file type is unknown, a
        mixture or budget argument is invalid, or (in :meth:`setup`) a source cannot be read,
        lacks a requested key, or a split column value is not a split name. Errors name the
        argument (``train=``, ``val=``, ...) and the file.
    FileNotFoundError
        If a file or folder of a source does not exist.

    Examples
    --------
    Three files, the layout most training sets come in:

    >>> import tempfile, pathlib, ase.io
    >>> from ase.build import bulk
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> for name, count in (("train", 8), ("val", 2), ("test", 3)):
    ...     frames = [bulk("Cu", a=3.6 + 0.01 * i) for i in range(count)]
    ...     for frame in frames:
    ...         frame.info["target"] = frame.cell[0, 1]
    ...     ase.io.write(folder / f"{name}.extxyz", frames)
    >>> module = AtomsDataModule(train=folder / "train.extxyz", val=folder / "val.extxyz",
    ...                          test=folder / "test.extxyz", keys=["target"], batch_size=4)
    >>> module.setup("fit")
    >>> [batch.num_graphs for batch in module.train_dataloader()]
    [4, 4]
    >>> next(iter(module.test_dataloader())).structure_id
    tensor([0, 1, 2])

    One file, split at random:

    >>> import ase.db
    >>> path = folder / "ten.db"
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
        dataset: Source | None = None,
        keys: Sequence[str] | None = None,
        transform: Transform | None = None,
        pre_transform: Transform | None = None,
        in_memory: bool = False,
        split: Sequence[float] | None = None,
        split_column: str | None = None,
        seed: int = 0,
        batch_size: int | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
        predict_path: Source | None = None,
        *,
        train: TrainSource | None = None,
        val: Source | None = None,
        test: Source | None = None,
        predict: Source | None = None,
        key_map: Mapping[str, str] | None = None,
        max_atoms: int | None = None,
        max_edges: int | None = None,
        mixture_weights: MixtureWeights | None = None,
        mixture_temperature: float | None = None,
        mixture_samples: int | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["transform", "pre_transform"])
        plain = {
            "dataset": None if dataset is None else plain_source(dataset, "dataset"),
            "train": None if train is None else plain_train(train),
            "val": None if val is None else plain_source(val, "val"),
            "test": None if test is None else plain_source(test, "test"),
            "predict": None if predict is None else plain_source(predict, "predict"),
            "predict_path": (
                None if predict_path is None else plain_source(predict_path, "predict_path")
            ),
        }
        # Plain data only: checkpoints load with weights_only=True, which refuses Path objects.
        self.hparams.update(plain)
        self.hparams["split"] = None if split is None else [float(f) for f in split]
        self.hparams["keys"] = None if keys is None else list(keys)
        self.hparams["key_map"] = None if key_map is None else dict(key_map)
        self.hparams["mixture_weights"] = (
            dict(mixture_weights) if isinstance(mixture_weights, Mapping) else mixture_weights
        )
        self.hparams["radius_graph"] = _radius_graph_settings(transform) or _radius_graph_settings(
            pre_transform
        )
        check_form(plain, split=split, split_column=split_column)
        fractions = split_fractions(split)
        check_loader_arguments(
            batch_size=batch_size,
            max_atoms=max_atoms,
            max_edges=max_edges,
            mixture_samples=mixture_samples,
            num_workers=num_workers,
            radius_graph=self.hparams["radius_graph"],
        )
        check_mixture(plain["train"], mixture_weights, mixture_temperature, mixture_samples)
        self._one_file = plain["dataset"] is not None
        self._sources: dict[str, Any] = sources_of(plain)
        self.path = plain["dataset"] if self._one_file else plain["train"]
        self.predict_path = self._sources.get("predict")
        self.keys = None if keys is None else list(keys)
        self.key_map = None if key_map is None else dict(key_map)
        self.transform = transform
        self.pre_transform = pre_transform
        self.in_memory = in_memory
        self.fractions = fractions
        self.split_column = split_column
        self.seed = seed
        self.max_atoms = max_atoms
        self.max_edges = max_edges
        budget = max_atoms is not None or max_edges is not None
        self.batch_size = batch_size if batch_size is not None or budget else _DEFAULT_BATCH_SIZE
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.mixture_weights = self.hparams["mixture_weights"]
        self.mixture_temperature = mixture_temperature
        self.mixture_samples = mixture_samples
        self.dataset: Dataset[Data] | None = None
        self.split_indices: dict[str, list[int]] = {}
        self._opened: dict[str, Dataset[Data]] = {}
        self._edge_counts: dict[str, NDArray[np.int64]] = {}

    # -- opening the sources -----------------------------------------------------------------

    def _open(self, argument: str, source: PlainSource) -> Dataset[Data]:
        """Open one source; errors name the argument and the source."""
        try:
            opened: Dataset[Data] = open_dataset(
                source,
                keys=self.keys,
                key_map=self.key_map,
                transform=self.transform,
                pre_transform=self.pre_transform,
                in_memory=self.in_memory,
            )
        except FileNotFoundError as error:
            raise FileNotFoundError(f"AtomsDataModule({argument}={source!r}): {error}") from error
        except ValueError as error:
            raise ValueError(f"AtomsDataModule({argument}={source!r}): {error}") from error
        return opened

    def _open_source(self, name: str) -> None:
        if name in self._opened or name not in self._sources:
            return
        source = self._sources[name]
        if isinstance(source, dict):
            parts = [self._open(f"{name}[{part!r}]", value) for part, value in source.items()]
            self._opened[name] = ConcatDataset(parts)
        else:
            argument = (
                "predict_path" if name == "predict" and self.hparams["predict"] is None else name
            )
            self._opened[name] = self._open(argument, source)

    @override
    def setup(self, stage: str) -> None:
        """Open (index) the sources of ``stage`` and draw the split (once; later calls reuse).

        ``"predict"`` opens the predict source (or the test data); the other stages open
        ``train``, ``val`` and ``test``, so that a source that cannot be read, or lacks a
        requested key, fails before training.
        """
        if self._one_file:
            if self.dataset is None:
                self._open_source("dataset")
                self.dataset = self._opened["dataset"]
                self.split_indices = (
                    column_split(self.dataset, self.split_column, self.path)
                    if self.split_column is not None
                    else random_split(
                        len(self.dataset),  # type: ignore[arg-type]
                        self.fractions,
                        self.seed,
                    )
                )
            if stage == "predict":
                self._open_source("predict")
            return
        if stage == "predict":
            self._open_source("predict" if "predict" in self._sources else "test")
            return
        for name in SPLITS:
            self._open_source(name)
        self.dataset = self._opened["train"]

    # -- what each loader reads --------------------------------------------------------------

    def _resolved(self, name: str) -> str:
        """``"predict"`` falls back to the test data when no predict source was given."""
        return "test" if name == "predict" and "predict" not in self._sources else name

    def _split(self, name: str, caller: str) -> Dataset[Data]:
        """The structures of ``name`` (train, val, test or predict)."""
        wanted, name = name, self._resolved(name)
        if self._one_file and name != "predict":
            if self.dataset is None:
                raise RuntimeError(
                    f"AtomsDataModule: call setup() before {caller}() (the Trainer does)"
                )
            return Subset(self.dataset, self.split_indices[name])
        if name not in self._sources:
            give = "predict= or test=" if wanted == "predict" else f"{name}="
            raise ValueError(
                f"AtomsDataModule: {caller}() needs {wanted} data; give {give} (a file, folder "
                "or list)"
            )
        if name not in self._opened:
            stage = "'predict'" if caller == "predict_dataloader" else ""
            raise RuntimeError(
                f"AtomsDataModule: call setup({stage}) before {caller}() (the Trainer does)"
            )
        return self._opened[name]

    def _atom_counts(self, name: str) -> NDArray[np.int64]:
        name = self._resolved(name)
        if self._one_file and name != "predict":
            assert self.dataset is not None
            positions = np.asarray(self.split_indices[name], dtype=np.int64)
            counts: NDArray[np.int64] = atom_counts_of(self.dataset)[positions]
            return counts
        return atom_counts_of(self._opened[name])

    def _mixture(self) -> DatasetMixture | None:
        """The training mixture over the sources of ``train={name: source}``, if weighted."""
        if self.mixture_weights is None:
            return None
        return training_mixture(
            self._opened["train"],
            self._sources["train"],
            self.mixture_weights,
            temperature=self.mixture_temperature,
            samples=self.mixture_samples,
        )

    def _budget(self, name: str, *, shuffle: bool) -> BudgetBatchSampler | None:
        """A batch sampler by ``max_atoms``/``max_edges`` for ``name``; ``None`` without one."""
        if self.max_atoms is None and self.max_edges is None:
            return None
        edges = None
        if self.max_edges is not None:
            if name not in self._edge_counts:
                dataset = self._split(name, f"{name}_dataloader")
                items = (dataset[i] for i in range(len(dataset)))  # type: ignore[arg-type]
                self._edge_counts[name] = edge_counts(items)
            edges = self._edge_counts[name]
        try:
            return BudgetBatchSampler(
                self._atom_counts(name),
                edge_counts=edges,
                max_atoms=self.max_atoms,
                max_edges=self.max_edges,
                max_structures=self.batch_size,
                shuffle=shuffle,
                seed=self.seed,
                mixture=self._mixture() if shuffle else None,
            )
        except ValueError as error:
            raise ValueError(
                f"AtomsDataModule(max_atoms={self.max_atoms}, max_edges={self.max_edges}), "
                f"{self._resolved(name)} data: {error}"
            ) from error

    def _evaluation_loader(self, name: str) -> DataLoader:
        return evaluation_loader(
            self._split(name, f"{name}_dataloader"),
            self._budget(name, shuffle=False),
            batch_size=self.batch_size,
            seed=self.seed,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
        )

    @override
    def train_dataloader(self) -> DataLoader:
        """Shuffled batches of the training data (by seed and epoch; resumable mid-epoch)."""
        dataset = self._split("train", "train_dataloader")
        budget = self._budget("train", shuffle=True)
        return training_loader(
            dataset,
            budget,
            self._mixture() if budget is None else None,
            batch_size=self.batch_size,
            seed=self.seed,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
        )

    @override
    def val_dataloader(self) -> DataLoader:
        """Batches of the validation data, in file order."""
        return self._evaluation_loader("val")

    @override
    def test_dataloader(self) -> DataLoader:
        """Batches of the test data, in file order."""
        return self._evaluation_loader("test")

    @override
    def predict_dataloader(self) -> DataLoader:
        """Batches of ``predict`` in file order, or else of the test data."""
        return self._evaluation_loader("predict")

    @property
    def has_test_data(self) -> bool:
        """Whether there is test data: a ``test`` source, or the one-file form's test split."""
        return self._one_file or "test" in self._sources

    def statistics(
        self,
        keys: Sequence[str] | None = None,
        cutoff: float | None = None,
        elements: Sequence[int] | None = None,
    ) -> DatasetStatistics:
        """Statistics of the training data, in one streaming pass, for setting tasks up.

        Runs :func:`~matsci.data.compute_statistics` over the training data in file order
        (every structure of every training source once, whatever the mixture weights), in
        batches of ``batch_size`` (32 when ``None``) read by ``num_workers`` workers. Every
        DDP rank reads all of it (no distributed sampler), so every rank gets the same
        numbers.

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
            As :func:`~matsci.data.compute_statistics`, e.g. for empty training data.

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
            self._split("train", "statistics"),
            batch_size=self.batch_size or _DEFAULT_BATCH_SIZE,
            num_workers=self.num_workers,
        )
        return compute_statistics(
            loader, keys=self.keys if keys is None else keys, cutoff=cutoff, elements=elements
        )

    def __repr__(self) -> str:
        batches = f"batch_size={self.batch_size}"
        if self.max_atoms is not None:
            batches += f", max_atoms={self.max_atoms}"
        if self.max_edges is not None:
            batches += f", max_edges={self.max_edges}"
        if self._one_file:
            return (
                f"AtomsDataModule({self.path!r}, split={self.split_column or self.fractions}, "
                f"seed={self.seed}, {batches})"
            )
        sources = ", ".join(
            f"{name}={self._sources[name]!r}" for name in (*SPLITS, "predict")
            if name in self._sources
        )  # fmt: skip
        return f"AtomsDataModule({sources}, seed={self.seed}, {batches})"
