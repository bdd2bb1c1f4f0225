"""Physics tasks inside MultiTaskLitModule: shared passes, clean vs noisy views, inference mode."""

import torch
from physics_helpers import SmoothEncoder, random_crystal, with_targets
from torch_geometric.data import Batch
from torch_geometric.loader import DataLoader
from typing_extensions import override

from matsci.contract.testing import quiet_trainer
from matsci.tasks.core import Embeddings, MultiTaskLitModule, ScalarRegressionTask
from matsci.tasks.physics import ForceRegressionTask, GradFreeForceRegression, NodeDenoisingTask
from matsci.transforms import NoisyPositions


class RecordingEncoder(SmoothEncoder):
    """SmoothEncoder that remembers the positions of every pass."""

    def __init__(self) -> None:
        super().__init__(embedding_dim=8, vector_channels=2)
        self.seen: list[torch.Tensor] = []

    @override
    def forward(self, batch: Batch) -> Embeddings:
        self.seen.append(batch.pos.detach().clone())
        return super().forward(batch)


def _structures(count: int, noisy: bool = False) -> list:
    structures = [with_targets(random_crystal(seed, n_atoms=5, dtype=torch.float32), -1.0 * seed)
                  for seed in range(count)]  # fmt: skip
    if noisy:
        noise = NoisyPositions(scale=0.05, generator=torch.Generator().manual_seed(0))
        structures = [noise(data) for data in structures]
    return structures


def test_denoising_sees_noisy_positions_and_forces_see_clean_ones() -> None:
    encoder = RecordingEncoder()
    force = ForceRegressionTask(encoder=encoder, output_kwargs={"hidden_dim": 8})
    denoise = NodeDenoisingTask(encoder=encoder, output_kwargs={"hidden_dim": 8})
    module = MultiTaskLitModule(("bulk", force), ("bulk", denoise))
    batch = Batch.from_data_list(_structures(3, noisy=True))
    clean = batch.pos.clone()
    module.train()
    module.training_step({"bulk": batch}, 0).backward()
    # Two views, two passes: the force task's pass on clean positions, the denoiser's on noisy.
    assert len(encoder.seen) == 2
    views = {torch.equal(seen, clean): seen for seen in encoder.seen}
    assert set(views) == {True, False}
    assert torch.equal(views[False], batch.noisy_pos)
    assert torch.equal(batch.pos, clean)  # the caller's batch is untouched
    # The forces are those of the force task alone, on clean positions.
    module.eval()
    together = module.predict({"bulk": batch})["bulk"]["ForceRegressionTask"]
    alone = module.extract_task("bulk/ForceRegressionTask").predict(batch)
    torch.testing.assert_close(together["force"], alone["force"])
    torch.testing.assert_close(together["energy"], alone["energy"])


def test_force_stress_direct_force_and_energy_share_one_pass() -> None:
    encoder = RecordingEncoder()
    kwargs = {"encoder": encoder, "output_kwargs": {"hidden_dim": 8}}
    module = MultiTaskLitModule(
        ("bulk", ForceRegressionTask(compute_stress=True, **kwargs)),
        ("bulk", ForceRegressionTask(compute_stress=False, **kwargs)),
        ("bulk", GradFreeForceRegression(**kwargs)),
        ("bulk", ScalarRegressionTask(task_keys=["energy"], **kwargs)),
    )
    batch = Batch.from_data_list(_structures(4))
    module.eval()
    predictions = module.predict({"bulk": batch})["bulk"]
    assert len(encoder.seen) == 1
    for name in ("ForceRegressionTask", "ForceRegressionTask_2"):
        alone = module.extract_task(f"bulk/{name}").predict(batch)
        for key, value in alone.items():
            torch.testing.assert_close(predictions[name][key], value, rtol=1e-5, atol=1e-6)
    assert predictions["GradFreeForceRegression"]["force"].shape == (20, 3)
    assert predictions["ScalarRegressionTask"]["energy"].shape == (4, 1)


def test_energy_and_direct_force_train_together_with_inference_mode_validation() -> None:
    torch.manual_seed(0)
    encoder = SmoothEncoder(embedding_dim=8, vector_channels=2)
    module = MultiTaskLitModule(
        ("bulk", ForceRegressionTask(encoder=encoder, output_kwargs={"hidden_dim": 8})),
        ("bulk", GradFreeForceRegression(encoder=encoder, output_kwargs={"hidden_dim": 8})),
        lr=5e-3,
    )
    structures = _structures(16)
    for index, data in enumerate(structures):
        data.force = torch.randn_like(data.pos, generator=torch.Generator().manual_seed(index))
    module.fit_normalizers({"bulk": DataLoader(structures, batch_size=8)})
    run = quiet_trainer(max_steps=6, limit_val_batches=1)
    loaders = {"bulk": DataLoader(structures, batch_size=8)}
    run.fit(module, train_dataloaders=loaders, val_dataloaders=loaders)
    metrics = run.callback_metrics
    assert torch.isfinite(metrics["val/loss"])
    assert "val/bulk/ForceRegressionTask/force/mae" in metrics
    assert "val/bulk/GradFreeForceRegression/force/mae" in metrics


def test_the_module_schedules_a_force_task_not_the_task_default() -> None:
    force = ForceRegressionTask(encoder=SmoothEncoder(embedding_dim=8),
                                output_kwargs={"hidden_dim": 8})  # fmt: skip
    # Alone the task would decay its rate along FORCE_FIELD_SCHEDULE; in the module the
    # module's schedule (none: constant) serves every group, the task's lr its heads' group.
    module = MultiTaskLitModule(("bulk", force))
    optimizer = module.configure_optimizers()
    assert isinstance(optimizer, torch.optim.Optimizer)
    groups = {group["name"]: group["lr"] for group in optimizer.param_groups}
    assert groups == {"encoder": module.lr, "bulk/ForceRegressionTask": force.lr}
    scheduled = MultiTaskLitModule(
        ("bulk", force),
        scheduler_kwargs={"class_path": "matsci.tasks.core.WarmupCosineLR", "interval": "step"},
    )
    run = quiet_trainer(max_epochs=2, limit_val_batches=0)
    run.fit(scheduled, {"bulk": DataLoader(_structures(6), batch_size=3)})
    assert run.lr_scheduler_configs[0].scheduler.total_steps == 4
