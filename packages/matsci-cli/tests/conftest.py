from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from matsci.cli import main


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _tiny_force_config() -> dict[str, Any]:
    return {
        "seed_everything": 0,
        "trainer": {
            "max_epochs": 1,
            "limit_train_batches": 3,
            "limit_val_batches": 1,
            "limit_test_batches": 1,
            "log_every_n_steps": 1,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "accelerator": "cpu",
        },
        "model": {
            "class_path": "matsci.tasks.physics.ForceRegressionTask",
            "init_args": {
                "compute_stress": True,
                "encoder_class": "matsci.encoders.SchNetEncoder",
                "encoder_kwargs": {
                    "hidden_channels": 8,
                    "num_filters": 8,
                    "num_interactions": 1,
                    "num_gaussians": 8,
                    "cutoff": 3.5,
                },
                "output_kwargs": {"hidden_dim": 8},
            },
        },
        "data": {
            "class_path": "matsci.data.AtomsDataModule",
            "init_args": {
                "dataset": "bundled:emt",
                "keys": ["energy", "force", "stress"],
                "transform": {
                    "class_path": "matsci.transforms.PeriodicRadiusGraph",
                    "init_args": {"cutoff": 3.5},
                },
                "split": [0.1, 0.02, 0.02],
                "batch_size": 4,
            },
        },
    }


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[[dict[str, Any], str], Path]:
    """Write a config dict as YAML into tmp_path and return its path."""

    def write(config: dict[str, Any], name: str = "tiny.yaml") -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(config))
        return path

    return write


@pytest.fixture(scope="session")
def tiny_force_config() -> Callable[[], dict[str, Any]]:
    """A fresh ForceRegressionTask config on the bundled EMT data for a few-second fit."""
    return _tiny_force_config


@pytest.fixture(scope="session")
def fitted(
    tmp_path_factory: pytest.TempPathFactory, tiny_force_config: Callable[[], dict[str, Any]]
) -> Path:
    """The run folder of one tiny fit (3 steps), shared by the tests that read it."""
    folder = tmp_path_factory.mktemp("fit")
    config = folder / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_force_config()))
    main(["fit", "--config", str(config), "--runs_dir", str(folder / "runs")])
    return folder / "runs" / "tiny" / "version_0"
