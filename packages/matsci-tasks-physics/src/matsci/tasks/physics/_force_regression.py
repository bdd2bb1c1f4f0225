"""Energy, forces (negative gradient of the energy) and stress (strain derivative)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch_geometric.data import Batch
from torch_geometric.utils import scatter
from torchmetrics import CosineSimilarity, MeanAbsoluteError, MeanSquaredError, MetricCollection
from typing_extensions import override

from matsci.contract import (
    NUM_ELEMENTS,
    DatasetStatistics,
    ReferenceEnergyFit,
    StreamingRMS,
    keys,
)
from matsci.tasks.core import (
    AttributeSpec,
    BaseTaskModule,
    Embeddings,
    EncoderInput,
    InputRequest,
    gradients_enabled,
    num_structures,
    prepare_encoder_input,
    structure_index,
)

FORCE_FIELD_SCHEDULE: dict[str, Any] = {
    "class_path": "matsci.tasks.core.WarmupCosineLR",
    "init_args": {"warmup_fraction": 0.0, "final_factor": 0.02},
    "interval": "step",
}
"""The learning-rate schedule of :class:`ForceRegressionTask` unless ``scheduler_kwargs`` is
given: a cosine decay at every step from ``lr`` to 2% of it at the last step of the fit."""

DEFAULT_LOSS_SCALING: dict[str, float] = {keys.ENERGY: 1.0, keys.FORCE: 10.0, keys.STRESS: 1.0}
"""The loss weights of :class:`ForceRegressionTask` for the keys ``task_loss_scaling`` leaves
out: forces weigh most."""

FIXED = "fixed"
"""Optional per-atom attribute, [N] bool: atoms held fixed, left out of the force loss."""


class ForceRegressionTask(BaseTaskModule):
    r"""Learn a potential energy surface: energy, forces and (optionally) stress.

    A head on the atom embeddings predicts per-atom energies; the structure energy is

    .. math:: E = \sum_i \left( s\, \varepsilon_i + \mu + E^{\mathrm{ref}}_{Z_i} \right),
              \qquad \mathbf{F}_i = -\frac{\partial E}{\partial \mathbf{x}_i},
              \qquad \sigma = \frac{1}{V} \frac{\partial E}{\partial \epsilon},

    with scale ``s``, shift ``μ`` and per-element reference energies fitted from data by
    :meth:`fit_normalizers` (or given). The stress derivative is taken through a symmetric
    strain ``ε`` applied to positions and cell together, giving ASE's sign convention (positive
    for a cell under tension) in eV/Å³. The encoder must compute edge vectors from
    ``batch.pos`` and ``batch.cell`` (for example with :func:`matsci.transforms.edge_vectors`)
    so that gradients reach them.

    Targets: ``energy`` [B] (eV), ``force`` [N, 3] (eV/Å), ``stress`` [B, 3, 3] (eV/Å³) when
    ``compute_stress``; an optional ``fixed`` [N] bool attribute leaves atoms out of the force
    loss and metrics. Losses (MSE by default, any loss per key through ``loss_func``) compare
    energies per atom (or totals with ``per_atom_energy_loss=False``), forces and stresses in
    units of ``s``; weight them with ``task_loss_scaling``, e.g. ``{"energy": 1, "force": 10}``.
    Metrics: ``energy/mae_per_atom``, ``force/mae``, ``force/rmse``,
    ``force/cosine_similarity``, ``stress/mae``.

    Defaults that train a force field well without tuning (benchmarks/time_to_accuracy.py:
    0.65 (SchNet) and 0.76 (equivariant) of the force error of a constant rate of 1e-3 with
    equal weights, after the same 20 epochs): peak ``lr`` 3e-3; forces weigh 10 in the loss
    (:data:`DEFAULT_LOSS_SCALING`); and unless ``scheduler_kwargs`` says otherwise the rate
    decays at every step along a cosine to 2% of the peak at the last step of the fit
    (:class:`~matsci.tasks.core.WarmupCosineLR` over the trainer's
    ``estimated_stepping_batches``; :data:`FORCE_FIELD_SCHEDULE`), so the schedule follows
    ``max_epochs`` and the data. For a constant rate give ``scheduler_kwargs={"class_path":
    "ConstantLR", "init_args": {"factor": 1.0}}``.

    The autograd graph of the derivatives is kept only while training
    (``create_graph=self.training``); validation, test and predict work under the default
    ``Trainer``, which runs them in inference mode.

    Parameters
    ----------
    compute_stress
        Also predict and fit the stress (periodic structures only).
    per_atom_energy_loss
        Compare energies divided by the number of atoms (default), or total energies.
    reference_energies
        Per-element reference energies ``{Z: eV}``; fitted by :meth:`fit_normalizers` otherwise.
    energy_scale
        Scale ``s`` (eV) of per-atom energies; :meth:`fit_normalizers` sets it to the force RMS.
    energy_shift
        Shift ``μ`` (eV) added to every atom's energy.
    lr
        Peak learning rate.
    task_loss_scaling
        ``{key: weight}`` of each key's loss; keys left out weigh as in
        :data:`DEFAULT_LOSS_SCALING` (energy 1, force 10, stress 1).
    **kwargs
        Arguments of :class:`~matsci.tasks.core.BaseTaskModule` except ``task_keys`` and
        ``normalize_kwargs`` (the keys are fixed: ``energy``, ``force`` and, with
        ``compute_stress``, ``stress``).

    Raises
    ------
    ValueError
        If ``task_keys`` or ``normalize_kwargs`` is given, ``energy_scale`` is not positive, or
        an atomic number in ``reference_energies`` is outside 1..118.

    Examples
    --------
    >>> import torch
    >>> from torch_geometric.data import Batch, Data
    >>> from matsci.contract import Embeddings
    >>> from matsci.tasks.physics import ForceRegressionTask
    >>> from matsci.transforms import edge_vectors
    >>> class PairEncoder(torch.nn.Module):
    ...     embedding_dim = 1
    ...     def forward(self, batch):
    ...         _, distance = edge_vectors(batch.pos, batch.edge_index)
    ...         per_atom = torch.zeros(len(batch.pos)).index_add(0, batch.edge_index[0],
    ...                                                           torch.exp(-distance))
    ...         return Embeddings(point_embedding=per_atom.unsqueeze(-1))
    >>> task = ForceRegressionTask(encoder=PairEncoder(), output_kwargs={"hidden_dim": 4})
    >>> pair = Data(pos=torch.tensor([[0.0, 0, 0], [1.0, 0, 0]]),
    ...             atomic_numbers=torch.tensor([29, 29]), natoms=torch.tensor([2]),
    ...             edge_index=torch.tensor([[0, 1], [1, 0]]))
    >>> out = task.predict(Batch.from_data_list([pair]))
    >>> out["energy"].shape, out["force"].shape
    (torch.Size([1]), torch.Size([2, 3]))
    >>> torch.allclose(out["force"].sum(0), torch.zeros(3), atol=1e-6)  # Newton's third law
    True
    """

    default_loss = "torch.nn.MSELoss"
    default_scheduler_kwargs = FORCE_FIELD_SCHEDULE
    pools_atom_embeddings = False

    reference_energies: Tensor
    energy_scale: Tensor
    energy_shift: Tensor

    def __init__(
        self,
        compute_stress: bool = False,
        per_atom_energy_loss: bool = True,
        reference_energies: Mapping[int, float] | None = None,
        energy_scale: float = 1.0,
        energy_shift: float = 0.0,
        lr: float = 3e-3,
        task_loss_scaling: Mapping[str, float] | None = None,
        **kwargs: Any,
    ) -> None:
        task_keys = [keys.ENERGY, keys.FORCE] + ([keys.STRESS] if compute_stress else [])
        if kwargs.get("task_keys") not in (None, task_keys):
            raise ValueError(
                f"ForceRegressionTask(task_keys={kwargs['task_keys']!r}): the keys are fixed, "
                f"{task_keys} (stress with compute_stress=True)"
            )
        if kwargs.get("normalize_kwargs") is not None:
            raise ValueError(
                "ForceRegressionTask(normalize_kwargs=...): not an argument of this task; give "
                "reference_energies / energy_scale or call fit_normalizers"
            )
        if not energy_scale > 0:
            raise ValueError(f"ForceRegressionTask(energy_scale={energy_scale}): expected > 0")
        self.compute_stress = compute_stress
        self.per_atom_energy_loss = per_atom_energy_loss
        kwargs["task_keys"] = task_keys
        # Unknown keys stay in, for the base class to refuse.
        scaling = {key: DEFAULT_LOSS_SCALING[key] for key in task_keys}
        scaling.update(task_loss_scaling or {})
        super().__init__(lr=lr, task_loss_scaling=scaling, **kwargs)
        table = torch.zeros(NUM_ELEMENTS, dtype=torch.get_default_dtype())
        for number, value in (reference_energies or {}).items():
            if not 1 <= int(number) < NUM_ELEMENTS:
                raise ValueError(
                    f"ForceRegressionTask(reference_energies): atomic number {number} is outside "
                    "1..118"
                )
            table[int(number)] = float(value)
        self.register_buffer("reference_energies", table)
        self.register_buffer("energy_scale", torch.tensor(float(energy_scale)))
        self.register_buffer("energy_shift", torch.tensor(float(energy_shift)))

    # -- heads, targets, metrics ----------------------------------------------------------------

    @override
    def build_head(self, key: str, output_kwargs: Mapping[str, Any]) -> nn.Module | None:
        """A dense head from each atom's embedding to its (scaled) energy.

        Forces and stress are the energy's derivatives and get no head.
        """
        return self.point_head(1, output_kwargs) if key == keys.ENERGY else None

    @override
    def target_specs(self) -> list[AttributeSpec]:
        """``energy`` [B], ``force`` [N, 3] and, with ``compute_stress``, ``stress`` [B, 3, 3]."""
        specs = [
            AttributeSpec.graph_target(keys.ENERGY, 1),
            AttributeSpec.node_target(keys.FORCE, 3),
        ]
        if self.compute_stress:
            specs.append(AttributeSpec(keys.STRESS, "graph", (3, 3)))
            specs.append(AttributeSpec(keys.CELL, "graph", (3, 3), finite=True))
        return specs

    @override
    def build_metrics(self, key: str) -> MetricCollection:
        """Energy MAE per atom; force MAE, RMSE and cosine similarity; stress MAE."""
        if key == keys.ENERGY:
            return MetricCollection({"mae_per_atom": MeanAbsoluteError()})
        if key == keys.FORCE:
            return MetricCollection(
                {
                    "mae": MeanAbsoluteError(),
                    "rmse": MeanSquaredError(squared=False),
                    "cosine_similarity": CosineSimilarity(reduction="mean"),
                }
            )
        return MetricCollection({"mae": MeanAbsoluteError()})

    @override
    def get_target(self, batch: Batch, key: str) -> Tensor:
        """Targets as the losses see them.

        Energy per atom ``[B, 1]`` (or total), forces ``[N, 3]`` (NaN for fixed atoms), stress
        ``[B, 9]``.
        """
        target: Tensor = batch[key]
        if key == keys.ENERGY:
            energy = target.reshape(-1, 1)
            return energy / _natoms(batch).unsqueeze(-1) if self.per_atom_energy_loss else energy
        if key == keys.FORCE:
            fixed = getattr(batch, FIXED, None)
            if fixed is not None:
                target = torch.where(fixed.reshape(-1, 1), torch.nan, target)
            return target
        return target.reshape(-1, 9)

    @override
    def loss_target(self, key: str, target: Tensor, batch: Batch) -> Tensor:
        """Targets in units of the energy scale."""
        return target / self.energy_scale

    @override
    def to_physical(self, key: str, output: Tensor, batch: Batch) -> Tensor:
        """Outputs in eV (per atom for the energy), eV/Å and eV/Å³."""
        return output * self.energy_scale

    # -- the forward pass -------------------------------------------------------------------------

    @override
    def input_request(self) -> InputRequest:
        """Positions that require grad and, with ``compute_stress``, a strain."""
        return InputRequest(position_gradients=True, strain=self.compute_stress)

    @override
    def compute_outputs(
        self, embeddings: Embeddings, encoder_input: EncoderInput
    ) -> dict[str, Tensor]:
        """Energy per atom, forces and stress, in units of the energy scale.

        Parameters
        ----------
        embeddings
            The encoder's output for ``encoder_input.batch``.
        encoder_input
            The prepared batch with the positions (and strain) that require grad.

        Returns
        -------
        dict
            ``energy`` [B, 1] (per atom, or total with ``per_atom_energy_loss=False``),
            ``force`` [N, 3] and, with ``compute_stress``, ``stress`` [B, 9], each divided by
            the energy scale.
        """
        energy, force, stress = self.derivatives(embeddings, encoder_input)
        batch = encoder_input.batch
        if self.per_atom_energy_loss:
            energy = energy / _natoms(batch)
        outputs = {keys.ENERGY: energy.unsqueeze(-1) / self.energy_scale,
                   keys.FORCE: force / self.energy_scale}  # fmt: skip
        if stress is not None:
            outputs[keys.STRESS] = stress.reshape(-1, 9) / self.energy_scale
        return outputs

    def energy_and_derivatives(
        self, batch: Batch, *, keep_graph: bool | None = None
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """Total energy, forces and stress (or ``None``) in eV, eV/Å and eV/Å³.

        Shapes [B], [N, 3] and [B, 3, 3]. Works in inference mode too; the caller's batch is
        not changed.

        Parameters
        ----------
        batch
            A batch following the data contract.
        keep_graph
            Keep the autograd graph of the derivatives so a loss on forces can be trained;
            default ``self.training``. Without it the outputs are detached.

        Returns
        -------
        tuple
            ``(energy, force, stress)``.
        """
        keep_graph = self.training if keep_graph is None else keep_graph
        with gradients_enabled():
            encoder_input = prepare_encoder_input(
                batch, self.input_request(), keep_graph=keep_graph, shared=False
            )
            return self.derivatives(self.encoder(encoder_input.batch), encoder_input)

    def derivatives(
        self, embeddings: Embeddings, encoder_input: EncoderInput
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """Energy [B] (eV), forces [N, 3] (eV/Å) and stress [B, 3, 3] (eV/Å³) or ``None``.

        Differentiates the energy of ``embeddings`` with respect to the positions (and strain)
        of ``encoder_input``; the graph is kept only with ``encoder_input.keep_graph``, otherwise
        the results are detached.

        Parameters
        ----------
        embeddings
            The encoder's output for ``encoder_input.batch``.
        encoder_input
            Prepared by :func:`~matsci.tasks.core.prepare_encoder_input` with this task's
            :meth:`input_request`.

        Returns
        -------
        tuple
            ``(energy, force, stress)``.
        """
        batch = encoder_input.batch
        inputs = [encoder_input.positions, encoder_input.strain if self.compute_stress else None]
        wanted = [tensor for tensor in inputs if tensor is not None]
        if encoder_input.positions is None or len(wanted) != 1 + int(self.compute_stress):
            raise ValueError(
                "ForceRegressionTask: the encoder input has no positions (or strain) that require "
                "grad; prepare it with this task's input_request()"
            )
        energy = self.total_energy(embeddings, batch, structure_index(batch))
        keep_graph = encoder_input.keep_graph
        # Keep the graph for a loss on the derivatives, or for other tasks of this encoder
        # pass; otherwise the backward pass frees it as it goes (lower peak memory).
        gradients = torch.autograd.grad(
            energy.sum(),
            wanted,
            create_graph=keep_graph,
            retain_graph=keep_graph or encoder_input.shared,
        )
        force = -gradients[0]
        stress = None
        if self.compute_stress:
            volume = torch.linalg.det(batch[keys.CELL].detach()).abs()
            stress = gradients[1] / volume.reshape(-1, 1, 1)
        if not keep_graph:
            # Evaluation keeps no graph: the outputs are plain tensors.
            energy, force = energy.detach(), force.detach()
            stress = stress.detach() if stress is not None else None
        return energy, force, stress

    def total_energy(self, embeddings: Embeddings, batch: Batch, index: Tensor) -> Tensor:
        """Sum of per-atom energies ``s ε_i + μ + E_ref[Z_i]`` per structure, [B] in eV."""
        atom = self.output_heads[keys.ENERGY](self.point_embedding(embeddings)).squeeze(-1)  # [N]
        atom = self.energy_scale * atom + self.energy_shift
        atom = atom + self.reference_energies[batch[keys.ATOMIC_NUMBERS]].to(atom.dtype)
        total: Tensor = scatter(atom, index, dim=0, dim_size=num_structures(batch), reduce="sum")
        return total

    @override
    def physical_predictions(
        self, outputs: Mapping[str, Tensor], batch: Batch
    ) -> dict[str, Tensor]:
        """Energy [B] in eV, forces [N, 3] in eV/Å and, with ``compute_stress``, stress [B, 3, 3].

        Parameters
        ----------
        outputs
            Raw outputs from :meth:`forward` (in units of the energy scale).
        batch
            The batch they were computed for.

        Returns
        -------
        dict
            ``{"energy", "force"[, "stress"]}`` in physical units.
        """
        energy = outputs[keys.ENERGY].reshape(-1) * self.energy_scale
        if self.per_atom_energy_loss:
            energy = energy * _natoms(batch)
        predictions = {keys.ENERGY: energy, keys.FORCE: outputs[keys.FORCE] * self.energy_scale}
        if keys.STRESS in outputs:
            predictions[keys.STRESS] = (outputs[keys.STRESS] * self.energy_scale).reshape(-1, 3, 3)
        return predictions

    # -- normalization -----------------------------------------------------------------------------

    @override
    @torch.no_grad()
    def fit_normalizers(
        self, batches: Iterable[Batch], keys_to_fit: Sequence[str] | None = None
    ) -> None:
        """Fit per-element reference energies (least squares) and the energy scale (force RMS).

        One streaming pass; structures without an energy, and atoms without forces (NaN), are
        skipped. Afterwards predictions of an untrained head are the reference energies, and
        the head learns residuals in units of the typical force.

        Parameters
        ----------
        batches
            Batches with ``energy`` and ``force``, typically the training loader.
        keys_to_fit
            ``["energy"]`` (references only), ``["force"]`` (scale only) or both (default).

        Raises
        ------
        ValueError
            If no energy or no finite force was seen.
        """
        fit_keys = list(keys_to_fit or [keys.ENERGY, keys.FORCE])
        references, force = ReferenceEnergyFit(), StreamingRMS()
        structures = atoms = 0
        for batch in batches:
            structures += num_structures(batch)
            atoms += int(batch[keys.POS].shape[0])
            if keys.ENERGY in fit_keys:
                references.update(batch[keys.ATOMIC_NUMBERS], structure_index(batch),
                                  batch[keys.ENERGY])  # fmt: skip
            if keys.FORCE in fit_keys:
                force.update(batch[keys.FORCE])
        statistics = DatasetStatistics(
            num_structures=structures,
            num_atoms=atoms,
            reference_energies=references.solve() if keys.ENERGY in fit_keys else None,
            force_rms=force.rms if keys.FORCE in fit_keys and force.count > 0 else None,
        )
        self.apply_statistics(statistics, fit_keys)

    @override
    @torch.no_grad()
    def apply_statistics(
        self, statistics: DatasetStatistics, keys_to_apply: Sequence[str] | None = None
    ) -> None:
        """Set the per-element reference energies and the energy scale (the force RMS).

        Parameters
        ----------
        statistics
            Statistics of the training data with ``energy`` and ``force``
            (:func:`matsci.data.compute_statistics` with ``keys=["energy", "force"]``).
        keys_to_apply
            ``["energy"]`` (references only), ``["force"]`` (scale only) or both (default).

        Raises
        ------
        ValueError
            If the statistics lack the reference energies or a non-zero force RMS, or a key is
            neither ``energy`` nor ``force``.
        """
        apply = list(keys_to_apply or [keys.ENERGY, keys.FORCE])
        unknown = sorted(set(apply) - {keys.ENERGY, keys.FORCE})
        if unknown:
            raise ValueError(
                f"ForceRegressionTask.apply_statistics: keys {unknown}; expected 'energy' "
                "(reference energies) and/or 'force' (energy scale)"
            )
        if keys.ENERGY in apply:
            if statistics.reference_energies is None:
                raise ValueError(
                    "ForceRegressionTask.apply_statistics: no reference energies (no energy seen, "
                    "or statistics computed without the 'energy' key)"
                )
            self.reference_energies.copy_(statistics.reference_energies)
            self.energy_shift.zero_()
        if keys.FORCE in apply:
            if not statistics.force_rms:
                raise ValueError(
                    "ForceRegressionTask.apply_statistics: no non-zero force seen (force_rms "
                    f"{statistics.force_rms})"
                )
            self.energy_scale.fill_(statistics.force_rms)


def _natoms(batch: Batch) -> Tensor:
    natoms = getattr(batch, keys.NATOMS, None)
    if natoms is None:
        index = structure_index(batch)
        natoms = torch.bincount(index, minlength=num_structures(batch))
    return natoms.reshape(-1).to(batch[keys.POS].dtype)
