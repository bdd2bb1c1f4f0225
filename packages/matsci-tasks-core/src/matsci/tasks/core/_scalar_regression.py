"""Regression of properties of whole structures (energies, band gaps, moduli, ...)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch_geometric.data import Batch
from torch_geometric.utils import scatter
from torchmetrics import MeanAbsoluteError, MeanSquaredError, MetricCollection
from typing_extensions import override

from matsci.contract import NUM_ELEMENTS, AttributeSpec, DatasetStatistics, ReferenceEnergyFit, keys
from matsci.heads import OutputHead
from matsci.tasks.core._base_task import BaseTaskModule
from matsci.tasks.core._inputs import EncoderInput, num_structures, structure_index
from matsci.tasks.core._normalizer import Normalizer

DEFAULT_EXTENSIVE_KEYS: tuple[str, ...] = (keys.ENERGY,)
"""Keys treated as extensive (a sum over atoms) unless ``extensive_keys`` says otherwise."""

_EXACT_FIT = 1e-6
"""A reference fit whose per-atom residual RMS is below this fraction of the RMS energy per atom
is exact: the residual scale is then 1 (one unit per atom), not a rounding error."""


class ScalarRegressionTask(BaseTaskModule):
    r"""Predict one or more continuous properties per structure.

    Each key gets its own head, with output ``[B, k]`` for a ``[B, k]`` target
    (``k = output_dims[key]``, default 1; a ``[B]`` target is read as ``[B, 1]``). Loss
    ``MSELoss`` by default (any continuous loss works); metrics MAE and RMSE in physical units,
    logged as ``<stage>/<key>/mae`` and ``<stage>/<key>/rmse``.

    **Intensive keys** (a band gap, a modulus: the default for every key but ``energy``): a
    dense head on the structure embedding, on targets normalized by the key's mean and standard
    deviation (identity until given or fitted).

    **Extensive keys** (``extensive_keys``, by default ``energy``, the total energy in eV):
    the property is a sum of atom contributions, as in SchNet (Schütt et al., J. Chem. Phys.
    148, 241722 (2018)), so a model trained on small cells predicts large ones. A head on the
    atom embeddings gives each atom :math:`h_i` (normalized units) and

    .. math:: y_b = \sum_{i \in b} \left(\sigma h_i + \mu + e_{Z_i}\right),

    with per-element reference values :math:`e_Z` fitted by least squares on the composition
    and :math:`\mu, \sigma` the mean and scale of the per-atom residual
    :math:`(y_b - \sum_{i} e_{Z_i}) / N_b` (:meth:`fit_normalizers` sets :math:`\mu = 0` and
    :math:`\sigma` to the residual RMS). The loss compares per-atom residuals in units of
    :math:`\sigma`, so structures of every size weigh the same and the targets are of order 1;
    metrics and predictions are totals. Normalizing the total instead (mean and standard
    deviation over structures of different sizes) makes the target's spread mostly the number
    of atoms, which a structure-level head cannot read reliably: the bundled EMT example then
    trained worse than predicting the mean. Give ``extensive_keys=[]`` for the structure-level
    head on every key.

    Parameters
    ----------
    output_dims
        ``{key: k}`` for keys with more than one column.
    extensive_keys
        Keys predicted as a sum over atoms (see above); ``None`` takes the task keys among
        :data:`DEFAULT_EXTENSIVE_KEYS` (``energy``). For these keys ``normalize_kwargs`` gives the
        per-atom ``mean`` and ``std`` of the residual, and the encoder must return atom
        embeddings.
    **kwargs
        Arguments of :class:`BaseTaskModule` (``encoder`` or ``encoder_class``, ``task_keys``,
        ``loss_func``, ``lr``, ...).

    Attributes
    ----------
    element_references : torch.nn.ModuleDict
        Per extensive key, a module whose buffer ``values`` [119, k] (float64, eV or the key's
        unit, indexed by Z) holds the per-element reference values; zeros until fitted.

    Raises
    ------
    ValueError
        On an ``output_dims`` or ``extensive_keys`` key that is not a task key, a width below
        1, an extensive key of more than one column with an irreps encoder, and everything
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
    >>> task = ScalarRegressionTask(encoder=MeanPositionEncoder(),
    ...                             task_keys=["band_gap", "energy"],
    ...                             output_kwargs={"hidden_dim": 16})
    >>> task.extensive_keys
    ['energy']
    >>> data = Data(pos=torch.rand(4, 3), atomic_numbers=torch.tensor([1, 1, 8, 8]),
    ...             natoms=torch.tensor([4]), band_gap=torch.tensor([1.5]),
    ...             energy=torch.tensor([-14.0]))
    >>> batch = Batch.from_data_list([data, data])
    >>> task.fit_normalizers([batch])
    >>> task.element_references["energy"].values[[1, 8]].flatten()
    tensor([-3.5000, -3.5000], dtype=torch.float64)
    >>> {key: value.shape for key, value in task.predict(batch).items()}
    {'band_gap': torch.Size([2, 1]), 'energy': torch.Size([2, 1])}
    """

    normalizes_targets = True

    def __init__(
        self,
        output_dims: Mapping[str, int] | None = None,
        extensive_keys: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> None:
        self._output_dims_arg = dict(output_dims or {})
        task_keys = list(kwargs.get("task_keys") or [])
        if extensive_keys is None:
            extensive = [key for key in task_keys if key in DEFAULT_EXTENSIVE_KEYS]
        elif isinstance(extensive_keys, str):
            raise ValueError(
                f"ScalarRegressionTask(extensive_keys={extensive_keys!r}): expected a list of keys"
            )
        else:
            extensive = list(extensive_keys)
        unknown = sorted(set(extensive) - set(task_keys))
        if unknown and task_keys:
            raise ValueError(
                f"ScalarRegressionTask(extensive_keys): keys {unknown} are not task keys "
                f"{task_keys}"
            )
        self.extensive_keys: list[str] = [key for key in task_keys if key in set(extensive)]
        super().__init__(**kwargs)
        self.element_references = nn.ModuleDict(
            {key: _ElementReferences(self.output_dim(key)) for key in self.extensive_keys}
        )

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
        """A dense head from the structure embedding, or per atom for an extensive key."""
        width = self.output_dim(key)
        if key not in self.extensive_keys:
            return OutputHead(width, input_dim=self.embedding_width(), **output_kwargs)
        if not isinstance(self.encoder.embedding_dim, int) and width != 1:
            raise ValueError(
                f"{type(self).__name__}(extensive_keys): {key!r} has {width} columns; with an "
                "irreps encoder an extensive key has one column (give one key per column)"
            )
        return self.point_head(width, output_kwargs)

    def target_specs(self) -> list[AttributeSpec]:
        """Each key: float ``[B, k]`` (or ``[B]`` when ``k == 1``); NaN marks a missing value."""
        return [AttributeSpec.graph_target(key, self.output_dim(key)) for key in self.task_keys]

    def build_metrics(self, key: str) -> MetricCollection:
        """MAE and RMSE."""
        return MetricCollection(
            {"mae": MeanAbsoluteError(), "rmse": MeanSquaredError(squared=False)}
        )

    # -- extensive keys: sums of atom contributions ---------------------------------------------

    @override
    def compute_outputs(self, embeddings: Any, encoder_input: EncoderInput) -> dict[str, Tensor]:
        r"""Normalized head outputs ``[B, k]``; for an extensive key the mean over atoms.

        The mean of the atom outputs :math:`h_i` is the normalized per-atom residual
        :math:`((\hat y_b - \sum_i e_{Z_i}) / N_b - \mu) / \sigma` of the predicted total
        :math:`\hat y_b = \sum_i (\sigma h_i + \mu + e_{Z_i})`, the quantity the loss compares;
        :meth:`to_physical` turns it into the total.
        """
        batch = encoder_input.batch
        intensive = [key for key in self.task_keys if key not in self.extensive_keys]
        system = self.system_embedding(embeddings, batch) if intensive else None
        outputs: dict[str, Tensor] = {}
        for key, head in self.output_heads.items():
            if key not in self.extensive_keys:
                outputs[key] = head(system)
                continue
            atoms = head(self._atom_embeddings(embeddings, key))  # [N, k]
            outputs[key] = scatter(
                atoms, structure_index(batch), dim=0, dim_size=num_structures(batch),
                reduce="mean",
            )  # fmt: skip
        return outputs

    @override
    def to_physical(self, key: str, output: Tensor, batch: Batch) -> Tensor:
        """De-normalize; an extensive key becomes the total, ``N_b`` atoms plus references."""
        physical = super().to_physical(key, output, batch)
        if key not in self.extensive_keys:
            return physical
        reference, natoms = self._structure_references(key, batch, physical.dtype)
        return physical * natoms + reference

    @override
    def loss_target(self, key: str, target: Tensor, batch: Batch) -> Tensor:
        """Normalize; an extensive total becomes its normalized per-atom residual."""
        if key in self.extensive_keys:
            return self._normalized_per_atom(key, target, batch)
        return super().loss_target(key, target, batch)

    def _normalized_per_atom(self, key: str, total: Tensor, batch: Batch) -> Tensor:
        """``[B, k]`` totals as normalized per-atom residuals of the element references."""
        reference, natoms = self._structure_references(key, batch, total.dtype)
        normalizer: Normalizer = self.normalizers[key]  # type: ignore[assignment]
        return normalizer.normalize((total.reshape(natoms.shape[0], -1) - reference) / natoms)

    def _structure_references(
        self, key: str, batch: Batch, dtype: torch.dtype
    ) -> tuple[Tensor, Tensor]:
        """Each structure's summed element references ``[B, k]`` and atom count ``[B, 1]``."""
        index, size = structure_index(batch), num_structures(batch)
        reference: Tensor = scatter(self._reference_values(key, batch, dtype), index, dim=0,
                                    dim_size=size, reduce="sum")  # fmt: skip
        natoms = torch.bincount(index, minlength=size).to(dtype).unsqueeze(-1)
        return reference, natoms

    def _reference_values(self, key: str, batch: Batch, dtype: torch.dtype) -> Tensor:
        """Each atom's reference value, ``[N, k]``."""
        references: _ElementReferences = self.element_references[key]  # type: ignore[assignment]
        return references.values[batch[keys.ATOMIC_NUMBERS]].to(dtype)

    def _atom_embeddings(self, embeddings: Any, key: str) -> Tensor:
        if embeddings.point_embedding is None:
            raise ValueError(
                f"{type(self).__name__}: the extensive key {key!r} is a sum over atoms and needs "
                "the encoder's point_embedding, which it did not return; give "
                "extensive_keys=[] for a head on the structure embedding"
            )
        atoms: Tensor = embeddings.point_embedding
        return atoms

    # -- normalization ---------------------------------------------------------------------------

    @override
    @torch.no_grad()
    def fit_normalizers(
        self, batches: Iterable[Batch], keys_to_fit: Sequence[str] | None = None
    ) -> None:
        """Fit normalization in one streaming pass over batches (typically the training loader).

        Intensive keys: mean and standard deviation per column. Extensive keys: per-element
        reference values by least squares on the composition (one fit per column, as
        :class:`~matsci.contract.ReferenceEnergyFit` does for energies), then ``mean`` 0 and
        ``std`` the RMS of the per-atom residual. NaN (missing) targets are ignored.

        Parameters
        ----------
        batches
            An iterable of batches.
        keys_to_fit
            Keys to fit; default every task key.

        Raises
        ------
        ValueError
            If a key is not a task key, or has no present value.
        """
        fit_keys = self._keys_to_fit(keys_to_fit, "fit_normalizers")
        intensive = [key for key in fit_keys if key not in self.extensive_keys]
        fits = {
            key: [ReferenceEnergyFit() for _ in range(self.output_dim(key))]
            for key in fit_keys
            if key in self.extensive_keys
        }
        for key in intensive:
            self.normalizers[key].reset_statistics()  # type: ignore[operator]
        for batch in batches:
            for key in intensive:
                self.normalizers[key].update(self.get_target(batch, key))  # type: ignore[operator]
            for key, columns in fits.items():
                target = self.get_target(batch, key)
                index = structure_index(batch)
                for column, fit in enumerate(columns):
                    fit.update(batch[keys.ATOMIC_NUMBERS], index, target[:, column])
        for key in intensive:
            self.normalizers[key].finalize()  # type: ignore[operator]
        for key, columns in fits.items():
            if any(fit.num_structures == 0 for fit in columns):
                raise ValueError(
                    f"{type(self).__name__}.fit_normalizers: {key!r} has no value in the batches"
                )
            references = torch.stack([fit.solve() for fit in columns], dim=-1)  # [119, k]
            self._set_extensive_statistics(
                key, references, [_residual_scale(fit) for fit in columns],
                count=[fit.num_structures for fit in columns],
            )  # fmt: skip

    @override
    @torch.no_grad()
    def apply_statistics(
        self, statistics: DatasetStatistics, keys_to_apply: Sequence[str] | None = None
    ) -> None:
        """Set normalization from dataset statistics computed once, in ``matsci.data``.

        Intensive keys take the per-column mean and standard deviation. An extensive
        ``energy`` takes ``reference_energies`` and ``reference_residual_rms`` (what
        :func:`matsci.data.compute_statistics` reports with ``keys=["energy", ...]``); other
        extensive keys have no such statistics: fit them with :meth:`fit_normalizers`.

        Parameters
        ----------
        statistics
            Statistics of the training data.
        keys_to_apply
            Keys to set; default every task key.

        Raises
        ------
        ValueError
            If a key is not a task key or the statistics lack what it needs.
        """
        apply = self._keys_to_fit(keys_to_apply, "apply_statistics")
        intensive = [key for key in apply if key not in self.extensive_keys]
        if intensive:
            super().apply_statistics(statistics, intensive)
        for key in apply:
            if key not in self.extensive_keys:
                continue
            references, rms = statistics.reference_energies, statistics.reference_residual_rms
            if key != keys.ENERGY or references is None or rms is None:
                raise ValueError(
                    f"{type(self).__name__}.apply_statistics: the extensive key {key!r} needs "
                    "per-element references, which dataset statistics hold only for 'energy' "
                    "(computed with keys=['energy', ...]); use fit_normalizers for it"
                )
            counted = statistics.count.get(key)
            self._set_extensive_statistics(
                key, references.reshape(NUM_ELEMENTS, 1), [rms],
                count=None if counted is None else [int(counted.reshape(-1)[0])],
            )  # fmt: skip

    def _set_extensive_statistics(
        self, key: str, references: Tensor, scale: list[float], count: list[int] | None = None
    ) -> None:
        """References ``[119, k]``; the normalizer: mean 0, std ``scale`` (per column)."""
        holder: _ElementReferences = self.element_references[key]  # type: ignore[assignment]
        holder.values.copy_(references.to(holder.values))
        normalizer: Normalizer = self.normalizers[key]  # type: ignore[assignment]
        normalizer.load_statistics(
            torch.zeros(len(scale), dtype=torch.float64),
            torch.tensor(scale, dtype=torch.float64),
            None if count is None else torch.tensor(count, dtype=torch.float64),
        )


class _ElementReferences(nn.Module):
    """Per-element reference values of one extensive key: buffer ``values`` [119, k], float64."""

    values: Tensor

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("values", torch.zeros(NUM_ELEMENTS, dim, dtype=torch.float64))

    def extra_repr(self) -> str:
        return f"dim={self.values.shape[1]}"


def _residual_scale(fit: ReferenceEnergyFit) -> float:
    """The per-atom residual RMS, or 1 where the fit is exact (up to rounding)."""
    residual = fit.residual_rms()
    size = fit.residual_rms(torch.zeros(NUM_ELEMENTS, dtype=torch.float64))
    return 1.0 if residual <= _EXACT_FIT * max(size, 1e-300) else residual
