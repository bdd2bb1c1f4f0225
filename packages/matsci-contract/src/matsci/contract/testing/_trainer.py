"""A quiet Lightning ``Trainer`` for tests (``lightning`` is imported only when it is called)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # lightning is optional: quiet_trainer imports it when called
    import lightning.pytorch as pl  # type: ignore[import-not-found, unused-ignore]

__all__ = ["quiet_trainer"]


def quiet_trainer(**kwargs: Any) -> pl.Trainer:
    """A Lightning ``Trainer`` for tests: one CPU device, deterministic, and silent.

    No logger, no checkpoint callback, no progress bar, no model summary, one epoch; any
    keyword replaces a default and the rest go to ``lightning.pytorch.Trainer``. It needs
    ``lightning`` installed, which ``matsci-contract`` does not depend on.

    ``deterministic=True`` makes Lightning call ``torch.use_deterministic_algorithms(True)``
    for the rest of the process; pass ``deterministic=None`` to leave it as it is.

    Returns
    -------
    lightning.pytorch.Trainer

    Examples
    --------
    Not run here, since ``lightning`` may be missing::

        trainer = quiet_trainer(max_steps=2, gradient_clip_val=1.0)
        trainer.fit(task, train_loader)
        metrics = quiet_trainer().test(task, test_loader, verbose=False)[0]
    """
    import lightning.pytorch as pl  # type: ignore[import-not-found, unused-ignore]

    options: dict[str, Any] = {
        "accelerator": "cpu",
        "devices": 1,
        "max_epochs": 1,
        "deterministic": True,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
    }
    options.update(kwargs)
    return pl.Trainer(**options)
