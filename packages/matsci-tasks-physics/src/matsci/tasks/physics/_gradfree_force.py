"""Forces predicted directly by a head, without differentiating an energy."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn
from torch_geometric.data import Batch
from torchmetrics import CosineSimilarity, MeanAbsoluteError, MeanSquaredError, MetricCollection
from typing_extensions import override

from matsci.contract import keys
from matsci.tasks.core import AttributeSpec, BaseTaskModule, Embeddings


class GradFreeForceRegression(BaseTaskModule):
    """Predict forces directly: a head with 3 outputs per atom on the atom embeddings.

    Cheaper than differentiating an energy and needs no autograd through the encoder, but the
    forces are not conservative. Pair it with :class:`~matsci.tasks.core.ScalarRegressionTask`
    on ``energy`` in a multi-task set-up to share one embedding between energy and forces.

    Target ``force`` [N, 3] in eV/Å (NaN marks missing values). MSE loss by default; metrics
    ``force/mae``, ``force/rmse`` and ``force/cosine_similarity``.

    Parameters
    ----------
    **kwargs
        Arguments of :class:`~matsci.tasks.core.BaseTaskModule`; ``task_keys`` defaults to
        ``["force"]``.

    Raises
    ------
    ValueError
        If ``task_keys`` is other than ``["force"]``.

    Examples
    --------
    >>> import torch
    >>> from torch_geometric.data import Batch, Data
    >>> from matsci.contract import Embeddings
    >>> from matsci.tasks.physics import GradFreeForceRegression
    >>> class PositionEncoder(torch.nn.Module):
    ...     embedding_dim = 3
    ...     def forward(self, batch):
    ...         return Embeddings(point_embedding=batch.pos)
    >>> task = GradFreeForceRegression(encoder=PositionEncoder())
    >>> data = Data(pos=torch.rand(5, 3), atomic_numbers=torch.full((5,), 13),
    ...             natoms=torch.tensor([5]))
    >>> task.predict(Batch.from_data_list([data]))["force"].shape
    torch.Size([5, 3])
    """

    pools_atom_embeddings = False

    fixed_task_keys = (keys.FORCE,)
    per_atom_targets = True

    @override
    def build_head(self, key: str, output_kwargs: Mapping[str, Any]) -> nn.Module:
        """A dense head from each atom's embedding to its force."""
        return self.point_head(3, output_kwargs)

    @override
    def compute_outputs(self, embeddings: Embeddings, batch: Batch) -> dict[str, Tensor]:
        """Forces [N, 3] from the atom embeddings."""
        return {keys.FORCE: self.output_heads[keys.FORCE](self.point_embedding(embeddings))}

    @override
    def target_specs(self) -> list[AttributeSpec]:
        """``force``: float [N, 3]."""
        return [AttributeSpec.node_target(keys.FORCE, 3)]

    @override
    def build_metrics(self, key: str) -> MetricCollection:
        """MAE, RMSE and cosine similarity of force vectors."""
        return MetricCollection(
            {
                "mae": MeanAbsoluteError(),
                "rmse": MeanSquaredError(squared=False),
                "cosine_similarity": CosineSimilarity(reduction="mean"),
            }
        )


GradFreeForceRegressionTask = GradFreeForceRegression
"""The same class under the name of the other tasks (``...Task``)."""
