import pytest
import torch
from torch import nn

from matsci.heads import OutputHead, resolve_module_class
from matsci.heads._resolve import build_module


def test_dotted_and_bare_names_resolve_under_torch_nn() -> None:
    assert resolve_module_class("torch.nn.SiLU", argument="a") is nn.SiLU
    assert resolve_module_class("LayerNorm", argument="a") is nn.LayerNorm


@pytest.mark.parametrize(
    "name",
    [
        "os.system",
        "subprocess.Popen",
        "builtins.eval",
        "torch.load",
        "torch.nn.functional.relu",
        "torch.nn.NotALayer",
        "torch.nn.init",
        "torch.nn.Parameter",
        "no_such_package.Layer",
    ],
)
def test_names_of_anything_but_module_classes_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match=r"does not name a subclass of torch\.nn"):
        resolve_module_class(name, argument="OutputBlock(activation)")


def test_module_classes_of_any_installed_package_resolve() -> None:
    # One policy with the resolver that restores encoders from checkpoints: installed code,
    # checked against the required base class, no namespace list to keep in sync.
    assert resolve_module_class("torch.nn.modules.activation.GELU", argument="a") is nn.GELU
    head = OutputHead(2, 8, input_dim=4, block_type="matsci.heads.OutputBlock")
    assert head(torch.zeros(3, 4)).shape == (3, 2)


def test_build_module_from_each_kind_of_spec() -> None:
    instance = nn.Tanh()
    assert build_module(instance, argument="a") is instance
    assert isinstance(build_module(nn.ReLU, argument="a"), nn.ReLU)
    norm = build_module("torch.nn.LayerNorm", 7, argument="a")
    assert isinstance(norm, nn.LayerNorm)
    assert norm.normalized_shape == (7,)
    assert isinstance(build_module(None, argument="a"), nn.Identity)
    with pytest.raises(TypeError, match=r"expected an nn\.Module instance"):
        build_module(3, argument="a")  # type: ignore[arg-type]
