"""Sessions of the matsci workspace: `uvx nox` runs the default ones, `uvx nox -l` lists them."""

from __future__ import annotations

import subprocess
import tempfile
import tomllib
from pathlib import Path

import nox

nox.needs_version = ">=2024.10.9"
nox.options.default_venv_backend = "uv"
nox.options.reuse_venv = "yes"
nox.options.error_on_missing_interpreters = True
# `slow` is a default session (CI runs it as a job of its own, beside `integration`).
nox.options.sessions = [
    "tests", "install_alone", "typecheck", "lint", "docs", "integration", "slow",
    "exported_models",
]  # fmt: skip

PYTHON = "3.11"
ROOT = Path(__file__).parent
PACKAGES = sorted(path.name for path in (ROOT / "packages").iterdir() if path.is_dir())
EXTRAS = {
    "matsci-heads": ["e3nn"],
    "matsci-encoders": ["cuequivariance"],
    "matsci-data": ["aselmdb"],
    "matsci-cli": ["export"],
    "matsci-simulate": ["torchsim", "lammps", "metatomic"],
}
IMPORT_PATHS = {
    "matsci-ase": "matsci.ase",
    "matsci-cli": "matsci.cli",
    "matsci-contract": "matsci.contract",
    "matsci-data": "matsci.data",
    "matsci-encoders": "matsci.encoders",
    "matsci-heads": "matsci.heads",
    "matsci-simulate": "matsci.simulate",
    "matsci-transforms": "matsci.transforms",
    "matsci-tasks-core": "matsci.tasks.core",
    "matsci-tasks-physics": "matsci.tasks.physics",
    "matsci-training": "matsci.training",
}


def _sync(session: nox.Session, *args: str) -> None:
    """Install exactly what uv.lock says into the session's environment."""
    session.run_install(
        "uv",
        "sync",
        "--locked",
        "--no-default-groups",
        *args,
        env={"UV_PROJECT_ENVIRONMENT": session.virtualenv.location},
    )


def _sync_package(session: nox.Session, package: str, *groups: str) -> None:
    """Sync one package (its declared dependencies and extras only) plus dependency groups."""
    extras = [arg for extra in EXTRAS.get(package, []) for arg in ("--extra", extra)]
    group_args = [arg for group in groups for arg in ("--group", group)]
    # `--package` selects the member; root dependency groups stay available through `--group`.
    _sync(session, "--package", package, *extras, *group_args)


@nox.session(python=PYTHON)
@nox.parametrize("package", PACKAGES)
def tests(session: nox.Session, package: str) -> None:
    """Run one package's tests and doctests in an environment holding only that package."""
    _sync_package(session, package, "test")
    source = f"packages/{package}/src"
    session.run(
        "pytest",
        f"packages/{package}/tests",
        source,
        "--doctest-modules",
        "-m",
        "not gpu and not slow",
        *session.posargs,
    )


@nox.session(python=PYTHON)
def slow(session: nox.Session) -> None:
    """Run the tests marked ``slow`` across the workspace."""
    _sync(session, "--all-packages", "--all-extras", "--group", "test")
    session.run(
        "pytest", "packages", "tests-integration", "-m", "slow and not gpu", *session.posargs
    )


@nox.session(python=PYTHON)
def install_alone(session: nox.Session) -> None:
    """Build every wheel, then install and import each one alone in a fresh environment."""
    with tempfile.TemporaryDirectory() as tmp:
        dist = Path(tmp) / "dist"
        session.run("uv", "build", "--all-packages", "--wheel", "--out-dir", str(dist))
        for package in PACKAGES:
            env = Path(tmp) / f"venv-{package}"
            python = env / "bin" / "python"
            session.run("uv", "venv", "--quiet", "--python", PYTHON, str(env))
            extras = ",".join(EXTRAS.get(package, []))
            requirement = f"{package}[{extras}]" if extras else package
            # Only this repository's wheels and PyPI: a wrong version range between our packages
            # (which uv does not check inside the workspace) makes this resolution fail.
            session.run(
                "uv", "pip", "install", "--quiet", "--python", str(python),
                "--find-links", str(dist), requirement,
            )  # fmt: skip
            session.run(
                str(python), "-c",
                f"import {IMPORT_PATHS[package]} as m; print(m.__name__, m.__version__)",
                external=True,
            )  # fmt: skip
        # matsci.heads must import without e3nn and explain the extra when it is needed.
        bare = Path(tmp) / "venv-heads-bare"
        session.run("uv", "venv", "--quiet", "--python", PYTHON, str(bare))
        session.run(
            "uv", "pip", "install", "--quiet", "--python", str(bare / "bin" / "python"),
            "--find-links", str(dist), "matsci-heads",
        )  # fmt: skip
        session.run(
            str(bare / "bin" / "python"), "scripts/check_heads_without_e3nn.py", external=True
        )


@nox.session(python=PYTHON)
@nox.parametrize("package", PACKAGES)
def typecheck(session: nox.Session, package: str) -> None:
    """Run mypy --strict on one package's sources (its public, typed API)."""
    _sync_package(session, package, "typecheck")
    session.run(
        "mypy", "--strict", f"packages/{package}/src", env={"MYPYPATH": f"packages/{package}/src"}
    )


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """Run ruff check and ruff format --check over the whole repository."""
    _sync(session, "--only-group", "lint")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=PYTHON)
def docs(session: nox.Session) -> None:
    """Build the Sphinx site with warnings as errors and run its doctests."""
    _sync(session, "--all-packages", "--all-extras", "--group", "docs")
    # -E: read every page afresh, so a warning in an unchanged page is not hidden by the cache.
    session.run(
        "sphinx-build", "-E", "-W", "--keep-going", "-b", "html", "docs", "docs/_build/html"
    )
    # Every name in every package's __all__ has a docstring and an entry in the built inventory.
    session.run("python", "scripts/check_api_reference.py")
    session.run(
        "sphinx-build", "-E", "-W", "--keep-going", "-b", "doctest", "docs", "docs/_build/doctest"
    )


@nox.session(python=PYTHON)
def integration(session: nox.Session) -> None:
    """Run the tests that cross packages, in an environment holding the whole workspace.

    Tests marked ``slow`` (DDP, the long resume runs) run in the ``slow`` session instead.
    """
    _sync(session, "--all-packages", "--all-extras", "--group", "test")
    session.run("pytest", "tests-integration", "-m", "not gpu and not slow", *session.posargs)


# metatomic-torchsim (every release that installs beside metatomic-ase 0.1.4) needs torch-sim 0.5+,
# which needs Python 3.12: the environment that checks exported models uses it.
EXPORT_CHECK_PYTHON = "3.12"
EXPORT_CHECK_LOCKED = ["torch", "metatomic-torch", "metatomic-ase", "ase"]
EXPORT_CHECK_UNLOCKED = ["metatomic-torchsim==0.1.7"]


def _locked(*names: str) -> list[str]:
    """``name==version`` of each package, as uv.lock pins it (so uv takes it from its cache)."""
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    pins = []
    for name in names:
        versions = {package["version"] for package in lock["package"] if package["name"] == name}
        if len(versions) != 1:
            raise ValueError(f"uv.lock: expected one version of {name}, found {sorted(versions)}")
        pins.append(f"{name}=={versions.pop()}")
    return pins


def _interpreter(version: str) -> str:
    """A Python ``version`` interpreter: uv's own discovery, else pyenv's, else ``version``.

    With ``version`` itself, ``uv venv`` downloads that Python where it may.
    """
    found = subprocess.run(
        ["uv", "python", "find", "--no-python-downloads", version],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if found.returncode == 0:
        return found.stdout.strip()
    pyenv = Path.home() / ".pyenv" / "versions"
    candidates = sorted(pyenv.glob(f"{version}.*/bin/python{version}"), reverse=True)
    return str(candidates[0]) if candidates else version


@nox.session(python=PYTHON)
def exported_models(session: nox.Session) -> None:
    """Export both encoders for metatomic and check them where only torch and metatomic are.

    Trains a SchNet and an equivariant force field for a few steps, exports each in float32 and
    float64 and computes matsci's predictions on random structures (in the workspace
    environment), then loads the files in a fresh environment without matsci, Lightning or
    PyTorch Geometric and compares metatomic-ase's and metatomic-torchsim's predictions.
    """
    _sync(session, "--all-packages", "--all-extras")
    with tempfile.TemporaryDirectory() as tmp:
        models = Path(tmp) / "models"
        session.run("python", "scripts/export_reference_models.py", str(models))
        env = Path(tmp) / "venv-metatomic"
        python = str(env / "bin" / "python")
        interpreter = _interpreter(EXPORT_CHECK_PYTHON)
        session.run("uv", "venv", "--quiet", "--python", interpreter, str(env))
        session.run(
            "uv", "pip", "install", "--quiet", "--python", python,
            *_locked(*EXPORT_CHECK_LOCKED), *EXPORT_CHECK_UNLOCKED,
        )  # fmt: skip
        session.run(python, "scripts/check_exported_models.py", str(models), external=True)


@nox.session(python=PYTHON, default=False)
def gpu(session: nox.Session) -> None:
    """Run the tests marked ``gpu`` (needs a CUDA device; not a default session)."""
    _sync(session, "--all-packages", "--all-extras", "--group", "test")
    session.run("pytest", "packages", "tests-integration", "-m", "gpu", "-v", *session.posargs)
