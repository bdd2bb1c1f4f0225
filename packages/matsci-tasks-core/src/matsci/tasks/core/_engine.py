"""The one training engine: encoder, tasks keyed by dataset and name, step, logging, optimizer.

:class:`TaskEngine` is the only LightningModule implementation of matsci. A single task
(:class:`~matsci.tasks.core.BaseTaskModule`) is the engine with one task on one dataset, the task
itself; :class:`~matsci.tasks.core.MultiTaskLitModule` is the engine with several tasks that
share its encoder. Both therefore run exactly the same ``training_step``, logging,
``configure_optimizers`` and ``load_from_checkpoint``; what a task computes (heads, targets,
losses, metrics, predictions) lives in the task and is called from here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Final, Self

import lightning.pytorch as pl
import torch
from torch import Tensor, nn
from torch_geometric.data import Batch
from torchmetrics import MeanMetric, Metric, MetricCollection
from typing_extensions import override

from matsci.contract import class_path
from matsci.tasks.core._checkpoint_io import Weights, load_checkpoint_with_weights
from matsci.tasks.core._compiled_pass import CompiledViewPass, compile_backend
from matsci.tasks.core._epoch_means import (
    EpochMeans,
    PendingMetricInputs,
    log_epoch_metrics,
    log_training_epoch,
    log_training_step,
)
from matsci.tasks.core._inputs import gradients_enabled, prepare_encoder_input
from matsci.tasks.core._loss_weights import LossWeightSchedule, weighted_sum
from matsci.tasks.core._optim import check_scheduler_kwargs, optimization_config
from matsci.tasks.core._stage_logging import (
    Stage,
    log_eval_losses,
    log_eval_step_losses,
    stage_metrics,
    train_value_names,
    train_value_weights,
)
from matsci.tasks.core._task_entry import TaskEntry, place_batches, view_groups

__all__ = ["CHECKPOINT_RECORD", "STAGES", "TaskEngine", "TaskEntry"]

STAGES: Final[tuple[Stage, ...]] = ("train", "val", "test")
_EVAL_STAGES: Final[tuple[Stage, ...]] = ("val", "test")

CHECKPOINT_RECORD: Final = "matsci"
"""Checkpoint key of the record the engine writes: ``{"model_class": "<dotted class path>"}``,
so a reader knows which class restores the checkpoint without guessing from its contents."""


class TaskEngine(pl.LightningModule):
    """The LightningModule behind every task: one step, one logging path, one optimizer.

    Subclasses build the encoder and the tasks, then call :meth:`set_up_engine` once at the end
    of their ``__init__``. The engine then

    * runs the encoder once per dataset batch and view (clean or noisy positions), with
      gradients to positions and strain when a task differentiates the energy, and hands the
      embeddings to every task of that dataset;
    * sums the tasks' weighted losses into one loss per step (one backward);
    * logs ``<stage>/loss``, ``<stage>/<prefix><key>/loss`` and each task's metrics as
      ``<stage>/<prefix><key>/<metric>`` (epoch values; training also at logging steps);
    * builds one optimizer with a parameter group for the encoder and one per task (its own
      ``lr`` and ``weight_decay``), and the task's learning-rate schedule;
    * restores checkpoints with ``weights_only=True`` (:meth:`load_from_checkpoint`).

    Not used directly: build a task or a :class:`~matsci.tasks.core.MultiTaskLitModule`.
    """

    encoder: nn.Module

    default_scheduler_kwargs: ClassVar[Mapping[str, Any] | None] = None
    """The learning-rate schedule used when ``scheduler_kwargs`` is ``None`` (a description as
    :func:`~matsci.tasks.core.check_scheduler_kwargs` takes it; ``None``: a constant rate)."""

    def set_up_engine(
        self,
        entries: Sequence[TaskEntry],
        *,
        lr: float,
        weight_decay: float,
        optimizer_path: str,
        scheduler_config: Mapping[str, Any] | None,
        task_scaling: Mapping[str, float] | None = None,
        loss_weight_schedules: Mapping[str, LossWeightSchedule] | None = None,
        group_lr: Mapping[str, float] | None = None,
        compile_training: bool | str = False,
    ) -> None:
        """Register the tasks and the optimization settings; called once by subclasses.

        Parameters
        ----------
        entries
            The tasks, in the order given by the user.
        lr, weight_decay
            Defaults of every parameter group.
        optimizer_path
            Dotted path of the optimizer class.
        scheduler_config
            A checked learning-rate schedule or ``None``.
        task_scaling
            ``{task name: weight}`` of each task's loss in the total (default 1).
        loss_weight_schedules
            ``{task name: schedule}`` multiplying the weight at each step.
        group_lr
            ``{"encoder" or task name: lr}`` of single parameter groups.
        compile_training
            Compile the training pass of every view whose tasks differentiate the energy
            (:class:`~matsci.tasks.core._compiled_pass.CompiledViewPass`): ``True`` with
            ``torch.compile``'s default backend (``"inductor"``), a string names another
            backend (``"aot_eager"``); ``False`` (default) trains eagerly.

        Raises
        ------
        ValueError
            If ``compile_training`` names no ``torch.compile`` backend.
        """
        # A plain list, not a ModuleDict: a single task is its own entry.
        self.task_entries: list[TaskEntry] = list(entries)
        self.lr = lr
        self.weight_decay = weight_decay
        self.optimizer_path = optimizer_path
        self.scheduler_config = None if scheduler_config is None else dict(scheduler_config)
        self.task_scaling = dict(task_scaling or {})
        self.loss_weight_schedules = dict(loss_weight_schedules or {})
        self.group_lr = dict(group_lr or {})
        self.metrics = nn.ModuleDict(
            {f"{stage}_metrics": stage_metrics(self.task_entries, stage) for stage in STAGES}
        )
        self.eval_losses = nn.ModuleDict(
            {
                f"{stage}_losses": nn.ModuleDict(
                    {entry.slot: MeanMetric() for entry in self.task_entries}
                )
                for stage in _EVAL_STAGES
            }
        )
        by_dataset: dict[str, list[TaskEntry]] = {}
        for entry in self.task_entries:
            by_dataset.setdefault(entry.dataset, []).append(entry)
        self._views = {dataset: view_groups(group) for dataset, group in by_dataset.items()}
        self._train_means = EpochMeans(train_value_names(self.task_entries, self.is_multitask))
        self._pending_train_metrics = {entry.name: PendingMetricInputs() for entry in entries}
        self._checked: set[tuple[str, str]] = set()
        backend = compile_backend(type(self).__name__, compile_training)
        # A plain object, not a module: the state_dict is the same with and without it.
        self.compiled_pass = (
            None if backend is None else CompiledViewPass(backend, owner=type(self).__name__)
        )

    # -- structure --------------------------------------------------------------------------

    @property
    def is_multitask(self) -> bool:
        """Whether tasks log under ``<dataset>/<task>/`` (multi-task) or directly (one task)."""
        return any(entry.log_prefix for entry in self.task_entries)

    @property
    def dataset_names(self) -> list[str]:
        """The datasets, in the order their first task was given."""
        return list(self._views)

    def entry(self, name: str) -> TaskEntry:
        """The task entry named ``"<dataset>/<task>"``.

        Raises
        ------
        KeyError
            Naming the known tasks.
        """
        for entry in self.task_entries:
            if entry.name == name:
                return entry
        known = [entry.name for entry in self.task_entries]
        raise KeyError(f"{type(self).__name__}: no task {name!r}; tasks are {known}")

    def metric_collections(self, stage: Stage, name: str) -> Mapping[str, MetricCollection]:
        """``{key: MetricCollection}`` of one task in one stage."""
        per_task: nn.ModuleDict = self.metrics[f"{stage}_metrics"]  # type: ignore[assignment]
        collections: Mapping[str, MetricCollection] = per_task[self.entry(name).slot]  # type: ignore[assignment]
        return collections

    # -- the forward pass -------------------------------------------------------------------

    def task_outputs(self, batches: Mapping[str, Batch]) -> dict[str, dict[str, Tensor]]:
        """Raw outputs (normalized units) of every task whose dataset has a batch.

        One encoder pass per dataset and view; the tasks of that pass read the same embeddings.
        With ``compile_training``, a training pass (``self.training`` and autograd on) of a view
        whose tasks differentiate the energy runs as one compiled graph (:attr:`compiled_pass`);
        evaluation and prediction stay eager.

        Parameters
        ----------
        batches
            ``{dataset: batch}``.

        Returns
        -------
        dict
            ``{task name: {key: output}}``.
        """
        outputs: dict[str, dict[str, Tensor]] = {}
        # Derivatives keep their graph only when a loss on them will be backpropagated.
        keep_graph = self.training and torch.is_grad_enabled()
        for dataset, batch in batches.items():
            for request, group in self._views[dataset]:
                if self.compiled_pass is not None and keep_graph and request.needs_gradients:
                    outputs.update(self.compiled_pass(self.encoder, group, request, batch))
                    continue
                with gradients_enabled(request.needs_gradients):
                    encoder_input = prepare_encoder_input(
                        batch, request, keep_graph=keep_graph, shared=len(group) > 1
                    )
                    embeddings = self.encoder(encoder_input.batch)
                    for entry in group:
                        outputs[entry.name] = entry.task.compute_outputs(embeddings, encoder_input)
        return outputs

    def task_predictions(self, batches: Mapping[str, Batch]) -> dict[str, dict[str, Tensor]]:
        """Predictions in physical units, ``{task name: {key: prediction}}``."""
        outputs = self.task_outputs(batches)
        return {
            name: self.entry(name).task.physical_predictions(
                values, batches[self.entry(name).dataset]
            )
            for name, values in outputs.items()
        }

    def batches_by_dataset(
        self, batch: Batch | Mapping[str, Batch | None], dataloader_idx: int | None, stage: str
    ) -> dict[str, Batch]:
        """A step's batches keyed by dataset, without the datasets that have none.

        A plain batch belongs to the only dataset, or, with several, to the evaluation loader
        ``dataloader_idx`` of a dict of loaders.

        Raises
        ------
        ValueError
            For batches of unknown datasets, or a plain batch that cannot be placed.
        """
        return place_batches(self, batch, self.dataset_names, dataloader_idx, stage)

    def loss_weight(self, name: str) -> float:
        """The weight of a task's loss at the current step: its scaling times its schedule."""
        weight = float(self.task_scaling.get(name, 1.0))
        schedule = self.loss_weight_schedules.get(name)
        return weight * schedule(self.global_step) if schedule is not None else weight

    # -- Lightning hooks --------------------------------------------------------------------

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
        by_dataset = self.batches_by_dataset(batch, dataloader_idx, "predict")
        self._check_first_batches(by_dataset, "predict")
        return self.format_predictions(self.task_predictions(by_dataset))

    def format_predictions(self, predictions: dict[str, dict[str, Tensor]]) -> Any:
        """What ``predict_step`` returns, from ``{task name: {key: prediction}}``."""
        return predictions

    @override
    def configure_optimizers(self) -> Any:
        schedule = self.scheduler_config
        if schedule is None and self.default_scheduler_kwargs is not None:
            schedule = check_scheduler_kwargs(self.default_scheduler_kwargs)
        return optimization_config(
            self.optimizer_path, self.parameter_groups(), self.lr, self.weight_decay,
            schedule, run_length=self._run_length,
        )  # fmt: skip

    def _run_length(self) -> int:
        """The optimizer steps of the whole fit, as the trainer estimates them."""
        try:
            steps = self.trainer.estimated_stepping_batches
        except RuntimeError as error:  # not attached to a Trainer
            raise ValueError(
                f"{type(self).__name__}: the learning-rate schedule ends with the run, whose "
                "length only a Trainer knows; call configure_optimizers under trainer.fit, or "
                "give total_steps in scheduler_kwargs"
            ) from error
        if not math.isfinite(steps):
            raise ValueError(
                f"{type(self).__name__}: the learning-rate schedule ends with the run, but the "
                "trainer has no end (max_epochs=-1 and no max_steps); set max_epochs or "
                "max_steps, or give total_steps in scheduler_kwargs"
            )
        return int(steps)

    def parameter_groups(self) -> list[dict[str, Any]]:
        """The encoder's parameter group, then one per task with its ``lr`` and ``weight_decay``.

        A single task names its group ``"heads"``; in multi-task training each group is named
        like its task. ``group_lr`` overrides the learning rate of any group by name.

        Returns
        -------
        list of dict
            ``{"name", "params", "lr", "weight_decay"}`` per group with parameters.
        """
        groups: list[dict[str, Any]] = [
            {"name": "encoder", "params": list(self.encoder.parameters())}
        ]
        for entry in self.task_entries:
            task = entry.task
            groups.append(
                {
                    "name": entry.name if self.is_multitask else "heads",
                    "params": task.head_parameters(),
                    "lr": task.lr,
                    "weight_decay": task.weight_decay,
                }
            )
        for group in groups:
            lr = self.group_lr.get(group["name"])
            if lr is not None:
                group["lr"] = lr
        return [group for group in groups if group["params"]]

    @override
    def on_fit_start(self) -> None:
        # Metric states last reset inside inference mode (validate before fit) are inference
        # tensors, which training cannot update in place: reset them here, outside that mode.
        for metric in self.modules():
            if isinstance(metric, Metric):
                metric.reset()

    @override
    def on_train_epoch_start(self) -> None:
        self._train_means.reset()
        for pending in self._pending_train_metrics.values():
            pending.clear()

    @override
    def on_train_epoch_end(self) -> None:
        log_training_epoch(self, self._train_means)
        for entry in self.task_entries:
            self._flush_train_metrics(entry)
        self._log_epoch_metrics("train")

    @override
    def on_validation_epoch_end(self) -> None:
        self._log_eval_losses("val")
        self._log_epoch_metrics("val")

    @override
    def on_test_epoch_end(self) -> None:
        self._log_eval_losses("test")
        self._log_epoch_metrics("test")

    @override
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[CHECKPOINT_RECORD] = {"model_class": class_path(type(self))}

    # -- one step ---------------------------------------------------------------------------

    def _step(self, batch: Any, stage: Stage, dataloader_idx: int | None) -> Tensor:
        by_dataset = self.batches_by_dataset(batch, dataloader_idx, stage)
        self._check_first_batches(by_dataset, stage)
        outputs = self.task_outputs(by_dataset)
        training = stage == "train"
        terms: list[tuple[float, Tensor]] = []
        task_totals: list[Tensor | None] = []
        key_losses: list[Tensor | None] = []
        for entry in self.task_entries:
            task_outputs = outputs.get(entry.name)
            if task_outputs is None:
                task_totals.append(None)
                key_losses += [None] * len(entry.task.task_keys)
                continue
            data = by_dataset[entry.dataset]
            targets = entry.task.get_targets(data)
            task_total, losses = entry.task.compute_losses(task_outputs, data, targets=targets)
            terms.append((self.loss_weight(entry.name), task_total))
            task_totals.append(task_total)
            key_losses += list(losses.values())
            predictions = entry.task.metric_predictions(task_outputs, data)
            if training:
                # Metrics are fed in groups of steps (one host sync per group, same values).
                if self._pending_train_metrics[entry.name].add(predictions, targets):
                    self._flush_train_metrics(entry)
            else:
                log_eval_step_losses(self, self._eval_loss(stage, entry), entry, stage, task_total,
                                     losses, int(data.num_graphs))  # fmt: skip
                entry.task.feed_metrics(
                    self.metric_collections(stage, entry.name), predictions, targets
                )
        if training:
            # Heads of tasks without a batch this step still join the graph (with weight 0), so
            # DDP sees a gradient for every parameter and needs no find_unused_parameters.
            terms += [
                (0.0, parameter.sum())
                for entry, total in zip(self.task_entries, task_totals, strict=True)
                if total is None
                for parameter in entry.task.head_parameters()
            ]
        total = weighted_sum(terms)
        if training:
            values = [total, *(task_totals if self.is_multitask else []), *key_losses]
            sizes = {name: float(data.num_graphs) for name, data in by_dataset.items()}
            weights = train_value_weights(self.task_entries, sizes, self.is_multitask)
            log_training_step(self, self._train_means, values, weights)
        return total

    def _check_first_batches(self, by_dataset: Mapping[str, Batch], stage: str) -> None:
        # Checked on the first batch of each stage: later batches come from the same pipeline.
        for entry in self.task_entries:
            data = by_dataset.get(entry.dataset)
            if data is None or (entry.name, stage) in self._checked:
                continue
            entry.task.check_batch(data, with_targets=stage != "predict")
            self._checked.add((entry.name, stage))

    def _flush_train_metrics(self, entry: TaskEntry) -> None:
        pending = self._pending_train_metrics[entry.name].pop()
        if pending is not None:
            entry.task.feed_metrics(self.metric_collections("train", entry.name), *pending)

    def _eval_loss(self, stage: Stage, entry: TaskEntry) -> MeanMetric:
        losses: nn.ModuleDict = self.eval_losses[f"{stage}_losses"]  # type: ignore[assignment]
        metric: MeanMetric = losses[entry.slot]  # type: ignore[assignment]
        return metric

    def _log_epoch_metrics(self, stage: Stage) -> None:
        log_epoch_metrics(
            self,
            [
                collection
                for entry in self.task_entries
                for collection in self.metric_collections(stage, entry.name).values()
            ],
        )

    def _log_eval_losses(self, stage: Stage) -> None:
        metrics = [(entry, self._eval_loss(stage, entry)) for entry in self.task_entries]
        log_eval_losses(self, stage, metrics, self.loss_weight, self.is_multitask)

    # -- checkpoints ------------------------------------------------------------------------

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
        """Restore the module from a checkpoint, loading it with ``weights_only=True``.

        Checkpoints hold plain data only, so nothing in the file can run code; the constructor
        arguments stored in it rebuild the model, encoder included.

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
            ``"evaluation"``: the checkpoint's ``state_dict``, which holds the averaged weights
            when training kept a weight average (what validation used); ``"raw"``: the trained
            weights that a resumed run continues from.
        **kwargs
            Constructor arguments overriding the stored ones (e.g. ``encoder=...``).

        Returns
        -------
        TaskEngine
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
