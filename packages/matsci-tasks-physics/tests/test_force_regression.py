from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch import Callback
from physics_helpers import SmoothEncoder, random_crystal, with_targets
from torch import Tensor, nn
from torch_geometric.data import Batch, Data
from torch_geometric.loader import DataLoader

from matsci.contract.testing import (
    assert_batch_matches_single,
    assert_forces_are_energy_gradient,
    assert_permutation_equivariant,
    assert_stress_is_strain_derivative,
    assert_translation_invariant,
    quiet_trainer,
)
from matsci.tasks.core import (
    Embeddings,
    WarmupCosineLR,
    gradients_enabled,
    prepare_encoder_input,
)
from matsci.tasks.physics import ForceRegressionTask
from matsci.transforms import PeriodicRadiusGraph, edge_vectors


def _task(compute_stress: bool = True, **kwargs: Any) -> ForceRegressionTask:
    task = ForceRegressionTask(
        encoder_class=SmoothEncoder, encoder_kwargs={"embedding_dim": 8},
        compute_stress=compute_stress, output_kwargs={"hidden_dim": 16}, **kwargs,
    )  # fmt: skip
    return task.double().eval()


def _energy_at(task: ForceRegressionTask, data: Data, pos: Tensor, cell: Tensor) -> Tensor:
    moved = data.clone()
    moved.pos, moved.cell = pos, cell
    energy, _, _ = task.energy_and_derivatives(Batch.from_data_list([moved]))
    return energy


def _outputs(task: ForceRegressionTask) -> Any:
    """The task as a model for the shared checks: energy, forces and stress of a structure."""

    def model(data: Data) -> dict[str, Tensor | None]:
        energy, force, stress = task.energy_and_derivatives(Batch.from_data_list([data]))
        return {"energy": energy, "force": force, "stress": stress}

    return model


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_forces_are_the_negative_gradient_of_the_energy(seed: int) -> None:
    task = _task()
    data = random_crystal(seed)
    _, force, _ = task.energy_and_derivatives(Batch.from_data_list([data]))
    assert_forces_are_energy_gradient(
        lambda p: _energy_at(task, data, p, data.cell), data.pos, force, rtol=1e-6, atol=1e-8
    )
    assert float(force.abs().max()) > 1e-3  # not trivially zero


@pytest.mark.parametrize("seed", [0, 3])
def test_stress_is_the_strain_derivative_over_volume(seed: int) -> None:
    task = _task()
    data = random_crystal(seed)
    _, _, stress = task.energy_and_derivatives(Batch.from_data_list([data]))
    assert stress is not None
    assert float(stress.abs().max()) > 1e-4  # not trivially zero
    assert_stress_is_strain_derivative(
        lambda pos, cell: _energy_at(task, data, pos, cell), data.pos, data.cell, stress,
        rtol=1e-6, atol=1e-9,
    )  # fmt: skip
    torch.testing.assert_close(stress[0], stress[0].T)


class LennardJonesEncoder(nn.Module):
    """A fixed analytic model: each atom's 'embedding' is half its Lennard-Jones pair energy."""

    embedding_dim = 1

    def __init__(self, epsilon: float = 0.2, sigma: float = 1.1, cutoff: float = 3.0) -> None:
        super().__init__()
        self.epsilon, self.sigma, self.cutoff = epsilon, sigma, cutoff

    def forward(self, batch: Batch) -> Embeddings:
        _, d = edge_vectors(
            batch.pos, batch.edge_index, batch.cell, batch.cell_offsets, batch.batch
        )

        def lj(r: Tensor | float) -> Tensor:
            return 4 * self.epsilon * ((self.sigma / r) ** 12 - (self.sigma / r) ** 6)  # type: ignore[return-value]

        pair = lj(d) - lj(self.cutoff)  # shifted at the cutoff, as ASE's LennardJones does
        atom = torch.zeros(len(batch.pos), dtype=d.dtype).index_add(
            0, batch.edge_index[0], 0.5 * pair
        )
        return Embeddings(point_embedding=atom.unsqueeze(-1))


def test_sign_and_units_match_ase_for_an_analytic_pair_potential() -> None:
    ase = pytest.importorskip("ase")
    from ase.build import bulk
    from ase.calculators.lj import LennardJones

    atoms = bulk("Cu", "fcc", a=1.6, cubic=True).repeat((2, 2, 2))
    atoms.rattle(0.05, seed=1)
    atoms.set_cell(atoms.cell * 1.02, scale_atoms=True)
    atoms.calc = LennardJones(epsilon=0.2, sigma=1.1, rc=3.0, smooth=False)
    data = Data(
        pos=torch.tensor(atoms.positions), atomic_numbers=torch.tensor(atoms.numbers),
        natoms=torch.tensor([len(atoms)]), cell=torch.tensor(atoms.cell.array).unsqueeze(0),
        pbc=torch.ones(1, 3, dtype=torch.bool),
    )  # fmt: skip
    data = PeriodicRadiusGraph(cutoff=3.0)(data)
    task = ForceRegressionTask(encoder=LennardJonesEncoder(), compute_stress=True).double().eval()
    task.output_heads["energy"] = nn.Identity()  # the model is exactly the pair potential
    energy, force, stress = task.energy_and_derivatives(Batch.from_data_list([data]))
    assert stress is not None
    assert float(energy) == pytest.approx(atoms.get_potential_energy(), rel=1e-10)
    torch.testing.assert_close(force, torch.tensor(atoms.get_forces()), rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(
        stress[0], torch.tensor(atoms.get_stress(voigt=False)), rtol=1e-8, atol=1e-10
    )
    assert ase.__version__


def test_translation_invariance_and_permutation_equivariance() -> None:
    task = _task(compute_stress=False)
    data = random_crystal(4, n_atoms=5)
    model = _outputs(task)
    assert_translation_invariant(model, data, shift=[0.3, -1.2, 2.5], floor={"energy": 1.0})
    assert_permutation_equivariant(
        model, data, {"energy": "invariant", "force": "node"}, floor={"energy": 1.0}
    )


def test_batched_equals_one_at_a_time() -> None:
    task = _task()
    structures = [random_crystal(seed, n_atoms=3 + seed) for seed in range(3)]

    def model(batch: Batch) -> dict[str, Tensor | None]:
        energy, force, stress = task.energy_and_derivatives(batch)
        assert stress is not None
        return {"energy": energy, "force": force, "stress": stress}

    assert_batch_matches_single(model, structures, floor={"energy": 1.0})


def _dataset(count: int = 24) -> list[Data]:
    return [with_targets(random_crystal(seed)) for seed in range(count)]


def test_validate_test_predict_under_default_trainer_give_manual_forces() -> None:
    task = _task()
    structures = _dataset(6)
    loader = DataLoader(structures, batch_size=3)
    manual = [task.predict(batch) for batch in loader]
    predicted = quiet_trainer().predict(task, loader)
    assert predicted is not None
    for mine, theirs in zip(manual, predicted, strict=True):
        for key in ("energy", "force", "stress"):
            torch.testing.assert_close(theirs[key], mine[key])  # type: ignore[index]
            assert not theirs[key].requires_grad  # type: ignore[index]
    validated = quiet_trainer().validate(task, loader, verbose=False)[0]
    tested = quiet_trainer().test(task, loader, verbose=False)[0]
    all_forces = torch.cat([out["force"] for out in manual])
    assert validated["val/force/mae"] == pytest.approx(float(all_forces.abs().mean()), rel=1e-5)
    assert tested["test/force/mae"] == pytest.approx(validated["val/force/mae"], rel=1e-9)
    assert {"val/energy/mae_per_atom", "val/force/rmse", "val/force/cosine_similarity",
            "val/stress/mae"} <= set(validated)  # fmt: skip


def test_caller_batch_is_not_changed() -> None:
    task = _task()
    batch = Batch.from_data_list(_dataset(2))
    before = {key: value.clone() for key, value in batch.items() if isinstance(value, Tensor)}
    task.train()
    task.compute_losses(task(batch), batch)
    for key, value in before.items():
        assert torch.equal(batch[key], value), key
        assert not batch[key].requires_grad, key


def test_training_keeps_graph_and_evaluation_does_not() -> None:
    task = _task()
    batch = Batch.from_data_list(_dataset(2))
    task.train()
    outputs = task(batch)
    assert outputs["force"].requires_grad  # create_graph: forces can be trained
    task.eval()
    with torch.inference_mode():
        outputs = task(batch)
    assert not outputs["force"].requires_grad


def _saved_bytes(step: Any) -> int:
    total = 0

    def pack(tensor: Tensor) -> Tensor:
        nonlocal total
        total += tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        step()
    return total


def test_predict_step_saves_less_for_autograd_than_a_training_step() -> None:
    task = _task()
    batch = Batch.from_data_list(_dataset(4))
    task.train()
    training = _saved_bytes(lambda: task.compute_losses(task(batch), batch)[0].backward())
    task.eval()
    predicting = _saved_bytes(lambda: task.predict(batch))
    assert predicting < 0.6 * training, (predicting, training)


@pytest.mark.parametrize("shared", [False, True])
def test_evaluation_frees_the_graph_unless_other_tasks_share_the_pass(shared: bool) -> None:
    task = _task()
    batch = Batch.from_data_list(_dataset(2))
    with gradients_enabled():
        encoder_input = prepare_encoder_input(
            batch, task.input_request(), keep_graph=False, shared=shared
        )
        embeddings = task.encoder(encoder_input.batch)
        first = task.derivatives(embeddings, encoder_input)
        if not shared:  # freed as the backward pass went: lower peak memory
            with pytest.raises(RuntimeError, match="second time"):
                task.derivatives(embeddings, encoder_input)
            return
        second = task.derivatives(embeddings, encoder_input)  # the next task of the pass
    for one, other in zip(first, second, strict=True):
        torch.testing.assert_close(one, other)


def test_fit_normalizers_recovers_reference_energies_and_force_rms() -> None:
    structures = _dataset(12)
    references = {1: -2.5, 2: -1.0, 3: -7.25}
    for data in structures:
        data.energy = torch.tensor([sum(references[int(z)] for z in data.atomic_numbers)])
        data.force = torch.full_like(data.pos, 0.3)
    task = _task()
    task.fit_normalizers(DataLoader(structures, batch_size=5))
    for number, value in references.items():
        assert float(task.reference_energies[number]) == pytest.approx(value, abs=1e-8)
    assert float(task.energy_scale) == pytest.approx(0.3)


def test_fixed_atoms_are_left_out_of_the_force_loss() -> None:
    task = _task(compute_stress=False)
    batch = Batch.from_data_list(_dataset(2))
    outputs = task(batch)
    _, losses = task.compute_losses(outputs, batch)
    batch.fixed = torch.zeros(batch.num_nodes, dtype=torch.bool)
    batch.fixed[:3] = True
    batch.force[:3] = 1e6  # would dominate the loss if it were used
    _, masked = task.compute_losses(outputs, batch)
    free = outputs["force"][3:]
    torch.testing.assert_close(masked["force"], (free**2).mean())
    assert masked["force"] < losses["force"] * 10


def _float32(data: Data) -> Data:
    return data.apply(lambda t: t.float() if t.is_floating_point() else t)


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    task = _task().train()  # Lightning keeps the mode a module is given in
    structures = _dataset(8)
    for data in structures:
        data.force = torch.randn_like(data.pos)
    task.fit_normalizers(DataLoader(structures, batch_size=4))
    run = quiet_trainer(max_steps=2, default_root_dir=tmp_path)
    single = [_float32(d) for d in structures]
    run.fit(task.float(), DataLoader(single, batch_size=4))
    # No scheduler_kwargs: the force-field default, a per-step cosine over the run's 2 steps.
    (schedule,) = run.lr_scheduler_configs
    assert isinstance(schedule.scheduler, WarmupCosineLR)
    assert (schedule.interval, schedule.scheduler.total_steps) == ("step", 2)
    assert run.optimizers[0].param_groups[0]["lr"] == pytest.approx(task.lr * 0.02)
    path = tmp_path / "force.ckpt"
    run.save_checkpoint(path)
    reloaded = ForceRegressionTask.load_from_checkpoint(path).eval()
    batch = Batch.from_data_list([single[0]])
    task.eval()
    for key, value in task.predict(batch).items():
        assert torch.equal(reloaded.predict(batch)[key], value), key
    assert torch.equal(reloaded.reference_energies, task.reference_energies)


def test_defaults_weigh_forces_most_and_given_weights_replace_them() -> None:
    task = ForceRegressionTask(encoder_class=SmoothEncoder, compute_stress=True)
    assert task.lr == 3e-3
    assert task.task_loss_scaling == {"energy": 1.0, "force": 10.0, "stress": 1.0}
    given = ForceRegressionTask(encoder_class=SmoothEncoder, task_loss_scaling={"force": 2.0})
    assert given.task_loss_scaling == {"energy": 1.0, "force": 2.0}
    with pytest.raises(ValueError, match=r"task_loss_scaling\): keys \['stress'\]"):
        ForceRegressionTask(encoder_class=SmoothEncoder, task_loss_scaling={"stress": 1.0})


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"task_keys": ["energy"]}, "the keys are fixed"),
        ({"normalize_kwargs": {"energy": {}}}, "normalize_kwargs=...\\): not an argument"),
        ({"energy_scale": 0.0}, "energy_scale=0.0"),
        ({"reference_energies": {0: 1.0}}, "atomic number 0 is outside"),
    ],
)
def test_bad_arguments(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ForceRegressionTask(encoder_class=SmoothEncoder, **kwargs)


def test_missing_forces_are_a_clear_error() -> None:
    task = _task()
    data = random_crystal(0)
    data.energy = torch.tensor([1.0], dtype=torch.float64)
    with pytest.raises(ValueError, match="force"):
        task.check_batch(Batch.from_data_list([data]))


def _float32_force_data() -> list[Data]:
    structures = [_float32(data) for data in _dataset(8)]
    for data in structures:
        data.force = torch.randn_like(data.pos)
    return structures


def _force_task() -> ForceRegressionTask:
    return ForceRegressionTask(
        encoder_class=SmoothEncoder, encoder_kwargs={"embedding_dim": 8}, compute_stress=True
    )


def _gradient_norm(module: nn.Module) -> float:
    norms = [p.grad.detach().norm() for p in module.parameters() if p.grad is not None]
    return float(torch.stack(norms).norm())


class _GradientNorms(Callback):
    """The gradient norm of each optimizer step before clipping and as the optimizer used it."""

    def __init__(self) -> None:
        self.before_clipping: list[float] = []
        self.stepped: list[float] = []

    def on_before_optimizer_step(self, trainer: Any, module: Any, optimizer: Any) -> None:
        self.before_clipping.append(_gradient_norm(module))  # Lightning clips after this hook

    def on_train_batch_end(
        self, trainer: Any, module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if (batch_idx + 1) % trainer.accumulate_grad_batches == 0:  # a batch that stepped:
            self.stepped.append(_gradient_norm(module))  # the gradients the optimizer used


@pytest.mark.parametrize("clip", [None, 1e-3], ids=["no-clip", "clip"])
def test_gradient_clipping_bounds_the_gradient_norm_and_accumulation_counts(
    clip: float | None,
) -> None:
    norms = _GradientNorms()
    task = _force_task()
    before = {name: p.detach().clone() for name, p in task.named_parameters()}
    run = quiet_trainer(max_steps=2, gradient_clip_val=clip, accumulate_grad_batches=2,
                        callbacks=[norms])  # fmt: skip
    run.fit(task, DataLoader(_float32_force_data(), batch_size=2))
    assert run.global_step == 2  # 4 batches, 2 per optimizer step
    assert len(norms.before_clipping) == len(norms.stepped) == 2
    assert min(norms.before_clipping) > 1e-2  # the clip value of 1e-3 binds
    if clip is None:  # the optimizer steps with the gradients as they came
        assert norms.stepped == pytest.approx(norms.before_clipping, rel=1e-6)
    else:  # scaled down to the clip value (torch scales by clip / (norm + 1e-6))
        assert all(0.99 * clip <= norm <= clip for norm in norms.stepped), norms.stepped
    changed = [n for n, p in task.named_parameters() if not torch.equal(before[n], p)]
    assert changed, "no parameter was updated"


def test_bf16_mixed_precision_trains_force_tasks() -> None:
    task = _force_task()
    before = {name: p.detach().clone() for name, p in task.named_parameters()}
    run = quiet_trainer(max_steps=2, precision="bf16-mixed")
    run.fit(task, DataLoader(_float32_force_data(), batch_size=2))
    assert run.global_step == 2
    changed = [n for n, p in task.named_parameters() if not torch.equal(before[n], p)]
    assert changed, "no parameter was updated"
    assert all(torch.isfinite(p).all() for p in task.parameters())


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_embedding_reduction_is_refused_where_nothing_is_pooled(reduction: str) -> None:
    # The energy is a sum of per-atom energies: no structure embedding is pooled.
    with pytest.raises(ValueError, match="pool nothing; leave embedding_reduction_type unset"):
        ForceRegressionTask(encoder=SmoothEncoder(), embedding_reduction_type=reduction)
