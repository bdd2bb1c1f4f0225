"""compile_training: the compiled view pass (energy, forces, stress) equals eager training."""

import copy

import pytest
import torch
from physics_helpers import random_crystal
from torch import Tensor, nn
from torch.utils.data import DataLoader
from torch_geometric.data import Batch, Data

from matsci.contract import Embeddings
from matsci.contract.testing import quiet_trainer
from matsci.encoders import EquivariantEncoder, SchNetEncoder
from matsci.tasks.core import MultiTaskLitModule, ScalarRegressionTask, TaskEngine
from matsci.tasks.physics import ForceRegressionTask

BACKEND = "aot_eager"  # AOTAutograd without code generation: the same graph, compiled fast
TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-10}


def _encoder(kind: str) -> nn.Module:
    if kind == "schnet":
        return SchNetEncoder(hidden_channels=8, num_filters=8, num_interactions=2,
                             num_gaussians=6, cutoff=3.5)  # fmt: skip
    return EquivariantEncoder(num_channels=4, lmax=1, num_layers=1, cutoff=3.5, num_basis=4,
                              radial_hidden=8)  # fmt: skip


def _task(kind: str, dtype: torch.dtype, compile_training: bool | str) -> ForceRegressionTask:
    torch.manual_seed(0)
    task = ForceRegressionTask(encoder=_encoder(kind), compute_stress=True,
                               output_kwargs={"hidden_dim": 8},
                               reference_energies={1: -0.3, 2: -0.2, 3: -0.1},
                               compile_training=compile_training)  # fmt: skip
    return task.to(dtype).train()


def _structures(seeds: range, dtype: torch.dtype) -> list[Data]:
    structures = []
    for seed in seeds:
        data = random_crystal(seed, n_atoms=3 + seed % 4, dtype=dtype)
        generator = torch.Generator().manual_seed(seed)
        data.energy = torch.randn(1, generator=generator, dtype=dtype)
        data.force = torch.randn(data.num_nodes, 3, generator=generator, dtype=dtype)
        data.stress = 0.01 * torch.randn(1, 3, 3, generator=generator, dtype=dtype)
        data.gap = torch.randn(1, 1, generator=generator, dtype=dtype)
        structures.append(data)
    return structures


def _batch(seeds: range, dtype: torch.dtype) -> Batch:
    return Batch.from_data_list(_structures(seeds, dtype))


def _step(module: TaskEngine, batch: Batch) -> tuple[Tensor, dict[str, Tensor], list[Tensor]]:
    """One training step's loss, every output and every parameter's gradient."""
    module.zero_grad()
    outputs = module.task_outputs({entry.dataset: batch for entry in module.task_entries})
    total = batch.pos.new_zeros(())
    for entry in module.task_entries:
        targets = entry.task.get_targets(batch)
        loss, _ = entry.task.compute_losses(outputs[entry.name], batch, targets=targets)
        total = total + loss
    total.backward()
    values = {f"{name}/{key}": value.detach() for name, task_outputs in outputs.items()
              for key, value in task_outputs.items()}  # fmt: skip
    gradients = [
        torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in module.parameters()
    ]
    return total.detach(), values, gradients


def _assert_same_step(eager: TaskEngine, compiled: TaskEngine, batch: Batch) -> None:
    tolerance = TOLERANCE[batch.pos.dtype]
    loss, outputs, gradients = _step(eager, batch)
    loss_c, outputs_c, gradients_c = _step(compiled, batch)
    torch.testing.assert_close(loss_c, loss, rtol=tolerance, atol=tolerance)
    assert sorted(outputs_c) == sorted(outputs)
    for key, value in outputs.items():
        torch.testing.assert_close(outputs_c[key], value, rtol=tolerance, atol=tolerance)
    assert any(bool(g.abs().sum() > 0) for g in gradients)
    for got, want in zip(gradients_c, gradients, strict=True):
        torch.testing.assert_close(got, want, rtol=tolerance, atol=tolerance)


# Each case traces and compiles once (tens of seconds on a shared 2-core machine): the default
# run keeps SchNet in float64, the slow session runs the others.
_CASES = [
    ("schnet", torch.float64),
    pytest.param("schnet", torch.float32, marks=pytest.mark.slow),
    pytest.param("equivariant", torch.float64, marks=pytest.mark.slow),
    pytest.param("equivariant", torch.float32, marks=pytest.mark.slow),
]


@pytest.mark.parametrize(("kind", "dtype"), _CASES)
def test_compiled_step_equals_eager_without_recompiling(kind: str, dtype: torch.dtype) -> None:
    eager, compiled = _task(kind, dtype, False), _task(kind, dtype, BACKEND)
    compiled.load_state_dict(eager.state_dict())
    _assert_same_step(eager, compiled, _batch(range(3), dtype))  # warm-up: trace, compile
    assert compiled.compiled_pass is not None
    assert compiled.compiled_pass.num_graphs == 1
    # Other numbers of structures, atoms and edges: no new trace, no recompilation.
    with torch.compiler.set_stance("fail_on_recompile"):
        for seeds in (range(10, 14), range(20, 22), range(30, 37)):
            _assert_same_step(eager, compiled, _batch(seeds, dtype))
    assert compiled.compiled_pass.num_graphs == 1


def test_multitask_compiled_equals_eager() -> None:
    dtype = torch.float64

    def module(compile_training: bool | str) -> MultiTaskLitModule:
        torch.manual_seed(0)
        encoder = _encoder("schnet")
        force = ForceRegressionTask(encoder=encoder, compute_stress=True,
                                    output_kwargs={"hidden_dim": 8})  # fmt: skip
        gap = ScalarRegressionTask(encoder=encoder, task_keys=["gap"],
                                   output_kwargs={"hidden_dim": 8})  # fmt: skip
        built = MultiTaskLitModule(
            ("bulk", force), ("bulk", gap), compile_training=compile_training
        )
        return built.to(dtype).train()

    eager, compiled = module(False), module(BACKEND)
    compiled.load_state_dict(eager.state_dict())
    assert compiled.hparams["compile_training"] == BACKEND
    _assert_same_step(eager, compiled, _batch(range(4), dtype))
    assert compiled.compiled_pass is not None
    assert compiled.compiled_pass.num_graphs == 1


def test_fit_with_compiled_training_gives_eager_weights() -> None:
    dtype = torch.float64
    structures = _structures(range(12), dtype)
    weights = []
    for compile_training in (False, BACKEND):
        task = _task("schnet", dtype, compile_training)
        loader = DataLoader(structures, batch_size=5, collate_fn=Batch.from_data_list)  # type: ignore[arg-type]
        quiet_trainer(max_epochs=2).fit(task, loader)
        weights.append({name: value.clone() for name, value in task.state_dict().items()})
    eager, compiled = weights
    assert sorted(compiled) == sorted(eager)  # the switch does not change the state dict
    for name, value in eager.items():
        torch.testing.assert_close(compiled[name], value, rtol=1e-9, atol=1e-10)
    initial = _task("schnet", dtype, False).state_dict()["encoder.embedding.weight"]
    assert not torch.equal(eager["encoder.embedding.weight"], initial)  # it trained


def test_off_by_default_state_dict_and_copies() -> None:
    eager, compiled = _task("schnet", torch.float64, False), _task("schnet", torch.float64, True)
    assert eager.compiled_pass is None
    assert eager.hparams["compile_training"] is False
    assert compiled.compiled_pass is not None
    assert compiled.compiled_pass.backend == "inductor"
    assert list(compiled.state_dict()) == list(eager.state_dict())
    copied = copy.deepcopy(compiled)  # as weight averaging does
    assert copied.compiled_pass is not compiled.compiled_pass
    assert copied.compiled_pass is not None
    assert copied.compiled_pass.num_graphs == 0
    # Evaluation stays eager: nothing is traced.
    compiled.eval()
    compiled.predict(_batch(range(2), torch.float64))
    assert compiled.compiled_pass.num_graphs == 0


def test_unknown_backend_is_refused() -> None:
    with pytest.raises(ValueError, match=r"compile_training='no_such_backend'.*known backends"):
        _task("schnet", torch.float64, "no_such_backend")


class _ItemEncoder(nn.Module):
    """Python control flow on a tensor's value: cannot be traced into one graph."""

    embedding_dim = 4

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 4)

    def forward(self, batch: Batch) -> Embeddings:
        point = self.linear(batch.pos)
        if point.sum().item() > 1e9:
            point = 2 * point
        return Embeddings(point_embedding=point)


def test_untraceable_encoder_gets_a_clear_error() -> None:
    task = ForceRegressionTask(encoder=_ItemEncoder(), compile_training=BACKEND).double().train()
    with pytest.raises(RuntimeError, match=r"the encoder _ItemEncoder .*cannot be traced"):
        _step(task, _batch(range(2), torch.float64))


@pytest.mark.slow
def test_inductor_step_equals_eager() -> None:
    dtype = torch.float64
    eager, compiled = _task("schnet", dtype, False), _task("schnet", dtype, True)
    compiled.load_state_dict(eager.state_dict())
    _assert_same_step(eager, compiled, _batch(range(3), dtype))
    with torch.compiler.set_stance("fail_on_recompile"):
        _assert_same_step(eager, compiled, _batch(range(10, 15), dtype))
    assert compiled.compiled_pass is not None
    assert compiled.compiled_pass.num_graphs == 1


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_inductor_step_equals_eager() -> None:
    dtype = torch.float32
    eager = _task("schnet", dtype, False).cuda()
    compiled = _task("schnet", dtype, True).cuda()
    compiled.load_state_dict(eager.state_dict())
    for seeds in (range(3), range(10, 15)):
        batch = _batch(seeds, dtype).cuda()
        _assert_same_step(eager, compiled, batch)
    assert compiled.compiled_pass is not None
    assert compiled.compiled_pass.num_graphs == 1
