from types import SimpleNamespace
from typing import Any

import pytest
import torch
from training_helpers import encoder_kwargs

from matsci.data import AtomsDataModule, MultiDataModule
from matsci.data.examples import bundled_dataset_path
from matsci.tasks.core import MultiTaskLitModule, ScalarRegressionTask
from matsci.training import FitNormalizers


@pytest.fixture
def data() -> AtomsDataModule:
    data = AtomsDataModule(
        bundled_dataset_path("emt"), keys=["energy"], split=[0.1, 0.05, 0.05], batch_size=10
    )
    data.setup("fit")
    return data


def _energies(data: AtomsDataModule) -> torch.Tensor:
    return torch.cat([batch.energy.reshape(-1) for batch in data.train_dataloader()]).double()


def _trainer(datamodule: Any, ckpt_path: str | None = None) -> Any:
    return SimpleNamespace(ckpt_path=ckpt_path, datamodule=datamodule)


def test_fits_the_task_normalizer_on_the_training_split(data: AtomsDataModule) -> None:
    # An intensive head, whose normalizer holds the mean and std of the target itself.
    task = ScalarRegressionTask(**encoder_kwargs(), task_keys=["energy"], extensive_keys=[])
    FitNormalizers().setup(_trainer(data), task, "fit")
    energies = _energies(data)
    normalizer = task.normalizers["energy"]
    assert int(normalizer.count) == energies.numel() == 30  # 10% of the 300 structures
    torch.testing.assert_close(normalizer.mean.double(), energies.mean().reshape(1))
    torch.testing.assert_close(normalizer.std.double(), energies.std(unbiased=False).reshape(1))


def test_a_multi_task_module_fits_each_task_on_its_dataset(data: AtomsDataModule) -> None:
    task = ScalarRegressionTask(**encoder_kwargs(), task_keys=["energy"], extensive_keys=[])
    module = MultiTaskLitModule(("emt", task))
    FitNormalizers().setup(_trainer(MultiDataModule({"emt": data})), module, "fit")
    normalizer = module.task("emt/ScalarRegressionTask").normalizers["energy"]
    torch.testing.assert_close(normalizer.mean.double(), _energies(data).mean().reshape(1))
    with pytest.raises(ValueError, match=r"FitNormalizers: a MultiTaskLitModule .* got Atoms"):
        FitNormalizers().setup(_trainer(data), module, "fit")


@pytest.mark.parametrize(
    ("enabled", "ckpt_path", "stage"),
    [(False, None, "fit"), (True, "last.ckpt", "fit"), (True, None, "test")],
    ids=["disabled", "resumed", "test-stage"],
)
def test_leaves_normalizers_alone(
    data: AtomsDataModule, enabled: bool, ckpt_path: str | None, stage: str
) -> None:
    task = ScalarRegressionTask(**encoder_kwargs(), task_keys=["energy"])
    FitNormalizers(enabled=enabled).setup(_trainer(data, ckpt_path), task, stage)
    normalizer = task.normalizers["energy"]
    assert int(normalizer.count) == 0
    assert float(normalizer.mean) == 0.0
    assert float(normalizer.std) == 1.0
