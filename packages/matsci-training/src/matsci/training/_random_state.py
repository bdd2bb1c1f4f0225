"""Random number generator states in checkpoints, so a resumed run draws the same numbers."""

from __future__ import annotations

import random
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from typing_extensions import override

__all__ = ["RandomStateCheckpoint"]


class RandomStateCheckpoint(Callback):
    """Store the random states (torch, CUDA, NumPy, Python) in checkpoints; restore on resume.

    Lightning does not save them, so a run resumed from a checkpoint draws other dropout masks
    and noise than the run that was interrupted. With this callback the states at the moment
    of saving travel in the checkpoint (as this callback's state) and are set again when the
    resumed run starts training, after Lightning has set everything else up.

    The states are those of the process that saves the checkpoint (rank 0 under DDP); on
    resume every rank takes them. Ranks seeded alike by ``seed_everything`` draw alike anyway.
    CUDA states are saved only when CUDA is in use. Together with
    :class:`~matsci.data.ResumableDataLoader` (the order of the epoch) and deterministic
    algorithms, a killed and resumed run on the CPU ends with the weights of an uninterrupted
    one.

    Examples
    --------
    >>> import torch
    >>> from matsci.training import RandomStateCheckpoint
    >>> callback = RandomStateCheckpoint()
    >>> state = callback.state_dict()
    >>> expected = torch.rand(2)
    >>> callback.load_state_dict(state)
    >>> callback.restore()
    >>> torch.equal(torch.rand(2), expected)
    True
    """

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None

    @override
    def state_dict(self) -> dict[str, Any]:
        """The current random states, as plain data and tensors (loads with weights_only)."""
        # The legacy global generator is what np.random.* functions draw from.
        kind, keys, position, has_gauss, cached = np.random.get_state(legacy=True)  # noqa: NPY002
        state: dict[str, Any] = {
            "torch": torch.get_rng_state(),
            "numpy": {
                "kind": str(kind),
                "keys": torch.from_numpy(np.asarray(keys).astype(np.int64)),
                "position": int(position),
                "has_gauss": int(has_gauss),
                "cached_gaussian": float(cached),
            },
            "python": random.getstate(),
            "cuda": _cuda_states(),
        }
        return state

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Keep the saved states; they are set when training starts (see :meth:`restore`)."""
        self._pending = state_dict

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.restore()

    def restore(self) -> None:
        """Set the random states loaded from a checkpoint (once; nothing if none was loaded)."""
        if self._pending is None:
            return
        state, self._pending = self._pending, None
        torch.set_rng_state(state["torch"])
        numpy_state = state["numpy"]
        np.random.set_state(  # noqa: NPY002
            (
                numpy_state["kind"],
                numpy_state["keys"].numpy().astype(np.uint32),
                numpy_state["position"],
                numpy_state["has_gauss"],
                numpy_state["cached_gaussian"],
            )
        )
        python_version, python_state, gauss = state["python"]
        random.setstate((python_version, tuple(python_state), gauss))
        cuda_states = state["cuda"]
        if (
            cuda_states
            and torch.cuda.is_available()
            and len(cuda_states) == torch.cuda.device_count()
        ):
            torch.cuda.set_rng_state_all(cuda_states)


def _cuda_states() -> list[torch.Tensor]:
    """The CUDA generators' states, only when CUDA is in use (reading them would start it)."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():  # type: ignore[no-untyped-call]
        return torch.cuda.get_rng_state_all()
    return []
