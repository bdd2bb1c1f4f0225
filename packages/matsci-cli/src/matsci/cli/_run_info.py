"""Store what ``matsci predict`` needs besides the model in every checkpoint: the run's config."""

from __future__ import annotations

from typing import Any, Final

import lightning.pytorch as pl
from typing_extensions import override

CHECKPOINT_KEY: Final = "matsci_cli"
"""Key of the checkpoint entry ``{"config": str}`` (the run's config as JSON text)."""


class RunInfo(pl.Callback):
    """Add the run's config (JSON text) to checkpoints.

    The module records its own class (``checkpoint["matsci"]``, read by
    :func:`~matsci.training.load_model`); with the config a checkpoint also says how to
    rebuild the data transform, so ``matsci predict --ckpt_path ...`` needs nothing else. Only
    plain data is stored, so the checkpoint still loads with ``weights_only=True``.

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
        checkpoint[CHECKPOINT_KEY] = {"config": self.config}

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
