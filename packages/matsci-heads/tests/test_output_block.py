import pytest
import torch
from torch import nn

from matsci.heads import OutputBlock


def test_forward_matches_hand_computed_value(dtype: torch.dtype) -> None:
    block = OutputBlock(2, activation="torch.nn.ReLU", input_dim=2, residual=True).to(dtype)
    with torch.no_grad():
        block.linear.weight.copy_(torch.tensor([[1.0, -1.0], [2.0, 0.5]]))
        block.linear.bias.copy_(torch.tensor([0.5, -10.0]))
    x = torch.tensor([[3.0, 1.0]], dtype=dtype)
    # relu([3 - 1 + 0.5, 6 + 0.5 - 10]) + x = [2.5, 0] + [3, 1]
    torch.testing.assert_close(block(x), torch.tensor([[5.5, 1.0]], dtype=dtype))


@pytest.mark.parametrize("shape", [(4, 7), (2, 3, 7), (2, 1, 2, 7)])
def test_any_leading_shape(shape: tuple[int, ...]) -> None:
    block = OutputBlock(5, activation=nn.SiLU(), norm=nn.BatchNorm1d, input_dim=7, residual=False)
    x = torch.randn(*shape)
    out = block(x)
    assert out.shape == (*shape[:-1], 5)
    # The leading dimensions are flattened for the norm and restored afterwards, row by row.
    torch.testing.assert_close(out, block(x.reshape(-1, 7)).reshape(out.shape))


def test_norm_class_is_built_with_output_dim() -> None:
    block = OutputBlock(6, norm="torch.nn.LayerNorm", input_dim=6)
    assert isinstance(block.norm, nn.LayerNorm)
    assert block.norm.normalized_shape == (6,)


def test_residual_with_different_sizes_is_refused_at_construction() -> None:
    with pytest.raises(ValueError, match="input_dim 8 != output_dim 16"):
        OutputBlock(16, input_dim=8)
    assert OutputBlock(16, input_dim=8, residual=False).output_dim == 16


def test_missing_input_dim_needs_lazy() -> None:
    with pytest.raises(ValueError, match="input_dim is required"):
        OutputBlock(4)


def test_lazy_block_infers_input_dim() -> None:
    block = OutputBlock(4, lazy=True, residual=False)
    assert block(torch.randn(3, 9)).shape == (3, 4)
    assert block.linear.in_features == 9


def test_lazy_residual_checks_sizes_at_first_forward() -> None:
    block = OutputBlock(4, lazy=True)
    with pytest.raises(ValueError, match="input_dim 9 != output_dim 4"):
        block(torch.randn(3, 9))
    good = OutputBlock(4, lazy=True)
    x = torch.randn(3, 4)
    assert good(x).shape == (3, 4)
    assert good.input_dim == 4


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"output_dim": 0, "input_dim": 3}, "output_dim=0"),
        ({"output_dim": 3, "input_dim": -1}, "input_dim=-1"),
        ({"output_dim": 3, "input_dim": 3, "dropout": 1.0}, "dropout=1.0"),
        (
            {"output_dim": 3, "input_dim": 3, "activation": "os.system"},
            r"does not name a subclass of torch\.nn",
        ),
    ],
)
def test_bad_arguments(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        OutputBlock(**kwargs)  # type: ignore[arg-type]


def test_dropout_only_in_training() -> None:
    block = OutputBlock(64, input_dim=64, dropout=0.5, residual=False)
    x = torch.randn(8, 64)
    block.eval()
    torch.testing.assert_close(block(x), block(x))
    block.train()
    assert not torch.equal(block(x), block(x))


def test_reset_parameters_changes_weights() -> None:
    block = OutputBlock(4, input_dim=4, norm="LayerNorm")
    before = block.linear.weight.detach().clone()
    block.reset_parameters()
    assert not torch.equal(before, block.linear.weight)


def test_repr_is_one_line_of_sizes() -> None:
    assert "input_dim=3, output_dim=4, residual=False" in repr(
        OutputBlock(4, input_dim=3, residual=False)
    )
