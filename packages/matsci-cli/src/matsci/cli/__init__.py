"""The ``matsci`` command: train, test and predict with matsci tasks from YAML files.

``matsci fit --config examples/forces_schnet.yaml`` trains on the bundled EMT data, tests the
best checkpoint, prints the test metrics with their units and writes parity plots and a
learning curve next to the logs. Built on Lightning's ``LightningCLI``: every class is chosen
by its class path, with its arguments in YAML.
"""

from __future__ import annotations

from importlib.metadata import version as _version
from typing import TYPE_CHECKING

from matsci.contract import lazy_exports

if TYPE_CHECKING:
    from matsci.cli._cli import MatsciCLI
    from matsci.cli._entry import main
    from matsci.cli._errors import ConfigError, shorten
    from matsci.cli._export import export_main
    from matsci.cli._paths import BUNDLED_PREFIX, next_version, resolve_bundled
    from matsci.cli._plots import (
        confusion_plot,
        learning_curve_plot,
        parity_plot,
        write_parity_plots,
    )
    from matsci.cli._predict import load_for_prediction, predict_main, predict_to_file
    from matsci.cli._report import UNITS, baseline_legend, metric_unit, metrics_table
    from matsci.cli._run_info import CHECKPOINT_KEY, RunInfo

__version__ = _version("matsci-cli")

# Names are imported on first use (PEP 562), so the `matsci` command answers `--help` without
# importing Lightning.
_MODULE_OF: dict[str, str] = {
    "MatsciCLI": "_cli",
    "main": "_entry",
    "ConfigError": "_errors",
    "shorten": "_errors",
    "export_main": "_export",
    "BUNDLED_PREFIX": "_paths",
    "next_version": "_paths",
    "resolve_bundled": "_paths",
    "confusion_plot": "_plots",
    "learning_curve_plot": "_plots",
    "parity_plot": "_plots",
    "write_parity_plots": "_plots",
    "load_for_prediction": "_predict",
    "predict_main": "_predict",
    "predict_to_file": "_predict",
    "UNITS": "_report",
    "baseline_legend": "_report",
    "metric_unit": "_report",
    "metrics_table": "_report",
    "CHECKPOINT_KEY": "_run_info",
    "RunInfo": "_run_info",
}

__all__ = [
    "BUNDLED_PREFIX",
    "CHECKPOINT_KEY",
    "UNITS",
    "ConfigError",
    "MatsciCLI",
    "RunInfo",
    "__version__",
    "baseline_legend",
    "confusion_plot",
    "export_main",
    "learning_curve_plot",
    "load_for_prediction",
    "main",
    "metric_unit",
    "metrics_table",
    "next_version",
    "parity_plot",
    "predict_main",
    "predict_to_file",
    "resolve_bundled",
    "shorten",
    "write_parity_plots",
]


__getattr__, __dir__ = lazy_exports(__name__, _MODULE_OF)
