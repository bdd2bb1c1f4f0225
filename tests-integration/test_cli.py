"""The `matsci` command on every example config: fit a few steps, test, plots, predict, errors."""

import csv
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import ase.db
import ase.io
import pytest
import torch
import yaml

from matsci.cli import main
from matsci.data.examples import bundled_dataset_path

EXAMPLES_DIR = Path(__file__).parents[1] / "examples"
EXAMPLES = sorted(EXAMPLES_DIR.glob("*.yaml"))
PNG = b"\x89PNG\r\n\x1a\n"
# A handful of steps: two training batches (one epoch, so validation runs), one batch each of
# validation and test.
FAST = [
    "--trainer.max_epochs", "1", "--trainer.max_steps", "2", "--trainer.limit_train_batches", "2",
    "--trainer.limit_val_batches", "1", "--trainer.limit_test_batches", "1",
    "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
]  # fmt: skip
# Examples whose test inputs are random (noise drawn anew each run).
RANDOM_TEST_INPUTS = {"denoise_pretrain"}
# Examples that start from another example's run.
NEEDS = {"forces_finetune": "denoise_pretrain"}


def _fit(name: str, *extra: str) -> Path:
    main(["fit", "--config", str(EXAMPLES_DIR / f"{name}.yaml"), *FAST, *extra])
    return Path("runs") / name / "version_0"


@pytest.fixture(scope="module")
def example_run(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """Fit an example once per module (a handful of steps) in a shared folder; its run folder.

    Runs go to ``<folder>/runs``, as in a checkout: forces_finetune finds the run of
    denoise_pretrain by its relative path, as written in its config.
    """
    folder = tmp_path_factory.mktemp("examples")
    done: dict[str, Path] = {}

    def run(name: str) -> Path:
        if name not in done:
            if name in NEEDS:
                run(NEEDS[name])
            cwd = Path.cwd()
            os.chdir(folder)
            try:
                done[name] = folder / _fit(name)
            finally:
                os.chdir(cwd)
        return done[name]

    return run


def _test_metrics(run: Path) -> dict[str, float]:
    with (run / "metrics.csv").open() as file:
        rows = list(csv.DictReader(file))
    return {k: float(v) for row in rows for k, v in row.items() if k.startswith("test/") and v}


def _is_png(path: Path) -> bool:
    return path.read_bytes()[:8] == PNG and path.stat().st_size > 5_000


def test_every_example_is_covered() -> None:
    names = {path.stem for path in EXAMPLES}
    expected = {"forces_schnet", "forces_equivariant", "scalar_regression", "spacegroup",
                "denoise_pretrain", "forces_finetune", "multitask"}  # fmt: skip
    assert expected <= names


@pytest.mark.parametrize("example", EXAMPLES, ids=[path.stem for path in EXAMPLES])
def test_example_fits_tests_and_plots(
    example: Path,
    example_run: Callable[[str], Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    run = example_run(example.stem)
    assert "test metrics of" in capsys.readouterr().out
    assert (run / "checkpoints" / "best.ckpt").is_file()
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert (run / "config.yaml").is_file()
    assert list(run.glob("events.out.tfevents.*"))
    plots = sorted(run.glob("*.png"))
    assert run / "learning_curve.png" in plots
    assert any(path.name.startswith(("parity_", "confusion_")) for path in plots)
    assert all(_is_png(path) for path in plots), plots
    metrics = _test_metrics(run)
    assert metrics, "no test metrics were logged"

    monkeypatch.chdir(tmp_path)
    main(["test", "--config", str(run / "config.yaml"), "--ckpt_path",
          str(run / "checkpoints" / "best.ckpt"), "--plots", "false", *FAST])  # fmt: skip
    tested = _test_metrics(Path("runs") / example.stem / "version_0")
    assert tested.keys() == metrics.keys()
    if example.stem not in RANDOM_TEST_INPUTS:
        assert tested == pytest.approx(metrics, rel=1e-5)


def test_forces_example_learns_and_prints_units(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    longer = ["--trainer.max_steps", "12", "--trainer.limit_train_batches", "12",
              "--trainer.limit_val_batches", "2", "--trainer.limit_test_batches", "2",
              "--plots", "false"]  # fmt: skip
    run = _fit("forces_schnet", *longer)
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("matsci: training throughput") for line in lines)
    units = {line.split()[0]: line.split()[-1] for line in lines if line.startswith("test/")}
    assert units["test/force/mae"] == "eV/Å"
    assert units["test/energy/mae_per_atom"] == "eV/atom"
    assert units["test/stress/mae"] == "eV/Å³"
    # Half an epoch already beats predicting zero forces (about 0.65 eV/Å on this data).
    mae = _test_metrics(run)["test/force/mae"]
    assert mae < 0.4, mae


def test_print_config_reruns_to_the_same_result(
    example_run: Callable[[str], Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    first = example_run("scalar_regression")
    monkeypatch.chdir(tmp_path)
    config = str(EXAMPLES_DIR / "scalar_regression.yaml")
    with pytest.raises(SystemExit) as info:
        main(["fit", "--config", config, *FAST, "--print_config"])
    assert info.value.code == 0
    printed = capsys.readouterr().out
    assert yaml.safe_load(printed)["trainer"]["max_steps"] == 2
    Path("printed.yaml").write_text(printed)
    main(["fit", "--config", "printed.yaml"])  # the printed config names the same run
    second = Path("runs/scalar_regression/version_0")
    assert _test_metrics(second) == pytest.approx(_test_metrics(first), rel=1e-6)
    assert (second / "config.yaml").read_text() == (first / "config.yaml").read_text()


def test_predict_writes_one_row_per_structure(
    example_run: Callable[[str], Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checkpoint = str(example_run("multitask") / "checkpoints" / "best.ckpt")
    monkeypatch.chdir(tmp_path)
    for dataset, name, suffix in (("emt", "emt", ".extxyz"), ("symmetry", "spacegroup", ".db")):
        with ase.db.connect(bundled_dataset_path(name)) as database:
            structures = [row.toatoms() for row in database.select(limit=12)]
        ase.io.write(f"{name}{suffix}", structures)
        main(["predict", "--ckpt_path", checkpoint, "--data", f"{name}{suffix}",
              "--dataset", dataset, "--output", f"{dataset}.csv"])  # fmt: skip
        with open(f"{dataset}.csv") as file:
            rows = list(csv.DictReader(file))
        assert len(rows) == len(structures)
        assert [row["formula"] for row in rows] == [a.get_chemical_formula() for a in structures]
    assert float(rows[0]["CrystalSymmetryClassificationTask_spacegroup_probability"]) <= 1
    assert 1 <= int(rows[0]["CrystalSymmetryClassificationTask_spacegroup"]) <= 230


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (["--model", "matsci.tasks.physics.ForceRegresionTask"],
         "cannot use class_path 'matsci.tasks.physics.ForceRegresionTask'"),
        (["--model.init_args.lrr", "0.01"], "did you mean 'lr'"),
        (["--data.init_args.dataset", "missing.db"], "'missing.db'"),
        (["--data.init_args.keys", "[energy, band_gap]"], "no numeric target ['band_gap']"),
    ],
    ids=["unknown-class-path", "wrong-argument", "missing-file", "absent-target-key"],
)  # fmt: skip
def test_user_errors_end_in_one_clear_message(
    override: list[str],
    message: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as info:
        main(["fit", "--config", str(EXAMPLES_DIR / "forces_schnet.yaml"), *FAST, *override])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("matsci: error: ")
    assert message in err
    assert "Traceback" not in err
    assert len(err.splitlines()) == 2  # the message and the hint about MATSCI_DEBUG


def test_the_console_command_reports_errors_without_a_traceback(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text((EXAMPLES_DIR / "spacegroup.yaml").read_text().replace("bundled:", "x"))
    result = subprocess.run(
        [sys.executable, "-m", "matsci.cli", "fit", "--config", str(config)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "matsci: error: " in result.stderr
    assert "xspacegroup" in result.stderr


def test_three_file_example_beats_the_zero_force_predictor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """examples/forces_three_files.yaml (train/val/test extxyz files), cut down to 2 epochs.

    Its test file is the test split of forces_schnet.yaml, so the zero-force baseline is the
    same. Measured (one thread, smaller SchNet): force MAE 0.21 eV/Å against 0.65 eV/Å, in
    about 30 s.
    """
    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        capsys.readouterr()
        main(["fit", "--config", str(EXAMPLES_DIR / "forces_three_files.yaml"),
              "--trainer.max_epochs", "2", "--trainer.enable_progress_bar", "false",
              "--trainer.enable_model_summary", "false", "--plots", "false",
              "--model.init_args.encoder_kwargs.hidden_channels", "32",
              "--model.init_args.encoder_kwargs.num_filters", "32",
              "--model.init_args.encoder_kwargs.num_interactions", "2"])  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    rows = {
        cells[0]: cells[1:]
        for line in capsys.readouterr().out.splitlines()
        if line.startswith("test/") and len(cells := line.split()) >= 3
    }
    mae, zero_mae = (float(value) for value in rows["test/force/mae"][:2])
    assert zero_mae == pytest.approx(0.646, abs=0.001)  # forces_schnet.yaml's test split
    assert mae < 0.5 * zero_mae, (mae, zero_mae)
    saved = yaml.safe_load((Path("runs/forces_three_files/version_0/config.yaml")).read_text())
    assert saved["data"]["init_args"]["train"] == "bundled:emt-train"
