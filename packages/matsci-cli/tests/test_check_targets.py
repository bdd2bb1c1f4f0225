import pytest

from matsci.cli import ConfigError, check_targets
from matsci.data import AtomsDataModule
from matsci.data.examples import bundled_dataset_path


def _data(keys: list[str] | None) -> AtomsDataModule:
    data = AtomsDataModule(bundled_dataset_path("emt"), keys=keys, batch_size=4)
    data.setup("fit")
    return data


def test_passes_when_every_key_is_there() -> None:
    check_targets("ForceRegressionTask", ["energy", "force"], _data(None))


def test_names_the_missing_key_and_the_keys_available() -> None:
    with pytest.raises(
        ConfigError,
        match=r"target key \['band_gap'\] of ScalarRegressionTask is not in '.*emt.db'; keys "
        r"available: \['energy', 'force', 'stress'\]",
    ):
        check_targets("ScalarRegressionTask", ["band_gap"], _data(None))


def test_says_when_the_key_is_in_the_file_but_not_requested() -> None:
    with pytest.raises(ConfigError, match=r"add \['stress'\] to the data module's keys"):
        check_targets("ForceRegressionTask", ["energy", "stress"], _data(["energy"]))
