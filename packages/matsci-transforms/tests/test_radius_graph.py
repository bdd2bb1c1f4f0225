import itertools
import math
from collections.abc import Callable

import pytest
import torch
from torch_geometric.data import Batch, Data

from matsci.contract import keys
from matsci.transforms import PeriodicRadiusGraph

Triple = tuple[int, int, tuple[int, int, int]]


def _triples(data: Data) -> list[Triple]:
    edge_index, offsets = data.edge_index, data.cell_offsets
    return [
        (int(i), int(j), (int(s[0]), int(s[1]), int(s[2])))
        for i, j, s in zip(edge_index[0], edge_index[1], offsets.long(), strict=True)
    ]


def _cell_and_pbc(data: Data) -> tuple[torch.Tensor, torch.Tensor]:
    if getattr(data, keys.CELL, None) is None:
        return torch.zeros(3, 3, dtype=torch.float64), torch.zeros(3, dtype=torch.bool)
    return data.cell.reshape(3, 3).double(), data.pbc.reshape(3)


def _ase_triples(data: Data, cutoff: float) -> list[Triple]:
    ase = pytest.importorskip("ase")
    from ase.neighborlist import neighbor_list

    cell, pbc = _cell_and_pbc(data)
    atoms = ase.Atoms(positions=data.pos.double().numpy(), cell=cell.numpy(), pbc=pbc.tolist())
    i, j, shifts = neighbor_list("ijS", atoms, cutoff)
    return [
        (int(a), int(b), (int(s[0]), int(s[1]), int(s[2])))
        for a, b, s in zip(i, j, shifts, strict=True)
    ]


def _brute_force_triples(data: Data, cutoff: float) -> list[Triple]:
    """Every (i, j, S) with |pos[j] - pos[i] + S @ cell| < cutoff, by enumerating shifts."""
    pos = data.pos.double()
    cell, pbc = _cell_and_pbc(data)
    ranges = [range(1)] * 3
    if bool(pbc.any()):
        frac = pos @ torch.linalg.inv(cell)  # [N, 3]
        spread = frac.max(0).values - frac.min(0).values  # [3]
        reciprocal = torch.linalg.inv(cell).norm(dim=0)  # [3], 1 / plane spacings
        reach = torch.ceil(cutoff * reciprocal + spread).long() + 1
        ranges = [
            range(-int(r), int(r) + 1) if p else range(1)
            for r, p in zip(reach, pbc.tolist(), strict=True)
        ]
    found = []
    for shift in itertools.product(*ranges):
        vectors = pos[None, :, :] - pos[:, None, :] + torch.tensor(shift).double() @ cell
        for i, j in (vectors.norm(dim=-1) < cutoff).nonzero().tolist():
            if i != j or any(shift):
                found.append((i, j, (shift[0], shift[1], shift[2])))
    return found


def test_edges_match_ase_neighbor_list(structure: tuple[Data, float]) -> None:
    data, cutoff = structure
    out = PeriodicRadiusGraph(cutoff)(data)
    expected = _ase_triples(data, cutoff)
    triples = _triples(out)
    assert len(triples) == len(set(triples))  # no duplicate edge
    assert set(triples) == set(expected)
    assert len(triples) == len(expected)


def test_edges_match_brute_force_enumeration(structure: tuple[Data, float]) -> None:
    # Independent of ASE, so this also runs where only the package is installed.
    data, cutoff = structure
    triples = _triples(PeriodicRadiusGraph(cutoff)(data))
    expected = _brute_force_triples(data, cutoff)
    assert len(triples) > 0
    assert sorted(triples) == sorted(expected)


def test_outputs_have_contract_dtypes_and_are_sorted(structure: tuple[Data, float]) -> None:
    data, cutoff = structure
    out = PeriodicRadiusGraph(cutoff)(data)
    assert out.edge_index.dtype == torch.long
    assert out.edge_index.shape == (2, out.cell_offsets.shape[0])
    assert out.cell_offsets.dtype == data.pos.dtype
    assert out.cell_offsets.shape[1] == 3
    assert torch.equal(out.cell_offsets, out.cell_offsets.round())
    triples = _triples(out)
    assert triples == sorted(triples)  # by i, then j, then offsets


def test_does_not_modify_its_input(make_structure: Callable[..., Data]) -> None:
    data = make_structure("cubic", 0, torch.float64)
    PeriodicRadiusGraph(4.0)(data)
    assert data.edge_index is None
    assert "cell_offsets" not in data


def test_atom_alone_in_small_cell_neighbours_its_own_images() -> None:
    data = Data(pos=torch.zeros(1, 3), cell=2.0 * torch.eye(3)[None], pbc=torch.ones(1, 3).bool())
    out = PeriodicRadiusGraph(2.1)(data)
    assert out.edge_index.tolist() == [[0] * 6, [0] * 6]
    assert out.cell_offsets.tolist() == [
        [-1.0, 0.0, 0.0],
        [0.0, -1.0, 0.0],
        [0.0, 0.0, -1.0],
        [0.0, 0.0, 1.0],
        [0.0, 1.0, 0.0],
        [1.0, 0.0, 0.0],
    ]


def test_hand_computed_molecule() -> None:
    pos = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    out = PeriodicRadiusGraph(1.5)(Data(pos=pos))
    assert out.edge_index.tolist() == [[0, 1], [1, 0]]
    assert out.cell_offsets.tolist() == [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]


def test_cell_and_pbc_shapes_and_defaults(make_structure: Callable[..., Data]) -> None:
    data = make_structure("triclinic", 1, torch.float64)
    reference = _triples(PeriodicRadiusGraph(4.5)(data))
    flat = Data(pos=data.pos, cell=data.cell[0], pbc=data.pbc[0])
    assert _triples(PeriodicRadiusGraph(4.5)(flat)) == reference
    no_pbc = Data(pos=data.pos, cell=data.cell)  # a cell without pbc is periodic
    assert _triples(PeriodicRadiusGraph(4.5)(no_pbc)) == reference
    # pbc all False: the cell is ignored, as for a molecule
    off = Data(pos=data.pos, cell=data.cell, pbc=torch.zeros(1, 3, dtype=torch.bool))
    assert _triples(PeriodicRadiusGraph(4.5)(off)) == _triples(
        PeriodicRadiusGraph(4.5)(Data(pos=data.pos))
    )


def test_slab_with_zero_vector_along_non_periodic_direction() -> None:
    g = torch.Generator().manual_seed(3)
    cell = torch.tensor([[2.5, 0.0, 0.0], [0.5, 2.2, 0.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    pos = torch.rand(4, 3, generator=g, dtype=torch.float64) * torch.tensor([2.0, 2.0, 6.0])
    data = Data(pos=pos, cell=cell[None], pbc=torch.tensor([[True, True, False]]))
    out = PeriodicRadiusGraph(4.0)(data)
    assert bool((out.cell_offsets[:, 2] == 0).all())
    assert set(_triples(out)) == set(_ase_triples(data, 4.0))


def test_empty_and_single_atom_structures() -> None:
    for n_atoms in (0, 1):
        out = PeriodicRadiusGraph(3.0)(Data(pos=torch.zeros(n_atoms, 3)))
        assert out.edge_index.shape == (2, 0)
        assert out.edge_index.dtype == torch.long
        assert out.cell_offsets.shape == (0, 3)


def _fcc_copper(dtype: torch.dtype = torch.float64) -> Data:
    a = 3.6
    basis = [[0.0, 0.0, 0.0], [0.0, 0.5, 0.5], [0.5, 0.0, 0.5], [0.5, 0.5, 0.0]]
    return Data(
        pos=a * torch.tensor(basis, dtype=dtype),
        cell=a * torch.eye(3, dtype=dtype)[None],
        pbc=torch.ones(1, 3, dtype=torch.bool),
    )


def test_max_neighbors_keeps_the_nearest(structure: tuple[Data, float]) -> None:
    data, cutoff = structure
    full = PeriodicRadiusGraph(cutoff)(data)
    k = 5
    kept = PeriodicRadiusGraph(cutoff, max_neighbors=k)(data)
    cell, _ = _cell_and_pbc(data)

    def lengths(graph: Data) -> torch.Tensor:
        i, j = graph.edge_index
        pos = data.pos.double()
        vectors = pos[j] - pos[i] + graph.cell_offsets.double() @ cell
        return torch.linalg.vector_norm(vectors, dim=-1)

    assert set(_triples(kept)) <= set(_triples(full))
    full_lengths, kept_lengths = lengths(full), lengths(kept)
    for atom in range(data.pos.shape[0]):
        nearest = full_lengths[full.edge_index[0] == atom].sort().values[:k]
        chosen = kept_lengths[kept.edge_index[0] == atom].sort().values
        torch.testing.assert_close(chosen, nearest, rtol=0, atol=1e-12)
    triples = _triples(kept)
    assert triples == sorted(triples)


def test_max_neighbors_breaks_ties_by_neighbour_then_offset(dtype: torch.dtype) -> None:
    # Every fcc atom has 12 nearest neighbours at a / sqrt(2), tied up to rounding.
    data = _fcc_copper(dtype)
    full = _triples(PeriodicRadiusGraph(3.0)(data))
    assert len(full) == 4 * 12
    kept = PeriodicRadiusGraph(3.0, max_neighbors=5)(data)
    for atom in range(4):
        expected = sorted((j, s) for i, j, s in full if i == atom)[:5]
        assert [(j, s) for i, j, s in _triples(kept) if i == atom] == expected
    again = PeriodicRadiusGraph(3.0, max_neighbors=5)(data)
    assert torch.equal(kept.edge_index, again.edge_index)
    assert torch.equal(kept.cell_offsets, again.cell_offsets)


def test_max_neighbors_above_the_degree_changes_nothing() -> None:
    data = _fcc_copper()
    full = PeriodicRadiusGraph(3.0)(data)
    kept = PeriodicRadiusGraph(3.0, max_neighbors=100)(data)
    assert torch.equal(full.edge_index, kept.edge_index)
    assert torch.equal(full.cell_offsets, kept.cell_offsets)


def test_repr() -> None:
    assert repr(PeriodicRadiusGraph(5)) == "PeriodicRadiusGraph(cutoff=5.0, max_neighbors=None)"
    assert repr(PeriodicRadiusGraph(4.0, 8)) == "PeriodicRadiusGraph(cutoff=4.0, max_neighbors=8)"


@pytest.mark.parametrize("cutoff", [0.0, -1.0, math.inf, math.nan])
def test_bad_cutoff(cutoff: float) -> None:
    with pytest.raises(ValueError, match=r"PeriodicRadiusGraph\(cutoff=.*\): cutoff must be"):
        PeriodicRadiusGraph(cutoff)


def test_bad_cutoff_type() -> None:
    with pytest.raises(TypeError, match=r"PeriodicRadiusGraph\(cutoff='5'\): expected a float"):
        PeriodicRadiusGraph("5")  # type: ignore[arg-type]


@pytest.mark.parametrize("max_neighbors", [0, -3])
def test_bad_max_neighbors(max_neighbors: int) -> None:
    with pytest.raises(ValueError, match=r"max_neighbors must be a positive int or None"):
        PeriodicRadiusGraph(5.0, max_neighbors=max_neighbors)
    with pytest.raises(TypeError, match=r"max_neighbors=2.0\): expected an int or None"):
        PeriodicRadiusGraph(5.0, max_neighbors=2.0)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (Data(pos=torch.zeros(4, 2)), r"pos must have shape \[N, 3\], got \(4, 2\)"),
        (Data(pos=torch.zeros(4, 3, 1)), r"pos must have shape \[N, 3\], got \(4, 3, 1\)"),
        (Data(x=torch.zeros(4, 3)), r"pos must have shape \[N, 3\], got NoneType"),
        (Data(pos=torch.zeros(4, 3, dtype=torch.long)), r"pos must be floating point"),
        (
            Data(pos=torch.zeros(2, 3), cell=torch.eye(3)[None].repeat(2, 1, 1)),
            r"cell must have shape \[1, 3, 3\] or \[3, 3\], got \(2, 3, 3\)",
        ),
        (
            Data(pos=torch.zeros(2, 3), cell=torch.eye(3), pbc=torch.ones(1, 2).bool()),
            r"pbc must have shape \[1, 3\] or \[3\], got \(1, 2\)",
        ),
        (
            Data(pos=torch.zeros(2, 3), pbc=torch.tensor([[True, False, False]])),
            r"pbc=\[\[True, False, False\]\] is periodic but the structure has no cell",
        ),
        (
            Data(pos=torch.zeros(2, 3), cell=torch.zeros(3, 3), pbc=torch.ones(3).bool()),
            r"cell=.* is singular along the periodic directions",
        ),
    ],
)
def test_bad_structures(data: Data, message: str) -> None:
    with pytest.raises(ValueError, match=rf"PeriodicRadiusGraph: {message}"):
        PeriodicRadiusGraph(3.0)(data)


def test_batch_is_refused() -> None:
    batch = Batch.from_data_list([Data(pos=torch.zeros(2, 3)), Data(pos=torch.ones(2, 3))])
    with pytest.raises(TypeError, match="apply the transform to each structure before collation"):
        PeriodicRadiusGraph(3.0)(batch)
