import pytest

from matsci.cli import ConfigError, shorten
from matsci.cli._errors import ShortErrorParser

UNION = """Parser key "model":
  Does not validate against any of the Union subtypes
  Subtypes: [<class 'lightning.pytorch.core.module.LightningModule'>, <class 'NoneType'>]
  Errors:
    - Problem with given class_path 'matsci.tasks.physics.ForceRegressionTask':
        Option 'lrr' is not accepted
    - Expected a <class 'NoneType'>
  Given value type: <class 'dict'>
  Given value: {'class_path': 'matsci.tasks.physics.ForceRegressionTask'}"""


def test_shorten_keeps_the_key_and_the_reason_only() -> None:
    message = shorten(UNION)
    assert message.startswith("model: cannot use class_path 'matsci.tasks.physics.ForceRegr")
    assert "Option 'lrr' is not accepted" in message
    assert "Given value" not in message
    assert "NoneType" not in message


def test_shorten_suggests_the_closest_argument_name() -> None:
    assert "did you mean 'lr'" in shorten(UNION)


def test_shorten_of_an_instantiation_error_keeps_the_constructor_message() -> None:
    message = shorten(
        "Does not validate against any of the Union subtypes\nSubtypes: [A, None]\nErrors:\n"
        "  - AtomsDataModule(dataset='x.db'): no such file\n"
        "  - Expected a <class 'NoneType'>\nGiven value type: <class 'dict'>\nGiven value: {}"
    )
    assert message == "AtomsDataModule(dataset='x.db'): no such file"


def test_shorten_leaves_plain_messages_alone() -> None:
    assert shorten("energy_scale must be > 0") == "energy_scale must be > 0"


def test_parser_errors_raise_config_error_without_usage_text() -> None:
    parser = ShortErrorParser(prog="matsci")
    parser.add_argument("--number", type=int)
    with pytest.raises(ConfigError, match="number") as info:
        parser.parse_args(["--number", "three"])
    assert "usage" not in str(info.value)
