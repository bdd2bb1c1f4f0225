import pytest
import torch
from torch import nn

from matsci.contract import build_from_config, class_path, import_class, module_config, to_plain


def test_class_path_round_trip() -> None:
    assert class_path(nn.HuberLoss) == "torch.nn.modules.loss.HuberLoss"
    assert import_class(class_path(nn.HuberLoss), nn.Module, argument="a") is nn.HuberLoss


def test_class_path_refuses_local_classes() -> None:
    class Local(nn.Module):
        pass

    with pytest.raises(ValueError, match="defined inside a function"):
        class_path(Local)


def test_import_class_errors_name_the_argument() -> None:
    with pytest.raises(ValueError, match=r"loss_func: 'torch\.nn\.Nope' does not name a subclass"):
        import_class("torch.nn.Nope", nn.Module, argument="loss_func")
    with pytest.raises(ValueError, match=r"does not name a subclass of torch\.optim"):
        import_class("torch.nn.MSELoss", torch.optim.Optimizer, argument="optimizer")
    with pytest.raises(ValueError, match="does not name a subclass"):
        import_class("no_such_package.Thing", nn.Module, argument="encoder_class")


def test_module_config_reads_back_constructor_arguments() -> None:
    config = module_config(
        nn.BCEWithLogitsLoss(pos_weight=torch.tensor([3.0])), nn.Module,
        argument="loss_func", default_module="torch.nn",
    )  # fmt: skip
    assert config == {
        "class_path": "torch.nn.modules.loss.BCEWithLogitsLoss",
        "init_args": {"pos_weight": [3.0]},
    }
    rebuilt = build_from_config(config, nn.Module, argument="loss_func")
    assert isinstance(rebuilt, nn.BCEWithLogitsLoss)
    assert torch.equal(rebuilt.pos_weight, torch.tensor([3.0]))


@pytest.mark.parametrize(
    "spec",
    ["L1Loss", "torch.nn.L1Loss", nn.L1Loss, nn.L1Loss(), {"class_path": "torch.nn.L1Loss"}],
)
def test_every_spelling_gives_the_same_config(spec: object) -> None:
    config = module_config(spec, nn.Module, argument="loss_func", default_module="torch.nn")
    assert config == {"class_path": "torch.nn.modules.loss.L1Loss", "init_args": {}}


def test_non_default_arguments_are_kept() -> None:
    config = module_config(nn.HuberLoss(delta=0.25), nn.Module, argument="l", default_module="")
    assert config["init_args"] == {"delta": 0.25}
    assert build_from_config(config, nn.HuberLoss, argument="l").delta == 0.25


def test_bad_specs() -> None:
    with pytest.raises(TypeError, match="expected a dotted name"):
        module_config(3, nn.Module, argument="loss_func", default_module="torch.nn")
    with pytest.raises(ValueError, match="needs the keys 'class_path'"):
        module_config({"init_args": {}}, nn.Module, argument="loss_func", default_module="")
    with pytest.raises(ValueError, match="not plain data"):
        to_plain({"f": print}, argument="encoder_kwargs")
    with pytest.raises(ValueError, match=r"rejected \{'delta_typo': 1\.0\}"):
        build_from_config(
            {"class_path": "torch.nn.HuberLoss", "init_args": {"delta_typo": 1.0}},
            nn.Module,
            argument="loss_func",
        )
