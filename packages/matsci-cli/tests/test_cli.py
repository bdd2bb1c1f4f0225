import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from matsci.cli import CHECKPOINT_KEY, main

PNG = b"\x89PNG\r\n\x1a\n"


def test_fit_writes_checkpoints_config_logs_and_plots(fitted: Path) -> None:
    assert (fitted / "checkpoints" / "best.ckpt").is_file()
    assert (fitted / "checkpoints" / "last.ckpt").is_file()
    assert (fitted / "metrics.csv").is_file()
    assert list(fitted.glob("events.out.tfevents.*"))
    saved = yaml.safe_load((fitted / "config.yaml").read_text())
    assert saved["run_name"] == "tiny"
    assert saved["data"]["init_args"]["dataset"] == "bundled:emt"
    for name in ("parity_energy", "parity_force", "parity_stress", "learning_curve"):
        assert (fitted / f"{name}.png").read_bytes()[:8] == PNG


def test_checkpoints_name_the_model_class_and_hold_the_config(fitted: Path) -> None:
    checkpoint = torch.load(fitted / "checkpoints" / "best.ckpt", weights_only=True)
    assert checkpoint["matsci"]["model_class"].endswith("ForceRegressionTask")  # the module's
    config = json.loads(checkpoint[CHECKPOINT_KEY]["config"])
    assert config["model"]["init_args"]["compute_stress"] is True
    assert config["data"]["init_args"]["dataset"] == "bundled:emt"  # as given


def test_fit_fits_the_normalizers(fitted: Path) -> None:
    checkpoint = torch.load(fitted / "checkpoints" / "last.ckpt", weights_only=True)
    assert float(checkpoint["state_dict"]["energy_scale"]) != 1.0


def test_fit_prints_the_test_metrics_with_units(
    write_config: Callable[[dict[str, Any], str], Path],
    tiny_force_config: Callable[[], dict[str, Any]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = write_config(tiny_force_config(), "tiny.yaml")
    main(["fit", "--config", str(config), "--runs_dir", str(tmp_path / "runs"), "--plots", "false"])
    out = capsys.readouterr().out
    assert "test metrics of" in out
    assert any(line.split()[-1] == "eV/Å" for line in out.splitlines() if "force/mae" in line)
    assert not list((tmp_path / "runs").rglob("*.png"))


def test_test_subcommand_reports_a_checkpoint(
    fitted: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = fitted / "config.yaml"
    checkpoint = fitted / "checkpoints" / "best.ckpt"
    main(["test", "--config", str(config), "--ckpt_path", str(checkpoint),
          "--runs_dir", str(tmp_path / "runs")])  # fmt: skip
    out = capsys.readouterr().out
    assert "test/energy/mae_per_atom" in out
    folder = tmp_path / "runs" / "tiny" / "version_0"
    assert (folder / "parity_force.png").is_file()
    assert (folder / "learning_curve.png").is_file()  # from the training run's log


def test_test_rebuilds_the_model_from_the_checkpoint_arguments(
    fitted: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A config whose heads are wider than the checkpoint's: Lightning's CLI takes the model's
    # arguments from the checkpoint, so the trained weights fit.
    config = yaml.safe_load((fitted / "config.yaml").read_text())
    config["model"]["init_args"]["output_kwargs"] = {"hidden_dim": 16}
    path = tmp_path / "wider.yaml"
    path.write_text(yaml.safe_dump(config))
    checkpoint = fitted / "checkpoints" / "best.ckpt"
    main(["test", "--config", str(path), "--ckpt_path", str(checkpoint),
          "--runs_dir", str(tmp_path / "runs"), "--plots", "false"])  # fmt: skip
    assert "test/force/mae" in capsys.readouterr().out


def test_default_root_dir_holds_the_runs(
    write_config: Callable[[dict[str, Any], str], Path],
    tiny_force_config: Callable[[], dict[str, Any]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)  # nothing may land in the working folder
    config = tiny_force_config()
    config["trainer"]["default_root_dir"] = str(tmp_path / "root")
    path = write_config(config, "rooted.yaml")
    main(["fit", "--config", str(path), "--test_after_fit", "false", "--plots", "false"])
    run = tmp_path / "root" / "runs" / "rooted" / "version_0"
    assert (run / "checkpoints" / "best.ckpt").is_file()
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert (run / "metrics.csv").is_file()
    assert (run / "config.yaml").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["root", "rooted.yaml"]


def test_print_config_is_complete(
    write_config: Callable[[dict[str, Any], str], Path],
    tiny_force_config: Callable[[], dict[str, Any]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = write_config(tiny_force_config(), "tiny.yaml")
    with pytest.raises(SystemExit) as info:
        main(["fit", "--config", str(config), "--print_config"])
    assert info.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["seed_everything"] == 0
    assert printed["model_checkpoint"]["monitor"] == "val/loss"
    assert printed["normalizers"]["enabled"] is True
    assert printed["model"]["init_args"]["lr"] == pytest.approx(3e-3)  # ForceRegressionTask's
    assert printed["data"]["init_args"]["transform"]["init_args"]["cutoff"] == 3.5


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"model": {"class_path": "matsci.tasks.physics.ForceRegresionTask"}},
            "cannot use class_path 'matsci.tasks.physics.ForceRegresionTask'",
        ),
        ({"model": {"init_args": {"lrr": 0.01}}}, "did you mean 'lr'"),
        ({"data": {"init_args": {"dataset": "missing.db"}}}, "'missing.db'"),
        ({"data": {"init_args": {"keys": ["band_gap"]}}}, "band_gap"),
        (
            {"model": {"class_path": "matsci.tasks.core.ScalarRegressionTask",
                       "init_args": {"task_keys": ["band_gap"], "compute_stress": None}},
             "data": {"init_args": {"keys": None}}},
            r"target key \['band_gap'\] of ScalarRegressionTask is not in",
        ),
    ],
    ids=["unknown-class-path", "wrong-argument", "missing-file", "absent-key", "task-key"],
)  # fmt: skip
def test_user_errors_end_in_one_short_message(
    write_config: Callable[[dict[str, Any], str], Path],
    tiny_force_config: Callable[[], dict[str, Any]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    change: dict[str, Any],
    message: str,
) -> None:
    config = tiny_force_config()
    for section, values in change.items():
        config[section].update({k: v for k, v in values.items() if k != "init_args"})
        init_args = config[section]["init_args"]
        init_args.update(values.get("init_args", {}))
        for name in [name for name, value in init_args.items() if value is None]:
            del init_args[name]
    path = write_config(config, "bad.yaml")
    with pytest.raises(SystemExit) as info:
        main(["fit", "--config", str(path), "--runs_dir", str(tmp_path / "runs")])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.startswith("matsci: error: ")
    assert len(err.splitlines()) == 2
    assert re.search(message, err), err


def test_a_nested_scheduler_in_yaml_trains_and_is_stored_as_plain_data(
    tiny_force_config: Callable[[], dict[str, Any]],
    write_config: Callable[[dict[str, Any], str], Path],
    tmp_path: Path,
) -> None:
    # jsonargparse gives the inner scheduler dicts as Namespace objects; they must be taken as
    # the dicts they are (this failed with "Namespace is not plain data").
    config = tiny_force_config()
    warm_up_then_cosine = {
        "class_path": "torch.optim.lr_scheduler.SequentialLR",
        "init_args": {
            "schedulers": [
                {
                    "class_path": "torch.optim.lr_scheduler.LinearLR",
                    "init_args": {"start_factor": 0.1, "total_iters": 2},
                },
                {
                    "class_path": "torch.optim.lr_scheduler.CosineAnnealingLR",
                    "init_args": {"T_max": 4},
                },
            ],
            "milestones": [2],
        },
        "interval": "step",
    }
    config["model"]["init_args"]["scheduler_kwargs"] = warm_up_then_cosine
    main(["fit", "--config", str(write_config(config, "tiny.yaml")),
          "--runs_dir", str(tmp_path / "runs")])  # fmt: skip
    checkpoint = torch.load(
        tmp_path / "runs" / "tiny" / "version_0" / "checkpoints" / "last.ckpt",
        weights_only=True,
    )
    stored = checkpoint["hyper_parameters"]["scheduler_kwargs"]
    inner = stored["init_args"]["schedulers"]
    assert [entry["class_path"] for entry in inner] == [
        "torch.optim.lr_scheduler.LinearLR",
        "torch.optim.lr_scheduler.CosineAnnealingLR",
    ]
    # The parser fills in the class's defaults, but never an optimizer (the task's own).
    assert {"start_factor": 0.1, "total_iters": 2}.items() <= inner[0]["init_args"].items()
    assert "optimizer" not in inner[0]["init_args"]
