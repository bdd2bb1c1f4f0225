import pytest
import torch
from torch import nn
from torch_geometric.data import Data

e3nn = pytest.importorskip("e3nn", reason="IrrepOutputBlock needs the matsci-heads[e3nn] extra")
from e3nn import o3  # noqa: E402

from matsci.contract.testing import (  # noqa: E402
    TOLERANCES,
    assert_compile_matches_eager,
    assert_equivariant,
    random_rotation,
)
from matsci.heads import IrrepOutputBlock, OutputHead  # noqa: E402


def _assert_equivariant(
    module: nn.Module, irreps_in: str, irreps_out: str, dtype: torch.dtype, leading: int = 12
) -> None:
    """Rotating the input by D_in(R) rotates the output by D_out(R); also under parity."""
    module = module.to(dtype)
    features = Data(x=o3.Irreps(irreps_in).randn(leading, -1, dtype=dtype))
    assert_equivariant(lambda data: module(data.x), features, o3.Irreps(irreps_out).D_from_matrix,
                       inputs={"x": o3.Irreps(irreps_in).D_from_matrix}, floor=1.0)  # fmt: skip


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("gated", [True, False])
def test_block_is_equivariant(dtype: torch.dtype, gated: bool, train: bool) -> None:
    irreps = "8x0e+4x1o+2x2e+2x0o"
    block = IrrepOutputBlock(irreps, irreps, activation="torch.nn.SiLU", gated=gated)
    block.train(train)
    _assert_equivariant(block, irreps, irreps, dtype)


@pytest.mark.parametrize("output_dim", ["1x1o", "1x0e", "2x0e+1x1o", "1x1o+1x0e"])
def test_head_is_equivariant(dtype: torch.dtype, output_dim: str) -> None:
    head = OutputHead(
        output_dim,
        "16x0e+8x1o+4x2e",
        num_hidden=1,
        input_dim="32x0e+8x1o+4x2e",
        activation="torch.nn.SiLU",
        block_type="IrrepOutputBlock",
    ).eval()
    _assert_equivariant(head, "32x0e+8x1o+4x2e", output_dim, dtype)


def test_vector_output_rotates_and_scalar_output_is_invariant(dtype: torch.dtype) -> None:
    irreps_in = o3.Irreps("128x0e+32x1o")
    vector_head = (
        OutputHead(
            "1x1o",
            "16x0e+8x1o",
            input_dim=irreps_in,
            activation="SiLU",
            block_type="IrrepOutputBlock",
        )
        .to(dtype)
        .eval()
    )
    scalar_head = (
        OutputHead(
            "1x0e",
            "16x0e+8x1o",
            input_dim=irreps_in,
            activation="SiLU",
            block_type="IrrepOutputBlock",
        )
        .to(dtype)
        .eval()
    )
    features = irreps_in.randn(20, -1, dtype=dtype)
    rotation = random_rotation(0, dtype)
    rotated = features @ irreps_in.D_from_matrix(rotation).T
    atol = TOLERANCES[dtype] * 10
    # A 1o vector (e3nn's l=1 basis is Cartesian x, y, z) rotates with D^1(R) = R.
    torch.testing.assert_close(
        vector_head(rotated),
        vector_head(features) @ o3.Irreps("1x1o").D_from_matrix(rotation).T,
        atol=atol,
        rtol=0,
    )
    torch.testing.assert_close(scalar_head(rotated), scalar_head(features), atol=atol, rtol=0)
    assert vector_head(features).shape == (20, 3)
    assert scalar_head(features).shape == (20, 1)


@pytest.mark.parametrize("shape", [(5,), (3, 5), (2, 4, 5)])
def test_any_leading_shape(shape: tuple[int, ...]) -> None:
    block = IrrepOutputBlock("1x1o+1x0e", "2x0e+1x1o", activation="SiLU", residual=False)
    assert block(torch.randn(*shape)).shape == (*shape[:-1], 4)


def test_residual_with_different_irreps_is_refused() -> None:
    with pytest.raises(ValueError, match=r"input_dim 8x0e\+4x1o != output_dim 1x1o"):
        IrrepOutputBlock("1x1o", "8x0e+4x1o")


def test_bad_irreps_are_refused() -> None:
    with pytest.raises(ValueError, match="expected irreps such as"):
        IrrepOutputBlock("16 scalars", "8x0e")


def test_norm_options() -> None:
    with_norm = IrrepOutputBlock("4x0e+2x1o", "4x0e+2x1o")
    assert isinstance(with_norm.norm, e3nn.nn.BatchNorm)
    without = IrrepOutputBlock("4x0e+2x1o", "4x0e+2x1o", norm=False)
    assert isinstance(without.norm, nn.Identity)
    custom = e3nn.nn.BatchNorm("4x0e+2x1o", instance=True)
    assert IrrepOutputBlock("4x0e+2x1o", "4x0e+2x1o", norm=custom).norm is custom


def test_unsorted_output_irreps_keep_their_layout() -> None:
    # The gate produces scalars first; the block must return the user's order (1o then 0e).
    block = IrrepOutputBlock(
        "1x1o+2x0e", "3x0e+2x1o", activation="SiLU", residual=False, norm=False
    )
    x = o3.Irreps("3x0e+2x1o").randn(50, -1)
    rotation = random_rotation(1, torch.float32)
    out = block(x @ o3.Irreps("3x0e+2x1o").D_from_matrix(rotation).T)
    expected = block(x) @ o3.Irreps("1x1o+2x0e").D_from_matrix(rotation).T
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def test_head_fits_a_fixed_random_target() -> None:
    irreps_in = o3.Irreps("16x0e+4x1o")
    x = irreps_in.randn(32, -1)
    target = torch.randn(32, 1)
    head = OutputHead(
        "1x0e",
        "32x0e+8x1o",
        num_hidden=1,
        input_dim=irreps_in,
        activation="SiLU",
        norm=False,
        block_type="IrrepOutputBlock",
    )
    optimizer = torch.optim.Adam(head.parameters(), lr=2e-2)
    initial = nn.functional.mse_loss(head(x), target).item()
    for _ in range(150):
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(head(x), target)
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
    assert nn.functional.mse_loss(head(x), target).item() < 1e-2 * initial


def test_state_dict_round_trip() -> None:
    kwargs = {"input_dim": "8x0e+2x1o", "activation": "SiLU", "block_type": "IrrepOutputBlock"}
    head = OutputHead("1x1o", "8x0e+2x1o", **kwargs).eval()  # type: ignore[arg-type]
    clone = OutputHead("1x1o", "8x0e+2x1o", **kwargs).eval()  # type: ignore[arg-type]
    clone.load_state_dict(head.state_dict())
    x = torch.randn(4, 14)
    assert torch.equal(head(x), clone(x))


def test_torch_compile_matches_eager() -> None:
    head = OutputHead(
        "1x1o",
        "8x0e+4x1o",
        input_dim="16x0e+4x1o",
        activation="SiLU",
        block_type="IrrepOutputBlock",
    ).eval()
    inputs = [torch.randn(rows, 28) for rows in (6, 13)]
    # e3nn's gate guards on the number of rows: the second size may compile again.
    assert_compile_matches_eager(head, inputs, recompile=True, rtol=1e-5, atol=1e-6)
