"""What the encoder runs on: clean or noisy positions, with or without gradients to them.

Several tasks can share one encoder pass only if they agree on its input. A task describes what
it needs with :class:`InputRequest`; :func:`prepare_encoder_input` builds one input that serves
every request of the same view (forces need positions that require grad, stress a strain
applied to positions and cell; other tasks just read the result, whose values are unchanged).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor
from torch_geometric.data import Batch

from matsci.contract import AttributeSpec, keys

View = Literal["clean", "noisy"]
"""Which positions the encoder sees: the data's (``"clean"``) or ``noisy_pos`` (``"noisy"``)."""

_NO_NOISY_POSITIONS = (
    "the batch has no 'noisy_pos', which a denoising task needs; add "
    "matsci.transforms.NoisyPositions(scale=...) to the dataset's transforms"
)


@dataclass(frozen=True)
class InputRequest:
    """What one task needs from the encoder's input.

    Parameters
    ----------
    view
        ``"clean"`` positions or ``"noisy"`` ones (``noisy_pos``, from
        :class:`~matsci.transforms.NoisyPositions`).
    position_gradients
        Positions must be a leaf that requires grad (forces are derivatives with respect to it).
    strain
        A zero symmetric strain is applied to positions and cell, so the stress is the
        derivative with respect to it.
    """

    view: View = "clean"
    position_gradients: bool = False
    strain: bool = False

    @property
    def needs_gradients(self) -> bool:
        """Whether the encoder pass must run with autograd on, even in inference mode."""
        return self.position_gradients or self.strain

    def specs(self) -> list[AttributeSpec]:
        """The batch attributes this input needs beyond the structure.

        ``noisy_pos`` for the noisy view (with advice on how to get it when it is missing),
        nothing for clean positions.
        """
        if self.view == "clean":
            return []
        return [
            AttributeSpec(
                keys.NOISY_POS,
                "node",
                (3,),
                finite=True,
                hint="add matsci.transforms.NoisyPositions(scale=...) to the dataset's transforms",
            )
        ]

    @staticmethod
    def merge(requests: Iterable[InputRequest]) -> InputRequest:
        """One request serving all of ``requests`` (which must share a view).

        Parameters
        ----------
        requests
            Requests of tasks that share an encoder pass.

        Returns
        -------
        InputRequest
            Gradients to positions and strain if any request needs them.

        Raises
        ------
        ValueError
            If the requests have different views (they need separate encoder passes).
        """
        requests = list(requests)
        views = {request.view for request in requests}
        if len(views) != 1:
            raise ValueError(f"InputRequest.merge: one view expected, got {sorted(views)}")
        return InputRequest(
            view=requests[0].view,
            position_gradients=any(request.position_gradients for request in requests),
            strain=any(request.strain for request in requests),
        )


@dataclass
class EncoderInput:
    """A batch prepared for the encoder, and the tensors derivatives are taken with respect to.

    Attributes
    ----------
    batch
        What the encoder receives: the caller's batch, or a copy of it with replaced positions
        (and cell); the caller's batch is never changed.
    positions
        The leaf positions ``[N, 3]`` that require grad, or ``None``.
    strain
        The leaf strain ``[B, 3, 3]`` (zero) that requires grad, or ``None``.
    keep_graph
        Whether derivatives must keep their graph (training a loss on them).
    shared
        Whether more than one task reads this encoder pass, so that a task taking derivatives
        must leave the graph for the next one. With ``False`` (one task) evaluation frees the
        encoder's graph during the backward pass, lowering peak memory.
    """

    batch: Batch
    positions: Tensor | None = None
    strain: Tensor | None = None
    keep_graph: bool = False
    shared: bool = True


@contextlib.contextmanager
def gradients_enabled(enabled: bool = True) -> Iterator[None]:
    """Turn autograd on, even inside ``torch.inference_mode`` (Lightning's default for evaluation).

    Forces and stresses are derivatives of the energy, so they need autograd in validation,
    test and predict too; with this context users keep the default ``Trainer`` settings.

    Parameters
    ----------
    enabled
        With ``False`` the context does nothing (the caller's grad mode stays).

    Examples
    --------
    >>> import torch
    >>> from matsci.tasks.core import gradients_enabled
    >>> with torch.inference_mode(), gradients_enabled():
    ...     x = torch.ones(2, requires_grad=True)
    ...     torch.autograd.grad((x**2).sum(), x)[0]
    tensor([2., 2.])
    """
    if not enabled or (torch.is_grad_enabled() and not torch.is_inference_mode_enabled()):
        yield  # nothing to switch (a training step): skip the two context managers
        return
    with torch.inference_mode(False), torch.enable_grad():
        yield


def autograd_ready_copy(batch: Batch) -> Batch:
    """A copy of the batch whose tensors autograd can use; the caller's batch is not changed.

    Tensors made in inference mode cannot take part in autograd; they are cloned (call this
    inside :func:`gradients_enabled`). Otherwise the copy is shallow: tensors are shared, only
    the attributes a task replaces (positions, cell) are new objects.

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


def structure_index(batch: Batch) -> Tensor:
    """The structure each atom belongs to, ``[N]`` (zeros for a single ``Data``)."""
    index = getattr(batch, keys.BATCH, None)
    if index is None:
        pos: Tensor = batch[keys.POS]
        return torch.zeros(len(pos), dtype=torch.long, device=pos.device)
    return index  # type: ignore[no-any-return]


def num_structures(batch: Batch) -> int:
    """The number of structures in ``batch`` (1 for a single ``Data``).

    Not converted with ``int()``: under a symbolic trace (``compile_training``) the count is a
    ``SymInt``, and ``int()`` would fix the traced graph to one number of structures.

    Examples
    --------
    >>> import torch
    >>> from torch_geometric.data import Batch, Data
    >>> from matsci.tasks.core import num_structures
    >>> one = Data(pos=torch.zeros(2, 3))
    >>> num_structures(one), num_structures(Batch.from_data_list([one, one, one]))
    (1, 3)
    """
    count: int = getattr(batch, "num_graphs", 1)
    return count


def prepare_encoder_input(
    batch: Batch, request: InputRequest, *, keep_graph: bool, shared: bool = True
) -> EncoderInput:
    """Build the encoder's input for ``request``; call inside ``gradients_enabled(...)``.

    Parameters
    ----------
    batch
        The batch from the data loader (not changed).
    request
        What the tasks sharing this encoder pass need.
    keep_graph
        Recorded in the result: derivatives keep their graph (training).
    shared
        Recorded in the result: more than one task reads this encoder pass.

    Returns
    -------
    EncoderInput
        The prepared batch and the leaves that require grad.

    Raises
    ------
    ValueError
        If the noisy view is asked for and the batch has no ``noisy_pos``.
    """
    if request.view == "noisy" and getattr(batch, keys.NOISY_POS, None) is None:
        raise ValueError(_NO_NOISY_POSITIONS)
    if not request.needs_gradients and request.view == "clean":
        # No copy: the common, cheapest case.
        return EncoderInput(batch, keep_graph=keep_graph, shared=shared)
    work = autograd_ready_copy(batch) if request.needs_gradients else copy.copy(batch)
    pos: Tensor = work[keys.NOISY_POS] if request.view == "noisy" else work[keys.POS]
    positions = pos.detach().requires_grad_(True) if request.position_gradients else None
    pos = positions if positions is not None else pos
    strain = None
    if request.strain:
        cell = work[keys.CELL].reshape(-1, 3, 3)
        strain = torch.zeros_like(cell, requires_grad=True)
        symmetric = 0.5 * (strain + strain.transpose(1, 2))
        # x' = x (1 + ε) and cell' = cell (1 + ε): the same deformation for both.
        index = structure_index(work)
        pos = pos + torch.bmm(pos.unsqueeze(1), symmetric[index]).squeeze(1)
        work[keys.CELL] = cell + torch.bmm(cell, symmetric)
    work[keys.POS] = pos
    return EncoderInput(
        work, positions=positions, strain=strain, keep_graph=keep_graph, shared=shared
    )
