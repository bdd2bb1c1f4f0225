from types import SimpleNamespace

import pytest
import torch

from matsci.cli import FitNormalizers
from matsci.data import AtomsDataModule
from matsci.data.examples import bundled_dataset_path
from matsci.tasks.physics import ForceRegressionTask
from matsci.transforms import PeriodicRadiusGraph


@pytest.fixture
def task_and_data() -> tuple[ForceRegressionTask, AtomsDataModule]:
    data = AtomsDataModule(
        bundled_dataset_path("emt"), keys=["energy", "force"],
        transform=PeriodicRadiusGraph(cutoff=3.0), split=[0.1, 0.05, 0.05], batch_size=10,
    )  # fmt: skip
    data.setup("fit")
    task = ForceRegressionTask(
        encoder_class="matsci.encoders.SchNetEncoder",
        encoder_kwargs={"hidden_channels": 4, "num_filters": 4, "num_interactions": 1,
                        "num_gaussians": 4, "cutoff": 3.0},
    )  # fmt: skip
    return task, data


def test_fits_reference_energies_and_force_scale_on_a_fresh_fit(
    task_and_data: tuple[ForceRegressionTask, AtomsDataModule],
) -> None:
    task, data = task_and_data
    FitNormalizers().setup(SimpleNamespace(ckpt_path=None, datamodule=data), task, "fit")  # type: ignore[arg-type]
    expected = ForceRegressionTask(encoder=task.encoder)
    expected.fit_normalizers(data.train_dataloader())
    assert float(task.energy_scale) != 1.0
    torch.testing.assert_close(task.energy_scale, expected.energy_scale)
    torch.testing.assert_close(task.reference_energies, expected.reference_energies)


@pytest.mark.parametrize(
    ("enabled", "ckpt_path", "stage"),
    [(False, None, "fit"), (True, "last.ckpt", "fit"), (True, None, "test")],
    ids=["disabled", "resumed", "test-stage"],
)
def test_leaves_normalizers_alone(
    task_and_data: tuple[ForceRegressionTask, AtomsDataModule],
    enabled: bool,
    ckpt_path: str | None,
    stage: str,
) -> None:
    task, data = task_and_data
    trainer = SimpleNamespace(ckpt_path=ckpt_path, datamodule=data)
    FitNormalizers(enabled=enabled).setup(trainer, task, stage)  # type: ignore[arg-type]
    assert float(task.energy_scale) == 1.0
