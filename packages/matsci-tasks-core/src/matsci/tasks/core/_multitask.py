"""Several tasks, on one or more datasets, sharing one encoder."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

import torch
from torch import Tensor, nn
from torch_geometric.data import Batch
from typing_extensions import override

from matsci.contract import class_path, import_class
from matsci.tasks.core._base_task import BaseTaskModule
from matsci.tasks.core._engine import TaskEngine, TaskEntry
from matsci.tasks.core._loss_weights import LossWeightSchedule
from matsci.tasks.core._optim import check_scheduler_kwargs, optimizer_path
from matsci.tasks.core._shared_encoder_state import store_shared_encoder_once
from matsci.tasks.core._task_config import build_encoder

_ENCODER_ARGUMENTS = ("encoder", "encoder_class", "encoder_kwargs")
_NAME: Final = "MultiTaskLitModule"


class MultiTaskLitModule(TaskEngine):
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
    compile_training
        Train each view whose tasks differentiate the energy with one compiled graph, as for
        :class:`BaseTaskModule` (``True``, or a ``torch.compile`` backend name); the tasks'
        own ``compile_training`` is not used. Default ``False`` (eager).

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
        compile_training: bool | str = False,
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
        self.encoder, encoder_config = build_encoder(_NAME, encoder, encoder_class, encoder_kwargs)
        self.optimizer_path = optimizer_path(optimizer)
        entries = [_entry_from_tuple(item) for item in tasks]
        entries += [self._entry_from_config(config) for config in task_configs or []]
        self.tasks = nn.ModuleDict()
        task_entries: list[TaskEntry] = []
        configs: list[dict[str, Any]] = []
        for dataset, task, name in entries:
            entry = self._add_task(dataset, task, name)
            task_entries.append(entry)
            configs.append(_task_config(dataset, entry.name.split("/", 1)[1], task))
        store_shared_encoder_once(self, [f"tasks.{name}" for name in self.tasks])
        names = [entry.name for entry in task_entries]
        schedules = {
            task_id: _schedule(value, f"{_NAME}(loss_weight_schedules[{task_id!r}])")
            for task_id, value in (loss_weight_schedules or {}).items()
        }
        scheduler_config = check_scheduler_kwargs(scheduler_kwargs)
        self.set_up_engine(
            task_entries,
            lr=lr,
            weight_decay=weight_decay,
            optimizer_path=self.optimizer_path,
            scheduler_config=scheduler_config,
            task_scaling=_keyed(task_scaling, names, "task_scaling", float),
            loss_weight_schedules=_keyed(schedules, names, "loss_weight_schedules", _same),
            group_lr=_keyed(group_lr, ["encoder", *names], "group_lr", float),
            compile_training=compile_training,
        )
        # Plain data only: the checkpoint rebuilds every task from task_configs.
        self.save_hyperparameters(
            {
                "task_configs": configs,
                "encoder_class": None if encoder_config is None else encoder_config["class_path"],
                "encoder_kwargs": None if encoder_config is None else encoder_config["init_args"],
                "task_scaling": dict(task_scaling or {}),
                "loss_weight_schedules": {
                    task_id: schedule.to_config() for task_id, schedule in schedules.items()
                },
                "lr": lr,
                "weight_decay": weight_decay,
                "optimizer": self.optimizer_path,
                "scheduler_kwargs": scheduler_config,
                "group_lr": dict(group_lr or {}),
                "compile_training": compile_training,
            }
        )

    # -- construction --------------------------------------------------------------------------

    @property
    def task_names(self) -> list[str]:
        """Every task as ``"<dataset>/<task>"``, in the order given."""
        return [entry.name for entry in self.task_entries]

    @property
    def dataset_tasks(self) -> dict[str, list[str]]:
        """``{dataset: [task name, ...]}``, in the order given."""
        grouped: dict[str, list[str]] = {}
        for entry in self.task_entries:
            grouped.setdefault(entry.dataset, []).append(entry.name)
        return grouped

    def task(self, task_name: str) -> BaseTaskModule:
        """The task named ``"<dataset>/<task>"`` (it shares this module's encoder).

        Raises
        ------
        KeyError
            Naming the known tasks.
        """
        return self.entry(task_name).task

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

    def _add_task(self, dataset: str, task: BaseTaskModule, name: str | None) -> TaskEntry:
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
        # One optimizer and one schedule serve every task: a task's own lr and weight_decay
        # become its parameter group's, but another optimizer or schedule cannot be honoured.
        if task.scheduler_config is not None:
            raise ValueError(
                f"{_NAME}: task {task_id!r} has its own scheduler_kwargs; give the schedule to "
                f"{_NAME}(scheduler_kwargs=...), which schedules every parameter group"
            )
        if task.optimizer_path != self.optimizer_path:
            raise ValueError(
                f"{_NAME}: task {task_id!r} asks for optimizer {task.optimizer_path}, the module "
                f"uses {self.optimizer_path}; give the optimizer to {_NAME}(optimizer=...)"
            )
        # Every task reads the shared encoder (a submodule of each, the same object).
        task.encoder = self.encoder
        self.tasks[task_id] = task
        return TaskEntry(dataset, task_id, task, log_prefix=f"{task_id}/")

    @override
    def forward(self, batches: Mapping[str, Batch | None] | Batch) -> dict[str, dict[str, Tensor]]:
        """Raw outputs (normalized units) of every task whose dataset has a batch.

        Parameters
        ----------
        batches
            ``{dataset_name: batch}`` (datasets that are missing or ``None`` are skipped), or
            one batch when the module has a single dataset.

        Returns
        -------
        dict
            ``{"<dataset>/<task>": {key: output}}``.

        Raises
        ------
        ValueError
            For one plain batch when the module has several datasets, or an unknown dataset.
        """
        return self.task_outputs(self.batches_by_dataset(batches, None, "predict"))

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
        return self.format_predictions(
            self.task_predictions(self.batches_by_dataset(batches, None, "predict"))
        )

    @override
    def format_predictions(
        self, predictions: dict[str, dict[str, Tensor]]
    ) -> dict[str, dict[str, dict[str, Tensor]]]:
        """``{dataset: {task: {key: prediction}}}`` from ``{"<dataset>/<task>": {...}}``."""
        nested: dict[str, dict[str, dict[str, Tensor]]] = {}
        for task_id, values in predictions.items():
            dataset, name = task_id.split("/", 1)
            nested.setdefault(dataset, {})[name] = values
        return nested

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
        # The source task holds the shared encoder too: every weight transfers, strictly.
        task.load_state_dict(source.state_dict(), strict=True)
        return task.to(device=self.device)


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


def _same(value: Any) -> Any:
    return value


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
