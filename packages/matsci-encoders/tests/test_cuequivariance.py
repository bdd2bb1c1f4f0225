"""The cuEquivariance backend of EquivariantEncoder gives e3nn's numbers from e3nn's weights."""

import pytest
import torch
from torch_geometric.data import Batch, Data

from matsci.encoders import EquivariantEncoder
from matsci.transforms import PeriodicRadiusGraph

pytest.importorskip("cuequivariance_torch")

CASES = [
    {"lmax": 1},
    {"lmax": 2},
    {"lmax": 3, "hidden_irreps": "8x0e+8x1o+8x2e+8x3o"},  # uniform: the GPU kernel's case
]


def periodic_batch(device: str, dtype: torch.dtype) -> Batch:
    generator = torch.Generator().manual_seed(0)
    structures = []
    for count in (5, 7):
        data = Data(
            pos=torch.rand(count, 3, generator=generator) * 4.0,
            atomic_numbers=torch.randint(1, 30, (count,), generator=generator),
            cell=4.0 * torch.eye(3).unsqueeze(0),
            natoms=torch.tensor([count]),
        )
        structures.append(PeriodicRadiusGraph(cutoff=3.5)(data))
    batch = Batch.from_data_list(structures).to(device)
    batch.pos, batch.cell = batch.pos.to(dtype), batch.cell.to(dtype)
    batch.cell_offsets = batch.cell_offsets.to(dtype)
    return batch


def outputs(
    encoder: EquivariantEncoder, batch: Batch
) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """Point embeddings, their force-like position derivative and the parameter gradients."""
    batch = batch.clone()
    batch.pos.requires_grad_(True)
    point = encoder(batch).point_embedding
    assert point is not None
    (force,) = torch.autograd.grad(point.pow(2).sum(), batch.pos, create_graph=True)
    encoder.zero_grad()
    force.pow(2).sum().backward()
    grads = [p.grad.clone() for p in encoder.parameters() if p.grad is not None]
    return point.detach(), force.detach(), grads


def check_backends_agree(device: str, dtype: torch.dtype, tolerance: float) -> None:
    # Built in float64: e3nn rounds its constants to the default dtype when it builds them.
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        compare_backends(device, dtype, tolerance)
    finally:
        torch.set_default_dtype(previous)


def compare_backends(device: str, dtype: torch.dtype, tolerance: float) -> None:
    batch = periodic_batch(device, dtype)
    for case in CASES:
        kwargs = {"num_channels": 8, "num_layers": 3, "cutoff": 3.5, **case}
        reference = EquivariantEncoder(**kwargs).to(device, dtype)  # type: ignore[arg-type]
        fast = EquivariantEncoder(**kwargs, tensor_product_backend="cuequivariance")  # type: ignore[arg-type]
        fast = fast.to(device, dtype)
        assert fast.state_dict().keys() == reference.state_dict().keys()
        fast.load_state_dict(reference.state_dict())
        assert fast.init_args["tensor_product_backend"] == "cuequivariance"
        want, have = outputs(reference, batch), outputs(fast, batch)
        torch.testing.assert_close(have[0], want[0], rtol=tolerance, atol=tolerance)
        torch.testing.assert_close(have[1], want[1], rtol=tolerance, atol=tolerance)
        assert len(have[2]) == len(want[2]) > 0
        for grad, expected in zip(have[2], want[2], strict=True):
            scale = float(expected.abs().max()) + 1.0
            torch.testing.assert_close(
                grad / scale, expected / scale, rtol=tolerance, atol=tolerance
            )


def test_cuequivariance_matches_e3nn_on_cpu() -> None:
    check_backends_agree("cpu", torch.float64, 1e-10)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize(("dtype", "tolerance"), [(torch.float64, 1e-9), (torch.float32, 2e-4)])
def test_cuequivariance_matches_e3nn_on_gpu(dtype: torch.dtype, tolerance: float) -> None:
    check_backends_agree("cuda", dtype, tolerance)
