"""An exponential moving average of the weights, used for evaluation, kept beside the raw ones."""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable, Mapping
from typing import Any, Final, Literal, TypeVar

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor, nn
from typing_extensions import override

from matsci.tasks.core._checkpoint_io import read_checkpoint

__all__ = ["EMA_KEY", "ExponentialMovingAverage", "apply_evaluation_weights"]

EMA_KEY: Final = "ema"
"""Checkpoint key of the averaged weights: ``{"decay", "applied_to", "num_updates",
"state_dict"}``."""

Weights = Literal["evaluation", "raw"]
"""Which weights to load from a checkpoint: those evaluation used (the average when the
checkpoint has one), or the raw trained weights."""


class ExponentialMovingAverage(Callback):
    r"""Keep an exponential moving average of the weights and evaluate with it.

    After every optimizer step the average moves towards the weights,

    .. math:: \bar\theta \leftarrow d\,\bar\theta + (1 - d)\,\theta,

    starting from the weights when training starts (one fused ``torch._foreach_lerp_``, no
    host synchronization). Validation, test and prediction run with the average swapped in; the
    raw weights come back afterwards. Checkpoints keep both: their ``state_dict`` holds the raw
    weights (a resumed run continues from them) and ``checkpoint["ema"]`` holds
    ``{"decay", "applied_to": "evaluation", "num_updates", "state_dict": averaged}``, which
    records that evaluation used the average. :meth:`BaseTaskModule.load_from_checkpoint
    <matsci.tasks.core.BaseTaskModule.load_from_checkpoint>` loads those evaluation weights by
    default (``weights="raw"`` for the others).

    Trainable floating-point parameters are averaged; buffers (normalizer statistics, batch
    norm running statistics) are taken from the raw model. Under DDP every rank holds the same
    weights, hence the same average.

    Parameters
    ----------
    decay
        :math:`d` in [0, 1); an average over roughly :math:`1 / (1 - d)` steps.

    Raises
    ------
    ValueError
        If ``decay`` is not in [0, 1).

    Examples
    --------
    >>> import torch
    >>> from matsci.tasks.core import ExponentialMovingAverage
    >>> model = torch.nn.Linear(1, 1, bias=False)
    >>> ema = ExponentialMovingAverage(decay=0.5)
    >>> _ = torch.nn.init.constant_(model.weight, 0.0)
    >>> ema.reset(model)
    >>> _ = torch.nn.init.constant_(model.weight, 4.0)
    >>> ema.update(model)
    >>> ema.averaged_state_dict()["weight"]
    tensor([[2.]])
    """

    def __init__(self, decay: float = 0.999) -> None:
        if not (isinstance(decay, int | float) and 0.0 <= decay < 1.0 and math.isfinite(decay)):
            raise ValueError(
                f"ExponentialMovingAverage(decay={decay!r}): expected a number in [0, 1)"
            )
        self.decay = float(decay)
        self.num_updates = 0
        self._names: list[str] = []
        self._average: list[Tensor] | None = None
        self._raw: list[Tensor] | None = None  # the raw weights while the average is swapped in
        self._last_step = 0
        # The module the parameters were looked up on (weakly), and its averaged parameters.
        self._parameters: tuple[weakref.ref[nn.Module], list[nn.Parameter]] | None = None

    @property
    def state_key(self) -> str:
        """One state per decay in a checkpoint."""
        return self._generate_state_key(decay=self.decay)

    # -- the average ---------------------------------------------------------------------------

    def reset(self, module: nn.Module) -> None:
        """Start the average at the module's current weights."""
        named = _averaged_parameters(module)
        self._names = list(named)
        self._average = [p.detach().clone() for p in named.values()]
        self.num_updates = 0

    def update(self, module: nn.Module) -> None:
        """Move the average one step towards the module's weights."""
        if self._average is None:
            self.reset(module)
        assert self._average is not None
        current = [p.detach() for p in self._parameters_of(module)]
        with torch.no_grad():
            torch._foreach_lerp_(self._average, current, 1.0 - self.decay)
        self.num_updates += 1

    def averaged_state_dict(self) -> dict[str, Tensor]:
        """The averaged weights by state-dict name (empty before training starts)."""
        if self._average is None:
            return {}
        return dict(zip(self._names, self._average, strict=True))

    # -- training ------------------------------------------------------------------------------

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._ensure(pl_module)
        self._last_step = trainer.global_step

    @override
    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        # global_step counts optimizer steps: with gradient accumulation it moves every k batches.
        if trainer.global_step > self._last_step:
            self.update(pl_module)
            self._last_step = trainer.global_step

    # -- evaluation ----------------------------------------------------------------------------

    @override
    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._swap_in(pl_module)

    @override
    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._swap_out(pl_module)

    @override
    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._swap_in(pl_module)

    @override
    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._swap_out(pl_module)

    @override
    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._swap_in(pl_module)

    @override
    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._swap_out(pl_module)

    @override
    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        self._swap_out(pl_module)

    # -- checkpoints ---------------------------------------------------------------------------

    @override
    def state_dict(self) -> dict[str, Any]:
        """Decay and counters; the averaged weights go to ``checkpoint["ema"]``."""
        return {"decay": self.decay, "num_updates": self.num_updates, "last_step": self._last_step}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the counters saved by :meth:`state_dict`."""
        self.num_updates = int(state_dict["num_updates"])
        self._last_step = int(state_dict["last_step"])

    @override
    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if self._raw is not None:  # saved during evaluation: the state dict must stay raw
            state = checkpoint["state_dict"]
            for name, raw in zip(self._names, self._raw, strict=True):
                state[name] = raw.detach().clone()
        if self._average is not None:
            checkpoint[EMA_KEY] = {
                "decay": self.decay,
                "applied_to": "evaluation",
                "num_updates": self.num_updates,
                "state_dict": {
                    n: a.detach().clone() for n, a in zip(self._names, self._average, strict=True)
                },
            }

    @override
    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        record = checkpoint.get(EMA_KEY)
        if record is None:
            return  # a checkpoint without an average: start one from its weights
        names = list(_averaged_parameters(pl_module))
        averaged = record["state_dict"]
        if set(averaged) != set(names):
            missing, extra = sorted(set(names) - set(averaged)), sorted(set(averaged) - set(names))
            raise ValueError(
                f"ExponentialMovingAverage: the checkpoint's averaged weights do not match the "
                f"module (missing {missing}, unexpected {extra})"
            )
        self._names = names
        self._average = [averaged[name].detach().clone() for name in names]
        self.num_updates = int(record["num_updates"])

    # -- helpers -------------------------------------------------------------------------------

    def _parameters_of(self, module: nn.Module) -> list[nn.Parameter]:
        # Looked up once per module, not at every step.
        if self._parameters is None or self._parameters[0]() is not module:
            self._parameters = (weakref.ref(module), list(_averaged_parameters(module).values()))
        return self._parameters[1]

    def _ensure(self, module: nn.Module) -> None:
        if self._average is None:
            self.reset(module)
            return
        reference = next(iter(_averaged_parameters(module).values()), None)
        if reference is not None and self._average and self._average[0].device != reference.device:
            self._average = [a.to(reference.device) for a in self._average]

    def _swap_in(self, module: nn.Module) -> None:
        if self._raw is not None:
            return
        self._ensure(module)
        assert self._average is not None
        parameters = self._parameters_of(module)
        with torch.no_grad():
            self._raw = [p.detach().clone() for p in parameters]
            torch._foreach_copy_([p.data for p in parameters], self._average)

    def _swap_out(self, module: nn.Module) -> None:
        if self._raw is None:
            return
        parameters = self._parameters_of(module)
        with torch.no_grad():
            torch._foreach_copy_([p.data for p in parameters], self._raw)
        self._raw = None


def _averaged_parameters(module: nn.Module) -> dict[str, nn.Parameter]:
    """Trainable floating-point parameters by state-dict name (shared ones once)."""
    return {
        name: parameter
        for name, parameter in module.named_parameters()
        if parameter.requires_grad and parameter.is_floating_point()
    }


def apply_evaluation_weights(
    module: nn.Module, checkpoint: Mapping[str, Any], weights: Weights
) -> None:
    """Load the averaged weights a checkpoint records for evaluation into ``module``.

    Nothing happens with ``weights="raw"`` or when the checkpoint has no average.

    Parameters
    ----------
    module
        The module restored from ``checkpoint`` (with its raw weights).
    checkpoint
        The checkpoint (as read by :func:`~matsci.tasks.core.read_checkpoint`).
    weights
        ``"evaluation"`` or ``"raw"``.

    Raises
    ------
    ValueError
        If ``weights`` is neither, or the averaged weights do not fit the module.
    """
    check_weights(weights)
    record = checkpoint.get(EMA_KEY)
    if weights == "raw" or not isinstance(record, Mapping):
        return
    if record.get("applied_to") != "evaluation":
        return
    averaged: Mapping[str, Tensor] = record["state_dict"]
    state = module.state_dict()
    unknown = sorted(set(averaged) - set(state))
    if unknown:
        raise ValueError(
            f"load_from_checkpoint: the checkpoint's averaged weights {unknown} are not weights "
            f"of {type(module).__name__}"
        )
    with torch.no_grad():
        for name, value in averaged.items():
            state[name].copy_(value)


def check_weights(weights: str) -> None:
    """Refuse a ``weights`` choice other than ``"evaluation"`` and ``"raw"``."""
    if weights not in ("evaluation", "raw"):
        raise ValueError(
            f"load_from_checkpoint(weights={weights!r}): expected 'evaluation' (the averaged "
            "weights when the checkpoint has them) or 'raw'"
        )


LoadedModule = TypeVar("LoadedModule", bound=nn.Module)


def load_checkpoint_with_weights(
    load: Callable[..., LoadedModule],
    checkpoint_path: Any,
    weights: Weights,
    *,
    caller: str,
    **load_kwargs: Any,
) -> LoadedModule:
    """Check a checkpoint, restore a module with ``load`` and apply the chosen weights.

    The one path behind ``load_from_checkpoint`` of tasks and multi-task modules: a truncated
    or foreign file gives a ``ValueError`` naming it before Lightning reads it.

    Parameters
    ----------
    load
        Lightning's ``load_from_checkpoint`` of the class being restored.
    checkpoint_path
        Path (or file object) of the checkpoint.
    weights
        ``"evaluation"`` or ``"raw"`` (see :func:`apply_evaluation_weights`).
    caller
        Who loads (starts error messages).
    **load_kwargs
        Passed to ``load``.

    Returns
    -------
    torch.nn.Module
        The restored module.
    """
    check_weights(weights)
    checkpoint = read_checkpoint(checkpoint_path, caller=caller, required_keys=("state_dict",))
    module = load(checkpoint_path, **load_kwargs)
    apply_evaluation_weights(module, checkpoint, weights)
    return module
