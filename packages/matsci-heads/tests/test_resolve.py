import pytest
from torch import nn

from matsci.heads import allowed_namespaces, register_namespace, resolve_module_class
from matsci.heads._resolve import build_module


def test_dotted_and_bare_names_resolve_under_torch_nn() -> None:
    assert resolve_module_class("torch.nn.SiLU", argument="a") is nn.SiLU
    assert resolve_module_class("LayerNorm", argument="a") is nn.LayerNorm


@pytest.mark.parametrize(
    "name",
    ["os.system", "subprocess.Popen", "builtins.eval", "torch.load", "torch.nn.functional.relu"],
)
def test_names_outside_allow_list_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="outside the allowed namespaces"):
        resolve_module_class(name, argument="OutputBlock(activation)")


@pytest.mark.parametrize("name", ["torch.nn.NotALayer", "torch.nn.init", "torch.nn.Parameter"])
def test_names_that_are_not_modules_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match=r"is not a torch\.nn\.Module subclass"):
        resolve_module_class(name, argument="OutputBlock(activation)")


def test_registered_namespace_is_used() -> None:
    register_namespace("torch.nn.modules.activation")
    assert "torch.nn.modules.activation" in allowed_namespaces()
    assert resolve_module_class("torch.nn.modules.activation.GELU", argument="a") is nn.GELU


def test_register_namespace_rejects_non_paths() -> None:
    with pytest.raises(ValueError, match="not a dotted module path"):
        register_namespace("os; rm -rf")


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
