from pathlib import Path

import pytest
from jsonargparse import Namespace

from matsci.cli import ConfigError, next_version, resolve_bundled
from matsci.data.examples import bundled_dataset_path


def test_resolve_bundled_replaces_names_in_nested_configs_and_keeps_the_input() -> None:
    config = Namespace(
        data=Namespace(init_args=Namespace(dataset="bundled:emt")),
        datasets={"sg": {"dataset": "bundled:spacegroup"}},
        files=["bundled:emt", "other.db"],
    )
    resolved = resolve_bundled(config)
    assert resolved.data.init_args.dataset == str(bundled_dataset_path("emt"))
    assert resolved.datasets["sg"]["dataset"] == str(bundled_dataset_path("spacegroup"))
    assert resolved.files == [str(bundled_dataset_path("emt")), "other.db"]
    assert config.data.init_args.dataset == "bundled:emt"


def test_resolve_bundled_names_the_known_datasets_for_an_unknown_one() -> None:
    with pytest.raises(ConfigError, match=r"no bundled dataset 'qm9'.*'bundled:emt'"):
        resolve_bundled("bundled:qm9")


def test_next_version_counts_past_the_largest(tmp_path: Path) -> None:
    assert next_version(tmp_path, "run") == 0
    for name in ("version_0", "version_2", "notes"):
        (tmp_path / "run" / name).mkdir(parents=True)
    assert next_version(tmp_path, "run") == 3
