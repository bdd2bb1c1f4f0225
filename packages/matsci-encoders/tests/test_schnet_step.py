"""The cheaper SchNet step computes what PyG's ``InteractionBlock`` path computes.

``SchNetEncoder.forward`` no longer calls the blocks (``MessagePassing`` dispatch, a cutoff
per block, autograd's ``softplus`` derivative); it computes their mathematics with their
weights. The reference here is the original path, ``h + block(h, edge_index, d, e)``: the
outputs, forces and every parameter gradient of a force-training loss (a derivative of a
derivative) must agree.
"""

import math

import pytest
import torch
from encoder_checks import random_periodic_structure
from torch import Tensor
from torch.nn import functional as F
from torch_geometric.data import Batch

from matsci.encoders._schnet import SchNetEncoder, _ssp
from matsci.transforms import edge_vectors

CUTOFF = 4.0


def encoder_and_batch(dtype: torch.dtype) -> tuple[SchNetEncoder, Batch]:
    encoder = SchNetEncoder(hidden_channels=16, num_filters=12, num_interactions=3,
                            num_gaussians=10, cutoff=CUTOFF).to(dtype)  # fmt: skip
    structures = [random_periodic_structure(seed, 5 + seed, CUTOFF, dtype) for seed in range(3)]
    return encoder, Batch.from_data_list(structures)


def reference_embedding(encoder: SchNetEncoder, batch: Batch, pos: Tensor) -> Tensor:
    """Atom features through PyG's own ``GaussianSmearing`` and ``InteractionBlock.forward``."""
    _, distance = edge_vectors(pos, batch.edge_index, batch.cell, batch.cell_offsets, batch.batch)
    distance = distance.clamp(max=encoder.cutoff)
    expansion = encoder.distance_expansion(distance)
    h = encoder.embedding(batch.atomic_numbers)
    for block in encoder.interactions:
        h = h + block(h, batch.edge_index, distance, expansion)
    return h


def encoder_embedding(encoder: SchNetEncoder, batch: Batch, pos: Tensor) -> Tensor:
    moved = batch.clone()
    moved.pos = pos
    point = encoder(moved).point_embedding
    assert point is not None
    return point


def training_quantities(
    encoder: SchNetEncoder, batch: Batch, embed: object
) -> tuple[Tensor, Tensor, list[Tensor]]:
    """Features, forces and the parameter gradients of an energy + force loss."""
    pos = batch.pos.clone().requires_grad_(True)
    h = embed(encoder, batch, pos)  # type: ignore[operator]
    energy = (h * torch.linspace(-1.0, 1.0, h.shape[1], dtype=h.dtype)).sum()
    (force,) = torch.autograd.grad(energy, pos, create_graph=True)
    loss = energy.square() + (force - 0.1).square().sum()
    gradients = torch.autograd.grad(loss, list(encoder.parameters()))
    return h, force, list(gradients)


def test_outputs_forces_and_parameter_gradients_match_the_pyg_blocks(dtype: torch.dtype) -> None:
    encoder, batch = encoder_and_batch(dtype)
    expected = training_quantities(encoder, batch, reference_embedding)
    actual = training_quantities(encoder, batch, encoder_embedding)
    tolerance = {"rtol": 1e-4, "atol": 1e-5} if dtype == torch.float32 else {}
    torch.testing.assert_close(actual[0], expected[0], **tolerance)
    assert float(expected[1].abs().max()) > 1e-3  # forces that are not zero
    torch.testing.assert_close(actual[1], expected[1], **tolerance)
    names = [name for name, _ in encoder.named_parameters()]
    assert len(actual[2]) == len(names) == 1 + 3 * 9
    for name, got, want in zip(names, actual[2], expected[2], strict=True):
        assert float(want.abs().max()) > 0, name  # every weight takes part in the loss
        torch.testing.assert_close(got, want, **tolerance, msg=lambda text, n=name: f"{n}: {text}")


# PyG's CFConv holds the filter network (``mlp``) a second time, as ``conv.nn``.
BLOCK_KEYS = ("mlp.0.weight", "mlp.0.bias", "mlp.2.weight", "mlp.2.bias", "conv.lin1.weight",
              "conv.lin2.weight", "conv.lin2.bias", "lin.weight", "lin.bias", "conv.nn.0.weight",
              "conv.nn.0.bias", "conv.nn.2.weight", "conv.nn.2.bias")  # fmt: skip


def test_the_state_dict_keeps_pygs_layout() -> None:
    encoder, _ = encoder_and_batch(torch.float32)
    blocks = [f"interactions.{k}.{name}" for k in range(3) for name in BLOCK_KEYS]
    expected = ["embedding.weight", "distance_expansion.offset", *blocks]
    assert sorted(encoder.state_dict()) == sorted(expected)


def test_shifted_softplus_values_and_two_derivatives() -> None:
    x = torch.tensor([-30.0, -2.0, 0.0, 0.5, 3.0, 25.0], dtype=torch.float64, requires_grad=True)
    value = _ssp(x)
    torch.testing.assert_close(value, F.softplus(x) - math.log(2.0), rtol=0, atol=0)
    assert float(value[2]) == 0.0
    (first,) = torch.autograd.grad(value.sum(), x, create_graph=True)
    sigmoid = 1.0 / (1.0 + torch.exp(-x.detach()))
    torch.testing.assert_close(first, sigmoid)
    (second,) = torch.autograd.grad(first.sum(), x)
    torch.testing.assert_close(second, sigmoid * (1.0 - sigmoid))


@pytest.mark.parametrize("point", [-3.0, 0.3, 4.0])
def test_shifted_softplus_passes_gradcheck_twice(point: float) -> None:
    x = (point + torch.randn(5, dtype=torch.float64)).requires_grad_(True)
    assert torch.autograd.gradcheck(_ssp, (x,))
    assert torch.autograd.gradgradcheck(_ssp, (x,))
