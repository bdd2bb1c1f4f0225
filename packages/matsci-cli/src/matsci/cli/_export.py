"""``matsci export``: write a trained force field as a file the field's simulators load."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Final

import torch

from matsci.cli._errors import ConfigError, ShortErrorParser

FORMATS: Final = {"metatomic": ".pt", "torch-export": ".pt2"}
"""The formats ``matsci export`` writes, with their default suffix: ``metatomic`` (an
``AtomisticModel`` TorchScript file for metatomic's engines: ASE, torch-sim, i-PI, LAMMPS builds
with metatomic) and ``torch-export`` (a :func:`torch.export` program of energy, forces and
stress that runs with torch alone). A direct-force checkpoint gives forces only in both."""

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
            "Write a trained force field (a ForceRegressionTask or GradFreeForceRegression "
            "checkpoint of `matsci fit`) as a standalone model file. A GradFreeForceRegression "
            "(direct forces) is written with its forces alone: metatomic's "
            "non_conservative_force output, or a torch.export program returning (forces,). "
            "--format metatomic writes a metatomic AtomisticModel: one "
            "TorchScript file holding the encoder, the energy head, the fitted scale, shift "
            "and reference energies, the cutoff and the trained elements, which "
            "metatomic-ase, metatomic-torchsim, i-PI and LAMMPS builds with metatomic load "
            "with torch and metatomic alone. --format torch-export writes a torch.export "
            "program (.pt2) of energy, forces and stress from positions, atomic numbers and a "
            "neighbour list, which runs with torch alone (torch.export.load). Needs "
            "matsci-simulate[metatomic] (install matsci-cli[export])."
        ),
    )
    parser.add_argument("ckpt_path", type=str, help="Checkpoint of `matsci fit`.")
    parser.add_argument(
        "--format", type=str, default="metatomic", help=f"One of {', '.join(FORMATS)}."
    )
    parser.add_argument(
        "--output", "-o", type=str | None, default=None,
        help="The file to write (default: beside the checkpoint, .pt or .pt2 by format).",
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
        from matsci.simulate import export_metatomic, export_program
    except ImportError as error:
        raise ConfigError(
            f"matsci export needs matsci-simulate[metatomic] (install matsci-cli[export]): {error}"
        ) from error
    suffix = FORMATS[config.format]
    output = Path(config.output) if config.output else checkpoint.with_suffix(suffix)
    export = export_metatomic if config.format == "metatomic" else export_program
    written = export(
        checkpoint, output, dtype=_DTYPES[config.dtype], task=config.task, cutoff=config.cutoff
    )
    print(f"matsci: {config.format} model written to {written}")
