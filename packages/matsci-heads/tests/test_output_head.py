import copy
import io

import pytest
import torch
from torch import nn

from matsci.contract.testing import assert_compile_matches_eager
from matsci.heads import BLOCK_TYPES, OutputBlock, OutputHead


@pytest.mark.parametrize("input_dim", [1, 16, 48, 128, 301])
@pytest.mark.parametrize("hidden_dim", [8, 128])
@pytest.mark.parametrize("output_dim", [1, 3, 10])
@pytest.mark.parametrize("num_hidden", [0, 1, 3])
def test_output_shapes_for_any_embedding_size(
    input_dim: int, hidden_dim: int, output_dim: int, num_hidden: int
) -> None:
    head = OutputHead(output_dim, hidden_dim, num_hidden, input_dim=input_dim, activation="SiLU")
    assert head(torch.randn(5, input_dim)).shape == (5, output_dim)
    assert len(head.blocks) == num_hidden + 2


@pytest.mark.parametrize("shape", [(6, 12), (2, 4, 12), (12,)])
def test_any_leading_shape(shape: tuple[int, ...]) -> None:
    head = OutputHead(2, 16, input_dim=12, norm="LayerNorm", activation="SiLU")
    assert head(torch.randn(*shape)).shape == (*shape[:-1], 2)


def test_residual_placement() -> None:
    head = OutputHead(3, 32, num_hidden=2, input_dim=32)
    flags = [block.residual for block in head.blocks]
    assert flags == [True, True, True, False]
    head = OutputHead(3, 32, num_hidden=2, input_dim=20)
    assert [block.residual for block in head.blocks] == [False, True, True, False]
    head = OutputHead(3, 32, num_hidden=2, input_dim=32, residual=False)
    assert not any(block.residual for block in head.blocks)


def test_last_block_has_no_norm_and_uses_act_last() -> None:
    head = OutputHead(1, 8, input_dim=4, norm="LayerNorm", act_last="torch.nn.Sigmoid")
    last = head.blocks[-1]
    assert isinstance(last.norm, nn.Identity)
    assert isinstance(last.activation, nn.Sigmoid)
    out = head(torch.randn(100, 4) * 10)
    assert bool(((out > 0) & (out < 1)).all())


def test_activation_instance_is_copied_per_block() -> None:
    norm = nn.LayerNorm(8)
    head = OutputHead(1, 8, num_hidden=2, input_dim=8, norm=norm)
    norms = [block.norm for block in list(head.blocks)[:-1]]
    assert len({id(n) for n in norms}) == len(norms)
    assert all(n is not norm for n in norms)


def test_lazy_first_block_when_input_dim_unknown() -> None:
    head = OutputHead(2, 8)
    assert head(torch.randn(3, 17)).shape == (3, 2)


def test_block_type_by_name_and_bad_names() -> None:
    assert BLOCK_TYPES["OutputBlock"] is OutputBlock
    head = OutputHead(2, 8, input_dim=4, block_type="OutputBlock")
    assert isinstance(head.blocks[0], OutputBlock)
    with pytest.raises(ValueError, match="unknown block type; expected one of"):
        OutputHead(2, 8, input_dim=4, block_type="DenseBlock")
    with pytest.raises(TypeError, match="expected a block class"):
        OutputHead(2, 8, input_dim=4, block_type=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="num_hidden=-1"):
        OutputHead(2, 8, num_hidden=-1, input_dim=4)


def test_block_kwargs_reach_every_block() -> None:
    head = OutputHead(2, 8, num_hidden=2, input_dim=4, bias=False, dropout=0.2)
    assert all(isinstance(b, OutputBlock) and b.linear.bias is None for b in head.blocks)
    assert all(isinstance(block.dropout, nn.Dropout) for block in head.blocks)


def test_fits_a_fixed_random_target(dtype: torch.dtype) -> None:
    x = torch.randn(64, 10, dtype=dtype)
    target = torch.randn(64, 3, dtype=dtype)
    head = OutputHead(3, 64, num_hidden=2, input_dim=10, activation="SiLU").to(dtype)
    optimizer = torch.optim.Adam(head.parameters(), lr=3e-3)
    initial = nn.functional.mse_loss(head(x), target).item()
    for _ in range(400):
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(head(x), target)
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
    final = nn.functional.mse_loss(head(x), target).item()
    assert final < 1e-3 * initial
    assert final < 1e-3


def test_state_dict_round_trip_gives_identical_outputs() -> None:
    head = OutputHead(4, 32, num_hidden=2, input_dim=12, activation="SiLU", norm="LayerNorm")
    buffer = io.BytesIO()
    torch.save(head.state_dict(), buffer)
    buffer.seek(0)
    clone = OutputHead(4, 32, num_hidden=2, input_dim=12, activation="SiLU", norm="LayerNorm")
    clone.load_state_dict(torch.load(buffer, weights_only=True))
    x = torch.randn(9, 12)
    assert torch.equal(head(x), clone(x))
    # A fresh head really differs, so the equality above is due to the loaded weights.
    assert not torch.equal(head(x), copy.deepcopy(clone).apply(_reinit)(x))


def _reinit(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        module.reset_parameters()


def test_torch_compile_matches_eager() -> None:
    head = OutputHead(3, 32, num_hidden=1, input_dim=16, activation="SiLU", norm="LayerNorm")
    head.eval()
    inputs = [torch.randn(rows, 16) for rows in (5, 11)]
    assert_compile_matches_eager(head, inputs, rtol=1e-5, atol=1e-6)


@pytest.mark.gpu
def test_head_on_cuda_matches_cpu() -> None:
    head = OutputHead(3, 32, num_hidden=1, input_dim=16, activation="SiLU", norm="LayerNorm").eval()
    x = torch.randn(64, 16)
    expected = head(x)
    on_gpu = head.to("cuda")(x.to("cuda"))
    assert on_gpu.device.type == "cuda"
    torch.testing.assert_close(on_gpu.cpu(), expected, rtol=1e-4, atol=1e-5)
