import subprocess
import sys
import tomllib
from pathlib import Path

import matsci.cli as package


def test_version_is_the_one_in_pyproject() -> None:
    with (Path(__file__).parents[1] / "pyproject.toml").open("rb") as handle:
        project = tomllib.load(handle)["project"]
    assert project["name"] == "matsci-cli"
    assert package.__version__ == project["version"]


def test_top_level_help_answers_without_importing_lightning() -> None:
    # `matsci --help` is the first thing a user runs; importing Lightning would cost seconds.
    script = (
        "import contextlib, io, sys\n"
        "from matsci.cli import main\n"
        "out = io.StringIO()\n"
        "with contextlib.redirect_stdout(out):\n"
        "    main(['--help'])\n"
        "assert 'matsci predict' in out.getvalue(), out.getvalue()\n"
        "heavy = sorted(name for name in sys.modules if name.split('.')[0] in "
        "('lightning', 'torch', 'jsonargparse'))\n"
        "print(heavy[:5])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120
    )
    assert result.stdout.strip() == "[]"


def test_no_subcommand_is_a_usage_error() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "matsci.cli"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    assert "expected a subcommand, one of {fit,validate,test,predict,export}" in result.stderr
