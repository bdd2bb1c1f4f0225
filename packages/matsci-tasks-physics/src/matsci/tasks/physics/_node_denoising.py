"""Denoising pretraining: predict the noise that was added to atomic positions."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn
from torchmetrics import MeanAbsoluteError, MetricCollection
from typing_extensions import override

from matsci.contract import keys
from matsci.tasks.core import AttributeSpec, BaseTaskModule, Embeddings, EncoderInput, InputRequest
from matsci.tasks.physics._vector_head import (
    VectorHead,
    build_vector_head,
    check_vector_head,
    vector_outputs,
)


class NodeDenoisingTask(BaseTaskModule):
    """Pretrain an encoder by predicting, for every atom, the noise added to its position.

    Needs the :class:`~matsci.transforms.NoisyPositions` transform, which writes the noisy
    positions ``noisy_pos`` [N, 3] and the target ``denoise`` [N, 3]. The encoder runs on the
    noisy positions only, through a copy of the batch: clean positions are never shown to it,
    and the caller's batch is not changed. MSE loss; metric ``denoise/mae``. After
    pretraining, start another task from the encoder with
    :meth:`~matsci.tasks.core.BaseTaskModule.from_pretrained_encoder`.

    The noise is a vector that rotates with the structure, so the head is equivariant on every
    encoder (see :data:`VectorHead`): an :class:`~matsci.heads.EdgeVectorReadout` on the edges
    of the noisy structure for invariant encoders, an equivariant ``1o`` head for irreps.

    Parameters
    ----------
    vector_head
        ``"auto"``, ``"edge"`` or ``"dense"`` (with a :class:`NotEquivariantWarning` on
        invariant encoders); see :data:`VectorHead`.
    **kwargs
        Arguments of :class:`~matsci.tasks.core.BaseTaskModule`; ``task_keys`` defaults to
        ``["denoise"]``. ``output_kwargs`` may set the edge readout's ``cutoff`` (default: the
        encoder's).

    Raises
    ------
    ValueError
        If ``task_keys`` is other than ``["denoise"]``, ``vector_head`` is unknown, or the edge
        readout has no cutoff; at the first batch, if ``noisy_pos`` is missing (the message
        says to add ``NoisyPositions``) or the edge readout finds no ``edge_index``.

    Examples
    --------
    >>> import torch
    >>> from torch_geometric.data import Batch, Data
    >>> from matsci.contract import Embeddings
    >>> from matsci.tasks.physics import NodeDenoisingTask
    >>> from matsci.transforms import NoisyPositions
    >>> class AtomTypeEncoder(torch.nn.Module):
    ...     embedding_dim, cutoff = 4, 3.0
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.table = torch.nn.Embedding(100, 4)
    ...     def forward(self, batch):
    ...         return Embeddings(point_embedding=self.table(batch.atomic_numbers))
    >>> task = NodeDenoisingTask(encoder=AtomTypeEncoder())
    >>> pairs = torch.tensor([[0, 1, 1, 2, 2, 3], [1, 0, 2, 1, 3, 2]])  # a chain of four
    >>> data = NoisyPositions(scale=0.1)(Data(pos=torch.rand(4, 3), edge_index=pairs,
    ...     atomic_numbers=torch.full((4,), 6), natoms=torch.tensor([4])))
    >>> task.predict(Batch.from_data_list([data]))["denoise"].shape
    torch.Size([4, 3])
    """

    pools_atom_embeddings = False

    fixed_task_keys = (keys.DENOISE,)
    per_atom_targets = True

    def __init__(self, vector_head: VectorHead = "auto", **kwargs: Any) -> None:
        self.vector_head = check_vector_head(type(self).__name__, vector_head)
        super().__init__(**kwargs)

    @override
    def build_head(self, key: str, output_kwargs: Mapping[str, Any]) -> nn.Module:
        """The vector head chosen by ``vector_head`` (equivariant unless ``"dense"``)."""
        return build_vector_head(self, self.vector_head, output_kwargs)

    @override
    def input_request(self) -> InputRequest:
        """The encoder sees the noisy positions (``noisy_pos``), never the clean ones."""
        return InputRequest(view="noisy")

    @override
    def compute_outputs(
        self, embeddings: Embeddings, encoder_input: EncoderInput
    ) -> dict[str, Tensor]:
        """Predicted noise [N, 3] from the atom embeddings and edges of the noisy structure."""
        head = self.output_heads[keys.DENOISE]
        return {
            keys.DENOISE: vector_outputs(
                self, head, self.point_embedding(embeddings), encoder_input.batch
            )
        }

    @override
    def target_specs(self) -> list[AttributeSpec]:
        """``denoise``: float [N, 3] (``noisy_pos`` is asked for by :meth:`input_request`)."""
        return [AttributeSpec.node_target(keys.DENOISE, 3)]

    @override
    def build_metrics(self, key: str) -> MetricCollection:
        """MAE of the predicted noise."""
        return MetricCollection({"mae": MeanAbsoluteError()})
