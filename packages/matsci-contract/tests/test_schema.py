import re
from typing import Any

import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st
from torch_geometric.data import Batch, Data

from matsci.contract import (
    STRUCTURE_SPECS,
    AttributeSpec,
    BatchSizes,
    keys,
    validate_batch,
    values_within,
)

CONTEXT = "ScalarRegressionTask"
ENERGY = AttributeSpec.graph_target(keys.ENERGY)


def _structure(num_atoms: int, *, edges: bool = False) -> Data:
    data = Data(
        pos=torch.arange(num_atoms * 3, dtype=torch.float32).reshape(num_atoms, 3),
        atomic_numbers=torch.arange(1, num_atoms + 1),
        natoms=torch.tensor([num_atoms]),
        energy=torch.tensor([float(num_atoms)]),
        cell=torch.eye(3).unsqueeze(0) * 5,
        pbc=torch.ones(1, 3, dtype=torch.bool),
    )
    if edges:
        # Each atom i sees atom i + 1 and back: 2 * (num_atoms - 1) edges.
        source = torch.arange(num_atoms - 1)
        data.edge_index = torch.stack(
            [torch.cat([source, source + 1]), torch.cat([source + 1, source])]
        )
        data.cell_offsets = torch.zeros(data.edge_index.shape[1], 3)
    return data


def _batch(*sizes: int, edges: bool = False) -> Batch:
    """Four structures by default: B=4, N=2+3+1+2=8."""
    return Batch.from_data_list([_structure(n, edges=edges) for n in sizes or (2, 3, 1, 2)])


def _message(text: str) -> str:
    return re.escape(f"{CONTEXT}: {text}")


# --- valid batches ---


def test_valid_batch_passes() -> None:
    validate_batch(_batch(), [*STRUCTURE_SPECS, ENERGY], context=CONTEXT)


def test_valid_batch_with_edges_passes() -> None:
    batch = _batch(edges=True)
    assert batch.edge_index.shape == (2, 2 * (1 + 2 + 0 + 1))
    validate_batch(batch, STRUCTURE_SPECS, context=CONTEXT)


def test_specs_may_be_any_iterable() -> None:
    validate_batch(_batch(), (spec for spec in STRUCTURE_SPECS), context=CONTEXT)


@pytest.mark.parametrize("shape", [(4,), (4, 1)], ids=["[B]", "[B,1]"])
def test_squeeze_ok_accepts_b_and_b1(shape: tuple[int, ...]) -> None:
    batch = _batch()
    batch.energy = torch.zeros(shape)
    validate_batch(batch, [ENERGY], context=CONTEXT)


def test_squeezed_shape_refused_without_squeeze_ok() -> None:
    batch = _batch()
    spec = AttributeSpec(keys.ENERGY, "graph", (1,))
    with pytest.raises(
        ValueError,
        match=_message("batch attribute 'energy' has shape [4], expected [B, 1] with B=4"),
    ):
        validate_batch(batch, [spec], context=CONTEXT)


def test_wide_graph_target_passes() -> None:
    batch = _batch()
    batch.dipole = torch.zeros(4, 3)
    validate_batch(batch, [AttributeSpec.graph_target("dipole", 3)], context=CONTEXT)


def test_node_target_passes() -> None:
    batch = _batch()
    batch.force = torch.zeros(8, 3, dtype=torch.float64)
    validate_batch(batch, [AttributeSpec.node_target(keys.FORCE, 3)], context=CONTEXT)


def test_int32_counts_as_int() -> None:
    batch = _batch()
    batch.atomic_numbers = batch.atomic_numbers.int()
    validate_batch(batch, STRUCTURE_SPECS, context=CONTEXT)


def test_none_in_trailing_accepts_any_size() -> None:
    batch = _batch()
    batch.features = torch.zeros(8, 5)
    validate_batch(batch, [AttributeSpec("features", "node", (None,))], context=CONTEXT)


def test_nan_target_allowed_by_default() -> None:
    batch = _batch()
    batch.energy[1] = float("nan")
    validate_batch(batch, [ENERGY], context=CONTEXT)


def test_single_data_is_one_structure() -> None:
    data = _structure(3, edges=True)
    validate_batch(data, [*STRUCTURE_SPECS, ENERGY], context=CONTEXT)
    data.energy = torch.zeros(2)
    with pytest.raises(
        ValueError,
        match=_message("batch attribute 'energy' has shape [2], expected [B] or [B, 1] with B=1"),
    ):
        validate_batch(data, [ENERGY], context=CONTEXT)


def test_single_data_natoms_checked() -> None:
    data = _structure(3)
    data.natoms = torch.tensor([4])
    with pytest.raises(
        ValueError, match=_message("batch attribute 'natoms' sums to 4, expected N=3 atoms")
    ):
        validate_batch(data, STRUCTURE_SPECS, context=CONTEXT)


# --- failures ---


def test_message_example_from_the_design() -> None:
    batch = _batch()
    batch.energy = torch.zeros(4, 2)
    expected = (
        "ScalarRegressionTask: batch attribute 'energy' has shape [4, 2], "
        "expected [B] or [B, 1] with B=4 structures"
    )
    with pytest.raises(ValueError, match=f"^{re.escape(expected)}$"):
        validate_batch(batch, [ENERGY], context=CONTEXT)


def test_missing_attribute_names_what_the_batch_has() -> None:
    batch = _batch()
    del batch.energy
    pattern = _message(
        "batch attribute 'energy' is missing, expected float [B] or [B, 1]; the batch has "
        "'atomic_numbers', 'batch', 'cell', 'natoms', 'pbc', 'pos', 'ptr'"
    )
    with pytest.raises(ValueError, match=pattern):
        validate_batch(batch, [ENERGY], context=CONTEXT)


def test_float_atomic_numbers_refused() -> None:
    batch = _batch()
    batch.atomic_numbers = batch.atomic_numbers.float()
    pattern = _message(
        "batch attribute 'atomic_numbers' has dtype torch.float32, "
        "expected torch.int64 or torch.int32"
    )
    with pytest.raises(ValueError, match=pattern):
        validate_batch(batch, STRUCTURE_SPECS, context=CONTEXT)


def test_int_positions_refused() -> None:
    batch = _batch()
    batch.pos = batch.pos.long()
    with pytest.raises(
        ValueError,
        match=_message("batch attribute 'pos' has dtype torch.int64, expected a floating"),
    ):
        validate_batch(batch, STRUCTURE_SPECS, context=CONTEXT)


def test_wrong_trailing_shape_refused() -> None:
    batch = _batch()
    batch.pos = batch.pos[:, :2]
    with pytest.raises(
        ValueError,
        match=_message("batch attribute 'pos' has shape [8, 2], expected [N, 3] with N=8 atoms"),
    ):
        validate_batch(batch, STRUCTURE_SPECS, context=CONTEXT)


def test_wrong_leading_size_refused() -> None:
    batch = _batch()
    batch.energy = torch.zeros(5)
    with pytest.raises(
        ValueError,
        match=_message("batch attribute 'energy' has shape [5], expected [B] or [B, 1] with B=4"),
    ):
        validate_batch(batch, [ENERGY], context=CONTEXT)


def test_atom_count_comes_from_the_batch_vector_not_pos() -> None:
    # PyG's num_nodes would read N=7 from pos; the batch vector says 8.
    batch = _batch()
    batch.pos = torch.zeros(7, 3)
    with pytest.raises(
        ValueError,
        match=_message("batch attribute 'pos' has shape [7, 3], expected [N, 3] with N=8"),
    ):
        validate_batch(batch, STRUCTURE_SPECS, context=CONTEXT)


def test_nan_in_positions_refused() -> None:
    batch = _batch()
    batch.pos[3, 1] = float("nan")
    pattern = _message(
        "batch attribute 'pos' has 1 non-finite values (1 NaN, 0 inf) out of 24, "
        "expected all finite"
    )
    with pytest.raises(ValueError, match=pattern):
        validate_batch(batch, STRUCTURE_SPECS, context=CONTEXT)


def test_inf_in_cell_refused() -> None:
    batch = _batch()
    batch.cell[2, 0, 0] = float("inf")
    batch.cell[3, 1, 1] = float("-inf")
    pattern = _message("batch attribute 'cell' has 2 non-finite values (0 NaN, 2 inf) out of 36")
    with pytest.raises(ValueError, match=pattern):
        validate_batch(batch, STRUCTURE_SPECS, context=CONTEXT)


def test_finite_values_whose_sum_overflows_pass() -> None:
    batch = _batch()
    batch.pos = torch.full((8, 3), 60000.0, dtype=torch.float16)
    assert not batch.pos.sum().isfinite()
    validate_batch(batch, STRUCTURE_SPECS, context=CONTEXT)


def test_no_edges_pass() -> None:
    batch = _batch(1, 1, edges=True)
    assert batch.edge_index.shape == (2, 0)
    validate_batch(batch, STRUCTURE_SPECS, context=CONTEXT)


def test_natoms_mismatch_refused() -> None:
    batch = _batch()
    batch.natoms = torch.tensor([2, 3, 1, 3])
    with pytest.raises(
        ValueError, match=_message("batch attribute 'natoms' sums to 9, expected N=8 atoms")
    ):
        validate_batch(batch, STRUCTURE_SPECS, context=CONTEXT)


@pytest.mark.parametrize(
    ("values", "found"),
    [
        ((-1,), "1 values outside [0, N) with N=8 atoms (min -1, max 7)"),
        ((8,), "1 values outside [0, N) with N=8 atoms (min 0, max 8)"),
        ((-3, 100), "2 values outside [0, N) with N=8 atoms (min -3, max 100)"),
    ],
)
def test_edge_index_out_of_range_refused(values: tuple[int, ...], found: str) -> None:
    batch = _batch(edges=True)
    for column, value in enumerate(values):
        batch.edge_index[1, column] = value
    pattern = _message(f"batch attribute 'edge_index' has {found}")
    with pytest.raises(ValueError, match=pattern):
        validate_batch(batch, STRUCTURE_SPECS, context=CONTEXT)


def test_edge_index_wrong_shape_refused() -> None:
    batch = _batch(edges=True)
    batch.edge_index = batch.edge_index.t().contiguous()
    with pytest.raises(
        ValueError, match=_message("batch attribute 'edge_index' has shape [8, 2], expected [2, E]")
    ):
        validate_batch(batch, STRUCTURE_SPECS, context=CONTEXT)


def test_cell_offsets_wrong_edge_count_refused() -> None:
    batch = _batch(edges=True)
    batch.cell_offsets = batch.cell_offsets[1:]
    pattern = _message(
        "batch attribute 'cell_offsets' has shape [7, 3], expected [E, 3] with E=8 edges"
    )
    with pytest.raises(ValueError, match=pattern):
        validate_batch(batch, STRUCTURE_SPECS, context=CONTEXT)


def test_edge_level_attribute_without_edge_index_refused() -> None:
    batch = _batch(edges=True)
    del batch.edge_index
    pattern = _message("edge-level attributes need 'edge_index' of shape [2, E]")
    with pytest.raises(ValueError, match=pattern):
        validate_batch(batch, STRUCTURE_SPECS, context=CONTEXT)


def test_optional_attributes_may_be_absent() -> None:
    batch = _batch()
    del batch.cell, batch.pbc
    validate_batch(batch, STRUCTURE_SPECS, context=CONTEXT)


def test_optional_attribute_present_but_wrong_refused() -> None:
    batch = _batch()
    batch.cell = torch.zeros(4, 3)
    with pytest.raises(
        ValueError,
        match=_message("batch attribute 'cell' has shape [4, 3], expected [B, 3, 3] with B=4"),
    ):
        validate_batch(batch, STRUCTURE_SPECS, context=CONTEXT)


def test_pbc_must_be_bool() -> None:
    batch = _batch()
    batch.pbc = batch.pbc.long()
    with pytest.raises(
        ValueError,
        match=_message("batch attribute 'pbc' has dtype torch.int64, expected torch.bool"),
    ):
        validate_batch(batch, STRUCTURE_SPECS, context=CONTEXT)


def test_non_tensor_attribute_refused() -> None:
    structures = [_structure(2), _structure(1)]
    for data, energy in zip(structures, ["low", "high"], strict=True):
        data.energy = energy
    batch = Batch.from_data_list(structures)
    assert batch.energy == ["low", "high"]
    with pytest.raises(
        ValueError, match=_message("batch attribute 'energy' is a list, expected a torch.Tensor")
    ):
        validate_batch(batch, [ENERGY], context=CONTEXT)


def test_empty_batch_refused() -> None:
    batch = Batch(ptr=torch.zeros(1, dtype=torch.long))
    with pytest.raises(ValueError, match=_message("the batch holds no structures (B=0)")):
        validate_batch(batch, STRUCTURE_SPECS, context=CONTEXT)


def test_batch_without_structure_index_refused() -> None:
    batch = Batch(pos=torch.zeros(2, 3))
    with pytest.raises(ValueError, match=_message("cannot tell how many structures")):
        validate_batch(batch, STRUCTURE_SPECS, context=CONTEXT)


def test_not_a_batch_is_a_type_error() -> None:
    not_a_batch: Any = {keys.POS: torch.zeros(2, 3)}
    with pytest.raises(
        TypeError, match=_message("expected a torch_geometric Batch or Data, got dict")
    ):
        validate_batch(not_a_batch, STRUCTURE_SPECS, context=CONTEXT)


# --- AttributeSpec ---


def test_graph_target_helper() -> None:
    assert AttributeSpec(keys.ENERGY, "graph", (1,), squeeze_ok=True) == ENERGY
    assert AttributeSpec.graph_target("dipole", 3) == AttributeSpec("dipole", "graph", (3,))
    assert AttributeSpec.node_target(keys.FORCE, 3) == AttributeSpec(keys.FORCE, "node", (3,))


def test_trailing_list_becomes_tuple() -> None:
    spec = AttributeSpec(keys.CELL, "graph", [3, 3])  # type: ignore[arg-type]
    assert spec.trailing == (3, 3)
    assert hash(spec) == hash(AttributeSpec(keys.CELL, "graph", (3, 3)))


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"name": "", "level": "node"}, "AttributeSpec: name must be a non-empty string"),
        ({"name": "x", "level": "atom"}, "level 'atom' is not one of 'node', 'graph', 'edge'"),
        ({"name": "x", "level": "node", "dtype": "long"}, "dtype 'long' is not one of"),
        ({"name": "x", "level": "node", "trailing": (0,)}, "trailing sizes must be positive"),
        ({"name": "x", "level": "node", "trailing": (True,)}, "trailing sizes must be positive"),
        ({"name": "x", "level": "node", "trailing": (3,), "squeeze_ok": True}, "squeeze_ok needs"),
        ({"name": "x", "level": "edge", "trailing": (1,), "squeeze_ok": True}, "squeeze_ok needs"),
        ({"name": "x", "level": "node", "dtype": "int", "finite": True}, "finite=True applies"),
        ({"name": "edge_index", "level": "node", "dtype": "int"}, "edge_index is always [2, E]"),
        ({"name": "edge_index", "level": "edge"}, "edge_index is always [2, E]"),
    ],
)
def test_bad_spec_refused(kwargs: dict[str, object], pattern: str) -> None:
    with pytest.raises(ValueError, match=re.escape(pattern)):
        AttributeSpec(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("helper", [AttributeSpec.graph_target, AttributeSpec.node_target])
def test_target_width_must_be_positive(helper: object) -> None:
    assert callable(helper)
    with pytest.raises(ValueError, match=re.escape("('energy'): width must be >= 1, got 0")):
        helper(keys.ENERGY, 0)


# --- property: any other shape is a ValueError ---

# B=4 structures, N=8 atoms, E=8 edges in `_batch(edges=True)`.
_ACCEPTED: dict[str, tuple[AttributeSpec, torch.dtype, set[tuple[int, ...]]]] = {
    keys.POS: (STRUCTURE_SPECS[0], torch.float32, {(8, 3)}),
    keys.ATOMIC_NUMBERS: (STRUCTURE_SPECS[1], torch.long, {(8,)}),
    keys.CELL: (STRUCTURE_SPECS[3], torch.float32, {(4, 3, 3)}),
    keys.CELL_OFFSETS: (STRUCTURE_SPECS[6], torch.float32, {(8, 3)}),
    keys.ENERGY: (ENERGY, torch.float32, {(4,), (4, 1)}),
    keys.FORCE: (AttributeSpec.node_target(keys.FORCE, 3), torch.float64, {(8, 3)}),
}


@given(
    name=st.sampled_from(sorted(_ACCEPTED)),
    shape=st.lists(st.integers(min_value=0, max_value=9), max_size=4).map(tuple),
)
def test_any_other_shape_raises_value_error(name: str, shape: tuple[int, ...]) -> None:
    spec, dtype, accepted = _ACCEPTED[name]
    assume(shape not in accepted)
    batch = _batch(edges=True)
    batch[name] = torch.zeros(shape, dtype=dtype)
    with pytest.raises(ValueError, match=re.escape(f"batch attribute '{name}' has shape")):
        validate_batch(batch, [spec], context=CONTEXT)


@given(shape=st.lists(st.integers(min_value=0, max_value=9), max_size=4).map(tuple))
def test_any_edge_index_shape_but_2_e_raises_value_error(shape: tuple[int, ...]) -> None:
    assume(len(shape) != 2 or shape[0] != 2)
    batch = _batch(edges=True)
    batch.edge_index = torch.zeros(shape, dtype=torch.long)
    with pytest.raises(ValueError, match=re.escape("'edge_index' has shape")):
        validate_batch(batch, STRUCTURE_SPECS, context=CONTEXT)


# --- value checks carried by the spec ---


def test_values_within_names_the_values_outside_and_runs_after_the_shape_check() -> None:
    batch = _batch()
    batch.label = torch.tensor([1, 0, 230, 231])
    spec = AttributeSpec("label", "graph", dtype="int", values=values_within(1, 230))
    with pytest.raises(
        ValueError, match=_message("batch attribute 'label' has values [0, 231] outside 1..230")
    ):
        validate_batch(batch, [spec], context=CONTEXT)
    batch.label = torch.tensor([1, 2, 230, 229])
    validate_batch(batch, [spec], context=CONTEXT)
    batch.label = torch.tensor([1, 2, 999])  # wrong size: the shape error comes first
    with pytest.raises(ValueError, match="has shape"):
        validate_batch(batch, [spec], context=CONTEXT)


def test_a_custom_value_check_sees_the_batch_sizes() -> None:
    def one_per_atom(value: torch.Tensor, sizes: BatchSizes) -> str | None:
        total = int(value.sum())
        return None if total == sizes.num_atoms() else f"sums to {total}, not N"

    batch = _batch()  # N = 8
    batch.count = torch.tensor([2, 3, 1, 2])
    spec = AttributeSpec("count", "graph", dtype="int", values=one_per_atom)
    validate_batch(batch, [spec], context=CONTEXT)
    batch.count = torch.tensor([2, 3, 1, 3])
    with pytest.raises(ValueError, match=_message("batch attribute 'count' sums to 9, not N")):
        validate_batch(batch, [spec], context=CONTEXT)


def test_missing_attribute_message_carries_the_spec_hint() -> None:
    spec = AttributeSpec("noisy_pos", "node", (3,), hint="add NoisyPositions to the transforms")
    with pytest.raises(ValueError, match=r"is missing.*; add NoisyPositions to the transforms$"):
        validate_batch(_batch(), [spec], context=CONTEXT)
