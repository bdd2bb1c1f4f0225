"""The base of every task: encoder, heads, losses, normalizers, metrics and optimization."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar, Literal, Self, cast

import torch
from torch import Tensor, nn
from torch_geometric.data import Batch
from torch_geometric.utils import scatter
from torchmetrics import MetricCollection
from typing_extensions import override

from matsci.contract import (
    STRUCTURE_SPECS,
    AttributeSpec,
    ClassConfig,
    Embeddings,
    build_from_config,
    class_path,
    import_class,
    keys,
    module_config,
    to_plain,
    validate_batch,
)
from matsci.heads import OutputHead
from matsci.tasks.core._checkpoint_io import read_checkpoint
from matsci.tasks.core._ema import Weights, load_checkpoint_with_weights
from matsci.tasks.core._epoch_means import (
    EpochMeans,
    PendingMetricInputs,
    log_epoch_metrics,
    log_training_epoch,
    log_training_step,
)
from matsci.tasks.core._inputs import (
    EncoderInput,
    InputRequest,
    gradients_enabled,
    prepare_encoder_input,
)
from matsci.tasks.core._lean_module import LeanLightningModule
from matsci.tasks.core._masked_loss import MaskedLoss
from matsci.tasks.core._normalizer import Normalizer
from matsci.tasks.core._optim import check_scheduler_kwargs, optimization_config, optimizer_path

Stage = Literal["train", "val", "test"]
Reduction = Literal["mean", "sum", "max"]
_REDUCTIONS = ("mean", "sum", "max")
STAGES: tuple[Stage, ...] = ("train", "val", "test")
DEFAULT_OUTPUT_KWARGS: dict[str, Any] = {
    "hidden_dim": 128,
    "num_hidden": 1,
    "activation": "torch.nn.SiLU",
}
"""Head settings used unless ``output_kwargs`` overrides them."""


class BaseTaskModule(LeanLightningModule):
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
        Learning-rate schedule, see :func:`check_scheduler_kwargs`; for example warm-up then
        cosine with ``SequentialLR``, or ``ReduceLROnPlateau`` with ``monitor="val/loss"``.
    embedding_reduction_type
        How atom embeddings are pooled into a structure embedding when the encoder gives none:
        ``"mean"``, ``"sum"`` or ``"max"``.
    normalize_kwargs
        ``{key: {"mean": m, "std": s}}`` (numbers or one per target column); targets are
        normalized for the loss and predictions de-normalized. Statistics can also be fitted
        from data with :meth:`fit_normalizers`.
    task_loss_scaling
        ``{key: weight}`` multiplying each key's loss in the total (default 1).

    Raises
    ------
    ValueError
        On a key without a loss, a loss or scaling for an unknown key, duplicate keys, an
        unknown reduction, both or neither of ``encoder`` and ``encoder_class``, or an encoder
        without ``embedding_dim``.
    """

    default_loss: ClassVar[str] = "torch.nn.MSELoss"
    """Dotted name of the loss used when ``loss_func`` is ``None``."""

    per_atom_targets: ClassVar[bool] = False
    """Whether targets are per atom (``[N, k]``) rather than per structure (``[B, k]``)."""

    fixed_task_keys: ClassVar[tuple[str, ...] | None] = None
    """The only ``task_keys`` of tasks that predict a fixed target (the default for them)."""

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
        embedding_reduction_type: Reduction = "mean",
        normalize_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
        task_loss_scaling: Mapping[str, float] | None = None,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        self.encoder, encoder_path = build_encoder(name, encoder, encoder_class, encoder_kwargs)
        self.task_keys: list[str] = self._check_task_keys(task_keys)
        if embedding_reduction_type not in _REDUCTIONS:
            raise ValueError(
                f"{name}(embedding_reduction_type={embedding_reduction_type!r}): expected one of "
                f"{_REDUCTIONS}"
            )
        self.embedding_reduction_type = embedding_reduction_type
        loss_configs = self._loss_configs(loss_func)
        self.losses = nn.ModuleDict(
            {
                key: MaskedLoss(
                    build_from_config(loss_configs[key], nn.Module, argument="loss_func")
                )
                for key in self.task_keys
            }
        )
        self.task_loss_scaling = self._check_keyed(task_loss_scaling, "task_loss_scaling", 1.0)
        self.output_kwargs = {**DEFAULT_OUTPUT_KWARGS, **dict(output_kwargs or {})}
        self.output_heads = nn.ModuleDict(
            {key: self.build_head(key, self.output_kwargs) for key in self.head_keys()}
        )
        self.normalizers = nn.ModuleDict(self._build_normalizers(normalize_kwargs))
        self.metrics = nn.ModuleDict(
            {f"{stage}_metrics": self._stage_metrics(stage) for stage in STAGES}
        )
        self.lr = lr
        self.weight_decay = weight_decay
        self.optimizer_path = optimizer_path(optimizer)
        self.scheduler_config = check_scheduler_kwargs(scheduler_kwargs)
        self._checked_stages: set[str] = set()
        self._train_means = EpochMeans(
            ["train/loss", *(f"train/{key}/loss" for key in self.task_keys)]
        )
        self._pending_train_metrics = PendingMetricInputs()
        # Only plain data goes into the checkpoint, so it loads with weights_only=True.
        self.save_hyperparameters(ignore=["encoder", "encoder_class", "loss_func", "optimizer"])
        self.hparams["encoder_class"] = encoder_path
        self.hparams["encoder_kwargs"] = to_plain(
            dict(encoder_kwargs) if encoder_kwargs is not None else None, argument="encoder_kwargs"
        )
        self.hparams["loss_func"] = loss_configs
        self.hparams["optimizer"] = self.optimizer_path
        self.hparams["scheduler_kwargs"] = self.scheduler_config
        self.hparams["output_kwargs"] = _plain_output_kwargs(dict(output_kwargs or {}))

    # -- what subclasses define -------------------------------------------------------------

    def head_keys(self) -> list[str]:
        """Keys that get a head; by default every task key.

        Tasks that derive some keys from others (forces from the energy) return fewer.
        """
        return list(self.task_keys)

    @abstractmethod
    def build_head(self, key: str, output_kwargs: Mapping[str, Any]) -> nn.Module:
        """Build the head that predicts ``key``."""

    @abstractmethod
    def target_specs(self) -> list[AttributeSpec]:
        """Describe the target attributes a batch must carry for this task."""

    @abstractmethod
    def build_metrics(self, key: str) -> MetricCollection:
        """Metrics of one key (a fresh collection per stage)."""

    def compute_outputs(self, embeddings: Embeddings, batch: Batch) -> dict[str, Tensor]:
        """Raw head outputs per key, in normalized units (before :meth:`to_physical`).

        The default applies each head to the structure embedding.

        Parameters
        ----------
        embeddings
            The encoder's output.
        batch
            The batch (for pooling atom embeddings).

        Returns
        -------
        dict
            ``{key: [B, ...]}``.
        """
        system = self.system_embedding(embeddings, batch)
        return {key: head(system) for key, head in self.output_heads.items()}

    def get_target(self, batch: Batch, key: str) -> Tensor:
        """Read a target in the shape the loss expects.

        ``[B, k]`` for structure targets; as stored (``[N, k]``) with ``per_atom_targets``.
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

    def to_physical(self, key: str, output: Tensor) -> Tensor:
        """Turn a head output into a prediction in physical units (de-normalize)."""
        if key in self.normalizers:
            normalizer: Normalizer = self.normalizers[key]  # type: ignore[assignment]
            return normalizer.denormalize(output)
        return output

    def loss_target(self, key: str, target: Tensor) -> Tensor:
        """Turn a target into what the loss compares with head outputs (normalize)."""
        if key in self.normalizers:
            normalizer: Normalizer = self.normalizers[key]  # type: ignore[assignment]
            return normalizer.normalize(target)
        return target

    def metric_inputs(self, key: str, output: Tensor) -> Tensor:
        """What the metrics compare with the target: by default the physical prediction.

        Training metrics are fed once per group of steps, so during training the raw outputs of
        several steps arrive concatenated along the first dimension: the map must act row by
        row, as de-normalizing, a sigmoid or a softmax over the last dimension do.
        """
        return self.to_physical(key, output)

    def update_metric(
        self, collection: MetricCollection, prediction: Tensor, target: Tensor
    ) -> None:
        """Feed one key's predictions and targets (missing ones removed) to its metrics."""
        collection.update(prediction, target)

    def normalizer_dim(self, key: str) -> int | None:
        """Width of the normalizer of ``key``, or ``None`` if the key is never normalized."""
        return None

    # -- the forward pass ---------------------------------------------------------------------

    def input_request(self) -> InputRequest:
        """What the encoder's input must be for this task: by default clean positions, no grad.

        Tasks that differentiate with respect to positions or strain, or that read noisy
        positions, say so here; :class:`MultiTaskLitModule` merges the requests of the tasks on
        one dataset into as few encoder passes as possible (one per view).
        """
        return InputRequest()

    def outputs_from_embeddings(
        self, embeddings: Embeddings, encoder_input: EncoderInput
    ) -> dict[str, Tensor]:
        """Raw outputs per key from the encoder's output; runs inside the encoder pass's grad mode.

        The default is :meth:`compute_outputs` on the prepared batch. Tasks that take
        derivatives (forces, stress) use ``encoder_input.positions`` and ``.strain``.

        Parameters
        ----------
        embeddings
            The encoder's output for ``encoder_input.batch``.
        encoder_input
            The batch the encoder saw and the tensors derivatives are taken with respect to.

        Returns
        -------
        dict
            ``{key: output}`` in normalized units.
        """
        return self.compute_outputs(embeddings, encoder_input.batch)

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
        return {key: self.to_physical(key, outputs[key]) for key in self.task_keys}

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
        request = self.input_request()
        # Derivatives keep their graph only when a loss on them will be backpropagated.
        keep_graph = self.training and torch.is_grad_enabled()
        with gradients_enabled(request.needs_gradients):
            encoder_input = prepare_encoder_input(
                batch, request, keep_graph=keep_graph, shared=False
            )
            return self.outputs_from_embeddings(self.encoder(encoder_input.batch), encoder_input)

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
        index = getattr(batch, keys.BATCH, None)
        if index is None:
            return _reduce_all(embeddings.point_embedding, self.embedding_reduction_type)
        pooled: Tensor = scatter(
            embeddings.point_embedding,
            index,
            dim=0,
            dim_size=batch.num_graphs,
            reduce=self.embedding_reduction_type,
        )
        return pooled

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
        return self.physical_predictions(self(batch), batch)

    # -- Lightning hooks -----------------------------------------------------------------------

    @override
    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        return self._shared_step(batch, "train")

    @override
    def validation_step(self, batch: Batch, batch_idx: int) -> Tensor:
        return self._shared_step(batch, "val")

    @override
    def test_step(self, batch: Batch, batch_idx: int) -> Tensor:
        return self._shared_step(batch, "test")

    @override
    def predict_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> Any:
        self._check_batch(batch, "predict", with_targets=False)
        return self.predict(batch)

    @override
    def configure_optimizers(self) -> Any:
        return optimization_config(
            self.optimizer_path, self.parameter_groups(), self.lr, self.weight_decay,
            self.scheduler_config,
        )  # fmt: skip

    def parameter_groups(self) -> list[dict[str, Any]]:
        """Parameter groups of the optimizer: the encoder, then the heads.

        Returns
        -------
        list of dict
            ``[{"name": "encoder", "params": [...]}, {"name": "heads", "params": [...]}]``
            (groups without parameters are left out).
        """
        groups = [
            {"name": "encoder", "params": list(self.encoder.parameters())},
            {"name": "heads", "params": list(self.output_heads.parameters())},
        ]
        return [group for group in groups if group["params"]]

    # -- one step ----------------------------------------------------------------------------

    def _shared_step(self, batch: Batch, stage: Stage) -> Tensor:
        self._check_batch(batch, stage, with_targets=True)
        outputs = self(batch)
        targets = self.get_targets(batch)
        total, losses = self.compute_losses(outputs, batch, targets=targets)
        batch_size = int(batch.num_graphs)
        if stage == "train":
            # Per rank, no all-reduce; self.log costs about 0.5 ms of Python per call, so epoch
            # means are summed on the device and step values logged only where they are read.
            log_training_step(self, self._train_means, [total, *losses.values()], batch_size)
        else:
            # Evaluation losses are averaged over DDP ranks (schedulers and checkpoints monitor
            # them).
            weight = rank_average_weight(batch_size)
            self.log(f"{stage}/loss", total, prog_bar=True, batch_size=weight, on_step=False,
                     on_epoch=True, sync_dist=True)  # fmt: skip
            for key, value in losses.items():
                self.log(f"{stage}/{key}/loss", value, batch_size=weight, on_step=False,
                         on_epoch=True, sync_dist=True)  # fmt: skip
        self._update_metrics(outputs, targets, stage)
        return total

    @override
    def on_train_epoch_start(self) -> None:
        self._train_means.reset()
        self._pending_train_metrics.clear()

    @override
    def on_train_epoch_end(self) -> None:
        log_training_epoch(self, self._train_means)
        self._flush_train_metrics()
        log_epoch_metrics(self, self._stage_collections("train").values())

    @override
    def on_validation_epoch_end(self) -> None:
        log_epoch_metrics(self, self._stage_collections("val").values())

    @override
    def on_test_epoch_end(self) -> None:
        log_epoch_metrics(self, self._stage_collections("test").values())

    def _stage_collections(self, stage: Stage) -> Mapping[str, MetricCollection]:
        collections: Mapping[str, MetricCollection] = self.metrics[f"{stage}_metrics"]  # type: ignore[assignment]
        return collections

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
            present = _present(target)
            loss_fn: MaskedLoss = self.losses[key]  # type: ignore[assignment]
            losses[key] = loss_fn(outputs[key], self.loss_target(key, target), present)
        total = weighted_sum([(self.task_loss_scaling[key], losses[key]) for key in self.task_keys])
        return total, losses

    def _update_metrics(
        self, outputs: Mapping[str, Tensor], targets: Mapping[str, Tensor], stage: Stage
    ) -> None:
        # Metrics are computed, logged and reset once per epoch (see on_*_epoch_end). Training
        # steps are fed in groups: the raw outputs wait, and one metric_inputs call, metric
        # update and look for missing targets (a host sync) serve a group of steps instead of
        # each step; the results are the same.
        if stage != "train":
            self._feed_metrics(self._stage_collections(stage), outputs, targets)
        elif self._pending_train_metrics.add(outputs, targets):
            self._flush_train_metrics()

    def _flush_train_metrics(self) -> None:
        pending = self._pending_train_metrics.pop()
        if pending is not None:
            self._feed_metrics(self._stage_collections("train"), *pending)

    def update_metrics(
        self, collections: Mapping[str, Any], outputs: Mapping[str, Tensor], batch: Batch
    ) -> None:
        """Feed every key's predictions and targets, missing ones removed, to its metrics.

        Parameters
        ----------
        collections
            ``{key: MetricCollection}`` (this task's, or a multi-task module's copies).
        outputs
            Raw outputs from :meth:`forward`.
        batch
            The batch holding the targets.
        """
        self._feed_metrics(collections, outputs, self.get_targets(batch))

    def _feed_metrics(
        self,
        collections: Mapping[str, Any],
        outputs: Mapping[str, Tensor],
        targets: Mapping[str, Tensor],
    ) -> None:
        """Feed ``metric_inputs`` of the raw outputs, rows with a missing target left out."""
        missing = _any_missing(targets)
        for key, target in targets.items():
            prediction = self.metric_inputs(key, outputs[key].detach())
            collection: MetricCollection = collections[key]
            if not missing.get(key, False):
                self.update_metric(collection, prediction, target)
            else:
                rows = _present(target).reshape(target.shape[0], -1).all(dim=1)
                self.update_metric(collection, prediction[rows], target[rows])

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
        specs = list(STRUCTURE_SPECS) + (self.target_specs() if with_targets else [])
        validate_batch(batch, specs, context=type(self).__name__)

    def _check_batch(self, batch: Batch, stage: str, *, with_targets: bool) -> None:
        # Checked on the first batch of each stage: later batches come from the same pipeline.
        if stage in self._checked_stages:
            return
        self.check_batch(batch, with_targets=with_targets)
        self._checked_stages.add(stage)

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
        fit_keys = list(keys_to_fit) if keys_to_fit is not None else list(self.normalizers)
        for key in fit_keys:
            if key not in self.normalizers:
                raise ValueError(
                    f"{type(self).__name__}.fit_normalizers: {key!r} is not normalized by this "
                    f"task; normalized keys: {list(self.normalizers)}"
                )
            self.normalizers[key].reset_statistics()  # type: ignore[operator]
        for batch in batches:
            for key in fit_keys:
                self.normalizers[key].update(self.get_target(batch, key))  # type: ignore[operator]
        for key in fit_keys:
            self.normalizers[key].finalize()  # type: ignore[operator]

    def _build_normalizers(
        self, normalize_kwargs: Mapping[str, Mapping[str, Any]] | None
    ) -> dict[str, Normalizer]:
        given = dict(normalize_kwargs or {})
        unknown = set(given) - set(self.task_keys)
        if unknown:
            raise ValueError(
                f"{type(self).__name__}(normalize_kwargs): unknown keys {sorted(unknown)}; "
                f"task keys are {self.task_keys}"
            )
        normalizers: dict[str, Normalizer] = {}
        for key in self.task_keys:
            dim = self.normalizer_dim(key)
            if dim is None:
                if key in given:
                    raise ValueError(
                        f"{type(self).__name__}(normalize_kwargs): key {key!r} is not normalized "
                        "by this task"
                    )
                continue
            stats = dict(given.get(key, {}))
            if set(stats) - {"mean", "std"}:
                raise ValueError(
                    f"{type(self).__name__}(normalize_kwargs[{key!r}]): expected keys 'mean' and "
                    f"'std', got {sorted(stats)}"
                )
            normalizers[key] = Normalizer(dim, mean=stats.get("mean"), std=stats.get("std"))
        return normalizers

    # -- construction helpers ------------------------------------------------------------------

    def _check_task_keys(self, task_keys: Sequence[str] | None) -> list[str]:
        name = type(self).__name__
        fixed = self.fixed_task_keys
        if fixed is not None:
            if task_keys is not None and list(task_keys) != list(fixed):
                raise ValueError(f"{name}(task_keys={task_keys!r}): the only key is {list(fixed)}")
            task_keys = list(fixed)
        if task_keys is None or isinstance(task_keys, str) or len(task_keys) == 0:
            raise ValueError(f"{name}(task_keys={task_keys!r}): expected a non-empty list of keys")
        ordered = list(task_keys)
        duplicates = sorted({key for key in ordered if ordered.count(key) > 1})
        if duplicates:
            raise ValueError(f"{name}(task_keys): duplicate keys {duplicates}")
        return ordered

    def _check_keyed(
        self, values: Mapping[str, float] | None, argument: str, default: float
    ) -> dict[str, float]:
        given = dict(values or {})
        unknown = set(given) - set(self.task_keys)
        if unknown:
            raise ValueError(
                f"{type(self).__name__}({argument}): keys {sorted(unknown)} are not task keys "
                f"{self.task_keys}"
            )
        return {key: float(given.get(key, default)) for key in self.task_keys}

    def _loss_configs(self, loss_func: Any) -> dict[str, ClassConfig]:
        name = type(self).__name__
        per_key = isinstance(loss_func, Mapping) and "class_path" not in loss_func
        if not per_key:
            spec = self.default_loss if loss_func is None else loss_func
            config = module_config(spec, nn.Module, argument="loss_func", default_module="torch.nn")
            return {key: config for key in self.task_keys}
        missing = [key for key in self.task_keys if key not in loss_func]
        extra = [key for key in loss_func if key not in self.task_keys]
        if missing or extra:
            raise ValueError(
                f"{name}(loss_func): keys without a loss {missing}, losses without a key {extra}; "
                f"task keys are {self.task_keys}"
            )
        return {
            key: module_config(
                loss_func[key], nn.Module, argument=f"loss_func[{key!r}]", default_module="torch.nn"
            )
            for key in self.task_keys
        }

    def _stage_metrics(self, stage: Stage) -> nn.ModuleDict:
        return nn.ModuleDict(
            {key: self.build_metrics(key).clone(prefix=f"{stage}/{key}/") for key in self.task_keys}
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
        width: Any = getattr(self.encoder, "system_embedding_dim", None)
        width = width if width is not None else self.encoder.embedding_dim
        if isinstance(width, int):
            return width
        return int(sum(mul for mul, ir in width if str(ir) == "0e"))

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
        width: Any = self.encoder.embedding_dim
        if isinstance(width, int):
            return OutputHead(output_dim, input_dim=width, **output_kwargs)
        if output_dim not in (1, 3):
            raise ValueError(
                f"{type(self).__name__}: irreps heads give 1 scalar or 3 vector components per "
                f"atom, not {output_dim}"
            )
        options = dict(output_kwargs)
        # No norm unless asked for: e3nn's batch norm in training mode normalizes per-atom
        # energies across the batch, which makes forces (their gradients) vanish.
        if options.get("norm") is None:
            options["norm"] = False
        hidden = int(options.pop("hidden_dim", 128))
        hidden_irreps = options.pop("hidden_irreps", f"{hidden}x0e+{max(hidden // 4, 1)}x1o")
        head = OutputHead(
            "1x0e" if output_dim == 1 else "1x1o", hidden_irreps, input_dim=width,
            block_type="IrrepOutputBlock", **options,
        )  # fmt: skip
        return head

    # -- checkpoints ---------------------------------------------------------------------------

    @classmethod
    @override
    def load_from_checkpoint(
        cls,
        checkpoint_path: Any,
        map_location: Any = None,
        hparams_file: Any = None,
        strict: bool | None = None,
        weights_only: bool | None = True,
        weights: Weights = "evaluation",
        **kwargs: Any,
    ) -> Self:
        """Restore a task from a checkpoint, loading it with ``weights_only=True`` by default.

        Checkpoints of tasks hold plain data only, so nothing in the file can run code.

        Parameters
        ----------
        checkpoint_path
            Path (or file object) of the checkpoint.
        map_location
            Where to put tensors, as in :func:`torch.load`.
        hparams_file
            Optional YAML of hyperparameters overriding the stored ones.
        strict
            Whether the state dict must match exactly.
        weights_only
            Passed to :func:`torch.load`; ``True`` unless set.
        weights
            ``"evaluation"``: the weights validation used, i.e. the averaged ones when the
            checkpoint has an :class:`ExponentialMovingAverage` record; ``"raw"``: the trained
            weights that a resumed run continues from.
        **kwargs
            Constructor arguments overriding the stored ones (e.g. ``encoder=...``).

        Returns
        -------
        BaseTaskModule
            The restored task.

        Raises
        ------
        ValueError
            If the file is truncated, corrupted or not a Lightning checkpoint (naming it), or
            ``weights`` is unknown.
        """
        task = load_checkpoint_with_weights(
            super().load_from_checkpoint, checkpoint_path, weights,
            caller=f"{cls.__name__}.load_from_checkpoint", map_location=map_location,
            hparams_file=hparams_file, strict=strict, weights_only=weights_only, **kwargs,
        )  # fmt: skip
        return task

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
        prefix = "encoder."
        encoder_state = {
            name.removeprefix(prefix): value
            for name, value in state["state_dict"].items()
            if name.startswith(prefix)
        }
        if not encoder_state:
            raise ValueError(
                f"{cls.__name__}.from_pretrained_encoder: no encoder weights in {checkpoint}"
            )
        task.encoder.load_state_dict(encoder_state, strict=True)
        return task


def build_encoder(
    name: str,
    encoder: nn.Module | None,
    encoder_class: str | type[nn.Module] | None,
    encoder_kwargs: Mapping[str, Any] | None,
) -> tuple[nn.Module, str | None]:
    if encoder is None and encoder_class is None:
        raise ValueError(
            f"{name}: give encoder= (an instance) or encoder_class= (with encoder_kwargs)"
        )
    if encoder is None:
        assert encoder_class is not None
        path = encoder_class if isinstance(encoder_class, str) else class_path(encoder_class)
        cls = import_class(path, nn.Module, argument=f"{name}(encoder_class)")
        encoder = cls(**dict(encoder_kwargs or {}))
    elif encoder_class is not None:
        # Both: load_from_checkpoint(path, encoder=...) adds an instance to the stored class path.
        path = encoder_class if isinstance(encoder_class, str) else class_path(encoder_class)
        if path != class_path(type(encoder)):
            raise ValueError(
                f"{name}: encoder is a {class_path(type(encoder))} but encoder_class is {path}"
            )
    if not hasattr(encoder, "embedding_dim"):
        raise ValueError(
            f"{name}: the encoder {type(encoder).__name__} has no embedding_dim attribute "
            "(an int, or e3nn Irreps), which the heads need"
        )
    local = "<locals>" in type(encoder).__qualname__
    # A class defined in a function cannot be imported again: such a task reloads only with
    # load_from_checkpoint(path, encoder=...).
    return encoder, (None if local else class_path(type(encoder)))


def _plain_output_kwargs(output_kwargs: dict[str, Any]) -> dict[str, Any]:
    """Head arguments as plain data: ``torch.nn`` classes become their dotted names."""
    plain: dict[str, Any] = {}
    for name, value in output_kwargs.items():
        torch_nn_name = getattr(value, "__name__", "")
        if isinstance(value, type) and getattr(nn, torch_nn_name, None) is value:
            plain[name] = f"torch.nn.{torch_nn_name}"
        else:
            plain[name] = to_plain(value, argument=f"output_kwargs[{name!r}]")
    return plain


def rank_average_weight(batch_size: int) -> int:
    """The ``batch_size`` to give ``self.log`` for a value averaged over DDP ranks: a float.

    Lightning 2.6 sums the logged batch sizes in an integer tensor and floors its average over
    ranks, which inflates ``sync_dist`` means when the ranks saw different numbers of
    structures (Lightning issue #21859; evaluation shards without padding do). A float count
    keeps the average exact; Lightning only ever adds and divides it.
    """
    return cast(int, float(batch_size))


def weighted_sum(terms: Sequence[tuple[float, Tensor]]) -> Tensor:
    """``sum(weight * value)``, without the operations that cannot change it.

    A weight of exactly 1 is not multiplied and a single term is not stacked and summed; both
    give the same number bit for bit (a weight of 0 is kept: it turns NaN into NaN, not 0).

    Parameters
    ----------
    terms
        ``(weight, value)`` pairs, each value a scalar tensor.

    Returns
    -------
    Tensor
        The weighted sum, a scalar.
    """
    values = [value if weight == 1.0 else weight * value for weight, value in terms]
    if len(values) == 1:
        return values[0]
    return torch.stack(values).sum()


def _any_missing(targets: Mapping[str, Tensor]) -> dict[str, bool]:
    """Whether each float target has a NaN, read from the device in one transfer.

    Integer targets are never missing and cost nothing; float targets cost one host
    synchronization per step in all (metrics need the present rows, whose number is data).
    """
    floats = [key for key, target in targets.items() if target.is_floating_point()]
    if not floats:
        return {}
    flags = torch.stack([torch.isnan(targets[key]).any() for key in floats]).tolist()
    return dict(zip(floats, flags, strict=True))


def _present(target: Tensor) -> Tensor:
    if target.is_floating_point():
        return target == target  # False exactly at NaN; one operation instead of ~isnan
    return torch.ones_like(target, dtype=torch.bool)


def _reduce_all(values: Tensor, reduction: Reduction) -> Tensor:
    if reduction == "mean":
        return values.mean(dim=0, keepdim=True)
    if reduction == "sum":
        return values.sum(dim=0, keepdim=True)
    return values.amax(dim=0, keepdim=True)
