"""The data module's separate train/val/test sources from configs and the command line."""

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from matsci.cli import MatsciCLI, main, resolve_bundled
from matsci.cli import _predict as predict_module
from matsci.data.examples import bundled_dataset_path, write_split_files

QUIET = ["--trainer.enable_progress_bar", "false", "--plots", "false"]


@pytest.fixture(scope="module")
def triple(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The bundled EMT split as three small extxyz files (16 train, 30 val, 30 test)."""
    folder = tmp_path_factory.mktemp("triple")
    return write_split_files(bundled_dataset_path("emt"), folder, max_train=16)


def _sources_config(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` with its data module's one-file form removed (sources come from the CLI)."""
    init_args = config["data"]["init_args"]
    for name in ("dataset", "split"):
        init_args.pop(name)
    return config


def test_fit_reads_train_val_and_test_given_on_the_command_line(
    write_config: Callable[[dict[str, Any], str], Path],
    tiny_force_config: Callable[[], dict[str, Any]],
    triple: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = write_config(_sources_config(tiny_force_config()), "three.yaml")
    main(["fit", "--config", str(config), "--runs_dir", str(tmp_path / "runs"), *QUIET,
          "--data.train", str(triple["train"]), "--data.val", str(triple["val"]),
          "--data.test", str(triple["test"])])  # fmt: skip
    out = capsys.readouterr().out
    assert "test metrics of" in out
    run = tmp_path / "runs" / "three" / "version_0"
    saved = yaml.safe_load((run / "config.yaml").read_text())["data"]["init_args"]
    assert (saved["train"], saved["val"], saved["test"]) == tuple(
        str(triple[name]) for name in ("train", "val", "test")
    )
    assert "dataset" not in saved or saved["dataset"] is None
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    hparams = checkpoint["datamodule_hyper_parameters"]
    assert hparams["train"] == str(triple["train"])
    assert hparams["radius_graph"] == {"cutoff": 3.5, "max_neighbors": None}


def test_fit_without_test_data_says_so_instead_of_testing(
    write_config: Callable[[dict[str, Any], str], Path],
    tiny_force_config: Callable[[], dict[str, Any]],
    triple: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = _sources_config(tiny_force_config())
    config["data"]["init_args"].update(train=str(triple["train"]), val=str(triple["val"]))
    path = write_config(config, "no_test.yaml")
    main(["fit", "--config", str(path), "--runs_dir", str(tmp_path / "runs"), *QUIET])
    out = capsys.readouterr().out
    assert "matsci: no test data (give data.init_args.test), so no test after fit" in out
    assert "test metrics of" not in out


def test_lists_mappings_and_bundled_names_reach_the_data_module(
    write_config: Callable[[dict[str, Any], str], Path],
    tiny_force_config: Callable[[], dict[str, Any]],
    triple: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = write_config(_sources_config(tiny_force_config()), "mixed.yaml")
    monkeypatch.setattr("sys.argv", ["matsci"])
    cli = MatsciCLI(
        ["--config", str(config),
         "--data.train", f"{{emt: [bundled:emt-train, {triple['train']}], more: bundled:emt-val}}",
         "--data.val", "[bundled:emt-val]", "--data.test", "bundled:emt-test",
         "--data.mixture_weights", "{emt: 2.0, more: 1.0}", "--data.max_atoms", "200"],
        run=False,
    )  # fmt: skip
    hparams = cli.datamodule.hparams
    bundled = {name: str(bundled_dataset_path(f"emt-{name}")) for name in ("train", "val", "test")}
    assert hparams["train"] == {"emt": [bundled["train"], str(triple["train"])],
                                "more": bundled["val"]}  # fmt: skip
    assert hparams["val"] == [bundled["val"]]
    assert hparams["test"] == bundled["test"]
    assert hparams["mixture_weights"] == {"emt": 2.0, "more": 1.0}
    assert hparams["max_atoms"] == 200


def test_a_missing_source_ends_in_one_line_naming_the_argument(
    write_config: Callable[[dict[str, Any], str], Path],
    tiny_force_config: Callable[[], dict[str, Any]],
    triple: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = write_config(_sources_config(tiny_force_config()), "missing.yaml")
    with pytest.raises(SystemExit) as info:
        main(["fit", "--config", str(config), "--runs_dir", str(tmp_path / "runs"),
              "--data.train", str(triple["train"]), "--data.val", "missing.extxyz"])  # fmt: skip
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert re.search(r"AtomsDataModule\(val='missing.extxyz'\): no such file or folder", err)


def test_resolve_bundled_knows_the_three_files() -> None:
    resolved = resolve_bundled({"train": {"a": ["bundled:emt-train"]}, "test": "bundled:emt-test"})
    assert resolved == {
        "train": {"a": [str(bundled_dataset_path("emt-train"))]},
        "test": str(bundled_dataset_path("emt-test")),
    }
    with pytest.raises(Exception, match=r"no bundled dataset 'emt-tset'.*'bundled:emt-test'"):
        resolve_bundled("bundled:emt-tset")


def test_predict_takes_a_bundled_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls: list[tuple[Any, ...]] = []
    monkeypatch.setattr(
        predict_module, "predict_to_file", lambda *args, **kwargs: calls.append(args) or 0
    )
    monkeypatch.chdir(tmp_path)
    predict_module.predict_main(["--ckpt_path", "model.ckpt", "--data", "bundled:emt-test"])
    assert calls == [("model.ckpt", str(bundled_dataset_path("emt-test")),
                      "emt-test_predictions.csv")]  # fmt: skip
