"""Regression of properties of whole structures (energies, band gaps, moduli, ...)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn
from torchmetrics import MeanAbsoluteError, MeanSquaredError, MetricCollection

from matsci.contract import AttributeSpec
from matsci.heads import OutputHead
from matsci.tasks.core._base_task import BaseTaskModule


class ScalarRegressionTask(BaseTaskModule):
    """Predict one or more continuous properties per structure from the structure embedding.

    Each key gets its own head on the shared structure embedding, with output ``[B, k]`` for a
    ``[B, k]`` target (``k = output_dims[key]``, default 1; a ``[B]`` target is read as
    ``[B, 1]``). Loss ``MSELoss`` by default (any continuous loss works), on targets normalized
    by the key's mean and standard deviation (identity until given or fitted); metrics MAE and
    RMSE in physical units, logged as ``<stage>/<key>/mae`` and ``<stage>/<key>/rmse``.

    Parameters
    ----------
    output_dims
        ``{key: k}`` for keys with more than one column.
    **kwargs
        Arguments of :class:`BaseTaskModule` (``encoder`` or ``encoder_class``, ``task_keys``,
        ``loss_func``, ``lr``, ...).

    Raises
    ------
    ValueError
        On an ``output_dims`` key that is not a task key or a width below 1, and everything
        :class:`BaseTaskModule` refuses.

    Examples
    --------
    >>> import torch
    >>> from torch_geometric.data import Batch, Data
    >>> from matsci.tasks.core import Embeddings, ScalarRegressionTask
    >>> class MeanPositionEncoder(torch.nn.Module):
    ...     embedding_dim = 3
    ...     def forward(self, batch):
    ...         return Embeddings(point_embedding=batch.pos)
    >>> task = ScalarRegressionTask(encoder=MeanPositionEncoder(), task_keys=["band_gap"],
    ...                             output_kwargs={"hidden_dim": 16})
    >>> data = Data(pos=torch.rand(4, 3), atomic_numbers=torch.tensor([1, 1, 8, 8]),
    ...             natoms=torch.tensor([4]), band_gap=torch.tensor([1.5]))
    >>> task.predict(Batch.from_data_list([data, data]))["band_gap"].shape
    torch.Size([2, 1])
    """

    def __init__(self, output_dims: Mapping[str, int] | None = None, **kwargs: Any) -> None:
        self._output_dims_arg = dict(output_dims or {})
        super().__init__(**kwargs)

    def output_dim(self, key: str) -> int:
        """Number of columns ``k`` of ``key``."""
        dims = self._output_dims_arg
        unknown = set(dims) - set(self.task_keys)
        if unknown:
            raise ValueError(
                f"{type(self).__name__}(output_dims): keys {sorted(unknown)} are not task keys "
                f"{self.task_keys}"
            )
        width = dims.get(key, 1)
        if isinstance(width, bool) or not isinstance(width, int) or width < 1:
            raise ValueError(
                f"{type(self).__name__}(output_dims[{key!r}]={width!r}): expected int >= 1"
            )
        return width

    def build_head(self, key: str, output_kwargs: Mapping[str, Any]) -> nn.Module:
        """One dense head from the structure embedding to ``k`` outputs."""
        return OutputHead(self.output_dim(key), input_dim=self.embedding_width(), **output_kwargs)

    def target_specs(self) -> list[AttributeSpec]:
        """Each key: float ``[B, k]`` (or ``[B]`` when ``k == 1``); NaN marks a missing value."""
        return [AttributeSpec.graph_target(key, self.output_dim(key)) for key in self.task_keys]

    def normalizer_dim(self, key: str) -> int:
        """Every key is normalized, per column."""
        return self.output_dim(key)

    def build_metrics(self, key: str) -> MetricCollection:
        """MAE and RMSE."""
        return MetricCollection(
            {"mae": MeanAbsoluteError(), "rmse": MeanSquaredError(squared=False)}
        )
