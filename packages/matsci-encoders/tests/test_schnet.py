import math
from typing import Any

import pytest
import torch
from encoder_checks import (
    assert_invariant_energy_equivariant_forces,
    assert_smooth_at_cutoff,
    assert_supercell_consistency,
    energy_model,
    fit_emt_forces,
    random_periodic_structure,
)
from torch import Tensor
from torch_geometric.data import Batch, Data
from torch_geometric.nn.models.schnet import ShiftedSoftplus

from matsci.contract.testing import (
    assert_batch_matches_single,
    assert_compile_matches_eager,
    assert_forces_are_energy_gradient,
)
from matsci.encoders import _schnet
from matsci.encoders._schnet import SchNetEncoder
from matsci.tasks.physics import ForceRegressionTask
from matsci.transforms import PeriodicRadiusGraph

CUTOFF = 4.0
SMALL: dict[str, Any] = {
    "hidden_channels": 32,
    "num_filters": 24,
    "num_interactions": 2,
    "num_gaussians": 20,
    "cutoff": CUTOFF,
}
"""A small SchNet for fast tests."""


def small_encoder(dtype: torch.dtype = torch.float32, **overrides: Any) -> SchNetEncoder:
    return SchNetEncoder(**{**SMALL, **overrides}).to(dtype)


def batch_of(seeds: list[int], dtype: torch.dtype, n_atoms: int = 5) -> Batch:
    structures = [random_periodic_structure(s, n_atoms + s % 3, CUTOFF, dtype) for s in seeds]
    return Batch.from_data_list(structures)


def pair(distance: float, dtype: torch.dtype = torch.float64) -> Data:
    """Two atoms (Cu, Au) ``distance`` apart along x: a molecule, without cell."""
    return Data(
        pos=torch.tensor([[0.0, 0.0, 0.0], [distance, 0.0, 0.0]], dtype=dtype),
        atomic_numbers=torch.tensor([29, 79]),
        natoms=torch.tensor([2]),
        edge_index=torch.tensor([[0, 1], [1, 0]]),
    )


# -- the contract -------------------------------------------------------------------------------


def test_embeddings_have_the_documented_shapes_and_dtype(dtype: torch.dtype) -> None:
    encoder = small_encoder(dtype)
    batch = batch_of([0, 1, 2, 3], dtype)
    out = encoder(batch)
    assert encoder.embedding_dim == 32
    assert isinstance(encoder.embedding_dim, int)
    assert encoder.cutoff == CUTOFF
    assert out.point_embedding is not None
    assert out.system_embedding is not None
    assert out.point_embedding.shape == (batch.num_nodes, 32)
    assert out.system_embedding.shape == (4, 32)
    assert out.point_embedding.dtype == dtype
    assert out.system_embedding.dtype == dtype


def test_sum_and_mean_readouts_pool_the_atom_features() -> None:
    batch = batch_of([0, 1, 2, 3], torch.float64)
    summed = small_encoder(torch.float64)
    averaged = small_encoder(torch.float64, readout="mean")
    averaged.load_state_dict(summed.state_dict())
    point = summed(batch).point_embedding
    assert point is not None
    expected = torch.stack([point[batch.batch == b].sum(0) for b in range(4)])
    torch.testing.assert_close(summed(batch).system_embedding, expected)
    natoms = batch.natoms.to(torch.float64).unsqueeze(-1)
    torch.testing.assert_close(averaged(batch).system_embedding, expected / natoms)


def test_a_single_structure_without_batch_vector_is_one_structure() -> None:
    encoder = small_encoder(torch.float64)
    data = random_periodic_structure(0, 5, CUTOFF, torch.float64)
    alone = encoder(data)
    batched = encoder(Batch.from_data_list([data]))
    assert alone.system_embedding is not None
    assert alone.system_embedding.shape == (1, 32)
    torch.testing.assert_close(alone.system_embedding, batched.system_embedding)
    torch.testing.assert_close(alone.point_embedding, batched.point_embedding)


def test_structures_in_a_batch_do_not_interact() -> None:
    encoder = small_encoder(torch.float64)
    structures = [random_periodic_structure(s, 4 + s, CUTOFF, torch.float64) for s in range(3)]
    assert_batch_matches_single(encoder, structures)


def test_isolated_atoms_keep_their_element_embedding() -> None:
    encoder = small_encoder(torch.float64)
    data = pair(CUTOFF + 0.5)  # the edges are longer than the cutoff: they contribute nothing
    out = encoder(data)
    table = encoder.embedding.weight[torch.tensor([29, 79])]
    torch.testing.assert_close(out.point_embedding, table, rtol=0, atol=0)
    torch.testing.assert_close(out.system_embedding, table.sum(0, keepdim=True), rtol=0, atol=0)


def test_one_interaction_on_a_pair_matches_the_schnet_equations() -> None:
    encoder = small_encoder(torch.float64, num_interactions=1)
    distance = 1.7
    out = encoder(pair(distance))
    block = encoder.interactions[0]
    h = encoder.embedding.weight[torch.tensor([29, 79])]  # [2, D]
    centres = torch.linspace(0.0, CUTOFF, SMALL["num_gaussians"], dtype=torch.float64)
    gamma = 0.5 / float(centres[1] - centres[0]) ** 2
    gaussians = torch.exp(-gamma * (distance - centres) ** 2)  # [G]
    envelope = 0.5 * (math.cos(math.pi * distance / CUTOFF) + 1.0)
    ssp = ShiftedSoftplus()
    mlp = block.mlp
    filters = mlp[2](ssp(mlp[0](gaussians))) * envelope  # [F]
    messages = block.conv.lin1(h).flip(0) * filters  # atom i receives from the other atom
    expected = h + block.lin(ssp(block.conv.lin2(messages)))
    torch.testing.assert_close(out.point_embedding, expected)


def test_molecules_need_no_cell() -> None:
    encoder = small_encoder(torch.float64)
    molecule = PeriodicRadiusGraph(CUTOFF)(
        Data(
            pos=3.0 * torch.rand(6, 3, dtype=torch.float64),
            atomic_numbers=torch.tensor([1, 6, 6, 8, 1, 1]),
            natoms=torch.tensor([6]),
        )
    )
    out = encoder(Batch.from_data_list([molecule, molecule]))
    assert out.system_embedding is not None
    torch.testing.assert_close(out.system_embedding[0], out.system_embedding[1])


def test_repr_is_one_line_and_names_the_arguments() -> None:
    text = repr(small_encoder())
    assert "\n" not in text
    assert text == (
        "SchNetEncoder(hidden_channels=32, num_filters=24, num_interactions=2, "
        "num_gaussians=20, cutoff=4.0, max_atomic_number=100, readout='sum')"
    )


def test_reset_parameters_redraws_the_weights() -> None:
    encoder = small_encoder()
    before = {name: value.clone() for name, value in encoder.state_dict().items()}
    encoder.reset_parameters()
    after = encoder.state_dict()
    assert not torch.equal(before["embedding.weight"], after["embedding.weight"])
    assert not torch.equal(
        before["interactions.0.mlp.0.weight"], after["interactions.0.mlp.0.weight"]
    )
    assert torch.equal(before["distance_expansion.offset"], after["distance_expansion.offset"])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"hidden_channels": 0}, r"SchNetEncoder\(hidden_channels=0\): expected a positive int"),
        ({"hidden_channels": 8.0}, r"hidden_channels=8.0\): expected a positive int"),
        ({"num_filters": -1}, r"num_filters=-1\): expected a positive int"),
        ({"num_interactions": True}, r"num_interactions=True\): expected a positive int"),
        ({"num_gaussians": 1}, r"num_gaussians=1\): expected >= 2"),
        ({"max_atomic_number": 0}, r"max_atomic_number=0\): expected a positive int"),
        ({"cutoff": 0.0}, r"cutoff=0.0\): expected a positive finite float"),
        ({"cutoff": float("inf")}, r"cutoff=inf\): expected a positive finite float"),
        ({"cutoff": "5"}, r"cutoff='5'\): expected a positive finite float"),
        ({"readout": "max"}, r"readout='max'\): expected one of \('sum', 'mean'\)"),
    ],
)
def test_bad_arguments_fail_in_init(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SchNetEncoder(**kwargs)


# -- physics through a ForceRegressionTask ------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1])
def test_energy_is_invariant_and_forces_equivariant(dtype: torch.dtype, seed: int) -> None:
    task = energy_model(small_encoder(), dtype)
    data = random_periodic_structure(seed, 6, CUTOFF, dtype)
    assert_invariant_energy_equivariant_forces(task, data, dtype, seed=seed)


def test_small_cells_where_atoms_see_their_own_images(dtype: torch.dtype) -> None:
    task = energy_model(small_encoder(), dtype)
    data = random_periodic_structure(3, 2, CUTOFF, dtype)  # cell of about 3 Å < cutoff
    assert_invariant_energy_equivariant_forces(task, data, dtype, seed=3)
    assert_supercell_consistency(task, data)


def test_supercell_has_the_same_energy_per_atom_and_forces(dtype: torch.dtype) -> None:
    task = energy_model(small_encoder(), dtype)
    assert_supercell_consistency(task, random_periodic_structure(4, 5, CUTOFF, dtype))


def test_energy_is_smooth_as_an_atom_crosses_the_cutoff() -> None:
    task = energy_model(small_encoder(), torch.float64)
    assert_smooth_at_cutoff(task, CUTOFF)


def test_the_smoothness_check_catches_pygs_unclamped_cosine(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_schnet, "_clamp_to_cutoff", lambda distance, cutoff: distance)
    task = energy_model(small_encoder(), torch.float64)
    with pytest.raises(AssertionError, match="beyond the cutoff"):
        assert_smooth_at_cutoff(task, CUTOFF)


def test_forces_are_the_finite_difference_gradient_of_the_energy() -> None:
    task = energy_model(small_encoder(), torch.float64, compute_stress=False)
    data = random_periodic_structure(5, 3, CUTOFF, torch.float64)
    _, force, _ = task.energy_and_derivatives(Batch.from_data_list([data]))

    def energy(pos: Tensor) -> Tensor:
        moved = data.clone()
        moved.pos = pos
        return task.energy_and_derivatives(Batch.from_data_list([moved]))[0]

    assert float(force.abs().max()) > 1e-3  # not a check on zeros
    assert_forces_are_energy_gradient(energy, data.pos, force, step=1e-5, rtol=1e-6, atol=1e-8)


# -- compilation and devices --------------------------------------------------------------------


@pytest.mark.parametrize(
    "dtype",
    [torch.float32, pytest.param(torch.float64, marks=pytest.mark.slow)],
    ids=["float32", "float64"],
)
def test_compiled_encoder_matches_eager(dtype: torch.dtype) -> None:
    encoder = small_encoder(dtype)
    batches = [batch_of([0, 1, 2, 3], dtype), batch_of([4, 5, 6, 7, 8], dtype)]
    assert_compile_matches_eager(encoder, batches, gradients=True)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu(dtype: torch.dtype) -> None:
    task = energy_model(small_encoder(), dtype)
    batch = batch_of([0, 1, 2, 3], dtype)
    energy, force, stress = task.energy_and_derivatives(batch)
    on_gpu = task.to("cuda").energy_and_derivatives(batch.to("cuda"))
    assert on_gpu[1].device.type == "cuda"
    tolerance = {"rtol": 1e-4, "atol": 1e-5} if dtype == torch.float32 else {}
    torch.testing.assert_close(on_gpu[0].cpu(), energy, **tolerance)
    torch.testing.assert_close(on_gpu[1].cpu(), force, **tolerance)
    assert on_gpu[2] is not None
    torch.testing.assert_close(on_gpu[2].cpu(), stress, **tolerance)


# -- configuration and learning -----------------------------------------------------------------


def test_tasks_build_the_encoder_by_name_and_rebuild_it_from_their_hparams() -> None:
    task = ForceRegressionTask(
        encoder_class="matsci.encoders._schnet.SchNetEncoder",
        encoder_kwargs=SMALL,
        output_kwargs={"hidden_dim": 16},
    ).eval()
    assert isinstance(task.encoder, SchNetEncoder)
    assert task.hparams["encoder_class"] == "matsci.encoders._schnet.SchNetEncoder"
    assert task.hparams["encoder_kwargs"] == SMALL
    rebuilt = ForceRegressionTask(**task.hparams).eval()
    rebuilt.load_state_dict(task.state_dict())
    batch = batch_of([0, 1], torch.float32)
    expected, actual = task.predict(batch), rebuilt.predict(batch)
    torch.testing.assert_close(actual["energy"], expected["energy"])
    torch.testing.assert_close(actual["force"], expected["force"])


def test_training_on_emt_beats_the_zero_force_predictor() -> None:
    mae, zero_mae = fit_emt_forces(
        "matsci.encoders._schnet.SchNetEncoder", SMALL | {"num_filters": 32}, epochs=2, lr=5e-3
    )
    assert mae < 0.5 * zero_mae, (mae, zero_mae)
