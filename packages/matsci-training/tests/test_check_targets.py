from types import SimpleNamespace
from typing import Any

import pytest
from training_helpers import encoder_kwargs

from matsci.data import AtomsDataModule, MultiDataModule
from matsci.data.examples import bundled_dataset_path
from matsci.tasks.core import MultiTaskLitModule, ScalarRegressionTask
from matsci.training import CheckTargets, check_targets


def _data(keys: list[str] | None) -> AtomsDataModule:
    data = AtomsDataModule(bundled_dataset_path("emt"), keys=keys, batch_size=4)
    data.setup("fit")
    return data


def test_passes_when_every_key_is_there() -> None:
    check_targets("ForceRegressionTask", ["energy", "force"], _data(None))


def test_names_the_missing_key_and_the_keys_available() -> None:
    with pytest.raises(
        ValueError,
        match=r"target key \['band_gap'\] of ScalarRegressionTask is not in '.*emt.db'; keys "
        r"available: \['compressed', 'energy', 'force', 'stress'\]",
    ):
        check_targets("ScalarRegressionTask", ["band_gap"], _data(None))


def test_says_when_the_key_is_in_the_file_but_not_requested() -> None:
    with pytest.raises(ValueError, match=r"add \['stress'\] to the data module's keys"):
        check_targets("ForceRegressionTask", ["energy", "stress"], _data(["energy"]))


def _trainer(datamodule: Any) -> Any:
    return SimpleNamespace(datamodule=datamodule)


def test_the_callback_checks_single_and_multi_task_modules_at_setup() -> None:
    task = ScalarRegressionTask(**encoder_kwargs(), task_keys=["band_gap"])
    data = _data(None)
    with pytest.raises(ValueError, match=r"target key \['band_gap'\] of ScalarRegressionTask"):
        CheckTargets().setup(_trainer(data), task, "fit")
    CheckTargets().setup(_trainer(data), task, "predict")  # predictions need no targets
    module = MultiTaskLitModule(("emt", task, "gap"))
    with pytest.raises(ValueError, match=r"target key \['band_gap'\] of emt/gap is not in"):
        CheckTargets().setup(_trainer(MultiDataModule({"emt": data})), module, "fit")
    with pytest.raises(ValueError, match=r"datasets \['emt'\] have no data module; .* \['bulk'\]"):
        CheckTargets().setup(_trainer(MultiDataModule({"bulk": data})), module, "fit")
