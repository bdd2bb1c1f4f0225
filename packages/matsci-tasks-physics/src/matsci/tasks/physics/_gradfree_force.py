"""Forces predicted directly by a head, without differentiating an energy."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn
from torchmetrics import CosineSimilarity, MeanAbsoluteError, MeanSquaredError, MetricCollection
from typing_extensions import override

from matsci.contract import keys
from matsci.tasks.core import AttributeSpec, BaseTaskModule, Embeddings, EncoderInput
from matsci.tasks.physics._vector_head import (
    VectorHead,
    build_vector_head,
    check_vector_head,
    vector_outputs,
)


class GradFreeForceRegression(BaseTaskModule):
    """Predict forces directly: a vector head per atom on the atom embeddings.

    Cheaper than differentiating an energy and needs no autograd through the encoder, but the
    forces are not conservative: they are not the gradient of any energy, so molecular dynamics
    with them has no energy to conserve (:doc:`/ase` measures the drift in NVE). Pair it with
    :class:`~matsci.tasks.core.ScalarRegressionTask` on ``energy`` in a multi-task set-up to
    share one embedding between energy and forces, or use it to pretrain an encoder that
    :class:`ForceRegressionTask` then fine-tunes.

    The head rotates with the structure on every encoder (see :data:`VectorHead`): on invariant
    features (``embedding_dim`` an int, e.g. :class:`~matsci.encoders.SchNetEncoder`) it is an
    :class:`~matsci.heads.EdgeVectorReadout`, which sums learned weights times the unit vectors
    of each atom's edges (it needs the batch's ``edge_index``), on irreps an equivariant ``1o``
    head.

    Target ``force`` [N, 3] in eV/Å (NaN marks missing values). MSE loss by default; metrics
    ``force/mae``, ``force/rmse`` and ``force/cosine_similarity``.

    Parameters
    ----------
    vector_head
        ``"auto"`` (equivariant on every encoder), ``"edge"`` or ``"dense"`` (with a
        :class:`NotEquivariantWarning` on invariant encoders); see :data:`VectorHead`.
    **kwargs
        Arguments of :class:`~matsci.tasks.core.BaseTaskModule`; ``task_keys`` defaults to
        ``["force"]``. ``output_kwargs`` may set the edge readout's ``cutoff`` (default: the
        encoder's).

    Raises
    ------
    ValueError
        If ``task_keys`` is other than ``["force"]``, ``vector_head`` is unknown, or the edge
        readout has no cutoff; at a batch without ``edge_index`` when the edge readout needs it.

    Examples
    --------
    >>> import torch
    >>> from torch_geometric.data import Batch, Data
    >>> from matsci.contract import Embeddings
    >>> from matsci.tasks.physics import GradFreeForceRegression
    >>> class AtomTypeEncoder(torch.nn.Module):
    ...     embedding_dim, cutoff = 4, 3.0
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.table = torch.nn.Embedding(100, 4)
    ...     def forward(self, batch):
    ...         return Embeddings(point_embedding=self.table(batch.atomic_numbers))
    >>> task = GradFreeForceRegression(encoder=AtomTypeEncoder())
    >>> type(task.output_heads["force"]).__name__
    'EdgeVectorReadout'
    >>> pairs = torch.tensor([[0, 1, 0, 2], [1, 0, 2, 0]])  # a chain of three atoms
    >>> data = Data(pos=torch.rand(3, 3), atomic_numbers=torch.full((3,), 13),
    ...             natoms=torch.tensor([3]), edge_index=pairs)
    >>> task.predict(Batch.from_data_list([data]))["force"].shape
    torch.Size([3, 3])
    """

    pools_atom_embeddings = False

    fixed_task_keys = (keys.FORCE,)
    per_atom_targets = True

    def __init__(self, vector_head: VectorHead = "auto", **kwargs: Any) -> None:
        self.vector_head = check_vector_head(type(self).__name__, vector_head)
        super().__init__(**kwargs)

    @override
    def build_head(self, key: str, output_kwargs: Mapping[str, Any]) -> nn.Module:
        """The vector head chosen by ``vector_head`` (equivariant unless ``"dense"``)."""
        return build_vector_head(self, self.vector_head, output_kwargs)

    @override
    def compute_outputs(
        self, embeddings: Embeddings, encoder_input: EncoderInput
    ) -> dict[str, Tensor]:
        """Forces [N, 3] from the atom embeddings (and the edges, for the edge readout)."""
        head = self.output_heads[keys.FORCE]
        return {
            keys.FORCE: vector_outputs(
                self, head, self.point_embedding(embeddings), encoder_input.batch
            )
        }

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
