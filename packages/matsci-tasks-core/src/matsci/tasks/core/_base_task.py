"""The base of every task: encoder, heads, losses, normalizers, metrics and optimization."""

from __future__ import annotations

import inspect
import math
from abc import abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar, Final, Self

import torch
from torch import Tensor, nn
from torch_geometric.data import Batch
from torchmetrics import MetricCollection
from typing_extensions import override

from matsci.contract import (
    STRUCTURE_SPECS,
    AttributeSpec,
    ClassConfig,
    DatasetStatistics,
    Embeddings,
    build_from_config,
    module_config,
    validate_batch,
)
from matsci.tasks.core._checkpoint_io import encoder_state_dict, read_checkpoint
from matsci.tasks.core._engine import TaskEngine, TaskEntry
from matsci.tasks.core._inputs import EncoderInput, InputRequest
from matsci.tasks.core._loss_weights import weighted_sum
from matsci.tasks.core._masked_loss import MaskedLoss, any_missing, present_mask
from matsci.tasks.core._normalizer import Normalizer
from matsci.tasks.core._optim import check_scheduler_kwargs, optimizer_path
from matsci.tasks.core._task_arguments import (
    Reduction,
    check_keyed,
    check_reduction,
    check_task_keys,
    loss_configs,
)
from matsci.tasks.core._task_config import build_encoder, plain_hparams
from matsci.tasks.core._task_heads import embedding_width, point_head, pool_atoms
from matsci.tasks.core._task_statistics import (
    apply_dataset_statistics,
    build_normalizers,
    check_fit_keys,
    fit_normalizer_statistics,
)

__all__ = ["DEFAULT_OUTPUT_KWARGS", "BaseTaskModule"]

_REMOVED_HOOKS: Final = {
    "outputs_from_embeddings": "define compute_outputs(embeddings, encoder_input)",
    "metric_inputs": "metrics compare to_physical(key, output, batch) with get_target",
    "update_metric": "metrics compare to_physical(key, output, batch) with get_target",
    "normalizer_dim": "set normalizes_targets = True (widths come from target_specs)",
}
"""Hooks of earlier versions, with what replaces them (a subclass defining one is refused)."""
_DATASET: Final = "data"
"""The dataset name of a single task (it has one)."""
_ENCODER: Final = "encoder"
DEFAULT_OUTPUT_KWARGS: dict[str, Any] = {
    "hidden_dim": 128,
    "num_hidden": 1,
    "activation": "torch.nn.SiLU",
}
"""Head settings used unless ``output_kwargs`` overrides them."""


class BaseTaskModule(TaskEngine):
    """Shared machinery of all tasks: a LightningModule with an encoder and one head per key.

    Subclasses say what a key predicts (:meth:`build_head`, :meth:`compute_outputs`), what the
    targets look like (:meth:`target_specs`), which loss is the default and which metrics to
    log. Everything a task holds is built in ``__init__``, so ``trainer.validate()`` works on a
    fresh task, DDP ranks build identical heads, and ``load_from_checkpoint`` restores the task.

    Parameters
    ----------
    encoder
        An encoder instance (see :class:`Encoder`). Give either this or ``encoder_class``.
    encoder_class
        The encoder's class or dotted path, built with ``encoder_kwargs``. Preferred: the
        checkpoint then holds everything needed to rebuild the task.
    encoder_kwargs
        Constructor arguments of ``encoder_class`` (plain data).
    loss_func
        One loss for every key, or a dict ``{key: loss}``; each loss is a module instance, a
        module class, a dotted name (``"torch.nn.L1Loss"``) or a ``{"class_path",
        "init_args"}`` dict. ``None`` uses the task's default.
    task_keys
        The target names, in order. Each is a batch attribute.
    output_kwargs
        Arguments of :class:`~matsci.heads.OutputHead` for every head (``hidden_dim``,
        ``num_hidden``, ``activation``, ``norm``, ``dropout``, ...), merged over
        :data:`DEFAULT_OUTPUT_KWARGS`.
    lr
        Learning rate.
    weight_decay
        Weight decay.
    optimizer
        Optimizer class or name in ``torch.optim`` (default ``"AdamW"``).
    scheduler_kwargs
        Learning-rate schedule, see :func:`check_scheduler_kwargs`; for example
        :class:`WarmupCosineLR` (warm-up, then a cosine that ends with the run), or
        ``ReduceLROnPlateau`` with ``monitor="val/loss"``. ``None`` uses the task's
        :attr:`~TaskEngine.default_scheduler_kwargs`: a constant rate, except for
        :class:`~matsci.tasks.physics.ForceRegressionTask`
        (:data:`~matsci.tasks.physics.FORCE_FIELD_SCHEDULE`).
    embedding_reduction_type
        How atom embeddings are pooled into a structure embedding when the encoder gives none:
        ``"mean"``, ``"sum"`` or ``"max"``.
    normalize_kwargs
        ``{key: {"mean": m, "std": s}}`` (numbers or one per target column); targets are
        normalized for the loss and predictions de-normalized. Statistics can also be fitted
        from data with :meth:`fit_normalizers`.
    task_loss_scaling
        ``{key: weight}`` multiplying each key's loss in the total (default 1).
    compile_training
        Train with a compiled graph of the encoder and the outputs, derivatives included, for
        tasks that differentiate the energy (forces, stress): ``True`` compiles with
        ``torch.compile``'s default backend (``"inductor"``), a string names another backend
        (``"aot_eager"``, no code generation). The first training step (and the first of each
        new size assumption) traces and compiles; evaluation and prediction stay eager. From the
        command line: ``--model.init_args.compile_training true``. Default ``False`` (eager).

    Raises
    ------
    ValueError
        On an unknown ``compile_training`` backend, a key without a loss, a loss or scaling for
        an unknown key, duplicate keys, an unknown reduction, both or neither of ``encoder`` and
        ``encoder_class``, or an encoder without ``embedding_dim``.
    """

    default_loss: ClassVar[str] = "torch.nn.MSELoss"
    """Dotted name of the loss used when ``loss_func`` is ``None``."""

    per_atom_targets: ClassVar[bool] = False
    """Whether targets are per atom (``[N, k]``) rather than per structure (``[B, k]``)."""

    fixed_task_keys: ClassVar[tuple[str, ...] | None] = None
    """The only ``task_keys`` of tasks that predict a fixed target (the default for them)."""

    normalizes_targets: ClassVar[bool] = False
    """Whether every key has a :class:`Normalizer` (its width is the key's target spec width),
    so that ``normalize_kwargs``, :meth:`fit_normalizers` and :meth:`apply_statistics` apply."""

    pools_atom_embeddings: ClassVar[bool] = True
    """Whether the heads read a structure embedding pooled from atom embeddings (so that
    ``embedding_reduction_type`` applies); tasks with per-atom heads set ``False``."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Refuse a subclass that still defines a hook this class no longer calls."""
        super().__init_subclass__(**kwargs)
        for name, advice in _REMOVED_HOOKS.items():
            if name in vars(cls):
                raise TypeError(f"{cls.__name__}.{name}: this hook was removed; {advice}")
        compute = vars(cls).get("compute_outputs")
        if compute is not None and "batch" in inspect.signature(compute).parameters:
            raise TypeError(
                f"{cls.__name__}.compute_outputs(embeddings, batch): the hook now receives "
                "(embeddings, encoder_input); the batch is encoder_input.batch"
            )

    def __init__(
        self,
        encoder: nn.Module | None = None,
        encoder_class: str | type[nn.Module] | None = None,
        encoder_kwargs: Mapping[str, Any] | None = None,
        loss_func: Any = None,
        task_keys: Sequence[str] | None = None,
        output_kwargs: Mapping[str, Any] | None = None,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        optimizer: str | type[torch.optim.Optimizer] = "AdamW",
        scheduler_kwargs: Mapping[str, Any] | None = None,
        embedding_reduction_type: Reduction | None = None,
        normalize_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
        task_loss_scaling: Mapping[str, float] | None = None,
        compile_training: bool | str = False,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        self.encoder, encoder_config = build_encoder(name, encoder, encoder_class, encoder_kwargs)
        self.task_keys: list[str] = check_task_keys(name, task_keys, self.fixed_task_keys)
        self.embedding_reduction_type: Reduction = check_reduction(
            name, embedding_reduction_type, self.pools_atom_embeddings
        )
        configs = loss_configs(name, loss_func, self.task_keys, self.default_loss_config)
        self.losses = nn.ModuleDict(
            {
                key: MaskedLoss(build_from_config(configs[key], nn.Module, argument="loss_func"))
                for key in self.task_keys
            }
        )
        self.task_loss_scaling = check_keyed(
            name, task_loss_scaling, "task_loss_scaling", 1.0, self.task_keys
        )
        self.output_kwargs = {**DEFAULT_OUTPUT_KWARGS, **dict(output_kwargs or {})}
        self.output_heads = nn.ModuleDict(
            {
                key: head
                for key in self.task_keys
                if (head := self.build_head(key, self.output_kwargs)) is not None
            }
        )
        self.normalizers = nn.ModuleDict(
            build_normalizers(name, normalize_kwargs, self.task_keys, self._normalizer_width)
        )
        self._name = f"{_DATASET}/{name}"
        scheduler_config = check_scheduler_kwargs(scheduler_kwargs)
        self.set_up_engine(
            [TaskEntry(_DATASET, self._name, self, log_prefix="")],
            lr=lr,
            weight_decay=weight_decay,
            optimizer_path=optimizer_path(optimizer),
            scheduler_config=scheduler_config,
            compile_training=compile_training,
        )
        # Lightning records the constructor's arguments (the subclass's too); the ones that are
        # not plain data are then stored in their plain form, which the constructor takes as
        # well, so the checkpoint loads with weights_only=True and rebuilds this task.
        self.save_hyperparameters(ignore=["encoder"], logger=False)
        self.save_hyperparameters(
            plain_hparams(
                self.hparams,
                encoder_config=encoder_config,
                loss_func=loss_func,
                optimizer_path=self.optimizer_path,
                scheduler_config=scheduler_config,
                output_kwargs=output_kwargs,
            )
        )

    # -- what subclasses define -------------------------------------------------------------

    @abstractmethod
    def build_head(self, key: str, output_kwargs: Mapping[str, Any]) -> nn.Module | None:
        """Build the head that predicts ``key``, or ``None`` for a key derived from others.

        Called once per task key. A task that derives a key from another (forces from the
        energy) returns ``None`` for it, and the key gets no head.
        """

    @abstractmethod
    def target_specs(self) -> list[AttributeSpec]:
        """Describe the target attributes a batch must carry for this task."""

    @abstractmethod
    def build_metrics(self, key: str) -> MetricCollection:
        """Metrics of one key (a fresh collection per stage)."""

    def compute_outputs(
        self, embeddings: Embeddings, encoder_input: EncoderInput
    ) -> dict[str, Tensor]:
        """Raw outputs per key, in the units the loss compares (before :meth:`to_physical`).

        Runs inside the encoder pass's grad mode. The default applies each head to the
        structure embedding; tasks that take derivatives (forces, stress) use
        ``encoder_input.positions`` and ``.strain``.

        Parameters
        ----------
        embeddings
            The encoder's output for ``encoder_input.batch``.
        encoder_input
            The batch the encoder saw (``.batch``) and the tensors derivatives are taken with
            respect to.

        Returns
        -------
        dict
            ``{key: [B, ...]}``.
        """
        system = self.system_embedding(embeddings, encoder_input.batch)
        return {key: head(system) for key, head in self.output_heads.items()}

    def get_target(self, batch: Batch, key: str) -> Tensor:
        """Read one key's target from the batch, as the metrics compare it (NaN: missing).

        ``[B, k]`` for structure targets; as stored (``[N, k]``) with ``per_atom_targets``.
        :meth:`loss_target` maps it to what the loss compares.
        """
        target: Tensor = batch[key]
        if self.per_atom_targets:
            return target
        return target.reshape(target.shape[0], -1)

    def point_embedding(self, embeddings: Embeddings) -> Tensor:
        """The atom embeddings ``[N, D]``; a ``ValueError`` if the encoder gave none."""
        if embeddings.point_embedding is None:
            raise ValueError(f"{type(self).__name__}: the encoder returned no point_embedding")
        return embeddings.point_embedding

    def to_physical(self, key: str, output: Tensor, batch: Batch) -> Tensor:
        """Turn one key's raw output into what its metrics compare with :meth:`get_target`.

        The default de-normalizes. Classification tasks give probabilities; a sum over atoms
        needs the batch. :meth:`physical_predictions` builds on it.

        Parameters
        ----------
        key
            The task key.
        output
            Its raw output from :meth:`compute_outputs`.
        batch
            The batch it was computed for.

        Returns
        -------
        Tensor
            The same rows as ``output``.
        """
        if key in self.normalizers:
            normalizer: Normalizer = self.normalizers[key]  # type: ignore[assignment]
            return normalizer.denormalize(output)
        return output

    def loss_target(self, key: str, target: Tensor, batch: Batch) -> Tensor:
        """Turn a target into what the key's loss compares with the raw output (normalize).

        The target is as :meth:`get_target` reads it; the default normalizes it.

        Parameters
        ----------
        key
            The task key.
        target
            The target, as :meth:`get_target` reads it.
        batch
            The batch it was read from.

        Returns
        -------
        Tensor
            The same rows as ``target``.
        """
        if key in self.normalizers:
            normalizer: Normalizer = self.normalizers[key]  # type: ignore[assignment]
            return normalizer.normalize(target)
        return target

    # -- the forward pass ---------------------------------------------------------------------

    def input_request(self) -> InputRequest:
        """What the encoder's input must be for this task: by default clean positions, no grad.

        Tasks that differentiate with respect to positions or strain, or that read noisy
        positions, say so here; :class:`MultiTaskLitModule` merges the requests of the tasks on
        one dataset into as few encoder passes as possible (one per view).
        """
        return InputRequest()

    def physical_predictions(
        self, outputs: Mapping[str, Tensor], batch: Batch
    ) -> dict[str, Tensor]:
        """Turn raw outputs into predictions in physical units (what :meth:`predict` returns).

        Parameters
        ----------
        outputs
            Raw outputs from :meth:`forward`.
        batch
            The batch they were computed for.

        Returns
        -------
        dict
            ``{key: prediction}``.
        """
        return {key: self.to_physical(key, outputs[key], batch) for key in self.task_keys}

    # -- the forward pass ---------------------------------------------------------------------

    @override
    def forward(self, batch: Batch) -> dict[str, Tensor]:
        """Encode the batch and apply every head; outputs are in normalized units.

        Parameters
        ----------
        batch
            A batch following the data contract.

        Returns
        -------
        dict
            ``{key: output}`` for every task key.
        """
        return self.task_outputs({_DATASET: batch})[self._name]

    def system_embedding(self, embeddings: Embeddings, batch: Batch) -> Tensor:
        """The structure embedding ``[B, D]``, pooled from atom embeddings if the encoder gave none.

        Parameters
        ----------
        embeddings
            The encoder's output.
        batch
            The batch, whose ``batch`` vector maps atoms to structures.

        Returns
        -------
        Tensor
            Shape ``[B, D]``.

        Raises
        ------
        ValueError
            If the encoder gave neither embedding.
        """
        if embeddings.system_embedding is not None:
            return embeddings.system_embedding
        if embeddings.point_embedding is None:
            raise ValueError(f"{type(self).__name__}: the encoder returned neither embedding")
        return pool_atoms(embeddings.point_embedding, batch, self.embedding_reduction_type)

    @torch.no_grad()
    def predict(self, batch: Batch) -> dict[str, Tensor]:
        """Predictions in physical units for a batch.

        Parameters
        ----------
        batch
            A batch following the data contract (targets not needed).

        Returns
        -------
        dict
            ``{key: prediction}``, for example ``[B, k]`` for a regression key.
        """
        return self.task_predictions({_DATASET: batch})[self._name]

    @override
    def format_predictions(self, predictions: dict[str, dict[str, Tensor]]) -> Any:
        """``predict_step`` of a single task returns ``{key: prediction}``."""
        return predictions[self._name]

    # -- what the engine calls each step -------------------------------------------------------

    def get_targets(self, batch: Batch) -> dict[str, Tensor]:
        """Every key's target, read once per step (see :meth:`get_target`)."""
        return {key: self.get_target(batch, key) for key in self.task_keys}

    def compute_losses(
        self,
        outputs: Mapping[str, Tensor],
        batch: Batch,
        *,
        targets: Mapping[str, Tensor] | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Weighted total loss and the loss of each key, with missing (NaN) targets masked.

        Parameters
        ----------
        outputs
            Head outputs from :meth:`forward`.
        batch
            The batch holding the targets.
        targets
            The targets from :meth:`get_targets`, when already read.

        Returns
        -------
        tuple
            ``(total, {key: loss})``.
        """
        losses: dict[str, Tensor] = {}
        for key in self.task_keys:
            target = targets[key] if targets is not None else self.get_target(batch, key)
            present = present_mask(target)
            loss_fn: MaskedLoss = self.losses[key]  # type: ignore[assignment]
            losses[key] = loss_fn(outputs[key], self.loss_target(key, target, batch), present)
        total = weighted_sum([(self.task_loss_scaling[key], losses[key]) for key in self.task_keys])
        return total, losses

    def metric_predictions(self, outputs: Mapping[str, Tensor], batch: Batch) -> dict[str, Tensor]:
        """What the metrics compare with the targets: :meth:`to_physical` of detached outputs.

        Parameters
        ----------
        outputs
            Raw outputs, ``{key: output}``.
        batch
            The batch they were computed for.

        Returns
        -------
        dict
            ``{key: prediction}``, row for row with :meth:`get_targets`.
        """
        return {key: self.to_physical(key, outputs[key].detach(), batch) for key in outputs}

    def feed_metrics(
        self,
        collections: Mapping[str, Any],
        predictions: Mapping[str, Tensor],
        targets: Mapping[str, Tensor],
    ) -> None:
        """Feed the metrics predictions and targets, rows with a missing target left out.

        Parameters
        ----------
        collections
            ``{key: MetricCollection}`` to update (the engine's, for one stage).
        predictions
            From :meth:`metric_predictions` (of one step, or of several concatenated).
        targets
            Targets from :meth:`get_targets`, row for row.
        """
        missing = any_missing(targets)
        for key, target in targets.items():
            prediction = predictions[key]
            collection: MetricCollection = collections[key]
            if not missing.get(key, False):
                collection.update(prediction, target)
            else:
                rows = present_mask(target).reshape(target.shape[0], -1).all(dim=1)
                collection.update(prediction[rows], target[rows])

    def check_batch(self, batch: Batch, *, with_targets: bool = True) -> None:
        """Check that a batch carries what this task needs (see :func:`validate_batch`).

        Parameters
        ----------
        batch
            The batch.
        with_targets
            Also check the targets (not needed for prediction).

        Raises
        ------
        ValueError
            Naming the attribute, what was found and what was expected.
        """
        specs = [*STRUCTURE_SPECS, *self.input_request().specs()]
        if with_targets:
            specs += self.target_specs()
        validate_batch(batch, specs, context=type(self).__name__)

    def head_parameters(self) -> list[nn.Parameter]:
        """The task's own parameters (heads, learnable loss terms), without the encoder's."""
        return [
            parameter
            for name, parameter in self.named_parameters()
            if not name.startswith(f"{_ENCODER}.")
        ]

    # -- normalization -------------------------------------------------------------------------

    @torch.no_grad()
    def fit_normalizers(
        self, batches: Iterable[Batch], keys_to_fit: Sequence[str] | None = None
    ) -> None:
        """Fit the mean and standard deviation of targets by streaming over batches.

        Runs in one pass with constant memory, so a dataset larger than memory works. NaN
        (missing) targets are ignored. The statistics are stored as buffers and travel in
        checkpoints.

        Parameters
        ----------
        batches
            An iterable of batches, typically the training dataloader.
        keys_to_fit
            Keys to fit; default every key this task normalizes.

        Raises
        ------
        ValueError
            If a key is not normalized by this task, or a key has no present value.
        """
        fit_keys = self._keys_to_fit(keys_to_fit, "fit_normalizers")
        fit_normalizer_statistics(self._normalizers(), fit_keys, batches, self.get_target)

    @torch.no_grad()
    def apply_statistics(
        self, statistics: DatasetStatistics, keys_to_apply: Sequence[str] | None = None
    ) -> None:
        """Set this task's normalization from dataset statistics computed once, in ``matsci.data``.

        The statistics come from :func:`matsci.data.compute_statistics` or
        ``AtomsDataModule.statistics()`` (one streaming pass over the training split); the
        ``FitNormalizers`` callback of ``matsci.training`` calls this at the start of a fit, in
        Python and in the ``matsci`` command alike. Each normalized key takes its per-column
        mean and standard deviation; the values are buffers and travel in checkpoints.

        Parameters
        ----------
        statistics
            Statistics of the training data, holding every key to apply.
        keys_to_apply
            Keys to set; default every key this task normalizes.

        Raises
        ------
        ValueError
            If a key is not normalized by this task or the statistics lack it.
        """
        apply = self._keys_to_fit(keys_to_apply, "apply_statistics")
        apply_dataset_statistics(type(self).__name__, self._normalizers(), apply, statistics)

    def _normalizer_width(self, key: str) -> int | None:
        """The width of ``key``'s normalizer (its target spec's), or ``None`` if not normalized."""
        if not self.normalizes_targets:
            return None
        spec = next(spec for spec in self.target_specs() if spec.name == key)
        return math.prod(size for size in spec.trailing if size is not None)

    def _keys_to_fit(self, keys_to_fit: Sequence[str] | None, caller: str) -> list[str]:
        return check_fit_keys(type(self).__name__, self.normalizers, keys_to_fit, caller)

    def _normalizers(self) -> dict[str, Normalizer]:
        return {key: normalizer for key, normalizer in self.normalizers.items()}  # type: ignore[misc]

    # -- construction helpers ------------------------------------------------------------------

    def default_loss_config(self, key: str) -> ClassConfig:
        """The loss of ``key`` when ``loss_func`` is not given: :attr:`default_loss`.

        Tasks with arguments that shape their default loss (class weights, ``pos_weight``)
        override this, so those arguments are stored as given and the loss is rebuilt from them.
        """
        return module_config(
            self.default_loss, nn.Module, argument="loss_func", default_module="torch.nn"
        )

    def embedding_width(self) -> int:
        """Width ``D`` of the structure embedding the heads receive.

        Uses the encoder's ``system_embedding_dim`` if it has one, else ``embedding_dim``; for
        irreps, the number of even scalars (``0e``), which is what pooling keeps invariant.

        Returns
        -------
        int
            The width.
        """
        return embedding_width(self.encoder)

    def point_head(self, output_dim: int, output_kwargs: Mapping[str, Any]) -> nn.Module:
        """A head on the atom embeddings with ``output_dim`` outputs per atom (1 or 3).

        For an encoder whose ``embedding_dim`` is an int this is a dense
        :class:`~matsci.heads.OutputHead`. For irreps it is an equivariant head of
        :class:`~matsci.heads.IrrepOutputBlock` s without norm (unless ``norm`` is given): one
        ``0e`` scalar, or one ``1o`` vector (e3nn's l=1 basis is Cartesian x, y, z), so vector
        outputs rotate with the structure. Its hidden irreps are
        ``output_kwargs["hidden_irreps"]`` (default ``"{hidden_dim}x0e + {hidden_dim / 4}x1o"``).

        Parameters
        ----------
        output_dim
            1 (a scalar per atom) or 3 (a vector per atom).
        output_kwargs
            Head settings (see :data:`DEFAULT_OUTPUT_KWARGS`).

        Returns
        -------
        torch.nn.Module
            Maps ``[N, embedding]`` to ``[N, output_dim]``.

        Raises
        ------
        ValueError
            If irreps heads are asked for another ``output_dim``.
        """
        return point_head(type(self).__name__, self.encoder, output_dim, output_kwargs)

    # -- checkpoints ---------------------------------------------------------------------------

    @classmethod
    def from_pretrained_encoder(cls, checkpoint: str | Any, **task_kwargs: Any) -> Self:
        """Build a new task around the encoder of a trained task's checkpoint.

        The encoder is rebuilt from the checkpoint's ``encoder_class`` and ``encoder_kwargs``
        (unless ``task_kwargs`` gives an encoder) and receives exactly the trained weights;
        heads, losses and normalizers are new. Only the leading ``encoder.`` of each state-dict
        name is removed.

        Parameters
        ----------
        checkpoint
            Path of a Lightning checkpoint of any task (loaded with ``weights_only=True``).
        **task_kwargs
            Arguments of the new task (``task_keys``, ``lr``, ...).

        Returns
        -------
        BaseTaskModule
            The new task.

        Raises
        ------
        ValueError
            If the checkpoint is truncated or corrupted, holds no encoder weights, or the
            encoder's weights do not fit.
        """
        state = read_checkpoint(
            checkpoint,
            caller=f"{cls.__name__}.from_pretrained_encoder",
            required_keys=("state_dict",),
        )
        hparams = state.get("hyper_parameters", {})
        if "encoder" not in task_kwargs and "encoder_class" not in task_kwargs:
            task_kwargs["encoder_class"] = hparams.get("encoder_class")
            task_kwargs["encoder_kwargs"] = hparams.get("encoder_kwargs")
        task = cls(**task_kwargs)
        encoder_state = encoder_state_dict(
            state, source=checkpoint, caller=f"{cls.__name__}.from_pretrained_encoder"
        )
        task.encoder.load_state_dict(encoder_state, strict=True)
        return task
