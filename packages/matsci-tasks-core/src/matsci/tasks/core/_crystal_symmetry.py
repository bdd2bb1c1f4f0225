"""Classification of crystal structures into the 230 space groups."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score
from typing_extensions import override

from matsci.contract import (
    AttributeSpec,
    ClassConfig,
    Embeddings,
    keys,
    validate_batch,
    values_within,
)
from matsci.heads import OutputHead
from matsci.tasks.core._base_task import BaseTaskModule
from matsci.tasks.core._inputs import EncoderInput
from matsci.tasks.core._lattice import SYMMETRY_FEATURES, symmetry_features

NUM_SPACEGROUPS = 230
"""Number of crystallographic space groups; labels run from 1 to 230."""

_LABEL_SPEC = AttributeSpec(
    keys.SPACEGROUP,
    "graph",
    (1,),
    dtype="int",
    squeeze_ok=True,
    values=values_within(1, NUM_SPACEGROUPS),
)


class CrystalSymmetryClassificationTask(BaseTaskModule):
    """Predict the space group (1..230) of each structure: a 230-way classification.

    Reads the ``spacegroup`` target, ``[B]`` integers from 1 to 230; a label outside that range
    is an error naming it. Loss ``CrossEntropyLoss`` by default, with optional class weights and
    label smoothing. Metrics: top-1 and top-5 accuracy and macro F1
    (``<stage>/spacegroup/top1``, ``.../top5``, ``.../f1_macro``). :meth:`predict` returns the
    most likely space group number and its probability. Often used for pretraining.

    The head reads the structure embedding and, with ``lattice_features`` (the default), the
    :func:`symmetry_features` of the cell: lengths and angles of a reduced basis and the
    degeneracies (equal lengths, right and 60°/120° angles) that define crystal systems, for the
    cell and for the ``primitive_cell`` when the batch has one (add
    :class:`~matsci.transforms.PrimitiveCell` to the ``pre_transform``: it tells centred
    lattices, such as rhombohedral and hexagonal, apart). Pooled atom features from a local
    encoder do not carry them, and without them a classifier falls back on chemistry (the
    benchmarks page measures both).

    Parameters
    ----------
    class_weights
        230 weights, one per space group (1 first), for the default loss.
    label_smoothing
        Label smoothing of the default loss, in ``[0, 1)``.
    lattice_features
        Give the head the lattice invariants beside the structure embedding; every structure
        then needs a ``cell`` (set ``False`` for structures without one).
    **kwargs
        Arguments of :class:`BaseTaskModule`; ``task_keys`` defaults to ``["spacegroup"]``.

    Raises
    ------
    ValueError
        If ``task_keys`` is other than ``["spacegroup"]``, ``class_weights`` has another
        length, or these options are combined with a custom ``loss_func``; at a batch without
        ``cell`` when ``lattice_features`` is on.

    Examples
    --------
    >>> import torch
    >>> from torch_geometric.data import Batch, Data
    >>> from matsci.tasks.core import CrystalSymmetryClassificationTask, Embeddings
    >>> class PositionEncoder(torch.nn.Module):
    ...     embedding_dim = 3
    ...     def forward(self, batch):
    ...         return Embeddings(point_embedding=batch.pos)
    >>> task = CrystalSymmetryClassificationTask(encoder=PositionEncoder(), label_smoothing=0.1)
    >>> data = Data(pos=torch.rand(2, 3), atomic_numbers=torch.tensor([11, 17]),
    ...             natoms=torch.tensor([2]), spacegroup=torch.tensor([225]),
    ...             cell=5.6 * torch.eye(3).unsqueeze(0))
    >>> out = task.predict(Batch.from_data_list([data]))
    >>> sorted(out), int(out["spacegroup"].min()) >= 1
    (['spacegroup', 'spacegroup_probability'], True)
    """

    default_loss = "torch.nn.CrossEntropyLoss"
    fixed_task_keys = (keys.SPACEGROUP,)

    def __init__(
        self,
        class_weights: Sequence[float] | None = None,
        label_smoothing: float = 0.0,
        lattice_features: bool = True,
        **kwargs: Any,
    ) -> None:
        if (class_weights is not None or label_smoothing) and kwargs.get("loss_func") is not None:
            raise ValueError(
                "CrystalSymmetryClassificationTask: give class_weights/label_smoothing or a "
                "custom loss_func, not both"
            )
        if class_weights is not None and len(class_weights) != NUM_SPACEGROUPS:
            raise ValueError(
                f"CrystalSymmetryClassificationTask(class_weights): {len(class_weights)} "
                f"weights given, expected {NUM_SPACEGROUPS}"
            )
        self.class_weights = None if class_weights is None else [float(w) for w in class_weights]
        self.label_smoothing = float(label_smoothing)
        self.lattice_features = bool(lattice_features)
        super().__init__(**kwargs)

    @override
    def default_loss_config(self, key: str) -> ClassConfig:
        """``CrossEntropyLoss`` with ``class_weights`` and ``label_smoothing`` when given."""
        init_args: dict[str, Any] = {}
        if self.label_smoothing:
            init_args["label_smoothing"] = self.label_smoothing
        if self.class_weights is not None:
            init_args["weight"] = list(self.class_weights)
        return {"class_path": "torch.nn.CrossEntropyLoss", "init_args": init_args}

    def build_head(self, key: str, output_kwargs: Mapping[str, Any]) -> nn.Module:
        """A dense head with 230 logits (on the embedding and, if asked, lattice invariants)."""
        width = self.embedding_width() + (SYMMETRY_FEATURES if self.lattice_features else 0)
        return OutputHead(NUM_SPACEGROUPS, input_dim=width, **output_kwargs)

    @override
    def compute_outputs(
        self, embeddings: Embeddings, encoder_input: EncoderInput
    ) -> dict[str, Tensor]:
        """Logits ``[B, 230]`` from the structure embedding (and the lattice invariants)."""
        batch = encoder_input.batch
        system = self.system_embedding(embeddings, batch)
        if self.lattice_features:
            cell = getattr(batch, keys.CELL, None)
            if cell is None:
                raise ValueError(
                    "CrystalSymmetryClassificationTask: lattice_features needs each "
                    "structure's 'cell'; the batch has none (set lattice_features=False for "
                    "structures without a lattice)"
                )
            primitive = getattr(batch, keys.PRIMITIVE_CELL, None)
            invariants = symmetry_features(cell.reshape(-1, 3, 3).to(system.dtype), primitive)
            system = torch.cat([system, invariants], dim=-1)
        return {key: head(system) for key, head in self.output_heads.items()}

    def target_specs(self) -> list[AttributeSpec]:
        """``spacegroup``: integer ``[B]`` within 1..230."""
        return [_LABEL_SPEC]

    def get_target(self, batch: Any, key: str) -> Tensor:
        """Class indices ``[B]`` from 0 (space group ``g`` is class ``g - 1``).

        Labels in host memory are checked here.

        Labels on the CPU outside 1..230 raise a ``ValueError`` naming them, on every batch
        (reading host memory costs no synchronisation). Labels on an accelerator are not read
        back, which would stall every step: the first batch of each stage gets the same error
        from the spec's value check (the engine checks that batch and synchronises once); in
        later batches an out-of-range class index stops the default ``CrossEntropyLoss`` with
        the device's own bounds assertion.
        """
        labels: Tensor = batch[key].reshape(-1)
        if labels.device.type == "cpu":
            validate_batch(batch, [_LABEL_SPEC], context=type(self).__name__)
        return labels - 1

    def to_physical(self, key: str, output: Tensor, batch: Any) -> Tensor:
        """Class probabilities ``[B, 230]`` (column ``g - 1`` is space group ``g``)."""
        return torch.softmax(output, dim=-1)

    def physical_predictions(self, outputs: Mapping[str, Tensor], batch: Any) -> dict[str, Tensor]:
        """Most likely space group and its probability.

        Parameters
        ----------
        outputs
            Raw outputs (logits) from :meth:`forward`.
        batch
            The batch they were computed for.

        Returns
        -------
        dict
            ``{"spacegroup": [B] long in 1..230, "spacegroup_probability": [B] float}``.
        """
        probabilities = self.to_physical(keys.SPACEGROUP, outputs[keys.SPACEGROUP], batch)
        best, index = probabilities.max(dim=-1)
        return {keys.SPACEGROUP: index + 1, f"{keys.SPACEGROUP}_probability": best}

    def build_metrics(self, key: str) -> MetricCollection:
        """Top-1 and top-5 accuracy and macro-averaged F1."""
        return MetricCollection(
            {
                "top1": MulticlassAccuracy(NUM_SPACEGROUPS, top_k=1, average="micro"),
                "top5": MulticlassAccuracy(NUM_SPACEGROUPS, top_k=5, average="micro"),
                "f1_macro": MulticlassF1Score(NUM_SPACEGROUPS, average="macro"),
            }
        )
