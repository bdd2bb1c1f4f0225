"""The cheaper equivariant step computes what e3nn's modules compute, to float64 rounding."""

import importlib.util

import pytest
import torch
from e3nn import o3
from e3nn.nn import FullyConnectedNet

from matsci.encoders import EquivariantEncoder
from matsci.encoders._equivariant import _EdgeTensorProduct, _RadialMLP


@pytest.fixture
def float64_default() -> object:
    """Build modules in float64, so e3nn's constants are float64 too."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


@pytest.mark.usefixtures("float64_default")
@pytest.mark.parametrize(
    ("lmax", "hidden_irreps"), [(1, None), (2, None), (3, "4x0e+3x1o+2x2e+2x3o+1x1e")]
)
def test_edge_products_equal_e3nn_gather_product_scatter(
    lmax: int, hidden_irreps: str | None
) -> None:
    encoder = EquivariantEncoder(
        num_channels=6, lmax=lmax, num_layers=3, hidden_irreps=hidden_irreps
    )
    num_nodes, num_edges = 7, 40
    generator = torch.Generator().manual_seed(lmax)
    centre = torch.randint(num_nodes, (num_edges,), generator=generator)
    neighbour = torch.randint(num_nodes, (num_edges,), generator=generator)
    vectors = torch.randn(num_edges, 3, generator=generator)
    sh_full = o3.spherical_harmonics(encoder.irreps_sh, vectors, True, "component")
    for layer in encoder.layers:
        tp = layer.tensor_product
        x = torch.randn(num_nodes, tp.irreps_in1.dim, generator=generator, requires_grad=True)
        weights = torch.randn(num_edges, tp.weight_numel, generator=generator, requires_grad=True)
        sh = sh_full.detach().requires_grad_(True)
        messages = tp(x[neighbour], sh, weights)  # e3nn, the unchanged computation
        expected = messages.new_zeros(num_nodes, messages.shape[1]).index_add(0, centre, messages)
        parts = torch.split(sh, encoder.sh_dims, dim=1)
        got = layer.edge_products(x, parts, weights, centre, neighbour)
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
        # Gradients and second derivatives (force training differentiates twice).
        probe = torch.randn(expected.shape, generator=generator)
        grads = [
            torch.autograd.grad((out * probe).sum(), (x, sh, weights), create_graph=True)
            for out in (expected, got)
        ]
        for want, have in zip(*grads, strict=True):
            torch.testing.assert_close(have, want, rtol=1e-12, atol=1e-12)
        second = [torch.autograd.grad(g[1].pow(2).sum(), (x, weights)) for g in grads]
        for want, have in zip(*second, strict=True):
            torch.testing.assert_close(have, want, rtol=1e-11, atol=1e-11)


@pytest.mark.usefixtures("float64_default")
def test_radial_mlp_equals_e3nn_fully_connected_net() -> None:
    sizes = [5, 16, 16, 11]
    mlp = _RadialMLP(sizes)
    reference = FullyConnectedNet(sizes, torch.nn.functional.silu)
    reference.load_state_dict(mlp.state_dict())  # same parameter names and shapes
    x = torch.randn(9, 5, requires_grad=True)
    torch.testing.assert_close(mlp(x), reference(x), rtol=1e-13, atol=1e-13)
    (grad,) = torch.autograd.grad(mlp(x).sum(), x)
    (want,) = torch.autograd.grad(reference(x).sum(), x)
    torch.testing.assert_close(grad, want, rtol=1e-13, atol=1e-13)


def test_edge_products_keep_the_state_dict_of_e3nn() -> None:
    encoder = EquivariantEncoder(num_channels=4, lmax=2, num_layers=2)
    layer = encoder.layers[1]
    assert isinstance(layer.edge_products, _EdgeTensorProduct)
    state = encoder.state_dict()
    assert [k for k in state if "edge_products" in k] == []  # constants only, not saved
    assert tuple(state["layers.1.radial_mlp.layer2.weight"].shape) == (
        64,
        layer.tensor_product.weight_numel,
    )
    assert "layers.1.tensor_product._compiled_main_left_right._w3j_1_1_2" in state


def test_unknown_backend_is_refused() -> None:
    with pytest.raises(ValueError, match=r"tensor_product_backend='cueq'.*'cuequivariance'"):
        EquivariantEncoder(tensor_product_backend="cueq")  # type: ignore[arg-type]


@pytest.mark.skipif(
    importlib.util.find_spec("cuequivariance_torch") is not None,
    reason="cuequivariance-torch is installed",
)
def test_cuequivariance_backend_without_the_package_names_the_extra() -> None:
    with pytest.raises(ImportError, match=r"matsci-encoders\[cuequivariance\]"):
        EquivariantEncoder(lmax=1, tensor_product_backend="cuequivariance")
