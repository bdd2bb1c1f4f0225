"""The ``matsci`` command's entry point: answers ``--help`` before importing the heavy stack.

Importing Lightning (and with it ``torch._dynamo``) takes most of the command's start-up, so
the top-level help, which needs none of it, is printed from here; every subcommand goes on to
:func:`matsci.cli._cli.run_command`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Final

DESCRIPTION: Final = """\
Train, test and use matsci tasks from YAML configuration files.

  matsci fit --config examples/forces_schnet.yaml     train, then test the best checkpoint
  matsci test --config CONFIG --ckpt_path CKPT        test a checkpoint
  matsci validate --config CONFIG --ckpt_path CKPT    validate a checkpoint
  matsci predict --ckpt_path CKPT --data FILE [--output OUT.csv|OUT.db]
                                                      predict for every structure of a file
                                                      (CKPT may be an exported .pt2 or .pt)
  matsci export CKPT --format metatomic -o MODEL.pt   a standalone model for simulators
  matsci fit --config CONFIG --print_config           the complete config, to save and re-run

Every task, encoder, data module, transform, loss, scheduler and callback is chosen by class
path with its arguments in YAML. Set MATSCI_DEBUG=1 to see tracebacks instead of short errors.
"""
"""What ``matsci --help`` prints first (also the description of the full parser)."""

DEBUG_VARIABLE: Final = "MATSCI_DEBUG"
"""Environment variable that, set to ``1``, shows full tracebacks instead of short messages."""

SUBCOMMANDS: Final = ("fit", "validate", "test", "predict", "export")
"""The subcommands of ``matsci``; ``matsci SUBCOMMAND --help`` lists each one's arguments."""


def main(args: Sequence[str] | None = None) -> None:
    """Run the ``matsci`` command; errors in the config end in one short message.

    ``matsci`` alone or ``matsci --help`` prints the usage at once, without importing
    Lightning. ``matsci fit|validate|test`` go to :class:`MatsciCLI`, ``matsci predict`` and
    ``matsci export`` to their own commands. A mistake the user can fix (unknown class path,
    misspelled argument, missing data file, target key absent from the data, ...) is printed as
    one line on standard error and ends the program with status 2; set ``MATSCI_DEBUG=1`` for
    the full traceback.

    Parameters
    ----------
    args
        Command-line arguments without the program name (default ``sys.argv[1:]``).

    Raises
    ------
    SystemExit
        With status 2 on a user error (0 after ``--help`` or ``--print_config``).
    """
    argv = list(sys.argv[1:] if args is None else args)
    if not argv:
        print(_usage(), file=sys.stderr)
        print(f"matsci: error: expected a subcommand, one of {_choices()}", file=sys.stderr)
        raise SystemExit(2)
    if argv in (["-h"], ["--help"]):
        print(_usage())
        return
    if argv[0] == "predict" and _exported_model(argv[1:]):
        _predict_exported(argv[1:])
        return
    from matsci.cli._cli import run_command  # the heavy stack, only for a real command

    run_command(argv)


def _exported_model(args: Sequence[str]) -> bool:
    """Whether ``--ckpt_path`` names an exported program (run without the training stack)."""
    for index, arg in enumerate(args):
        value = args[index + 1] if arg == "--ckpt_path" and index + 1 < len(args) else None
        if arg.startswith("--ckpt_path="):
            value = arg.split("=", 1)[1]
        if value is not None:
            return value.endswith((".pt2", ".pt"))  # matsci export's two formats
    return False


def _predict_exported(args: Sequence[str]) -> None:
    """``matsci predict`` of a ``.pt2`` file; its mistakes end in one line, as for the others."""
    from matsci.cli._predict_program import predict_program_main

    try:
        predict_program_main(args)
    except (ValueError, ImportError, OSError) as error:
        if os.environ.get(DEBUG_VARIABLE, "") not in ("", "0"):
            raise
        print(f"matsci: error: {error}", file=sys.stderr)
        print(f"(set {DEBUG_VARIABLE}=1 for the traceback)", file=sys.stderr)
        raise SystemExit(2) from None


def _choices() -> str:
    return "{" + ",".join(SUBCOMMANDS) + "}"


def _usage() -> str:
    return (
        f"usage: matsci [-h] {_choices()} ...\n\n{DESCRIPTION}\n"
        "subcommands (`matsci SUBCOMMAND --help` lists the arguments of each):\n"
        "  fit        train a model (then test its best checkpoint)\n"
        "  validate   run one evaluation epoch on the validation set\n"
        "  test       run one evaluation epoch on the test set\n"
        "  predict    predict with a checkpoint for every structure of a data source\n"
        "  export     write a trained force field as a standalone model file"
    )
