"""Several data modules, one per dataset, combined for multi-task training."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final, Literal

from lightning.pytorch import LightningDataModule
from lightning.pytorch.utilities.combined_loader import CombinedLoader
from typing_extensions import override

from matsci.contract import DatasetStatistics
from matsci.data._device_transfer import SkipsTransferWhenThere

__all__ = ["MultiDataModule"]

TrainMode = Literal["max_size_cycle", "min_size", "max_size"]
CombinedMode = Literal["max_size_cycle", "min_size", "max_size", "sequential"]
_TRAIN_MODES: Final = ("max_size_cycle", "min_size", "max_size")


class MultiDataModule(SkipsTransferWhenThere):
    """One data module per named dataset; batches come as ``{dataset_name: batch}``.

    Training iterates the datasets together with Lightning's
    :class:`~lightning.pytorch.utilities.combined_loader.CombinedLoader`: ``"max_size_cycle"``
    (an epoch lasts as long as the longest dataset; shorter ones start over), ``"min_size"``
    (stop with the shortest) or ``"max_size"`` (shorter ones give ``None`` once done, and
    contribute nothing to those steps). Validation, test and predict run the datasets one after
    the other (``"sequential"``); the loaders are a dict, so a
    :class:`~matsci.tasks.core.MultiTaskLitModule` knows which dataset each batch is from.

    Parameters
    ----------
    datasets
        ``{name: data module}``, e.g. :class:`AtomsDataModule` s; names match the datasets of
        the multi-task module's tasks.
    mode
        How training iterates the datasets (see above).

    Raises
    ------
    ValueError
        On no datasets, a name with ``.`` or ``/``, or an unknown mode.

    Examples
    --------
    >>> import tempfile, pathlib, ase.db
    >>> from ase.build import bulk
    >>> from matsci.data import AtomsDataModule, MultiDataModule
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> for name, count in (("small", 10), ("large", 30)):
    ...     with ase.db.connect(folder / f"{name}.db") as db:
    ...         for i in range(count):
    ...             _ = db.write(bulk("Cu", a=3.6 + 0.01 * i), target=float(i))
    >>> data = MultiDataModule({name: AtomsDataModule(folder / f"{name}.db", keys=["target"],
    ...                                               batch_size=4)
    ...                         for name in ("small", "large")})
    >>> data.setup("fit")
    >>> batch, _, _ = next(iter(data.train_dataloader()))
    >>> sorted(batch), batch["small"].num_graphs
    (['large', 'small'], 4)
    """

    def __init__(
        self, datasets: Mapping[str, LightningDataModule], mode: TrainMode = "max_size_cycle"
    ) -> None:
        super().__init__()
        if not datasets:
            raise ValueError("MultiDataModule(datasets={}): give at least one named data module")
        for name in datasets:
            if not name or "." in name or "/" in name:
                raise ValueError(f"MultiDataModule: dataset name {name!r} must not contain . or /")
        if mode not in _TRAIN_MODES:
            raise ValueError(f"MultiDataModule(mode={mode!r}): expected one of {_TRAIN_MODES}")
        self.datasets = dict(datasets)
        self.mode = mode
        # Plain data in the checkpoint: each module's own hyperparameters, by name.
        self.save_hyperparameters(
            {
                "mode": mode,
                "datasets": {
                    name: {"class_path": f"{type(m).__module__}.{type(m).__qualname__}",
                           "init_args": dict(m.hparams)}
                    for name, m in self.datasets.items()
                },
            }
        )  # fmt: skip

    @override
    def prepare_data(self) -> None:
        """Prepare every dataset."""
        for module in self.datasets.values():
            module.prepare_data()

    @override
    def setup(self, stage: str) -> None:
        """Set every dataset up for ``stage``."""
        for module in self.datasets.values():
            module.setup(stage)

    def _combined(self, method: str, mode: CombinedMode) -> CombinedLoader:
        loaders = {name: getattr(module, method)() for name, module in self.datasets.items()}
        return CombinedLoader(loaders, mode=mode)

    @override
    def train_dataloader(self) -> Any:
        """The datasets' train loaders combined in :attr:`mode`."""
        return self._combined("train_dataloader", self.mode)

    @override
    def val_dataloader(self) -> Any:
        """The datasets' val loaders, one after the other."""
        return self._combined("val_dataloader", "sequential")

    @override
    def test_dataloader(self) -> Any:
        """The datasets' test loaders, one after the other."""
        return self._combined("test_dataloader", "sequential")

    @override
    def predict_dataloader(self) -> Any:
        """The datasets' predict loaders, one after the other."""
        return self._combined("predict_dataloader", "sequential")

    def statistics(
        self,
        keys: Mapping[str, Sequence[str] | None] | None = None,
        cutoff: float | None = None,
        elements: Sequence[int] | None = None,
    ) -> dict[str, DatasetStatistics]:
        """The statistics of each dataset's train split, one streaming pass per dataset.

        Calls each data module's ``statistics`` (see
        :meth:`~matsci.data.AtomsDataModule.statistics`).

        Parameters
        ----------
        keys : mapping of str to sequence of str, optional
            Targets per dataset name; a dataset left out (or given ``None``) uses its module's
            default.
        cutoff : float, optional
            Radius (Å) for average neighbour counts, for every dataset.
        elements : sequence of int, optional
            Atomic numbers the model should cover, for every dataset.

        Returns
        -------
        dict
            ``{dataset_name: DatasetStatistics}``.

        Raises
        ------
        ValueError
            If ``keys`` names an unknown dataset.
        TypeError
            If a dataset's module has no ``statistics`` method.
        """
        chosen = dict(keys or {})
        unknown = sorted(set(chosen) - set(self.datasets))
        if unknown:
            raise ValueError(
                f"MultiDataModule.statistics(keys=...): unknown datasets {unknown}; the "
                f"datasets are {sorted(self.datasets)}"
            )
        statistics: dict[str, DatasetStatistics] = {}
        for name, module in self.datasets.items():
            method = getattr(module, "statistics", None)
            if not callable(method):
                raise TypeError(
                    f"MultiDataModule.statistics: dataset {name!r} is a {type(module).__name__}, "
                    "which has no statistics() method"
                )
            statistics[name] = method(keys=chosen.get(name), cutoff=cutoff, elements=elements)
        return statistics
