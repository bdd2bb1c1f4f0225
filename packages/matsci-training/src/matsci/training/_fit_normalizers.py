"""Fit a task's normalizers on the training data before a fresh fit."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import lightning.pytorch as pl
import torch
from typing_extensions import override

from matsci.tasks.core import BaseTaskModule, MultiTaskLitModule

__all__ = ["FitNormalizers"]


class FitNormalizers(pl.Callback):
    """Call the model's ``fit_normalizers`` on the training loader when a new fit starts.

    Normalizers are the statistics a task learns from data before training: mean and standard
    deviation of regression targets, and for :class:`~matsci.tasks.physics.ForceRegressionTask`
    per-element reference energies and the force scale, without which it trains badly. They
    are buffers, so they travel in checkpoints: a resumed fit (``ckpt_path`` given) restores
    them and this callback does nothing. It runs in ``setup``, after the data module's own
    ``setup`` and before the model moves to its device, on every rank with the same data.

    A :class:`~matsci.tasks.core.MultiTaskLitModule` with a
    :class:`~matsci.data.MultiDataModule` gets each dataset's training loader by name, so every
    task fits on its own dataset. Modules that are not matsci tasks are left alone.

    Parameters
    ----------
    enabled
        Fit (default) or leave the normalizers as the config gives them.

    Raises
    ------
    ValueError
        At setup, if a multi-task module comes with a data module that has no ``datasets``.

    Examples
    --------
    >>> from matsci.training import FitNormalizers
    >>> FitNormalizers(enabled=False)
    FitNormalizers(enabled=False)
    """

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Fit the normalizers at the start of a fresh fit."""
        if not self.enabled or stage != "fit" or trainer.ckpt_path is not None:
            return
        datamodule = getattr(trainer, "datamodule", None)
        if datamodule is None:
            return
        device = pl_module.device
        if isinstance(pl_module, MultiTaskLitModule):
            datasets = getattr(datamodule, "datasets", None)
            if not isinstance(datasets, Mapping):
                raise ValueError(
                    f"FitNormalizers: a MultiTaskLitModule fits each task on its own dataset and "
                    f"needs a data module per dataset (a MultiDataModule); got "
                    f"{type(datamodule).__name__}"
                )
            pl_module.fit_normalizers(
                {
                    name: _OnDevice(data.train_dataloader(), device)
                    for name, data in datasets.items()
                }
            )
        elif isinstance(pl_module, BaseTaskModule):
            pl_module.fit_normalizers(_OnDevice(datamodule.train_dataloader(), device))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(enabled={self.enabled})"


class _OnDevice:
    """Batches of a loader moved to a device; iterable again and again, like the loader."""

    def __init__(self, batches: Iterable[Any], device: torch.device) -> None:
        self.batches = batches
        self.device = device

    def __iter__(self) -> Iterator[Any]:
        for batch in self.batches:
            yield batch.to(self.device) if hasattr(batch, "to") else batch
