"""Gradients of the energy inside Lightning's evaluation loops, which run in inference mode."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator

import torch
from torch_geometric.data import Batch


@contextlib.contextmanager
def gradients_enabled() -> Iterator[None]:
    """Turn autograd on, even inside ``torch.inference_mode`` (Lightning's default for evaluation).

    Forces and stresses are derivatives of the energy, so they need autograd in validation,
    test and predict too; with this context users keep the default ``Trainer`` settings.

    Examples
    --------
    >>> import torch
    >>> from matsci.tasks.physics import gradients_enabled
    >>> with torch.inference_mode(), gradients_enabled():
    ...     x = torch.ones(2, requires_grad=True)
    ...     torch.autograd.grad((x**2).sum(), x)[0]
    tensor([2., 2.])
    """
    with torch.inference_mode(False), torch.enable_grad():
        yield


def autograd_ready_copy(batch: Batch) -> Batch:
    """A copy of the batch whose tensors autograd can use; the caller's batch is not changed.

    Tensors made in inference mode cannot take part in autograd; they are cloned (inside
    :func:`gradients_enabled`). Otherwise the copy is shallow: tensors are shared, only the
    attributes a task replaces (positions, cell) are new objects.

    Parameters
    ----------
    batch
        The batch from the data loader.

    Returns
    -------
    Batch
        A copy whose attributes can be replaced without touching ``batch``.
    """
    work = copy.copy(batch)
    for name, value in batch.items():
        if isinstance(value, torch.Tensor) and value.is_inference():
            work[name] = value.clone()
    return work
