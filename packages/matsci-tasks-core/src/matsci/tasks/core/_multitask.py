"""Several tasks, on one or more datasets, sharing one encoder."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Self

import torch
from torch import Tensor, nn
from torch_geometric.data import Batch
from torchmetrics import MeanMetric, MetricCollection
from typing_extensions import override

from matsci.contract import class_path, import_class, to_plain
from matsci.tasks.core._base_task import (
    STAGES,
    BaseTaskModule,
    Stage,
    build_encoder,
    rank_average_weight,
    weighted_sum,
)
from matsci.tasks.core._ema import Weights, load_checkpoint_with_weights
from matsci.tasks.core._epoch_means import (
    EpochMeans,
    PendingMetricInputs,
    is_logging_step,
    log_epoch_metrics,
    log_training_epoch,
    log_training_step,
)
from matsci.tasks.core._inputs import InputRequest, gradients_enabled, prepare_encoder_input
from matsci.tasks.core._lean_module import LeanLightningModule
from matsci.tasks.core._loss_weights import LossWeightSchedule
from matsci.tasks.core._optim import check_scheduler_kwargs, optimization_config, optimizer_path

_ENCODER_ARGUMENTS = ("encoder", "encoder_class", "encoder_kwargs")
_EVAL_STAGES: tuple[Stage, ...] = ("val", "test")
_NAME = "MultiTaskLitModule"


class MultiTaskLitModule(LeanLightningModule):
    """Train several tasks, on one or more datasets, with one shared encoder.

    Each training step runs the encoder once per dataset batch (twice when a denoising task
    needs noisy positions next to tasks that need clean ones: each task only ever sees its own
    view), computes every task's loss on its own dataset's embeddings, and backpropagates one
    weighted sum. Tasks keep their heads, losses, normalizers and metrics; the module owns the
    encoder once and one optimizer with a parameter group for the encoder and one per task.

    Batches come as ``{dataset_name: batch}`` from Lightning's
    :class:`~lightning.pytorch.utilities.combined_loader.CombinedLoader` (give the ``Trainer``
    a dict of loaders, or :class:`matsci.data.MultiDataModule`); a dataset without a batch in a
    step contributes nothing. Evaluation loaders may also be a dict run one after the other
    (Lightning's ``"sequential"`` mode). Logged names are ``<stage>/<dataset>/<task>/<key>/...``
    and ``<stage>/<dataset>/<task>/loss``, with the weighted total as ``<stage>/loss``.

    Parameters
    ----------
    *tasks
        ``(dataset_name, task)`` or ``(dataset_name, task, task_name)`` tuples. Without an
        explicit encoder the first task's encoder is shared; every task's heads must fit it.
    task_configs
        Tasks as plain data, for configuration files and checkpoints: a list of
        ``{"dataset": name, "class_path": task class, "init_args": {...}, "name": optional}``;
        ``init_args`` hold no encoder (the shared one is given to each task).
    encoder
        The shared encoder instance.
    encoder_class
        The shared encoder's class or dotted path, built with ``encoder_kwargs``.
    encoder_kwargs
        Constructor arguments of ``encoder_class``.
    task_scaling
        ``{"<dataset>/<task>": weight}`` of each task's loss in the total (default 1).
    loss_weight_schedules
        ``{"<dataset>/<task>": schedule}`` multiplying the weight at each step, each a
        :class:`LossWeightSchedule` or its plain form, e.g.
        ``{"kind": "linear", "start": 0.0, "end": 1.0, "steps": 1000}``.
    lr
        Learning rate.
    weight_decay
        Weight decay.
    optimizer
        Optimizer class or name in ``torch.optim``.
    scheduler_kwargs
        Learning-rate schedule, as for :class:`BaseTaskModule`.
    group_lr
        Learning rates of single parameter groups: ``{"encoder": 1e-4, "<dataset>/<task>": ...}``.

    Raises
    ------
    ValueError
        On no tasks, a dataset or task name with ``.`` or ``/``, duplicate task names, tasks
        whose heads do not fit the shared encoder, ``init_args`` with an encoder, or weights,
        schedules or learning rates for unknown tasks.

    Examples
    --------
    >>> import torch
    >>> from torch_geometric.data import Batch, Data
    >>> from matsci.tasks.core import (BinaryClassificationTask, Embeddings,
    ...                                MultiTaskLitModule, ScalarRegressionTask)
    >>> class MeanZ(torch.nn.Module):
    ...     embedding_dim = 1
    ...     def forward(self, batch):
    ...         z = batch.atomic_numbers.float().unsqueeze(-1)
    ...         return Embeddings(point_embedding=z)
    >>> encoder = MeanZ()
    >>> module = MultiTaskLitModule(
    ...     ("bulk", ScalarRegressionTask(encoder=encoder, task_keys=["band_gap"])),
    ...     ("bulk", BinaryClassificationTask(encoder=encoder, task_keys=["stable"])),
    ... )
    >>> module.task_names
    ['bulk/ScalarRegressionTask', 'bulk/BinaryClassificationTask']
    >>> data = Data(pos=torch.rand(3, 3), atomic_numbers=torch.tensor([8, 8, 22]),
    ...             natoms=torch.tensor([3]))
    >>> predictions = module.predict({"bulk": Batch.from_data_list([data])})
    >>> sorted(predictions["bulk"])
    ['BinaryClassificationTask', 'ScalarRegressionTask']
    """

    def __init__(
        self,
        *tasks: tuple[str, BaseTaskModule] | tuple[str, BaseTaskModule, str],
        task_configs: Sequence[Mapping[str, Any]] | None = None,
        encoder: nn.Module | None = None,
        encoder_class: str | type[nn.Module] | None = None,
        encoder_kwargs: Mapping[str, Any] | None = None,
        task_scaling: Mapping[str, float] | None = None,
        loss_weight_schedules: Mapping[str, LossWeightSchedule | Mapping[str, Any]] | None = None,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        optimizer: str | type[torch.optim.Optimizer] = "AdamW",
        scheduler_kwargs: Mapping[str, Any] | None = None,
        group_lr: Mapping[str, float] | None = None,
    ) -> None:
        super().__init__()
        if not tasks and not task_configs:
            raise ValueError(f"{_NAME}: give tasks as (dataset, task) tuples or task_configs")
        if encoder is None and encoder_class is None:
            if not tasks:
                raise ValueError(
                    f"{_NAME}(task_configs=...): give the shared encoder with encoder_class and "
                    "encoder_kwargs (or encoder)"
                )
            first = tasks[0][1]
            encoder = first.encoder
            encoder_class = first.hparams.get("encoder_class")
            encoder_kwargs = first.hparams.get("encoder_kwargs")
        self.encoder, encoder_path = build_encoder(_NAME, encoder, encoder_class, encoder_kwargs)
        entries = [_entry_from_tuple(item) for item in tasks]
        entries += [self._entry_from_config(config) for config in task_configs or []]
        self.tasks = nn.ModuleDict()
        self.dataset_tasks: dict[str, list[str]] = {}
        configs: list[dict[str, Any]] = []
        for dataset, task, name in entries:
            task_id = self._add_task(dataset, task, name)
            configs.append(_task_config(dataset, task_id.split("/", 1)[1], task))
        self.task_scaling = _keyed(task_scaling, self.task_names, "task_scaling", float)
        self.loss_weight_schedules = {
            task_id: _schedule(value, f"{_NAME}(loss_weight_schedules[{task_id!r}])")
            for task_id, value in (loss_weight_schedules or {}).items()
        }
        _keyed(self.loss_weight_schedules, self.task_names, "loss_weight_schedules", lambda v: v)
        self.group_lr = _keyed(group_lr, ["encoder", *self.task_names], "group_lr", float)
        self.metrics = nn.ModuleDict(
            {f"{stage}_metrics": self._stage_metrics(stage) for stage in STAGES}
        )
        self.eval_losses = nn.ModuleDict(
            {
                f"{stage}_losses": nn.ModuleDict({_slot(t): MeanMetric() for t in self.task_names})
                for stage in _EVAL_STAGES
            }
        )
        self.lr = lr
        self.weight_decay = weight_decay
        self.optimizer_path = optimizer_path(optimizer)
        self.scheduler_config = check_scheduler_kwargs(scheduler_kwargs)
        self._requests = {dataset: self._view_groups(dataset) for dataset in self.dataset_tasks}
        self._train_means = EpochMeans(["train/loss"])
        self._pending_train_metrics = {t: PendingMetricInputs() for t in self.task_names}
        # Only plain data: the checkpoint rebuilds every task from task_configs.
        self.save_hyperparameters(
            {
                "task_configs": configs,
                "encoder_class": encoder_path,
                "encoder_kwargs": to_plain(
                    dict(encoder_kwargs) if encoder_kwargs is not None else None,
                    argument="encoder_kwargs",
                ),
                "task_scaling": dict(task_scaling or {}),
                "loss_weight_schedules": {
                    task_id: schedule.to_config()
                    for task_id, schedule in self.loss_weight_schedules.items()
                },
                "lr": lr,
                "weight_decay": weight_decay,
                "optimizer": self.optimizer_path,
                "scheduler_kwargs": self.scheduler_config,
                "group_lr": dict(group_lr or {}),
            }
        )

    # -- construction --------------------------------------------------------------------------

    @property
    def task_names(self) -> list[str]:
        """Every task as ``"<dataset>/<task>"``, in the order given."""
        return list(self.tasks.keys())

    @property
    def dataset_names(self) -> list[str]:
        """The datasets, in the order their first task was given."""
        return list(self.dataset_tasks)

    def task(self, task_name: str) -> BaseTaskModule:
        """The task named ``"<dataset>/<task>"`` (it shares this module's encoder).

        Raises
        ------
        KeyError
            Naming the known tasks.
        """
        if task_name not in self.tasks:
            raise KeyError(f"{_NAME}: no task {task_name!r}; tasks are {self.task_names}")
        task: BaseTaskModule = self.tasks[task_name]  # type: ignore[assignment]
        return task

    def _entry_from_config(
        self, config: Mapping[str, Any]
    ) -> tuple[str, BaseTaskModule, str | None]:
        allowed = {"dataset", "class_path", "init_args", "name"}
        if not isinstance(config, Mapping) or set(config) - allowed or "class_path" not in config:
            raise ValueError(
                f"{_NAME}(task_configs): each entry is {{'dataset', 'class_path', 'init_args', "
                f"'name'}}, got {config!r}"
            )
        init_args = dict(config.get("init_args") or {})
        given = [name for name in _ENCODER_ARGUMENTS if init_args.get(name) is not None]
        if given:
            raise ValueError(
                f"{_NAME}(task_configs): {config['class_path']} gives {given}; tasks share the "
                "module's encoder (encoder_class / encoder_kwargs of the module)"
            )
        for argument in _ENCODER_ARGUMENTS:
            init_args.pop(argument, None)
        task = _task_class(config["class_path"])(encoder=self.encoder, **init_args)
        name = config.get("name")
        return str(config.get("dataset")), task, (None if name is None else str(name))

    def _add_task(self, dataset: str, task: BaseTaskModule, name: str | None) -> str:
        for label, value in (("dataset", dataset), ("task name", name or "x")):
            if not value or "." in value or "/" in value:
                raise ValueError(f"{_NAME}: {label} {value!r} must be non-empty, without . or /")
        base = name or type(task).__name__
        task_id, count = f"{dataset}/{base}", 1
        while task_id in self.tasks:
            if name is not None:
                raise ValueError(f"{_NAME}: two tasks named {task_id!r}")
            count += 1
            task_id = f"{dataset}/{base}_{count}"
        if _width(task.encoder) != _width(self.encoder):
            raise ValueError(
                f"{_NAME}: task {task_id!r} was built for an encoder with embedding_dim "
                f"{task.encoder.embedding_dim}, the shared encoder has {self.encoder.embedding_dim}"
            )
        # The task keeps a plain reference to the shared encoder, not a submodule: the encoder's
        # weights appear once in the state dict and once in the optimizer.
        task._modules.pop("encoder", None)
        object.__setattr__(task, "encoder", self.encoder)
        self.tasks[task_id] = task
        self.dataset_tasks.setdefault(dataset, []).append(task_id)
        return task_id

    def _view_groups(self, dataset: str) -> list[tuple[InputRequest, list[str]]]:
        """Tasks of one dataset grouped by the positions they need: one encoder pass per group."""
        groups: dict[str, list[str]] = {}
        for task_id in self.dataset_tasks[dataset]:
            groups.setdefault(self.task(task_id).input_request().view, []).append(task_id)
        return [
            (InputRequest.merge(self.task(t).input_request() for t in ids), ids)
            for ids in groups.values()
        ]

    def _stage_metrics(self, stage: Stage) -> nn.ModuleDict:
        per_task = {}
        for task_id in self.task_names:
            task = self.task(task_id)
            per_task[_slot(task_id)] = nn.ModuleDict(
                {
                    key: task.build_metrics(key).clone(prefix=f"{stage}/{task_id}/{key}/")
                    for key in task.task_keys
                }
            )
        return nn.ModuleDict(per_task)

    # -- the forward pass ----------------------------------------------------------------------

    @override
    def forward(self, batches: Mapping[str, Batch | None]) -> dict[str, dict[str, Tensor]]:
        """Raw outputs (normalized units) of every task whose dataset has a batch.

        Parameters
        ----------
        batches
            ``{dataset_name: batch}``; datasets that are missing or ``None`` are skipped.

        Returns
        -------
        dict
            ``{"<dataset>/<task>": {key: output}}``.
        """
        outputs: dict[str, dict[str, Tensor]] = {}
        keep_graph = self.training and torch.is_grad_enabled()
        for dataset, groups in self._requests.items():
            batch = batches.get(dataset)
            if batch is None:
                continue
            for request, task_ids in groups:
                with gradients_enabled(request.needs_gradients):
                    encoder_input = prepare_encoder_input(
                        batch, request, keep_graph=keep_graph, shared=len(task_ids) > 1
                    )
                    embeddings = self.encoder(encoder_input.batch)
                    for task_id in task_ids:
                        task = self.task(task_id)
                        outputs[task_id] = task.outputs_from_embeddings(embeddings, encoder_input)
        return outputs

    @torch.no_grad()
    def predict(
        self, batches: Mapping[str, Batch | None] | Batch
    ) -> dict[str, dict[str, dict[str, Tensor]]]:
        """Predictions in physical units, ``{dataset: {task: {key: prediction}}}``.

        Parameters
        ----------
        batches
            ``{dataset_name: batch}``, or one batch when the module has a single dataset.

        Returns
        -------
        dict
            For every dataset with a batch, each of its tasks' :meth:`BaseTaskModule.predict`.
        """
        by_dataset = self._by_dataset(batches, None, "predict")
        outputs = self(by_dataset)
        predictions: dict[str, dict[str, dict[str, Tensor]]] = {}
        for task_id, task_outputs in outputs.items():
            dataset, name = task_id.split("/", 1)
            task = self.task(task_id)
            batch = by_dataset[dataset]
            predictions.setdefault(dataset, {})[name] = task.physical_predictions(
                task_outputs, batch
            )
        return predictions

    # -- Lightning hooks -----------------------------------------------------------------------

    @override
    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self._step(batch, "train", None)

    @override
    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        return self._step(batch, "val", dataloader_idx)

    @override
    def test_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        return self._step(batch, "test", dataloader_idx)

    @override
    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Any:
        by_dataset = self._by_dataset(batch, dataloader_idx, "predict")
        for dataset, data in by_dataset.items():
            for task_id in self.dataset_tasks[dataset]:
                self.task(task_id)._check_batch(data, "predict", with_targets=False)
        return self.predict(by_dataset)

    @override
    def on_train_epoch_start(self) -> None:
        self._train_means.reset()
        for pending in self._pending_train_metrics.values():
            pending.clear()

    @override
    def on_train_epoch_end(self) -> None:
        log_training_epoch(self, self._train_means)
        for task_id in self.task_names:
            self._flush_train_metrics(task_id)
        self._log_epoch_metrics("train")

    def _flush_train_metrics(self, task_id: str) -> None:
        pending = self._pending_train_metrics[task_id].pop()
        if pending is not None:
            collections = self._metric_collections("train", task_id)
            self.task(task_id)._feed_metrics(collections, *pending)

    @override
    def on_validation_epoch_end(self) -> None:
        self._log_eval_losses("val")
        self._log_epoch_metrics("val")

    @override
    def on_test_epoch_end(self) -> None:
        self._log_eval_losses("test")
        self._log_epoch_metrics("test")

    @override
    def configure_optimizers(self) -> Any:
        return optimization_config(
            self.optimizer_path, self.parameter_groups(), self.lr, self.weight_decay,
            self.scheduler_config,
        )  # fmt: skip

    def parameter_groups(self) -> list[dict[str, Any]]:
        """The encoder's group, then one group per task (its heads), named like the task.

        Returns
        -------
        list of dict
            ``{"name", "params"[, "lr"]}`` per group with parameters; ``lr`` from ``group_lr``.
        """
        groups = [{"name": "encoder", "params": list(self.encoder.parameters())}]
        groups += [
            {"name": task_id, "params": list(self.task(task_id).parameters())}
            for task_id in self.task_names
        ]
        for group in groups:
            if group["name"] in self.group_lr:
                group["lr"] = self.group_lr[group["name"]]
        return [group for group in groups if group["params"]]

    def loss_weight(self, task_name: str) -> float:
        """The weight of a task's loss at the current step: ``task_scaling`` times its schedule."""
        weight = float(self.task_scaling.get(task_name, 1.0))
        schedule = self.loss_weight_schedules.get(task_name)
        return weight * schedule(self.global_step) if schedule is not None else weight

    # -- one step ------------------------------------------------------------------------------

    def _step(self, batch: Any, stage: Stage, dataloader_idx: int | None) -> Tensor:
        by_dataset = self._by_dataset(batch, dataloader_idx, stage)
        for dataset, data in by_dataset.items():
            for task_id in self.dataset_tasks[dataset]:
                self.task(task_id)._check_batch(data, stage, with_targets=True)
        outputs = self(by_dataset)
        training = stage == "train"
        terms: list[tuple[float, Tensor]] = []
        for task_id, task_outputs in outputs.items():
            task = self.task(task_id)
            data = by_dataset[task_id.split("/", 1)[0]]
            batch_size = int(data.num_graphs)
            targets = task.get_targets(data)
            task_total, losses = task.compute_losses(task_outputs, data, targets=targets)
            terms.append((self.loss_weight(task_id), task_total))
            if training:
                # Step values reach the loggers only on logging steps: log them only there.
                if is_logging_step(self):
                    self.log(f"train/{task_id}/loss", task_total, batch_size=batch_size)
                    for key, value in losses.items():
                        self.log(f"train/{task_id}/{key}/loss", value, batch_size=batch_size)
            else:
                self._eval_loss(stage, task_id).update(task_total.detach(), weight=batch_size)
                for key, value in losses.items():
                    self.log(f"{stage}/{task_id}/{key}/loss", value, sync_dist=True,
                             batch_size=rank_average_weight(batch_size),
                             add_dataloader_idx=False)  # fmt: skip
            # Metrics are computed, logged and reset once per epoch (on_*_epoch_end); training
            # steps are fed in groups (see BaseTaskModule._update_metrics).
            if not training:
                collections = self._metric_collections(stage, task_id)
                task._feed_metrics(collections, task_outputs, targets)
            elif self._pending_train_metrics[task_id].add(task_outputs, targets):
                self._flush_train_metrics(task_id)
        if training:
            # Heads of tasks without a batch this step still join the graph (with weight 0), so
            # DDP sees a gradient for every parameter and needs no find_unused_parameters.
            absent = [t for t in self.task_names if t not in outputs]
            terms += [(0.0, p.sum()) for t in absent for p in self.task(t).parameters()]
        total = weighted_sum(terms)
        if training:
            size = sum(int(data.num_graphs) for data in by_dataset.values())
            log_training_step(self, self._train_means, [total], size)
        return total

    def _eval_loss(self, stage: Stage, task_id: str) -> MeanMetric:
        losses: nn.ModuleDict = self.eval_losses[f"{stage}_losses"]  # type: ignore[assignment]
        metric: MeanMetric = losses[_slot(task_id)]  # type: ignore[assignment]
        return metric

    def _metric_collections(self, stage: Stage, task_id: str) -> Mapping[str, MetricCollection]:
        per_task: nn.ModuleDict = self.metrics[f"{stage}_metrics"]  # type: ignore[assignment]
        collections: Mapping[str, MetricCollection] = per_task[_slot(task_id)]  # type: ignore[assignment]
        return collections

    def _log_epoch_metrics(self, stage: Stage) -> None:
        log_epoch_metrics(
            self,
            [c for t in self.task_names for c in self._metric_collections(stage, t).values()],
        )

    def _log_eval_losses(self, stage: Stage) -> None:
        total: Tensor | None = None
        for task_id in self.task_names:
            metric = self._eval_loss(stage, task_id)
            if not metric.update_called:
                continue
            value = metric.compute()  # reduced over DDP ranks by torchmetrics
            metric.reset()
            self.log(f"{stage}/{task_id}/loss", value)
            weighted = self.loss_weight(task_id) * value
            total = weighted if total is None else total + weighted
        if total is not None:
            self.log(f"{stage}/loss", total, prog_bar=True)

    def _by_dataset(self, batch: Any, dataloader_idx: int | None, stage: str) -> dict[str, Batch]:
        """The step's batches keyed by dataset, without the datasets that have none."""
        if isinstance(batch, Mapping):
            unknown = [name for name in batch if name not in self.dataset_tasks]
            if unknown:
                raise ValueError(
                    f"{_NAME}: batches for unknown datasets {unknown}; datasets with tasks are "
                    f"{self.dataset_names}"
                )
            return {name: value for name, value in batch.items() if value is not None}
        return {self._dataset_of_loader(dataloader_idx, stage): batch}

    def _dataset_of_loader(self, dataloader_idx: int | None, stage: str) -> str:
        if len(self.dataset_tasks) == 1:
            return self.dataset_names[0]
        loaders = None
        if self._trainer is not None and dataloader_idx is not None:
            loaders = {
                "val": self.trainer.val_dataloaders,
                "test": self.trainer.test_dataloaders,
                "predict": self.trainer.predict_dataloaders,
            }.get(stage)
        if isinstance(loaders, Mapping):
            assert dataloader_idx is not None
            return str(list(loaders)[dataloader_idx])
        raise ValueError(
            f"{_NAME}: a {stage} batch without its dataset name; with several datasets give "
            f"batches as {{dataset: batch}} or loaders as a dict keyed by {self.dataset_names}"
        )

    # -- normalization, extraction, checkpoints -------------------------------------------------

    def fit_normalizers(self, loaders: Mapping[str, Iterable[Batch]]) -> None:
        """Fit each task's normalizers on its own dataset's batches.

        Parameters
        ----------
        loaders
            ``{dataset_name: iterable of batches}`` (typically the training loaders).

        Raises
        ------
        ValueError
            If a dataset with tasks to fit has no loader.
        """
        for task_id in self.task_names:
            task = self.task(task_id)
            dataset = task_id.split("/", 1)[0]
            overrides = type(task).fit_normalizers is not BaseTaskModule.fit_normalizers
            if not overrides and len(task.normalizers) == 0:
                continue  # nothing to fit: skip a pass over the data
            if dataset not in loaders:
                raise ValueError(
                    f"{_NAME}.fit_normalizers: no loader for dataset {dataset!r}; "
                    f"got {list(loaders)}"
                )
            task.fit_normalizers(loaders[dataset])

    def extract_task(self, task_name: str) -> BaseTaskModule:
        """A standalone copy of one task with a copy of the shared encoder, ready to use alone.

        For inference, or fine-tuning on its own. It saves and reloads like any task (with
        ``encoder_class`` when the shared encoder was given by class).

        Parameters
        ----------
        task_name
            ``"<dataset>/<task>"``, one of :attr:`task_names`.

        Returns
        -------
        BaseTaskModule
            A new task with the trained heads, normalizers and encoder weights.
        """
        source = self.task(task_name)
        config = next(c for c in self.hparams["task_configs"] if _config_id(c) == task_name)
        cls = _task_class(config["class_path"])
        # A copy of the trained encoder; its class path and arguments (when known) go into the
        # new task's hyperparameters, so the task's own checkpoints rebuild it.
        task = cls(
            encoder=copy.deepcopy(self.encoder),
            encoder_class=self.hparams.get("encoder_class"),
            encoder_kwargs=self.hparams.get("encoder_kwargs"),
            **config["init_args"],
        )
        task.load_state_dict(source.state_dict(), strict=False)
        missing = set(source.state_dict()) - set(task.state_dict())
        if missing:
            raise ValueError(f"{_NAME}.extract_task: weights {sorted(missing)} did not transfer")
        return task.to(device=self.device)

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
        """Restore the module, every task and the shared encoder, with ``weights_only=True``.

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
            ``"evaluation"``: the weights validation used (the averaged ones when the checkpoint
            has an :class:`ExponentialMovingAverage` record); ``"raw"``: the trained weights.
        **kwargs
            Constructor arguments overriding the stored ones (e.g. ``encoder=...`` when the
            encoder's class cannot be imported by its path).

        Returns
        -------
        MultiTaskLitModule
            The restored module.

        Raises
        ------
        ValueError
            If the file is truncated, corrupted or not a Lightning checkpoint (naming it), or
            ``weights`` is unknown.
        """
        module = load_checkpoint_with_weights(
            super().load_from_checkpoint, checkpoint_path, weights,
            caller=f"{cls.__name__}.load_from_checkpoint", map_location=map_location,
            hparams_file=hparams_file, strict=strict, weights_only=weights_only, **kwargs,
        )  # fmt: skip
        return module


def _slot(task_id: str) -> str:
    """A module-dict key for a task (``.`` is not allowed there, ``/`` reads badly in names)."""
    return task_id.replace("/", "__")


def _task_class(path: str) -> type[BaseTaskModule]:
    cls = import_class(path, nn.Module, argument=f"{_NAME}(task_configs)")
    if not issubclass(cls, BaseTaskModule):
        raise ValueError(f"{_NAME}(task_configs): {path} is not a task (a BaseTaskModule)")
    return cls


def _width(encoder: nn.Module) -> Any:
    return (getattr(encoder, "system_embedding_dim", None), str(encoder.embedding_dim))


def _entry_from_tuple(item: Any) -> tuple[str, BaseTaskModule, str | None]:
    if not isinstance(item, tuple) or len(item) not in (2, 3):
        raise ValueError(
            f"{_NAME}: tasks are (dataset, task) or (dataset, task, name), got {item!r}"
        )
    dataset, task = item[0], item[1]
    if not isinstance(task, BaseTaskModule):
        raise ValueError(f"{_NAME}: {type(task).__name__} for dataset {dataset!r} is not a task")
    return str(dataset), task, (str(item[2]) if len(item) == 3 else None)


def _task_config(dataset: str, name: str, task: BaseTaskModule) -> dict[str, Any]:
    init_args = {k: v for k, v in task.hparams.items() if k not in _ENCODER_ARGUMENTS}
    path = class_path(type(task))
    return {"dataset": dataset, "name": name, "class_path": path, "init_args": init_args}


def _config_id(config: Mapping[str, Any]) -> str:
    return f"{config['dataset']}/{config['name']}"


def _schedule(value: LossWeightSchedule | Mapping[str, Any], argument: str) -> LossWeightSchedule:
    if isinstance(value, LossWeightSchedule):
        return value
    return LossWeightSchedule.from_config(value, argument=argument)


def _keyed(
    values: Mapping[str, Any] | None, known: list[str], argument: str, cast: Any
) -> dict[str, Any]:
    given = dict(values or {})
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise ValueError(f"{_NAME}({argument}): unknown names {unknown}; expected some of {known}")
    return {name: cast(value) for name, value in given.items()}
