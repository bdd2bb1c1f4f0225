from collections.abc import Callable

import pytest
import torch
from torch_geometric.data import Batch, Data

from matsci.contract import keys
from matsci.contract.testing import assert_batch_matches_single
from matsci.transforms import PeriodicRadiusGraph, edge_vectors


def _graph(data: Data, cutoff: float) -> Data:
    return PeriodicRadiusGraph(cutoff)(data)


def _vectors(data: Data) -> tuple[torch.Tensor, torch.Tensor]:
    return edge_vectors(
        data.pos,
        data.edge_index,
        getattr(data, keys.CELL, None),
        getattr(data, keys.CELL_OFFSETS, None) if data.get(keys.CELL) is not None else None,
    )


def test_matches_ase_distance_vectors(structure: tuple[Data, float]) -> None:
    ase = pytest.importorskip("ase")
    from ase.neighborlist import neighbor_list

    data, cutoff = structure
    graph = _graph(data, cutoff)
    vectors, distances = _vectors(graph)
    cell = graph.cell.reshape(3, 3).double().numpy() if graph.get(keys.CELL) is not None else None
    pbc = graph.pbc.reshape(3).tolist() if graph.get(keys.PBC) is not None else False
    atoms = ase.Atoms(positions=data.pos.double().numpy(), cell=cell, pbc=pbc)
    i, j, shifts, ase_vectors, ase_distances = neighbor_list("ijSDd", atoms, cutoff)
    expected = {
        (int(a), int(b), tuple(int(x) for x in s)): (torch.from_numpy(v), float(d))
        for a, b, s, v, d in zip(i, j, shifts, ase_vectors, ase_distances, strict=True)
    }
    assert len(expected) == vectors.shape[0]
    tolerance = {torch.float32: 1e-5, torch.float64: 1e-12}[data.pos.dtype]
    for e in range(vectors.shape[0]):
        key = (
            int(graph.edge_index[0, e]),
            int(graph.edge_index[1, e]),
            tuple(int(x) for x in graph.cell_offsets[e]),
        )
        ase_vector, ase_distance = expected[key]
        torch.testing.assert_close(
            vectors[e].double(), ase_vector, rtol=0, atol=tolerance, msg=str(key)
        )
        assert abs(float(distances[e]) - ase_distance) < tolerance


def test_hand_computed_periodic_vectors(dtype: torch.dtype) -> None:
    pos = torch.tensor([[0.0, 0.0, 0.0], [1.5, 0.0, 0.0]], dtype=dtype)
    cell = torch.tensor([[2.0, 0.0, 0.0], [1.0, 2.0, 0.0], [0.0, 0.0, 3.0]], dtype=dtype)
    edge_index = torch.tensor([[0, 1, 0], [1, 0, 0]])
    offsets = torch.tensor([[-1.0, 0.0, 0.0], [1.0, -1.0, 0.0], [0.0, 1.0, 1.0]], dtype=dtype)
    vectors, distances = edge_vectors(pos, edge_index, cell[None], offsets)
    expected = torch.tensor([[-0.5, 0.0, 0.0], [-0.5, -2.0, 0.0], [1.0, 2.0, 3.0]], dtype=dtype)
    torch.testing.assert_close(vectors, expected)
    torch.testing.assert_close(distances, expected.norm(dim=-1))
    assert vectors.dtype == dtype
    # [3, 3] cell gives the same; without offsets the cell plays no part
    torch.testing.assert_close(edge_vectors(pos, edge_index, cell, offsets)[0], expected)
    plain, _ = edge_vectors(pos, edge_index, cell)
    torch.testing.assert_close(plain, pos[edge_index[1]] - pos[edge_index[0]])


def test_molecule_without_cell(make_structure: Callable[..., Data]) -> None:
    data = _graph(make_structure("molecule", 0, torch.float64), 2.5)
    vectors, distances = edge_vectors(data.pos, data.edge_index)
    i, j = data.edge_index
    torch.testing.assert_close(vectors, data.pos[j] - data.pos[i], rtol=0, atol=0)
    assert bool((distances < 2.5).all())


def test_gradient_matches_analytic_derivative(make_structure: Callable[..., Data]) -> None:
    # d|r_ij|/dx_j = r_ij / |r_ij| = -d|r_ij|/dx_i, and d|r_ij|/dC = S_ij^T (r_ij / |r_ij|).
    data = _graph(make_structure("small_cell", 1, torch.float64), 5.0)
    pos = data.pos.clone().requires_grad_(True)
    cell = data.cell.clone().requires_grad_(True)
    weights = torch.rand(data.edge_index.shape[1], dtype=torch.float64)
    vectors, distances = edge_vectors(pos, data.edge_index, cell, data.cell_offsets)
    grad_pos, grad_cell = torch.autograd.grad((weights * distances).sum(), (pos, cell))
    unit = (vectors / distances[:, None]).detach() * weights[:, None]  # [E, 3]
    i, j = data.edge_index
    expected_pos = torch.zeros_like(pos).index_add_(0, j, unit).index_add_(0, i, -unit)
    expected_cell = (data.cell_offsets.T @ unit)[None]  # [1, 3, 3]
    torch.testing.assert_close(grad_pos, expected_pos)
    torch.testing.assert_close(grad_cell, expected_cell)


def test_gradcheck_positions_and_cell(make_structure: Callable[..., Data]) -> None:
    data = _graph(make_structure("triclinic", 2, torch.float64), 3.0)

    def lengths(pos: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
        return edge_vectors(pos, data.edge_index, cell, data.cell_offsets)[1]

    assert data.edge_index.shape[1] > 0
    inputs = (data.pos.clone().requires_grad_(True), data.cell.clone().requires_grad_(True))
    assert torch.autograd.gradcheck(lengths, inputs, fast_mode=True)


def test_batch_equals_structures_one_by_one(
    make_structure: Callable[..., Data], dtype: torch.dtype
) -> None:
    graphs = [
        _graph(make_structure(kind, seed, dtype), cutoff)
        for kind, seed, cutoff in [("cubic", 0, 4.0), ("small_cell", 1, 5.0), ("slab", 2, 4.0)]
    ]
    assert Batch.from_data_list(graphs).cell.shape == (3, 3, 3)

    def vectors_and_distances(batch: Batch) -> dict[str, torch.Tensor]:
        vectors, distances = edge_vectors(
            batch.pos, batch.edge_index, batch.cell, batch.cell_offsets, batch.batch
        )
        return {"vectors": vectors, "distances": distances}

    # torch.testing's default tolerances; each structure alone is a batch of one.
    rtol, atol = {torch.float32: (1.3e-6, 1e-5), torch.float64: (1e-7, 1e-7)}[dtype]
    assert_batch_matches_single(vectors_and_distances, graphs, rtol=rtol, atol=atol)
    # ... and the same as a structure without batch vector ([3, 3] cell).
    together = vectors_and_distances(Batch.from_data_list(graphs))
    alone = [edge_vectors(g.pos, g.edge_index, g.cell, g.cell_offsets) for g in graphs]
    torch.testing.assert_close(together["vectors"], torch.cat([v for v, _ in alone]))
    torch.testing.assert_close(together["distances"], torch.cat([d for _, d in alone]))


def test_strain_gradient_reaches_cell_through_positions_and_cell() -> None:
    # Straining pos and cell together (as a stress computation does) scales every vector.
    data = _graph(Data(pos=torch.zeros(1, 3, dtype=torch.float64),
                       cell=2.0 * torch.eye(3, dtype=torch.float64)[None],
                       pbc=torch.ones(1, 3, dtype=torch.bool)), 2.1)  # fmt: skip
    strain = torch.zeros(3, 3, dtype=torch.float64, requires_grad=True)
    deformation = torch.eye(3, dtype=torch.float64) + strain
    _, distances = edge_vectors(
        data.pos @ deformation, data.edge_index, data.cell @ deformation, data.cell_offsets
    )
    (grad,) = torch.autograd.grad(distances.sum(), strain)
    # six images at 2 Å along ±x, ±y, ±z: d(sum |r|)/d(strain) = sum r r^T / |r| = 4 I
    torch.testing.assert_close(grad, 4.0 * torch.eye(3, dtype=torch.float64))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"pos": torch.zeros(4, 2)}, r"pos must have shape \[N, 3\], got \(4, 2\)"),
        ({"edge_index": torch.zeros(3, 2, dtype=torch.long)}, r"edge_index must have shape"),
        ({"cell_offsets": torch.zeros(2, 3)}, r"cell_offsets given without cell"),
        (
            {"cell": torch.eye(3), "cell_offsets": torch.zeros(3, 3)},
            r"cell_offsets must have shape \[E, 3\] = \[2, 3\], got \(3, 3\)",
        ),
        (
            {"cell": torch.eye(3)[:2], "cell_offsets": torch.zeros(2, 3)},
            r"cell must have shape \[B, 3, 3\] or \[3, 3\], got \(2, 3\)",
        ),
        (
            {"cell": torch.eye(3).repeat(2, 1, 1), "cell_offsets": torch.zeros(2, 3)},
            r"cell holds 2 structures, pass batch",
        ),
    ],
)
def test_bad_arguments(kwargs: dict[str, torch.Tensor], message: str) -> None:
    arguments = {"pos": torch.zeros(4, 3), "edge_index": torch.tensor([[0, 1], [1, 0]])}
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=rf"edge_vectors: {message}"):
        edge_vectors(**arguments)
