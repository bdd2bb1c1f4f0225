import math
from pathlib import Path

import pytest
import torch
from e3nn import o3
from encoder_checks import (
    assert_invariant_energy_equivariant_forces,
    assert_smooth_at_cutoff,
    assert_supercell_consistency,
    energy_force_stress,
    energy_model,
    fit_emt_forces,
    random_periodic_structure,
)
from torch_geometric.data import Batch, Data
from torch_geometric.loader import DataLoader

from matsci.contract.testing import (
    TOLERANCES,
    assert_batch_matches_single,
    assert_close_relative,
    assert_compile_matches_eager,
    assert_equivariant,
    assert_permutation_equivariant,
    assert_translation_invariant,
    quiet_trainer,
)
from matsci.encoders import EquivariantEncoder
from matsci.encoders._radial import RadialBasis, polynomial_envelope
from matsci.tasks.physics import ForceRegressionTask, GradFreeForceRegression
from matsci.transforms import PeriodicRadiusGraph

CUTOFF = 4.0
SMALL = {"num_channels": 8, "lmax": 2, "num_layers": 2, "cutoff": CUTOFF, "num_basis": 6}
ENCODER_PATH = "matsci.encoders.EquivariantEncoder"


def small_encoder(dtype: torch.dtype = torch.float64, **kwargs: object) -> EquivariantEncoder:
    return EquivariantEncoder(**{**SMALL, **kwargs}).to(dtype)  # type: ignore[arg-type]


def wigner_d(irreps: o3.Irreps, rotation: torch.Tensor) -> torch.Tensor:
    """D(R) of ``irreps`` to float64 precision (``D_from_matrix`` is good to about 2e-7 only).

    Each block solves ``Y_l(R v) = D_l(R) Y_l(v)`` by least squares over random directions;
    an improper ``R = -R'`` adds the parity ``p`` of each irrep.
    """
    matrix = rotation.double()
    sign = float(torch.linalg.det(matrix).sign())
    proper = sign * matrix
    directions = torch.randn(64, 3, generator=torch.Generator().manual_seed(0)).double()
    blocks = []
    for mul, ir in irreps:
        harmonics = o3.spherical_harmonics(ir.l, directions, normalize=True)
        moved = o3.spherical_harmonics(ir.l, directions @ proper.T, normalize=True)
        block = torch.linalg.lstsq(harmonics, moved).solution.T * (ir.p if sign < 0 else 1)
        blocks += [block] * mul
    exact: torch.Tensor = torch.block_diag(*blocks)  # type: ignore[no-untyped-call]
    torch.testing.assert_close(exact, irreps.D_from_matrix(matrix), atol=1e-6, rtol=0)
    return exact.to(rotation.dtype)


def embed(encoder: torch.nn.Module, data: Data) -> torch.Tensor:
    out = encoder(Batch.from_data_list([data]))
    assert out.point_embedding is not None
    point: torch.Tensor = out.point_embedding
    return point


# -- construction ----------------------------------------------------------------------------


def test_default_irreps_and_widths() -> None:
    encoder = EquivariantEncoder()
    assert encoder.embedding_dim == o3.Irreps("32x0e+16x1o+8x2e")
    assert encoder.system_embedding_dim == 32
    assert encoder.cutoff == 5.0
    assert [layer.residual for layer in encoder.layers] == [False, True, True]
    assert EquivariantEncoder(num_channels=8, lmax=1).embedding_dim == o3.Irreps("8x0e+4x1o")
    assert EquivariantEncoder(num_channels=4, lmax=3).embedding_dim == o3.Irreps(
        "4x0e+2x1o+1x2e+1x3o"
    )
    assert repr(EquivariantEncoder(num_channels=8, lmax=1)) == (
        "EquivariantEncoder(hidden_irreps=8x0e+4x1o, lmax=1, num_layers=3, cutoff=5.0, "
        "readout='sum')"
    )


def test_custom_hidden_irreps_are_sorted_and_may_need_several_layers() -> None:
    # From even scalars with Y up to 1o: 0e, 1o after one layer, 1e after two, 0o after three.
    encoder = EquivariantEncoder(lmax=1, num_layers=3, hidden_irreps="4x1e+6x0e+2x1o+3x0o")
    assert encoder.embedding_dim == o3.Irreps("3x0o+6x0e+2x1o+4x1e")  # e3nn order
    assert encoder.system_embedding_dim == 6  # the odd scalars are not invariant under parity
    data = random_periodic_structure(0, 4, 3.0, torch.float32)
    out = encoder(Batch.from_data_list([data]))
    assert out.point_embedding is not None
    assert out.system_embedding is not None
    assert out.point_embedding.shape == (4, encoder.embedding_dim.dim)
    assert out.system_embedding.shape == (1, 6)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_channels": 0}, r"num_channels=0\): expected an int >= 1"),
        ({"num_channels": 8.0}, r"num_channels=8.0\)"),
        ({"lmax": 0}, r"lmax=0\): expected an int in 1..6"),
        ({"lmax": 7}, r"lmax=7\)"),
        ({"num_layers": 0}, r"num_layers=0\)"),
        ({"num_basis": True}, r"num_basis=True\)"),
        ({"max_atomic_number": -1}, r"max_atomic_number=-1\)"),
        ({"radial_hidden": 0}, r"radial_hidden=0\)"),
        ({"cutoff": 0.0}, r"cutoff=0.0\): expected a finite number > 0"),
        ({"cutoff": math.inf}, r"cutoff=inf\)"),
        ({"cutoff": "5"}, r"cutoff='5'\)"),
        ({"avg_num_neighbors": -2.0}, r"avg_num_neighbors=-2.0\)"),
        ({"readout": "max"}, r"readout='max'\): expected one of \['sum', 'mean'\]"),
        ({"hidden_irreps": "8x0q"}, r"hidden_irreps='8x0q'\): not valid irreps"),
        ({"hidden_irreps": "8x1o"}, r"needs even scalars \(0e\)"),
        (
            {"hidden_irreps": "8x0e+4x1e", "lmax": 1, "num_layers": 1},
            r"\['4x1e'\] cannot be produced from scalars by 1 layer",
        ),
    ],
)
def test_bad_arguments(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        EquivariantEncoder(**kwargs)  # type: ignore[arg-type]


def test_state_dict_round_trip_and_reset_parameters() -> None:
    data = random_periodic_structure(1, 5, CUTOFF, torch.float64)
    encoder, clone = small_encoder(), small_encoder()
    assert not torch.equal(embed(encoder, data), embed(clone, data))
    clone.load_state_dict(encoder.state_dict())
    assert torch.equal(embed(encoder, data), embed(clone, data))
    clone.reset_parameters()
    assert not torch.equal(embed(encoder, data), embed(clone, data))
    frequencies = torch.arange(1, 7, dtype=torch.float64) * math.pi
    torch.testing.assert_close(clone.radial_basis.frequencies, frequencies)


# -- radial basis ----------------------------------------------------------------------------


def test_polynomial_envelope_values_and_derivatives() -> None:
    x = torch.tensor([0.0, 0.5, 1.0, 1.5], dtype=torch.float64, requires_grad=True)
    u = polynomial_envelope(x)
    # p = 6: 1 - 28 x^6 + 48 x^7 - 21 x^8
    expected = 1 - 28 * 0.5**6 + 48 * 0.5**7 - 21 * 0.5**8
    torch.testing.assert_close(u.detach(), torch.tensor([1.0, expected, 0.0, 0.0]).double())
    (du,) = torch.autograd.grad(u.sum(), x, create_graph=True)
    (d2u,) = torch.autograd.grad(du.sum(), x)
    assert du[2:].abs().max().item() == 0.0  # value, slope and curvature vanish at the cutoff
    assert d2u[2:].abs().max().item() == 0.0
    near = torch.tensor([1.0 - 1e-4], dtype=torch.float64)
    assert 0 < polynomial_envelope(near).item() < 1e-10  # 56 (1 - x)^3 to leading order


def test_radial_basis_values() -> None:
    basis = RadialBasis(cutoff=4.0, num_basis=3).double()
    d = torch.tensor([1.5, 4.0, 6.0], dtype=torch.float64)
    values = basis(d)
    u = polynomial_envelope(torch.tensor(1.5 / 4.0, dtype=torch.float64))
    expected = torch.tensor(
        [
            math.sqrt(2 / 4.0) * math.sin(n * math.pi * 1.5 / 4.0) / 1.5 * u.item()
            for n in (1, 2, 3)
        ],
        dtype=torch.float64,
    )
    torch.testing.assert_close(values[0], expected)
    assert torch.equal(values[1:], torch.zeros(2, 3, dtype=torch.float64))


# -- symmetries ------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1])
def test_energy_invariant_forces_equivariant(dtype: torch.dtype, seed: int) -> None:
    task = energy_model(small_encoder(dtype), dtype)
    data = random_periodic_structure(seed, 6, CUTOFF, dtype)
    assert_invariant_energy_equivariant_forces(task, data, dtype, seed=seed)


def test_node_irreps_equivariant(dtype: torch.dtype) -> None:
    encoder = small_encoder(dtype).eval()
    irreps = encoder.embedding_dim
    data = random_periodic_structure(3, 6, CUTOFF, dtype)

    def features(structure: Data) -> torch.Tensor:
        return embed(encoder, structure)

    # D(R) of the irreps, with their parity when det(R) = -1
    assert_equivariant(features, data, lambda rotation: wigner_d(irreps, rotation), seed=5)
    assert_translation_invariant(features, data, shift=[0.3, -1.2, 2.5])
    assert_permutation_equivariant(features, data, "node")


def _gradfree_task(dtype: torch.dtype) -> GradFreeForceRegression:
    task = GradFreeForceRegression(encoder=small_encoder(dtype), output_kwargs={"hidden_dim": 16})
    return task.to(dtype).eval()


def test_gradfree_vector_head_is_equivariant() -> None:
    """The 1x1o head on the encoder: e3nn's l = 1 basis is Cartesian (x, y, z) since e3nn 0.2.2."""
    dtype = torch.float32
    task = _gradfree_task(dtype)
    head = task.output_heads["force"]
    data = random_periodic_structure(4, 6, CUTOFF, dtype)
    vectors = head(embed(task.encoder, data))  # type: ignore[operator]
    assert vectors.shape == (6, 3)
    assert vectors.abs().max() > 1e-3
    assert_equivariant(lambda structure: head(embed(task.encoder, structure)), data, "vector",  # type: ignore[operator]
                       seed=7)  # fmt: skip


def test_gradfree_forces_rotate_with_the_structure() -> None:
    dtype = torch.float32
    task = _gradfree_task(dtype)
    data = random_periodic_structure(4, 6, CUTOFF, dtype)
    force = task.predict(Batch.from_data_list([data]))["force"]
    assert force.shape == (6, 3)
    assert force.abs().max() > 1e-3
    # Forces are polar vectors: F(-R x) = -R F(x), the head's 1o output does exactly that.
    assert_equivariant(lambda structure: task.predict(Batch.from_data_list([structure]))["force"],
                       data, "vector", seed=7)  # fmt: skip


@pytest.mark.parametrize("offsets", [True, False], ids=["zero_offsets", "no_offsets"])
def test_molecule_without_cell(dtype: torch.dtype, offsets: bool) -> None:
    encoder = small_encoder(dtype).eval()
    task = energy_model(encoder, dtype, compute_stress=False)
    pos = torch.tensor([[0.0, 0.0, 0.0], [1.1, 0.3, 0.0], [0.2, 1.4, 0.5], [2.0, 1.0, 1.0]])
    molecule = PeriodicRadiusGraph(CUTOFF)(
        Data(pos=pos.to(dtype), atomic_numbers=torch.tensor([6, 1, 1, 8]), natoms=torch.tensor([4]))
    )
    assert "cell" not in molecule
    assert not molecule.cell_offsets.any()
    if not offsets:
        del molecule.cell_offsets
    batch = Batch.from_data_list([molecule])
    _, force, _ = task.energy_and_derivatives(batch, keep_graph=False)
    # No cell: only the positions rotate (a proper and an improper rotation).
    assert_equivariant(energy_force_stress(task), batch, {"energy": "scalar", "force": "vector"},
                       seed=2, floor={"energy": 1.0})  # fmt: skip
    assert float(force.sum(0).abs().max()) <= 10 * TOLERANCES[dtype] * float(force.abs().max())


def test_supercell_consistency(dtype: torch.dtype) -> None:
    task = energy_model(small_encoder(dtype), dtype)
    assert_supercell_consistency(task, random_periodic_structure(2, 4, CUTOFF, dtype))


def test_smooth_at_cutoff() -> None:
    task = energy_model(small_encoder(torch.float64), torch.float64)
    assert_smooth_at_cutoff(task, CUTOFF)


def test_edges_beyond_the_cutoff_change_nothing(dtype: torch.dtype) -> None:
    encoder = small_encoder(dtype).eval()
    data = random_periodic_structure(5, 6, CUTOFF, dtype)
    wide = PeriodicRadiusGraph(CUTOFF + 1.5)(
        Data(pos=data.pos, atomic_numbers=data.atomic_numbers, cell=data.cell, pbc=data.pbc,
             natoms=data.natoms)
    )  # fmt: skip
    assert wide.edge_index.shape[1] > data.edge_index.shape[1]
    assert_close_relative(embed(encoder, wide), embed(encoder, data), what="extra long edges")


def test_readouts_and_batches(dtype: torch.dtype) -> None:
    structures = [random_periodic_structure(seed, 3 + seed, CUTOFF, dtype) for seed in range(3)]
    batch = Batch.from_data_list(structures)
    summed = small_encoder(dtype).eval()
    mean = small_encoder(dtype, readout="mean").eval()
    mean.load_state_dict(summed.state_dict())
    out_sum, out_mean = summed(batch), mean(batch)
    assert out_sum.system_embedding is not None
    assert out_mean.system_embedding is not None
    assert out_sum.system_embedding.shape == (3, summed.system_embedding_dim)
    natoms = batch.natoms.to(dtype).unsqueeze(-1)
    assert_close_relative(out_mean.system_embedding * natoms, out_sum.system_embedding,
                          what="sum = natoms * mean")  # fmt: skip
    assert_batch_matches_single(summed, structures)  # batching changes nothing


# -- tasks, training, compilation --------------------------------------------------------------


def _with_targets(data: Data) -> Data:
    data.energy = torch.tensor([-1.0])
    data.force = 0.1 * torch.randn_like(data.pos)
    return data


@pytest.mark.parametrize("task_class", [ForceRegressionTask, GradFreeForceRegression])
def test_tasks_train_end_to_end(task_class: type, tmp_path: Path) -> None:
    structures = [_with_targets(random_periodic_structure(s, 4, CUTOFF, torch.float32))
                  for s in range(8)]  # fmt: skip
    task = task_class(encoder_class=ENCODER_PATH, encoder_kwargs=dict(SMALL),
                      output_kwargs={"hidden_dim": 16})  # fmt: skip
    assert task.hparams["encoder_kwargs"] == SMALL
    before = [p.detach().clone() for p in task.encoder.parameters()]
    trainer = quiet_trainer()
    loader = DataLoader(structures, batch_size=4)
    trainer.fit(task, loader, loader)
    assert all(math.isfinite(v) for v in map(float, trainer.callback_metrics.values()))
    after = list(task.encoder.parameters())
    assert any(not torch.equal(b, a) for b, a in zip(before, after, strict=True))
    batch = Batch.from_data_list(structures[:2])
    out = task.eval().predict(batch)
    assert out["force"].shape == (8, 3)
    trainer.save_checkpoint(tmp_path / "task.ckpt")
    restored = task_class.load_from_checkpoint(tmp_path / "task.ckpt")  # weights_only loading
    assert isinstance(restored.encoder, EquivariantEncoder)
    torch.testing.assert_close(restored.eval().predict(batch)["force"], out["force"])


def test_compile_matches_eager() -> None:
    dtype = torch.float32
    encoder = small_encoder(dtype, lmax=1).eval()
    # 4 then 5 structures of other sizes: the second batch must reuse the compiled graph.
    batch = Batch.from_data_list([random_periodic_structure(s, 5, CUTOFF, dtype) for s in range(4)])
    other = Batch.from_data_list([random_periodic_structure(s, 7, CUTOFF, dtype) for s in range(5)])
    assert_compile_matches_eager(encoder, [batch, other], gradients=True)


def test_fits_emt_forces() -> None:
    # A cutoff of 4 Å holds the first two neighbour shells of the EMT metals (about 16 atoms);
    # at 3 Å the nearest neighbours (2.5 to 2.9 Å) would sit where the envelope vanishes.
    kwargs = {"num_channels": 16, "lmax": 1, "num_layers": 2, "cutoff": 4.0, "num_basis": 8,
              "radial_hidden": 16, "avg_num_neighbors": 16.0}  # fmt: skip
    # norm=False: the default e3nn BatchNorm of irreps heads zeroes forces while training
    # (see test_force_head_with_default_norm_has_forces_while_training).
    output_kwargs = {"hidden_dim": 32, "norm": False}
    mae, zero_mae = fit_emt_forces(
        EquivariantEncoder, kwargs, epochs=5, output_kwargs=output_kwargs
    )
    assert mae < 0.5 * zero_mae, (mae, zero_mae)


def test_force_head_with_default_norm_has_forces_while_training() -> None:
    task = ForceRegressionTask(
        encoder=small_encoder(torch.float64), output_kwargs={"hidden_dim": 16}
    )
    task = task.double().train()
    batch = Batch.from_data_list([random_periodic_structure(s, 6, CUTOFF, torch.float64)
                                  for s in range(2)])  # fmt: skip
    _, force, _ = task.energy_and_derivatives(batch, keep_graph=False)
    assert float(force.abs().max()) > 1e-6


@pytest.mark.gpu
def test_cuda_matches_cpu(dtype: torch.dtype) -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    task = energy_model(small_encoder(dtype), dtype)
    batch = Batch.from_data_list([random_periodic_structure(s, 6, CUTOFF, dtype) for s in (0, 1)])
    energy, force, stress = task.energy_and_derivatives(batch, keep_graph=False)
    gpu = task.to("cuda")
    energy_g, force_g, stress_g = gpu.energy_and_derivatives(batch.to("cuda"), keep_graph=False)
    factor = 100.0 if dtype == torch.float32 else 1.0  # other kernels, other rounding
    assert_close_relative(energy_g.cpu(), energy, what="cuda energy", factor=factor, floor=1.0)
    assert_close_relative(force_g.cpu(), force, what="cuda forces", factor=factor)
    assert stress is not None
    assert stress_g is not None
    assert_close_relative(stress_g.cpu(), stress, what="cuda stress", factor=factor)
