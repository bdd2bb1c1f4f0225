"""Denoising pretraining: predict the noise that was added to atomic positions."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn
from torch_geometric.data import Batch
from torchmetrics import MeanAbsoluteError, MetricCollection
from typing_extensions import override

from matsci.contract import keys
from matsci.tasks.core import AttributeSpec, BaseTaskModule, Embeddings, InputRequest

_NO_NOISY_POSITIONS = (
    "NodeDenoisingTask: the batch has no 'noisy_pos'; add "
    "matsci.transforms.NoisyPositions(scale=...) to the dataset's transforms"
)


class NodeDenoisingTask(BaseTaskModule):
    """Pretrain an encoder by predicting, for every atom, the noise added to its position.

    Needs the :class:`~matsci.transforms.NoisyPositions` transform, which writes the noisy
    positions ``noisy_pos`` [N, 3] and the target ``denoise`` [N, 3]. The encoder runs on the
    noisy positions only, through a copy of the batch: clean positions are never shown to it,
    and the caller's batch is not changed. MSE loss; metric ``denoise/mae``. After
    pretraining, start another task from the encoder with
    :meth:`~matsci.tasks.core.BaseTaskModule.from_pretrained_encoder`.

    Parameters
    ----------
    **kwargs
        Arguments of :class:`~matsci.tasks.core.BaseTaskModule`; ``task_keys`` defaults to
        ``["denoise"]``.

    Raises
    ------
    ValueError
        If ``task_keys`` is other than ``["denoise"]``; at the first batch, if ``noisy_pos`` is
        missing (the message says to add ``NoisyPositions``).

    Examples
    --------
    >>> import torch
    >>> from torch_geometric.data import Batch, Data
    >>> from matsci.contract import Embeddings
    >>> from matsci.tasks.physics import NodeDenoisingTask
    >>> from matsci.transforms import NoisyPositions
    >>> class PositionEncoder(torch.nn.Module):
    ...     embedding_dim = 3
    ...     def forward(self, batch):
    ...         return Embeddings(point_embedding=batch.pos)
    >>> task = NodeDenoisingTask(encoder=PositionEncoder())
    >>> data = NoisyPositions(scale=0.1)(Data(pos=torch.rand(4, 3),
    ...     atomic_numbers=torch.full((4,), 6), natoms=torch.tensor([4])))
    >>> task.predict(Batch.from_data_list([data]))["denoise"].shape
    torch.Size([4, 3])
    """

    pools_atom_embeddings = False

    fixed_task_keys = (keys.DENOISE,)
    per_atom_targets = True

    @override
    def build_head(self, key: str, output_kwargs: Mapping[str, Any]) -> nn.Module:
        """A dense head from each atom's embedding to its 3 noise components."""
        return self.point_head(3, output_kwargs)

    @override
    def input_request(self) -> InputRequest:
        """The encoder sees the noisy positions (``noisy_pos``), never the clean ones."""
        return InputRequest(view="noisy")

    @override
    def compute_outputs(self, embeddings: Embeddings, batch: Batch) -> dict[str, Tensor]:
        """Predicted noise [N, 3] from the atom embeddings (of the noisy structure)."""
        return {keys.DENOISE: self.output_heads[keys.DENOISE](self.point_embedding(embeddings))}

    @override
    def target_specs(self) -> list[AttributeSpec]:
        """``noisy_pos`` and ``denoise``: float [N, 3]."""
        return [
            AttributeSpec(keys.NOISY_POS, "node", (3,), finite=True),
            AttributeSpec.node_target(keys.DENOISE, 3),
        ]

    @override
    def check_batch(self, batch: Batch, *, with_targets: bool = True) -> None:
        """Check the batch, first for ``noisy_pos`` with advice on how to get it."""
        if getattr(batch, keys.NOISY_POS, None) is None:
            raise ValueError(_NO_NOISY_POSITIONS)
        super().check_batch(batch, with_targets=with_targets)

    @override
    def build_metrics(self, key: str) -> MetricCollection:
        """MAE of the predicted noise."""
        return MetricCollection({"mae": MeanAbsoluteError()})
