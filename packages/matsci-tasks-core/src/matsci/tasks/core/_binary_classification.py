"""Binary classification of structures (stable or not, metal or insulator, ...)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torchmetrics import MetricCollection
from torchmetrics.classification import BinaryAccuracy, BinaryAUROC, BinaryF1Score
from typing_extensions import override

from matsci.contract import AttributeSpec, ClassConfig
from matsci.heads import OutputHead
from matsci.tasks.core._base_task import BaseTaskModule


class BinaryClassificationTask(BaseTaskModule):
    """Predict one or more yes/no labels per structure from the structure embedding.

    Each key gets a head with one logit; the target is ``[B]`` or ``[B, 1]`` with values 0 and
    1 (float, int or bool; NaN marks a missing label). Loss ``BCEWithLogitsLoss`` by default,
    with an optional weight of the positive class; predictions are probabilities. Metrics:
    accuracy, AUROC and F1 (``<stage>/<key>/accuracy``, ``.../auroc``, ``.../f1``).

    Parameters
    ----------
    pos_weight
        Weight of positive examples in the default loss (e.g. ``n_negative / n_positive`` for
        imbalanced labels); a number for every key or ``{key: number}``.
    **kwargs
        Arguments of :class:`BaseTaskModule`.

    Raises
    ------
    ValueError
        If ``pos_weight`` is combined with a custom ``loss_func``, or names unknown keys.

    Examples
    --------
    >>> import torch
    >>> from torch_geometric.data import Batch, Data
    >>> from matsci.tasks.core import BinaryClassificationTask, Embeddings
    >>> class PositionEncoder(torch.nn.Module):
    ...     embedding_dim = 3
    ...     def forward(self, batch):
    ...         return Embeddings(point_embedding=batch.pos)
    >>> task = BinaryClassificationTask(encoder=PositionEncoder(), task_keys=["stable"],
    ...                                 pos_weight=3.0)
    >>> data = Data(pos=torch.rand(2, 3), atomic_numbers=torch.tensor([3, 9]),
    ...             natoms=torch.tensor([2]), stable=torch.tensor([1.0]))
    >>> probability = task.predict(Batch.from_data_list([data]))["stable"]
    >>> bool(((probability > 0) & (probability < 1)).all())
    True
    """

    default_loss = "torch.nn.BCEWithLogitsLoss"

    def __init__(
        self, pos_weight: float | Mapping[str, float] | None = None, **kwargs: Any
    ) -> None:
        if pos_weight is not None and kwargs.get("loss_func") is not None:
            raise ValueError(
                "BinaryClassificationTask: give pos_weight or a custom loss_func, not both"
            )
        task_keys: Sequence[str] = kwargs.get("task_keys") or []
        weights = (
            {} if pos_weight is None
            else dict(pos_weight) if isinstance(pos_weight, Mapping)
            else dict.fromkeys(task_keys, float(pos_weight))
        )  # fmt: skip
        unknown = set(weights) - set(task_keys)
        if unknown:
            raise ValueError(
                f"BinaryClassificationTask(pos_weight): keys {sorted(unknown)} are not task "
                f"keys {list(task_keys)}"
            )
        self.pos_weight = {key: float(value) for key, value in weights.items()}
        super().__init__(**kwargs)

    @override
    def default_loss_config(self, key: str) -> ClassConfig:
        """``BCEWithLogitsLoss``, with the key's ``pos_weight`` when one is given."""
        init_args = {"pos_weight": [self.pos_weight[key]]} if key in self.pos_weight else {}
        return {"class_path": "torch.nn.BCEWithLogitsLoss", "init_args": init_args}

    def build_head(self, key: str, output_kwargs: Mapping[str, Any]) -> nn.Module:
        """One dense head with a single logit."""
        return OutputHead(1, input_dim=self.embedding_width(), **output_kwargs)

    def target_specs(self) -> list[AttributeSpec]:
        """Each key: ``[B]`` or ``[B, 1]`` labels."""
        return [
            AttributeSpec(key, "graph", (1,), dtype="label", squeeze_ok=True)
            for key in self.task_keys
        ]

    def get_target(self, batch: Any, key: str) -> Tensor:
        """Labels as float ``[B, 1]`` (NaN stays missing)."""
        return super().get_target(batch, key).to(torch.get_default_dtype())

    def to_physical(self, key: str, output: Tensor, batch: Any) -> Tensor:
        """Probability of the positive class."""
        return torch.sigmoid(output)

    def build_metrics(self, key: str) -> MetricCollection:
        """Accuracy, AUROC and F1 at a threshold of 0.5."""
        return MetricCollection(
            {"accuracy": BinaryAccuracy(), "auroc": BinaryAUROC(), "f1": BinaryF1Score()}
        )
