import math

import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.neighborlist import neighbor_list

from matsci.contract.testing import assert_compile_matches_eager, random_rotation
from matsci.heads import EdgeVectorReadout

CUTOFF = 3.0


def _periodic_edges(dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Edges of a rattled 2x2x2 copper supercell with their image vectors (ASE's list)."""
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)
    atoms.rattle(0.1, seed=1)
    sources, targets, vectors = neighbor_list("ijD", atoms, CUTOFF)
    edge_index = torch.as_tensor(np.stack([sources, targets]), dtype=torch.long)
    return edge_index, torch.as_tensor(vectors, dtype=dtype)


@pytest.fixture
def readout(dtype: torch.dtype) -> EdgeVectorReadout:
    return EdgeVectorReadout(input_dim=12, cutoff=CUTOFF, hidden_dim=16).to(dtype)


def test_rotating_the_edges_rotates_every_vector(
    readout: EdgeVectorReadout, dtype: torch.dtype
) -> None:
    edge_index, vectors = _periodic_edges(dtype)
    embedding = torch.randn(int(edge_index.max()) + 1, 12, dtype=dtype)
    out = readout(embedding, edge_index, vectors)
    assert out.abs().max() > 1e-3  # not trivially zero
    tolerance = 1e-5 if dtype == torch.float32 else 1e-12
    for improper in (False, True):
        rotation = random_rotation(seed=4, dtype=dtype, improper=improper)
        rotated = readout(embedding, edge_index, vectors @ rotation.T)
        torch.testing.assert_close(rotated, out @ rotation.T, atol=tolerance, rtol=tolerance)


def test_renumbering_atoms_renumbers_the_vectors(readout: EdgeVectorReadout) -> None:
    dtype = readout.source_weight.weight.dtype
    edge_index, vectors = _periodic_edges(dtype)
    num_atoms = int(edge_index.max()) + 1
    embedding = torch.randn(num_atoms, 12, dtype=dtype)
    order = torch.randperm(num_atoms)  # new atom k is old atom order[k]
    new_index = torch.empty_like(order)
    new_index[order] = torch.arange(num_atoms)
    out = readout(embedding[order], new_index[edge_index], vectors)
    torch.testing.assert_close(out, readout(embedding, edge_index, vectors)[order])


def test_an_atom_without_neighbours_in_range_gets_zero() -> None:
    readout = EdgeVectorReadout(input_dim=4, cutoff=CUTOFF)
    edge_index = torch.tensor([[0, 1], [1, 0]])
    far = torch.tensor([[CUTOFF + 0.5, 0.0, 0.0], [-(CUTOFF + 0.5), 0.0, 0.0]])
    assert torch.equal(readout(torch.randn(2, 4), edge_index, far), torch.zeros(2, 3))
    assert torch.equal(readout(torch.randn(3, 4), edge_index, far)[2], torch.zeros(3))


def test_vectors_go_smoothly_to_zero_at_the_cutoff() -> None:
    torch.manual_seed(2)
    readout = EdgeVectorReadout(input_dim=4, cutoff=CUTOFF).double()
    embedding = torch.randn(2, 4, dtype=torch.float64)
    edge_index = torch.tensor([[0], [1]])

    def magnitude(distance: float) -> float:
        vector = torch.tensor([[distance, 0.0, 0.0]], dtype=torch.float64)
        with torch.no_grad():
            return float(readout(embedding, edge_index, vector)[0, 0])

    inside = [magnitude(CUTOFF - step) for step in (1e-2, 1e-3)]
    # f_c falls as (r_c - d)^2 near the cutoff: a tenth of the distance, a hundredth of the size.
    assert abs(inside[1]) < 0.02 * abs(inside[0]) + 1e-15
    assert magnitude(CUTOFF) == 0.0


def test_an_edge_pushes_along_its_own_direction_only() -> None:
    readout = EdgeVectorReadout(input_dim=4, cutoff=CUTOFF)
    direction = torch.tensor([1.0, 2.0, -2.0]) / 3.0
    out = readout(torch.randn(2, 4), torch.tensor([[0], [1]]), 1.5 * direction.unsqueeze(0))
    assert torch.linalg.cross(out[0], direction).abs().max() < 1e-6
    assert torch.equal(out[1], torch.zeros(3))  # atom 1 is the target, not the source


def test_several_vectors_per_atom() -> None:
    readout = EdgeVectorReadout(input_dim=4, cutoff=CUTOFF, num_vectors=2)
    edge_index, vectors = _periodic_edges(torch.float32)
    out = readout(torch.randn(int(edge_index.max()) + 1, 4), edge_index, vectors)
    assert out.shape == (32, 2, 3)


def test_gradients_reach_the_embeddings_and_every_weight() -> None:
    readout = EdgeVectorReadout(input_dim=4, cutoff=CUTOFF)
    edge_index, vectors = _periodic_edges(torch.float32)
    embedding = torch.randn(32, 4, requires_grad=True)
    readout(embedding, edge_index, vectors).square().sum().backward()
    assert embedding.grad is not None
    assert embedding.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in readout.parameters())


def test_compiled_readout_matches_eager() -> None:
    readout = EdgeVectorReadout(input_dim=4, cutoff=CUTOFF, hidden_dim=8)
    edge_index, vectors = _periodic_edges(torch.float32)

    class OnTheseEdges(torch.nn.Module):
        def forward(self, embedding: torch.Tensor) -> torch.Tensor:
            return readout(embedding, edge_index, vectors)  # type: ignore[no-any-return]

    # Two sizes of input: the second must not recompile.
    assert_compile_matches_eager(OnTheseEdges(), [torch.randn(32, 4), torch.randn(40, 4)])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"input_dim": 0, "cutoff": 3.0}, "input_dim=0"),
        ({"input_dim": 4, "cutoff": -1.0}, "cutoff=-1.0"),
        ({"input_dim": 4, "cutoff": math.inf}, "cutoff=inf"),
        ({"input_dim": 4, "cutoff": 3.0, "num_vectors": 0}, "num_vectors=0"),
    ],
)
def test_bad_sizes_are_refused(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        EdgeVectorReadout(**kwargs)  # type: ignore[arg-type]


def test_wrong_shapes_are_named() -> None:
    readout = EdgeVectorReadout(input_dim=4, cutoff=CUTOFF)
    edge_index = torch.tensor([[0, 1], [1, 0]])
    with pytest.raises(ValueError, match=r"point_embedding must have shape \[N, 4\]"):
        readout(torch.randn(2, 5), edge_index, torch.randn(2, 3))
    with pytest.raises(ValueError, match=r"edge_vectors must have shape \[E, 3\] = \[2, 3\]"):
        readout(torch.randn(2, 4), edge_index, torch.randn(3, 3))
    with pytest.raises(ValueError, match=r"edge_index must have shape \[2, E\]"):
        readout(torch.randn(2, 4), edge_index.T.reshape(1, 4), torch.randn(2, 3))
