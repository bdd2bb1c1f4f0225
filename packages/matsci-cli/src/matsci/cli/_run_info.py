"""Store what ``matsci predict`` needs in every checkpoint: the model class and the config."""

from __future__ import annotations

from typing import Any, Final

import lightning.pytorch as pl
from typing_extensions import override

CHECKPOINT_KEY: Final = "matsci_cli"
"""Key of the checkpoint entry ``{"model_class": str, "config": str}`` (config as JSON text)."""


class RunInfo(pl.Callback):
    """Add the model's class path and the run's resolved config (JSON text) to checkpoints.

    A checkpoint then says how to rebuild the model and its data transform, so
    ``matsci predict --ckpt_path ...`` needs nothing else. Only plain data is stored, so the
    checkpoint still loads with ``weights_only=True``.

    Parameters
    ----------
    config
        The resolved config of the run, as JSON text.

    Examples
    --------
    >>> RunInfo('{"seed_everything": 0}')
    RunInfo()
    """

    def __init__(self, config: str) -> None:
        self.config = config

    @override
    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """Write the entry into the checkpoint being saved."""
        cls = type(pl_module)
        checkpoint[CHECKPOINT_KEY] = {
            "model_class": f"{cls.__module__}.{cls.__qualname__}",
            "config": self.config,
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
