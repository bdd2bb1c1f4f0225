"""The ``matsci`` command: Lightning's ``LightningCLI`` with matsci's defaults and reports."""

from __future__ import annotations

import json
import os
import sys
import warnings
from argparse import RawDescriptionHelpFormatter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from jsonargparse import DefaultHelpFormatter, Namespace
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch import Callback, LightningDataModule, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.trainer.states import TrainerStatus
from typing_extensions import override

from matsci.cli._entry import DEBUG_VARIABLE, DESCRIPTION
from matsci.cli._errors import ConfigError, ShortErrorParser, shorten
from matsci.cli._export import export_main
from matsci.cli._paths import next_version, resolve_bundled
from matsci.cli._plots import learning_curve_plot, write_parity_plots
from matsci.cli._predict import predict_main
from matsci.cli._report import baseline_legend, metrics_table
from matsci.cli._run_info import RunInfo
from matsci.tasks.core import BaseTaskModule, MultiTaskLitModule
from matsci.training import (
    BASELINE_DESCRIPTIONS,
    AtomThroughputMonitor,
    CheckTargets,
    FitNormalizers,
    PretrainedEncoder,
    baseline_kind,
    baseline_metrics,
)

_JSONARGPARSE_NOTICES: Final = (
    r"\s*(By default only one JsonargparseDeprecation|skip_none parameter)"
)

_USER_ERRORS: Final = (
    ConfigError,
    ValueError,
    TypeError,
    FileNotFoundError,
    MisconfigurationException,
)


class _DescriptionAsWritten(RawDescriptionHelpFormatter, DefaultHelpFormatter):
    """jsonargparse's help, with the description's line breaks kept."""


class _MatsciParser(ShortErrorParser):
    """The CLI's parser: short errors, and checkpoint hyperparameters that keep the model class.

    With ``--ckpt_path``, Lightning's CLI merges the checkpoint's ``hyper_parameters`` (the
    task's constructor arguments) into the model config as ``{subcommand: {"model": hparams}}``
    on the root parser. The model is chosen by ``class_path`` (subclass mode), and jsonargparse
    applies a value without ``class_path`` to the configured class only when the subcommand's
    parser gets it, not the root parser ("Option 'lr' is not accepted"). The class path of the
    configured model is therefore added here, so the arguments are checked against that
    class's signature and the model is rebuilt exactly as it was trained.
    """

    @override
    def parse_object(
        self,
        obj: Namespace | dict[str, Any],
        namespace: Namespace | None = None,
        env: bool | None = None,
        defaults: bool = True,
        **kwargs: Any,
    ) -> Namespace:
        if isinstance(obj, dict) and namespace is not None:
            obj = {key: _with_model_class(value, namespace.get(key)) for key, value in obj.items()}
        parsed: Namespace = super().parse_object(obj, namespace, env, defaults, **kwargs)
        return parsed


def _with_model_class(value: Any, configured: Any) -> Any:
    """``{"model": {args}}`` as ``{"model": {"class_path": <configured>, "init_args": args}}``."""
    if not (isinstance(value, dict) and isinstance(configured, Namespace)):
        return value
    model, current = value.get("model"), configured.get("model")
    if not isinstance(model, dict) or "class_path" in model or not isinstance(current, Namespace):
        return value
    class_path = current.get("class_path")
    if class_path is None:
        return value
    return {**value, "model": {"class_path": class_path, "init_args": model}}


class MatsciCLI(LightningCLI):
    """``LightningCLI`` for matsci: the ``fit``, ``validate`` and ``test`` subcommands.

    On top of Lightning's CLI (models and data modules chosen by ``class_path``, every argument
    in YAML, ``--print_config``), the defaults a user of the field expects:

    - ``seed_everything: 0``, and the resolved config saved as ``config.yaml`` in each run;
    - logs in ``<runs_dir>/<run_name>/version_N`` (CSV and TensorBoard in one folder) unless
      ``trainer.logger`` is set; ``run_name`` defaults to the config file's name; with
      ``trainer.default_root_dir`` a relative ``runs_dir`` is taken inside that folder;
    - ``model_checkpoint``: the best (lowest ``val/loss``) and the last checkpoint, as
      ``checkpoints/best.ckpt`` and ``checkpoints/last.ckpt``;
    - ``normalizers``: :class:`~matsci.training.FitNormalizers` fits the task's normalizers on
      the training data at the start of a fresh fit (not when resuming with ``ckpt_path``);
    - ``pretrained_encoder``: :class:`~matsci.training.PretrainedEncoder` starts from another
      run's encoder;
    - a check at setup that the data holds every target key of the model;
    - after ``fit``, ``test`` of the best checkpoint (``test_after_fit``); after ``test``, a
      table of test metrics with units and, beside each, the obvious baseline on the same test
      split (``baselines``: training mean, zero, majority class; see
      :func:`~matsci.training.baseline_metrics`), parity plots and a learning curve (``plots``)
      in the run folder;
    - strings ``"bundled:emt"`` and ``"bundled:spacegroup"`` stand for the example databases
      shipped with ``matsci-data``, ``"bundled:emt-train"``, ``"bundled:emt-val"`` and
      ``"bundled:emt-test"`` for the EMT data as three extxyz files (in lists and mappings
      too);
    - without test data (a data module whose ``has_test_data`` is false: no ``test`` source),
      ``fit`` skips the test after training and says so.

    Errors in the config end in one short message (see :func:`main`).

    Parameters
    ----------
    args
        Command-line arguments (default ``sys.argv[1:]``).
    run
        Run the subcommand (``True``) or only parse and instantiate.
    """

    def __init__(self, args: Sequence[str] | None = None, run: bool = True) -> None:
        super().__init__(
            model_class=LightningModule,
            datamodule_class=LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            save_config_kwargs={"overwrite": True},
            seed_everything_default=0,
            parser_class=_MatsciParser,
            # config.yaml keeps the config as given ("bundled:emt", not the resolved path).
            save_config_callback=_SaveConfigAsGiven,
            parser_kwargs={
                "prog": "matsci",
                "description": DESCRIPTION,
                "formatter_class": _DescriptionAsWritten,
            },
            # Tasks configure their optimizer and scheduler from their own arguments.
            auto_configure_optimizers=False,
            # Tasks save plain-data hyperparameters themselves (weights_only checkpoints).
            load_from_checkpoint_support=False,
            args=None if args is None else list(args),
            run=run,
        )

    @staticmethod
    @override
    def subcommands() -> dict[str, set[str]]:
        """``fit``, ``validate`` and ``test``; ``matsci predict`` has its own parser."""
        commands = dict(LightningCLI.subcommands())
        commands.pop("predict")
        return commands

    @override
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """Add the run folder, checkpoint, normalizer and pretrained-encoder options."""
        parser.add_argument(
            "--run_name",
            type=str | None,
            default=None,
            help="Name of the run's log folder (default: the config file's name, else 'matsci').",
        )
        parser.add_argument(
            "--runs_dir", type=str, default="runs", help="Folder that holds the runs' folders."
        )
        parser.add_argument(
            "--test_after_fit",
            type=bool,
            default=True,
            help="After fit, test the best checkpoint and report its metrics.",
        )
        parser.add_argument(
            "--baselines",
            type=bool,
            default=True,
            help="Print the obvious baseline (training mean, zero, majority class) beside each "
            "test metric; it reads the training split once.",
        )
        parser.add_argument(
            "--plots",
            type=bool,
            default=True,
            help="After testing, write parity plots and a learning curve into the run folder.",
        )
        parser.add_lightning_class_args(ModelCheckpoint, "model_checkpoint")
        parser.set_defaults(
            {
                "model_checkpoint.monitor": "val/loss",
                "model_checkpoint.mode": "min",
                "model_checkpoint.filename": "best",
                "model_checkpoint.save_last": True,
            }
        )
        parser.add_lightning_class_args(FitNormalizers, "normalizers")
        parser.add_lightning_class_args(PretrainedEncoder, "pretrained_encoder")

    @override
    def before_instantiate_classes(self) -> None:
        """Name the run, refuse encoder instances, prepare the fixed callbacks, resolve names.

        ``"bundled:<name>"`` strings become the paths of the bundled databases in
        ``self.config`` (what is instantiated); ``config.yaml`` and the checkpoints' run record
        keep the config as given.
        """
        config = self._subcommand_config(self.config)
        if config.get("run_name") is None:
            files = config.get("config") or []
            config.run_name = Path(str(files[0])).stem if files else "matsci"
        init_args = config.get("model", {}).get("init_args", {})
        if init_args is not None and init_args.get("encoder") is not None:
            raise ConfigError(
                "model.init_args.encoder: give encoder_class and encoder_kwargs instead, so "
                "checkpoints can rebuild the encoder"
            )
        dumped = json.loads(self.parser.dump(self.config, format="json", skip_unset=False))
        run_config = json.dumps(dumped[self.subcommand] if self.subcommand else dumped)
        self.trainer_defaults["callbacks"] = [CheckTargets(), RunInfo(run_config)]
        self.save_config_kwargs["given"] = config.clone()
        self.config = resolve_bundled(self.config)

    @override
    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """The trainer, with CSV and TensorBoard loggers in one run folder by default."""
        trainer_config = self._subcommand_config(self.config_init).get("trainer") or {}
        if trainer_config.get("logger") in (None, True) and "logger" not in kwargs:
            config = self._subcommand_config(self.config)
            runs_dir = Path(str(config.runs_dir))
            root = trainer_config.get("default_root_dir")
            if root is not None and not runs_dir.is_absolute():
                runs_dir = Path(str(root)) / runs_dir  # the Trainer's folder holds the runs
            name = str(config.run_name)
            version = next_version(runs_dir, name)
            kwargs["logger"] = [
                CSVLogger(runs_dir, name=name, version=version),
                TensorBoardLogger(runs_dir, name=name, version=version, default_hp_metric=False),
            ]
        trainer = super().instantiate_trainer(**kwargs)
        # The target check runs first: normalizer fitting would otherwise meet a missing key.
        callbacks: list[Callback] = trainer.callbacks  # type: ignore[attr-defined]
        callbacks.sort(key=lambda callback: not isinstance(callback, CheckTargets))
        return trainer

    def _subcommand_config(self, config: Namespace) -> Namespace:
        """The part of a parsed config that belongs to the subcommand being run."""
        part: Namespace = config[self.subcommand] if self.subcommand else config
        return part

    def after_fit(self) -> None:
        """Test the best checkpoint, report its metrics and write the plots."""
        config = self.config[self.subcommand]
        if self.trainer.state.status == TrainerStatus.INTERRUPTED:
            return
        self._report_throughput()
        testable = getattr(self.datamodule, "has_test_data", True)
        if config.test_after_fit and not testable:
            print("matsci: no test data (give data.init_args.test), so no test after fit")
        if config.test_after_fit and testable:
            checkpoint = self.trainer.checkpoint_callback
            best = getattr(checkpoint, "best_model_path", "") if checkpoint else ""
            results = self.trainer.test(
                self.model, datamodule=self.datamodule, ckpt_path=best or None, verbose=False
            )
            self._report(
                results, best or "the final weights", plots=config.plots, baselines=config.baselines
            )
        elif config.plots:
            self._learning_curve(None)
        print(f"matsci: run folder {self.trainer.log_dir}")

    def test(self, **kwargs: Any) -> None:
        """Run ``trainer.test`` and report the metrics with units instead of Lightning's table.

        Parameters
        ----------
        **kwargs
            Arguments of :meth:`lightning.pytorch.Trainer.test`.
        """
        verbose = kwargs.pop("verbose", True)
        results = self.trainer.test(**kwargs, verbose=False)
        config = self.config[self.subcommand]
        ckpt_path = kwargs.get("ckpt_path")
        if verbose:
            self._report(
                results,
                ckpt_path or "the initial weights",
                plots=config.plots,
                baselines=config.baselines,
            )
        print(f"matsci: run folder {self.trainer.log_dir}")

    # -- reports -----------------------------------------------------------------------------

    def _report_throughput(self) -> None:
        """Print the training totals of an :class:`AtomThroughputMonitor`, if there is one."""
        for callback in self.trainer.callbacks:  # type: ignore[attr-defined]
            if isinstance(callback, AtomThroughputMonitor) and callback.total.steps:
                total = callback.total
                print(
                    f"matsci: training throughput {total.atoms_per_second:,.0f} atoms/s, "
                    f"{total.structures_per_second:,.1f} structures/s, waiting for data "
                    f"{100 * total.data_wait_fraction:.1f}% of the time"
                )

    def _report(
        self,
        results: Sequence[Mapping[str, float]],
        source: str,
        *,
        plots: bool,
        baselines: bool = True,
    ) -> None:
        metrics = {name: value for result in results for name, value in result.items()}
        found = self._baselines() if baselines else None
        table = metrics_table(metrics, baselines=None if found is None else found[0])
        legend = "" if found is None else baseline_legend(found[1])
        print(f"\ntest metrics of {source}:\n{table}\n" + (f"{legend}\n" if legend else ""))
        if not plots or not self.trainer.is_global_zero:
            return
        written = self._parity_plots()
        curve = self._learning_curve(source if source.endswith(".ckpt") else None)
        if curve is not None:
            written.append(curve)
        if written:
            print("matsci: plots " + ", ".join(str(path) for path in written))

    def _baselines(self) -> tuple[dict[str, float], dict[str, str]] | None:
        """Baseline metrics on the test split and what each key's baseline predicts.

        ``None`` where the model is no matsci task or the data module has no training and
        test loaders (the column is then left out). Under DDP each process scores the share of
        the test split its loader gives it.
        """
        model, datamodule = self.model, self.datamodule
        if datamodule is None or not isinstance(model, BaseTaskModule | MultiTaskLitModule):
            return None
        try:
            if isinstance(model, MultiTaskLitModule):
                datasets = getattr(datamodule, "datasets", None)
                if not isinstance(datasets, Mapping):
                    return None
                train: Any = {name: data.train_dataloader() for name, data in datasets.items()}
                test: Any = {name: data.test_dataloader() for name, data in datasets.items()}
            else:
                train, test = datamodule.train_dataloader(), datamodule.test_dataloader()
        except MisconfigurationException:  # a data module without a train or test loader
            return None
        kinds = {
            f"{entry.log_prefix}{key}": BASELINE_DESCRIPTIONS[kind]
            for entry in model.task_entries
            for key in entry.task.task_keys
            if (kind := baseline_kind(entry.task, key)) is not None
        }
        return baseline_metrics(model, train, test), kinds

    def _parity_plots(self) -> list[Path]:
        folder = Path(self.trainer.log_dir or ".")
        folder.mkdir(parents=True, exist_ok=True)
        model, datamodule = self.model, self.datamodule
        if datamodule is None:
            return []
        model.eval()
        if isinstance(model, MultiTaskLitModule):
            datasets = getattr(datamodule, "datasets", None)
            if not isinstance(datasets, Mapping):
                return []
            written: list[Path] = []
            for dataset, task_ids in model.dataset_tasks.items():
                for task_id in task_ids:
                    loader = datasets[dataset].test_dataloader()
                    written += write_parity_plots(
                        model.task(task_id), loader, folder, prefix=f"{task_id}/"
                    )
            return written
        if not isinstance(model, BaseTaskModule):
            return []
        return write_parity_plots(model, datamodule.test_dataloader(), folder)

    def _learning_curve(self, checkpoint: str | None) -> Path | None:
        """Learning curve of this run's CSV log, or of the run that wrote ``checkpoint``."""
        folder = Path(self.trainer.log_dir or ".")
        candidates = [
            Path(logger.log_dir) / "metrics.csv"
            for logger in self.trainer.loggers
            if isinstance(logger, CSVLogger)
        ]
        if checkpoint is not None:
            candidates.append(Path(checkpoint).resolve().parent.parent / "metrics.csv")
        for metrics_csv in candidates:
            path = folder / "learning_curve.png"
            if metrics_csv.is_file() and learning_curve_plot(metrics_csv, path):
                return path
        return None


class _SaveConfigAsGiven(SaveConfigCallback):
    """Lightning's ``config.yaml`` writer, given the config before ``bundled:`` names resolve."""

    def __init__(
        self,
        parser: LightningArgumentParser,
        config: Namespace,
        given: Namespace | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(parser, config if given is None else given, **kwargs)


def run_command(argv: Sequence[str]) -> None:
    """Run one ``matsci`` subcommand (the work of :func:`matsci.cli.main` after ``--help``).

    Parameters
    ----------
    argv
        Command-line arguments without the program name, starting with the subcommand.

    Raises
    ------
    SystemExit
        With status 2 on a user error (0 after ``--help`` or ``--print_config``).
    """
    argv = list(argv)
    program, sys.argv = sys.argv, ["matsci", *argv]  # LightningCLI reads sys.argv
    try:
        with warnings.catch_warnings():
            # Lightning's SaveConfigCallback uses an argument that jsonargparse deprecated.
            warnings.filterwarnings("ignore", message=_JSONARGPARSE_NOTICES)
            if argv[:1] == ["predict"]:
                predict_main(argv[1:])
            elif argv[:1] == ["export"]:
                export_main(argv[1:])
            else:
                MatsciCLI()
    except _USER_ERRORS as error:
        if os.environ.get(DEBUG_VARIABLE, "") not in ("", "0"):
            raise
        print(f"matsci: error: {shorten(str(error))}", file=sys.stderr)
        print(f"(set {DEBUG_VARIABLE}=1 for the traceback)", file=sys.stderr)
        raise SystemExit(2) from None
    finally:
        sys.argv = program
