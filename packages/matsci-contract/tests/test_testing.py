import math
from typing import Any, Literal

import pytest
import torch
from torch import Tensor, nn
from torch_geometric.data import Batch, Data

import matsci.contract
from matsci.contract import Embeddings, testing
from matsci.contract.testing import (
    TOLERANCES,
    Representation,
    assert_batch_matches_single,
    assert_close_relative,
    assert_compile_matches_eager,
    assert_equivariant,
    assert_forces_are_energy_gradient,
    assert_permutation_equivariant,
    assert_stress_is_strain_derivative,
    assert_translation_invariant,
    quiet_trainer,
    random_rotation,
    tolerance,
)

CUTOFF = 3.5
OUTPUTS: dict[str, Representation] = {"energy": "scalar", "force": "vector", "stress": "matrix"}
"""How the outputs of the pair model transform under rotations."""
KINDS: dict[str, Literal["node", "invariant"]] = {
    "energy": "invariant",
    "force": "node",
    "stress": "invariant",
}
"""How the outputs of the pair model follow a permutation of the atoms."""


@pytest.fixture(params=[torch.float32, torch.float64], ids=["float32", "float64"])
def dtype(request: pytest.FixtureRequest) -> torch.dtype:
    value: torch.dtype = request.param
    return value


# -- a small analytic model: a pair potential with energy, forces and stress --------------------


def crystal(seed: int, dtype: torch.dtype = torch.float64, n_atoms: int = 4) -> Data:
    """Random atoms in a skewed cell with every pair (and image) closer than CUTOFF as edges."""
    generator = torch.Generator().manual_seed(seed)
    cell = 3.2 * torch.eye(3, dtype=torch.float64)
    cell = cell + 0.4 * torch.rand(3, 3, generator=generator, dtype=torch.float64) - 0.2
    pos = torch.rand(n_atoms, 3, generator=generator, dtype=torch.float64) @ cell
    shifts = torch.cartesian_prod(*[torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64)] * 3)
    sources, targets, offsets = [], [], []
    for i in range(n_atoms):
        for j in range(n_atoms):
            for shift in shifts:
                distance = float((pos[j] - pos[i] + shift @ cell).norm())
                if 1e-6 < distance < CUTOFF:
                    sources.append(i)
                    targets.append(j)
                    offsets.append(shift)
    return Data(
        pos=pos.to(dtype),
        atomic_numbers=torch.randint(1, 4, (n_atoms,), generator=generator),
        natoms=torch.tensor([n_atoms]),
        cell=cell.to(dtype).unsqueeze(0),
        pbc=torch.ones(1, 3, dtype=torch.bool),
        edge_index=torch.tensor([sources, targets]),
        cell_offsets=torch.stack(offsets).to(dtype),
    )


def pair_energy(data: Data, pos: Tensor, cell: Tensor) -> Tensor:
    """Energies [B]: half of sum_ij sqrt(Z_i Z_j) (r_ij - 1.5)^2 exp(-r_ij) over the edges."""
    batch = data.get("batch")
    if batch is None:
        batch = torch.zeros(len(pos), dtype=torch.long)
    i, j = data.edge_index
    vectors = pos[j] - pos[i] + torch.einsum("ek,ekl->el", data.cell_offsets, cell[batch[i]])
    r = vectors.norm(dim=-1)
    weight = (data.atomic_numbers[i] * data.atomic_numbers[j]).to(pos.dtype).sqrt()
    pair = 0.5 * weight * (r - 1.5) ** 2 * torch.exp(-r)
    count = int(batch.max()) + 1
    return torch.zeros(count, dtype=pos.dtype).index_add(0, batch[i], pair)


def pair_model(data: Data) -> dict[str, Tensor]:
    """Energy [B], forces [N, 3] and stress [B, 3, 3] (ASE sign) of the pair potential."""
    batch = data.get("batch")
    if batch is None:
        batch = torch.zeros(len(data.pos), dtype=torch.long)
    cell = data.cell.reshape(-1, 3, 3)
    strain = torch.zeros_like(cell, requires_grad=True)
    pos = data.pos.detach().requires_grad_(True)
    deformation = torch.eye(3, dtype=cell.dtype) + strain
    strained_pos = torch.einsum("nk,nkl->nl", pos, deformation[batch])
    energy = pair_energy(data, strained_pos, cell @ deformation)
    grad_pos, grad_strain = torch.autograd.grad(energy.sum(), (pos, strain))
    volume = torch.linalg.det(cell).abs().reshape(-1, 1, 1)
    return {"energy": energy.detach(), "force": -grad_pos, "stress": grad_strain / volume}


# -- tolerances and comparisons -----------------------------------------------------------------


def test_tolerances_per_dtype() -> None:
    assert dict(TOLERANCES) == {torch.float32: 1e-5, torch.float64: 1e-10}
    assert tolerance(torch.float32) == 1e-5
    assert tolerance(torch.float64) == 1e-10
    assert tolerance(torch.long) == 0.0
    assert tolerance(torch.bool) == 0.0
    with pytest.raises(ValueError, match=r"tolerance\(dtype=torch.float16\): no tolerance"):
        tolerance(torch.float16)


def test_close_relative_bound_is_the_tolerance_times_the_largest_value(
    dtype: torch.dtype,
) -> None:
    tol = TOLERANCES[dtype]
    expected = torch.tensor([4.0, -2.0, 0.5], dtype=dtype)
    # The bound is tol * 4 (the largest magnitude): 0.9 of it passes, 1.5 of it fails.
    assert_close_relative(expected + torch.tensor([0.0, 0.0, 0.9 * 4 * tol], dtype=dtype),
                          expected)  # fmt: skip
    too_far = expected.double() + torch.tensor([0.0, 1.5 * 4 * tol, 0.0], dtype=torch.float64)
    with pytest.raises(AssertionError, match=r"energy: max error .* > .*of scale 4"):
        assert_close_relative(too_far, expected, what="energy")
    assert_close_relative(too_far, expected, factor=2.0)


def test_close_relative_floor_applies_to_small_values() -> None:
    tiny = torch.tensor([1e-6], dtype=torch.float64)
    off = tiny + 5e-11  # 5e-11 <= 1e-10 * max(1e-6, floor) only with floor 1
    with pytest.raises(AssertionError, match=r"max error 5e-11 > 1e-13"):
        assert_close_relative(off, tiny)
    assert_close_relative(off, tiny, floor=1.0)


def test_close_relative_with_rtol_and_atol_bounds_every_element() -> None:
    expected = torch.tensor([100.0, 1.0], dtype=torch.float64)
    assert_close_relative(expected + torch.tensor([0.5, 0.0]), expected, rtol=1e-2)
    with pytest.raises(AssertionError, match=r"error 0.02 at flat index 1 > 0.01 \(atol 0.0"):
        assert_close_relative(expected + torch.tensor([0.0, 0.02]), expected, atol=0.0, rtol=1e-2)
    assert_close_relative(expected + torch.tensor([0.0, 0.02]), expected, atol=0.02, rtol=0.0)


def test_close_relative_fails_on_nan_and_on_shape() -> None:
    expected = torch.tensor([1.0, 2.0])
    with pytest.raises(AssertionError, match="max error nan"):
        assert_close_relative(torch.tensor([1.0, math.nan]), expected)
    with pytest.raises(AssertionError, match=r"at flat index 1"):
        assert_close_relative(torch.tensor([1.0, math.nan]), expected, atol=1.0)
    with pytest.raises(AssertionError, match=r"force: shape \(2, 1\) != expected \(2,\)"):
        assert_close_relative(expected.unsqueeze(-1), expected, what="force")
    assert_close_relative(torch.zeros(0, 3), torch.zeros(0, 3))


def test_integer_values_must_match_exactly() -> None:
    expected = torch.tensor([3, 7])
    assert_close_relative(expected.clone(), expected)
    with pytest.raises(AssertionError, match="max error 1 > 0"):
        assert_close_relative(torch.tensor([3, 8]), expected)


# -- rotations ----------------------------------------------------------------------------------


def test_random_rotation_is_a_seeded_rotation(dtype: torch.dtype) -> None:
    rotation = random_rotation(5, dtype)
    assert rotation.dtype == dtype
    identity = torch.eye(3, dtype=dtype)
    assert_close_relative(rotation @ rotation.T, identity, floor=1.0, factor=10.0)
    assert float(torch.linalg.det(rotation)) == pytest.approx(1.0, abs=1e-5)
    assert float(torch.linalg.det(random_rotation(5, dtype, improper=True))) == pytest.approx(
        -1.0, abs=1e-5
    )
    assert torch.equal(random_rotation(5, dtype), rotation)
    assert not torch.allclose(random_rotation(6, dtype), rotation)


def test_pair_model_energy_is_invariant_forces_and_stress_rotate(dtype: torch.dtype) -> None:
    for seed in range(3):
        assert_equivariant(pair_model, crystal(seed, dtype), OUTPUTS, seed=seed,
                           floor={"energy": 1.0})  # fmt: skip


def test_a_model_of_the_x_coordinates_is_not_equivariant(dtype: torch.dtype) -> None:
    def x_only(data: Data) -> Tensor:
        return data.pos[:, :1] * data.pos.sum(-1, keepdim=True)

    with pytest.raises(AssertionError, match=r"output after rotation: max error"):
        assert_equivariant(x_only, crystal(0, dtype), "scalar")


def test_a_vector_declared_scalar_fails(dtype: torch.dtype) -> None:
    with pytest.raises(AssertionError, match=r"force after rotation"):
        assert_equivariant(pair_model, crystal(0, dtype), {**OUTPUTS, "force": "scalar"})


def test_forces_that_miss_the_cell_rotation_fail(dtype: torch.dtype) -> None:
    """Rotating positions without the cell is not a symmetry of a crystal: the check does both."""
    data = crystal(1, dtype)
    with pytest.raises(AssertionError, match=r"after rotation"):
        assert_equivariant(pair_model, data, OUTPUTS, inputs={"pos": "vector"})


def _cross_product(data: Data) -> dict[str, Tensor]:
    """A pseudovector (cross product of two bonds) and a pseudoscalar (a triple product)."""
    a, b, c = data.pos[1] - data.pos[0], data.pos[2] - data.pos[0], data.pos[3] - data.pos[0]
    axial = torch.linalg.cross(a, b)
    return {"axial": axial.unsqueeze(0), "chirality": (axial @ c).reshape(1)}


def test_parity_tells_pseudovectors_from_vectors(dtype: torch.dtype) -> None:
    molecule = Data(pos=torch.randn(4, 3, dtype=dtype))
    axial: dict[str, Representation] = {"axial": "pseudovector", "chirality": "pseudoscalar"}
    assert_equivariant(_cross_product, molecule, axial)
    polar: dict[str, Representation] = {"axial": "vector", "chirality": "scalar"}
    assert_equivariant(_cross_product, molecule, polar, parity=False)
    with pytest.raises(AssertionError, match=r"after rotation with inversion"):
        assert_equivariant(_cross_product, molecule, polar)


def _block_rotation(rotation: Tensor) -> Tensor:
    """D(R) of features [scalar, vector]: block_diag(1, R)."""
    wigner = torch.zeros(4, 4, dtype=rotation.dtype)
    wigner[0, 0] = 1.0
    wigner[1:, 1:] = rotation
    return wigner


def test_callable_representation_acts_on_features(dtype: torch.dtype) -> None:
    weight = torch.randn(4, dtype=dtype)

    def gated(data: Data) -> Tensor:
        """Scalars times a gate; vectors times a gate of their norm: equivariant."""
        scalar, vector = data.x[:, :1], data.x[:, 1:]
        norm = vector.norm(dim=-1, keepdim=True)
        return torch.cat([weight[0] * scalar + weight[1] * norm, torch.tanh(scalar) * vector], -1)

    features = Data(x=torch.randn(5, 4, dtype=dtype))
    assert_equivariant(gated, features, _block_rotation, inputs={"x": _block_rotation})
    transposed = lambda rotation: _block_rotation(rotation.T)  # noqa: E731
    with pytest.raises(AssertionError, match=r"output after rotation"):
        assert_equivariant(gated, features, transposed, inputs={"x": _block_rotation})


def test_embeddings_are_outputs_too() -> None:
    def embed(data: Data) -> Embeddings:
        distance = (data.pos[:, None] - data.pos[None]).norm(dim=-1)
        return Embeddings(point_embedding=distance.sum(-1, keepdim=True),
                          system_embedding=data.pos.sum(0, keepdim=True))  # fmt: skip

    data = Data(pos=torch.randn(3, 3, dtype=torch.float64))
    assert_equivariant(embed, data, {"point_embedding": "scalar", "system_embedding": "vector"})
    with pytest.raises(AssertionError, match=r"system_embedding after rotation"):
        assert_equivariant(embed, data, "scalar")


def test_equivariance_errors_name_the_mistake() -> None:
    data = crystal(0)
    with pytest.raises(ValueError, match=r"returns \['stress'\] but `outputs` does not say"):
        assert_equivariant(pair_model, data, {"energy": "scalar", "force": "vector"})
    with pytest.raises(ValueError, match=r"output 'energy': 'spinor' is not a representation"):
        assert_equivariant(pair_model, data, "spinor")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"inputs names 'noisy_pos', which data lacks"):
        assert_equivariant(pair_model, data, "scalar", inputs={"noisy_pos": "vector"})
    with pytest.raises(TypeError, match=r"the model returned list; expected a Tensor"):
        assert_equivariant(lambda d: [d.pos], data, "vector")


# -- translations and permutations --------------------------------------------------------------


def test_translation_invariance(dtype: torch.dtype) -> None:
    assert_translation_invariant(pair_model, crystal(2, dtype), floor={"energy": 1.0})

    def absolute(data: Data) -> Tensor:
        return (data.pos**2).sum().reshape(1)

    with pytest.raises(AssertionError, match=r"output after translation"):
        assert_translation_invariant(absolute, crystal(2, dtype))
    with pytest.raises(AssertionError, match=r"output after translation"):
        assert_translation_invariant(absolute, crystal(2, dtype), shift=[0.0, 0.0, 0.1])


def test_permutation_of_atoms_and_edges(dtype: torch.dtype) -> None:
    for seed in range(3):
        assert_permutation_equivariant(pair_model, crystal(seed, dtype), KINDS, seed=seed,
                                       floor={"energy": 1.0})  # fmt: skip


def test_per_atom_outputs_declared_invariant_fail() -> None:
    with pytest.raises(AssertionError, match=r"force after permuting the atoms"):
        assert_permutation_equivariant(pair_model, crystal(0), {**KINDS, "force": "invariant"})


def test_a_model_that_depends_on_the_atom_order_fails(dtype: torch.dtype) -> None:
    def ordered(data: Data) -> Tensor:
        weights = torch.arange(1, len(data.pos) + 1, dtype=data.pos.dtype)
        return (weights * data.atomic_numbers).sum().reshape(1).to(data.pos.dtype)

    with pytest.raises(AssertionError, match=r"output after permuting the atoms"):
        assert_permutation_equivariant(ordered, crystal(1, dtype), "invariant")


def test_a_model_that_reads_edges_by_position_fails() -> None:
    def first_edges(data: Data) -> Tensor:
        i, j = data.edge_index[:, :4]
        return (data.pos[j] - data.pos[i]).norm(dim=-1).sum().reshape(1)

    with pytest.raises(AssertionError, match=r"output after permuting the atoms"):
        assert_permutation_equivariant(first_edges, crystal(1), "invariant")


def test_batches_are_permuted_within_each_structure() -> None:
    batch = Batch.from_data_list([crystal(seed, n_atoms=3 + seed) for seed in range(3)])
    assert_permutation_equivariant(pair_model, batch, KINDS)
    wrong: dict[str, Any] = {**KINDS, "force": "scalar"}
    with pytest.raises(ValueError, match=r"output 'force' is 'scalar'; expected 'node'"):
        assert_permutation_equivariant(pair_model, batch, wrong)
    with pytest.raises(ValueError, match="no structure has two atoms to swap"):
        assert_permutation_equivariant(lambda d: d.pos, Data(pos=torch.zeros(1, 3)), "node")


# -- derivatives --------------------------------------------------------------------------------


def _energy_of_positions(data: Data) -> Any:
    return lambda pos: pair_energy(data, pos, data.cell)


def test_autograd_forces_are_the_energy_gradient(dtype: torch.dtype) -> None:
    data = crystal(3, dtype)
    forces = pair_model(data)["force"]
    assert float(forces.abs().max()) > 0.05  # not a check on zeros
    assert_forces_are_energy_gradient(_energy_of_positions(data), data.pos, forces)
    assert_forces_are_energy_gradient(_energy_of_positions(data), data.pos, forces, atoms=[2])


def test_wrong_forces_fail_the_finite_difference_check(dtype: torch.dtype) -> None:
    data = crystal(3, dtype)
    forces = pair_model(data)["force"]
    energy = _energy_of_positions(data)
    with pytest.raises(AssertionError, match=r"forces vs. -dE/dpos by finite differences"):
        assert_forces_are_energy_gradient(energy, data.pos, -forces)  # the sign
    with pytest.raises(AssertionError, match=r"forces vs. -dE/dpos"):
        assert_forces_are_energy_gradient(energy, data.pos, 0.9 * forces)
    with pytest.raises(AssertionError, match=r"forces vs. -dE/dpos"):
        assert_forces_are_energy_gradient(energy, data.pos, forces[[1, 0, 2, 3]])


def test_finite_difference_arguments_are_checked() -> None:
    data = crystal(0)
    with pytest.raises(ValueError, match=r"pos \(4, 3\) and forces \(12,\); expected both"):
        assert_forces_are_energy_gradient(_energy_of_positions(data), data.pos, torch.zeros(12))
    with pytest.raises(ValueError, match=r"positions of dtype torch.float16"):
        assert_forces_are_energy_gradient(
            _energy_of_positions(data), data.pos.half(), torch.zeros(4, 3).half()
        )
    with pytest.raises(ValueError, match=r"cell \(2, 3\) and stress \(3, 3\)"):
        assert_stress_is_strain_derivative(
            lambda pos, cell: 0.0, data.pos, torch.zeros(2, 3), torch.zeros(3, 3)
        )


def test_stress_of_an_energy_proportional_to_the_volume() -> None:
    """E = p V gives sigma = p I exactly; the opposite sign fails (ASE: tension is positive)."""
    cell = torch.tensor([[3.0, 0.0, 0.0], [0.5, 3.0, 0.0], [0.2, -0.3, 4.0]], dtype=torch.float64)

    def energy(pos: Tensor, strained: Tensor) -> Tensor:
        return 0.2 * torch.linalg.det(strained)

    pressure = 0.2 * torch.eye(3, dtype=torch.float64)
    assert_stress_is_strain_derivative(energy, torch.zeros(1, 3).double(), cell, pressure)
    with pytest.raises(AssertionError, match=r"stress vs. \(1/V\) dE/dstrain"):
        assert_stress_is_strain_derivative(energy, torch.zeros(1, 3).double(), cell, -pressure)


def test_autograd_stress_is_the_strain_derivative(dtype: torch.dtype) -> None:
    data = crystal(4, dtype)
    stress = pair_model(data)["stress"]
    assert float(stress.abs().max()) > 1e-3

    def energy(pos: Tensor, cell: Tensor) -> Tensor:
        return pair_energy(data, pos, cell.reshape(1, 3, 3))

    assert_stress_is_strain_derivative(energy, data.pos, data.cell, stress)
    assert_stress_is_strain_derivative(energy, data.pos, data.cell[0], stress[0])
    with pytest.raises(AssertionError, match=r"stress vs. \(1/V\) dE/dstrain"):
        assert_stress_is_strain_derivative(energy, data.pos, data.cell, -stress)
    asymmetric = stress.clone()
    asymmetric[0, 0, 1] += 0.05
    with pytest.raises(AssertionError, match=r"stress vs. \(1/V\) dE/dstrain"):
        assert_stress_is_strain_derivative(energy, data.pos, data.cell, asymmetric)


def test_stress_that_drops_the_strained_cell_fails() -> None:
    """Straining only the positions (the Open MatSciML bug) misses the image terms."""
    data = crystal(4)

    def energy(pos: Tensor, cell: Tensor) -> Tensor:
        return pair_energy(data, pos, cell)

    pos = data.pos.clone()
    strain = torch.zeros(3, 3, dtype=torch.float64, requires_grad=True)
    strained = pair_energy(data, pos @ (torch.eye(3, dtype=torch.float64) + strain), data.cell)
    (grad,) = torch.autograd.grad(strained.sum(), strain)
    wrong = grad / torch.linalg.det(data.cell[0]).abs()
    with pytest.raises(AssertionError, match=r"stress vs. \(1/V\) dE/dstrain"):
        assert_stress_is_strain_derivative(energy, data.pos, data.cell, wrong)


def test_the_stress_sign_is_the_one_of_ase() -> None:
    pytest.importorskip("ase")
    from ase.build import bulk
    from ase.calculators.emt import EMT

    atoms = bulk("Cu", "fcc", a=3.7, cubic=True)  # stretched: tension, positive stress
    atoms.rattle(0.05, seed=0)
    atoms.calc = EMT()
    reference = torch.tensor(atoms.get_stress(voigt=False))
    assert float(reference[0, 0]) > 0

    def energy(pos: Tensor, cell: Tensor) -> float:
        moved = atoms.copy()
        moved.calc = EMT()
        moved.set_cell(cell.numpy(), scale_atoms=False)
        moved.positions = pos.numpy()
        return float(moved.get_potential_energy())

    pos, cell = torch.tensor(atoms.positions), torch.tensor(atoms.cell.array)
    assert_stress_is_strain_derivative(energy, pos, cell, reference, rtol=1e-5, atol=1e-8)
    with pytest.raises(AssertionError, match=r"stress vs. \(1/V\) dE/dstrain"):
        assert_stress_is_strain_derivative(energy, pos, cell, -reference, rtol=1e-5, atol=1e-8)


# -- batches and compilation --------------------------------------------------------------------


def test_batch_matches_single(dtype: torch.dtype) -> None:
    structures = [crystal(seed, dtype, n_atoms=3 + seed) for seed in range(3)]
    assert_batch_matches_single(pair_model, structures, floor={"energy": 1.0})

    def leaky(batch: Batch) -> Tensor:
        """Centres positions on the whole batch: structures change each other."""
        return batch.pos - batch.pos.mean(0)

    with pytest.raises(AssertionError, match=r"output of structure 0 in the batch vs. alone"):
        assert_batch_matches_single(leaky, structures)

    def repeated(batch: Batch) -> Tensor:
        return batch.pos.repeat(batch.num_graphs, 1)

    with pytest.raises(AssertionError, match=r"output of the batch: 36 rows; .* alone give 12"):
        assert_batch_matches_single(repeated, structures)

    def first_only(batch: Batch) -> Tensor:
        return batch.pos[: int(batch.natoms[0])]

    with pytest.raises(AssertionError, match=r"output of structure 1 .*: shape \(0, 3\)"):
        assert_batch_matches_single(first_only, structures)
    with pytest.raises(ValueError, match=r"1 structure\(s\); expected two or more"):
        assert_batch_matches_single(pair_model, structures[:1])


class _Mlp(nn.Module):
    def __init__(self, shift_when_compiled: float = 0.0) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(6, 16), nn.SiLU(), nn.Linear(16, 2))
        self.shift_when_compiled = shift_when_compiled

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.layers(x)
        if torch.compiler.is_compiling():
            out = out + self.shift_when_compiled
        return out


def test_compiled_module_matches_eager_with_gradients() -> None:
    inputs = [torch.randn(5, 6), torch.randn(11, 6)]
    assert_compile_matches_eager(_Mlp(), inputs, gradients=True, backend="aot_eager")


def test_compile_only_differences_fail() -> None:
    with pytest.raises(AssertionError, match=r"output compiled \(input 0\): max error"):
        assert_compile_matches_eager(_Mlp(1e-3), [torch.randn(5, 6)], backend="eager")


def test_recompiling_for_a_new_size_fails_unless_allowed() -> None:
    def branchy(x: Tensor) -> Tensor:
        return x * 2 if x.shape[0] > 8 else x * 2.0 + 0.0

    inputs = [torch.randn(5, 3), torch.randn(11, 3)]
    with pytest.raises(AssertionError, match=r"input 1 recompiled"):
        assert_compile_matches_eager(branchy, inputs, backend="eager")
    assert_compile_matches_eager(branchy, inputs, recompile=True, backend="eager")


def test_compiled_data_input_gradient_is_checked() -> None:
    structures = [crystal(seed, torch.float32, n_atoms=4 + seed) for seed in range(2)]

    def energy(batch: Batch) -> Tensor:
        return pair_energy(batch, batch.pos, batch.cell)

    assert_compile_matches_eager(energy, [Batch.from_data_list(structures)], gradients=True,
                                 backend="eager")  # fmt: skip


# -- the trainer and the module -----------------------------------------------------------------


def test_quiet_trainer_defaults_and_overrides() -> None:
    pytest.importorskip("lightning")
    previous = torch.are_deterministic_algorithms_enabled()
    try:
        trainer = quiet_trainer()
        assert trainer.logger is None
        assert trainer.checkpoint_callback is None
        assert not trainer.progress_bar_callback
        assert all(type(c).__name__ != "ModelSummary" for c in trainer.callbacks)
        assert trainer.max_epochs == 1
        assert type(trainer.accelerator).__name__ == "CPUAccelerator"
        assert trainer.num_devices == 1
        assert torch.are_deterministic_algorithms_enabled()
        longer = quiet_trainer(max_epochs=3, gradient_clip_val=0.5)
        assert (longer.max_epochs, longer.gradient_clip_val) == (3, 0.5)
    finally:
        torch.use_deterministic_algorithms(previous)


def test_testing_is_a_public_submodule_outside_the_package_namespace() -> None:
    assert "testing" not in matsci.contract.__all__
    for name in testing.__all__:
        assert getattr(testing, name) is not None, name
