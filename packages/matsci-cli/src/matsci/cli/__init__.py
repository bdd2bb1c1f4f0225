"""The ``matsci`` command: train, test and predict with matsci tasks from YAML files.

``matsci fit --config examples/forces_schnet.yaml`` trains on the bundled EMT data, tests the
best checkpoint, prints the test metrics with their units and writes parity plots and a
learning curve next to the logs. Built on Lightning's ``LightningCLI``: every class is chosen
by its class path, with its arguments in YAML.
"""

from importlib.metadata import version as _version

from matsci.cli._cli import MatsciCLI, main
from matsci.cli._errors import ConfigError, shorten
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
