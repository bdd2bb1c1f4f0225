"""``matsci export``: write a trained force field as a file the field's simulators load."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Final

import torch

from matsci.cli._errors import ConfigError, ShortErrorParser

FORMATS: Final = ("metatomic",)
"""The formats ``matsci export`` writes: ``metatomic`` (an ``AtomisticModel`` TorchScript file
for metatomic's engines: ASE, torch-sim, i-PI, LAMMPS builds with metatomic)."""

_DTYPES: Final = {"float32": torch.float32, "float64": torch.float64}


def export_parser() -> ShortErrorParser:
    """The parser of ``matsci export``.

    Returns
    -------
    jsonargparse.ArgumentParser
        The checkpoint (positional), ``--format``, ``--output``, ``--dtype``, ``--task``,
        ``--cutoff``.
    """
    parser = ShortErrorParser(
        prog="matsci export",
        description=(
            "Write a trained force field (a ForceRegressionTask checkpoint of `matsci fit`) as a "
            "standalone model file. --format metatomic writes a metatomic AtomisticModel: one "
            "TorchScript file holding the encoder, the energy head, the fitted scale, shift "
            "and reference energies, the cutoff and the trained elements, which "
            "metatomic-ase, metatomic-torchsim, i-PI and LAMMPS builds with metatomic load "
            "with torch and metatomic alone. Needs matsci-simulate[metatomic]."
        ),
    )
    parser.add_argument("ckpt_path", type=str, help="Checkpoint of `matsci fit`.")
    parser.add_argument(
        "--format", type=str, default="metatomic", help=f"One of {', '.join(FORMATS)}."
    )
    parser.add_argument(
        "--output", "-o", type=str | None, default=None,
        help="The file to write (default: <checkpoint name>.pt beside the checkpoint).",
    )  # fmt: skip
    parser.add_argument(
        "--dtype", type=str, default="float32", help="float32 or float64: the model's dtype."
    )
    parser.add_argument(
        "--task", type=str | None, default=None,
        help="Multi-task checkpoints: the force task, as <dataset>/<task>.",
    )  # fmt: skip
    parser.add_argument(
        "--cutoff", type=float | None, default=None,
        help="Neighbour cutoff in Å (default: the one recorded in the checkpoint).",
    )  # fmt: skip
    return parser


def export_main(args: Sequence[str]) -> None:
    """Run ``matsci export`` with the given arguments (without ``export``).

    Parameters
    ----------
    args
        Command-line arguments.

    Raises
    ------
    ConfigError
        On an unknown format or dtype, a missing checkpoint, or when ``matsci-simulate`` with
        its ``metatomic`` extra is not installed.
    """
    config = export_parser().parse_args(list(args))
    if config.format not in FORMATS:
        raise ConfigError(
            f"matsci export: unknown --format {config.format!r}; expected one of {list(FORMATS)}"
        )
    if config.dtype not in _DTYPES:
        raise ConfigError(
            f"matsci export: unknown --dtype {config.dtype!r}; expected float32 or float64"
        )
    checkpoint = Path(config.ckpt_path)
    if not checkpoint.is_file():
        raise ConfigError(f"matsci export: no checkpoint file at {checkpoint}")
    try:
        from matsci.simulate import export_metatomic
    except ImportError as error:
        raise ConfigError(
            "matsci export --format metatomic needs matsci-simulate[metatomic] "
            f"(install matsci-cli[export]): {error}"
        ) from error
    output = Path(config.output) if config.output else checkpoint.with_suffix(".pt")
    written = export_metatomic(
        checkpoint, output, dtype=_DTYPES[config.dtype], task=config.task, cutoff=config.cutoff
    )
    print(f"matsci: metatomic model written to {written}")
