"""Start a fit from the encoder weights of another run (denoising pretraining, say)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_info
from typing_extensions import override

from matsci.tasks.core import read_checkpoint
from matsci.training._find_checkpoint import find_checkpoint

__all__ = ["PretrainedEncoder"]

_PREFIX = "encoder."


class PretrainedEncoder(pl.Callback):
    """Load the encoder weights of a checkpoint into the model when a new fit starts.

    The config-file counterpart of
    :meth:`~matsci.tasks.core.BaseTaskModule.from_pretrained_encoder`: the model is built from
    its config (its ``encoder_class`` and ``encoder_kwargs`` must be those of the checkpoint,
    which is checked), then every ``encoder.*`` weight of the checkpoint is copied in; heads,
    losses and normalizers stay new. Runs in ``setup`` of a fresh fit only: a resumed fit
    restores its own weights.

    Parameters
    ----------
    checkpoint
        A ``.ckpt`` file, or a run folder (``runs/denoise_pretrain``) whose newest version's
        ``checkpoints/best.ckpt`` (else ``last.ckpt``) is used. ``None`` does nothing.

    Raises
    ------
    FileNotFoundError
        When the fit starts, if the checkpoint is missing.
    ValueError
        When the fit starts, if the file is not a checkpoint, holds no encoder weights, or was
        trained with another encoder class or other encoder arguments.

    Examples
    --------
    >>> from matsci.training import PretrainedEncoder
    >>> PretrainedEncoder()
    PretrainedEncoder(checkpoint=None)
    """

    def __init__(self, checkpoint: str | None = None) -> None:
        self.checkpoint = checkpoint

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Copy the checkpoint's encoder weights into the model at the start of a fresh fit."""
        if self.checkpoint is None or stage != "fit" or trainer.ckpt_path is not None:
            return
        path = find_checkpoint(self.checkpoint)
        encoder = getattr(pl_module, "encoder", None)
        if not isinstance(encoder, torch.nn.Module):
            raise ValueError(
                f"pretrained_encoder: {type(pl_module).__name__} has no `encoder` module to load"
            )
        state = read_checkpoint(path, caller="pretrained_encoder", required_keys=("state_dict",))
        _check_same_encoder(path, state.get("hyper_parameters", {}), dict(pl_module.hparams))
        weights = {
            name.removeprefix(_PREFIX): value
            for name, value in state.get("state_dict", {}).items()
            if name.startswith(_PREFIX)
        }
        if not weights:
            raise ValueError(f"pretrained_encoder: no encoder weights in {str(path)!r}")
        try:
            encoder.load_state_dict(weights, strict=True)
        except RuntimeError as error:
            raise ValueError(
                f"pretrained_encoder: the encoder weights of {str(path)!r} do not fit this "
                f"model's encoder: {str(error).splitlines()[0]}"
            ) from error
        rank_zero_info(f"matsci: encoder weights loaded from {path}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(checkpoint={self.checkpoint!r})"


def _check_same_encoder(path: Path, saved: dict[str, Any], current: dict[str, Any]) -> None:
    """Refuse a checkpoint whose encoder class or arguments differ from the model's."""
    for name in ("encoder_class", "encoder_kwargs"):
        if name in saved and name in current and saved[name] != current[name]:
            raise ValueError(
                f"pretrained_encoder: {str(path)!r} was trained with {name}={saved[name]!r} but "
                f"the model has {name}={current[name]!r}; give the model the same encoder"
            )
