"""MultiTaskLitModule: one encoder pass per dataset, one weighted loss, per-dataset outputs."""

import copy
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.utilities.combined_loader import CombinedLoader
from tasks_core_helpers import TinyEncoder, loader, make_structures, trainer
from torch_geometric.data import Batch
from typing_extensions import override

from matsci.tasks.core import (
    BinaryClassificationTask,
    CrystalSymmetryClassificationTask,
    LossWeightSchedule,
    MultiTaskLitModule,
    ScalarRegressionTask,
)

ENCODER = {"encoder_class": TinyEncoder, "encoder_kwargs": {"embedding_dim": 16}}


class CountingEncoder(TinyEncoder):
    """TinyEncoder that counts its forward calls and remembers the batch sizes it saw."""

    def __init__(self, embedding_dim: int = 16) -> None:
        super().__init__(embedding_dim)
        self.calls: list[int] = []

    @override
    def forward(self, batch: Batch) -> Any:
        self.calls.append(int(batch.num_graphs))
        return super().forward(batch)


def two_dataset_module(encoder: torch.nn.Module | None = None, **kwargs: Any) -> MultiTaskLitModule:
    encoder = encoder if encoder is not None else TinyEncoder()
    return MultiTaskLitModule(
        ("bulk", ScalarRegressionTask(encoder=encoder, task_keys=["energy"])),
        ("bulk", BinaryClassificationTask(encoder=encoder, task_keys=["stable"])),
        ("symmetry", CrystalSymmetryClassificationTask(encoder=encoder)),
        **kwargs,
    )


def batches(sizes: dict[str, int], seed: int = 0) -> dict[str, Batch]:
    return {
        name: Batch.from_data_list(make_structures(size, seed + i))
        for i, (name, size) in enumerate(sizes.items())
    }


def test_one_encoder_pass_per_dataset_and_one_backward_per_step() -> None:
    encoder = CountingEncoder()
    module = two_dataset_module(encoder)
    data = {
        "bulk": loader(make_structures(24, 0), 8),
        "symmetry": loader(make_structures(40, 1), 8),
    }
    backwards: list[int] = []

    class CountBackward(pl.Callback):
        def on_after_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            backwards.append(trainer.global_step)

    run = trainer(max_steps=4, callbacks=[CountBackward()])
    run.fit(module, train_dataloaders=CombinedLoader(data, "max_size_cycle"))
    # Three tasks on two datasets: two encoder passes per step, not three; one backward.
    assert len(encoder.calls) == 2 * 4
    assert len(backwards) == 4
    # The module owns the encoder once: it is not a submodule of the tasks.
    names = [name for name, _ in module.named_parameters()]
    assert sum(name.startswith("encoder.") for name in names) == len(list(encoder.parameters()))
    assert not any(".encoder." in name for name in names)


def test_each_dataset_gets_its_own_embeddings_and_batch_size() -> None:
    encoder = CountingEncoder()
    module = two_dataset_module(encoder)
    predictions = module.predict(batches({"bulk": 3, "symmetry": 5}))
    assert predictions["bulk"]["ScalarRegressionTask"]["energy"].shape == (3, 1)
    assert predictions["bulk"]["BinaryClassificationTask"]["stable"].shape == (3, 1)
    assert predictions["symmetry"]["CrystalSymmetryClassificationTask"]["spacegroup"].shape == (5,)
    assert encoder.calls == [3, 5]


def test_order_of_tasks_does_not_change_losses() -> None:
    encoder = TinyEncoder()
    energy = ScalarRegressionTask(encoder=encoder, task_keys=["energy"])
    stable = BinaryClassificationTask(encoder=encoder, task_keys=["stable"])
    forward = MultiTaskLitModule(("bulk", energy), ("bulk", stable))
    swapped_encoder = copy.deepcopy(encoder)
    backward = MultiTaskLitModule(
        ("bulk", copy.deepcopy(stable)), ("bulk", copy.deepcopy(energy)), encoder=swapped_encoder
    )
    data = batches({"bulk": 8})
    out_forward, out_backward = forward(data), backward(data)
    for task_id in forward.task_names:
        key = "energy" if "Scalar" in task_id else "stable"
        assert torch.equal(out_forward[task_id][key], out_backward[task_id][key])
    loss_forward = forward.training_step(data, 0)
    loss_backward = backward.training_step(data, 0)
    torch.testing.assert_close(loss_forward, loss_backward)


def test_two_tasks_of_one_class_on_one_dataset_get_distinct_names() -> None:
    encoder = TinyEncoder()
    module = MultiTaskLitModule(
        ("bulk", ScalarRegressionTask(encoder=encoder, task_keys=["energy"])),
        (
            "bulk",
            ScalarRegressionTask(
                encoder=encoder, task_keys=["properties"], output_dims={"properties": 2}
            ),
        ),
    )
    assert module.task_names == ["bulk/ScalarRegressionTask", "bulk/ScalarRegressionTask_2"]
    outputs = module(batches({"bulk": 4}))
    assert outputs["bulk/ScalarRegressionTask_2"]["properties"].shape == (4, 2)


def test_a_dataset_without_a_batch_contributes_nothing_but_its_heads_join_the_graph() -> None:
    module = two_dataset_module()
    module.train()
    loss = module.training_step({"bulk": batches({"bulk": 4})["bulk"], "symmetry": None}, 0)
    loss.backward()
    for name, parameter in module.named_parameters():
        assert parameter.grad is not None, f"{name} got no gradient"
    symmetry = module.task("symmetry/CrystalSymmetryClassificationTask")
    assert all(float(p.grad.abs().sum()) == 0.0 for p in symmetry.head_parameters())  # type: ignore[union-attr]


def test_multitask_trains_both_tasks_below_their_baselines(tmp_path: Path) -> None:
    torch.manual_seed(0)
    module = MultiTaskLitModule(
        task_configs=[
            {
                "dataset": "bulk",
                "class_path": "matsci.tasks.core.ScalarRegressionTask",
                "init_args": {"task_keys": ["energy"]},
            },
            {
                "dataset": "bulk",
                "class_path": "matsci.tasks.core.CrystalSymmetryClassificationTask",
            },
        ],
        lr=3e-3,
        **ENCODER,
    )
    train, test = make_structures(320, 0), make_structures(120, 1)
    module.fit_normalizers({"bulk": loader(train, 64)})
    trainer(max_epochs=12).fit(module, train_dataloaders={"bulk": loader(train, 32, True)})
    predictions = module.predict({"bulk": Batch.from_data_list(test)})["bulk"]
    truth = Batch.from_data_list(test)
    energy_mae = (predictions["ScalarRegressionTask"]["energy"].squeeze(-1) - truth.energy).abs()
    mean_mae = (truth.energy - torch.stack([d.energy for d in train]).mean()).abs()
    assert energy_mae.mean() < 0.5 * mean_mae.mean()
    labels = predictions["CrystalSymmetryClassificationTask"]["spacegroup"]
    accuracy = (labels == truth.spacegroup).float().mean()
    majority = max((truth.spacegroup == g).float().mean() for g in (1, 194, 225))
    assert accuracy > majority + 0.1


def test_checkpoint_round_trip_and_extract_task(tmp_path: Path) -> None:
    module = MultiTaskLitModule(
        task_configs=[
            {
                "dataset": "bulk",
                "class_path": "matsci.tasks.core.ScalarRegressionTask",
                "init_args": {
                    "task_keys": ["energy", "properties"],
                    "output_dims": {"properties": 2},
                },
                "name": "props",
            },
            {
                "dataset": "symmetry",
                "class_path": "matsci.tasks.core.CrystalSymmetryClassificationTask",
            },
        ],
        task_scaling={"symmetry/CrystalSymmetryClassificationTask": 0.5},
        loss_weight_schedules={
            "bulk/props": {"kind": "linear", "start": 0.0, "end": 1.0, "steps": 10}
        },
        **ENCODER,
    )
    module.fit_normalizers({"bulk": loader(make_structures(32, 0))})
    data = {
        "bulk": loader(make_structures(32, 0), 8),
        "symmetry": loader(make_structures(32, 1), 8),
    }
    run = trainer(max_steps=3)
    run.fit(module, train_dataloaders=data)
    path = tmp_path / "multi.ckpt"
    run.save_checkpoint(path)

    restored = MultiTaskLitModule.load_from_checkpoint(path)
    assert restored.task_names == module.task_names
    assert restored.loss_weight_schedules == module.loss_weight_schedules
    assert restored.task_scaling == module.task_scaling
    test = batches({"bulk": 6, "symmetry": 7}, seed=5)
    module.eval()
    expected, got = module.predict(test), restored.predict(test)
    for dataset, tasks in expected.items():
        for name, outputs in tasks.items():
            for key, value in outputs.items():
                assert torch.equal(value, got[dataset][name][key]), (dataset, name, key)

    alone = restored.extract_task("bulk/props")
    assert isinstance(alone, ScalarRegressionTask)
    for key, value in alone.predict(test["bulk"]).items():
        assert torch.equal(value, expected["bulk"]["props"][key])
    # The extracted task is standalone: it saves and reloads on its own, from its file alone.
    assert alone.encoder is not restored.encoder
    alone_run = trainer()
    alone_run.validate(alone, loader(make_structures(8, 0), 8), verbose=False)
    alone_path = tmp_path / "alone.ckpt"
    alone_run.save_checkpoint(alone_path)
    reloaded = ScalarRegressionTask.load_from_checkpoint(alone_path)
    for key, value in reloaded.eval().predict(test["bulk"]).items():
        assert torch.equal(value, expected["bulk"]["props"][key]), key


def test_validation_over_a_dict_of_loaders_logs_per_dataset_and_total() -> None:
    module = two_dataset_module()
    data = {
        "bulk": loader(make_structures(16, 0), 8),
        "symmetry": loader(make_structures(24, 1), 8),
    }
    run = trainer()
    metrics = run.validate(module, dataloaders=data, verbose=False)[0]
    run_metrics = run.callback_metrics
    assert "val/loss" in run_metrics
    # Each dataset's metric is computed on that dataset only: it equals a hand-made MAE over
    # the bulk structures (a mix-up with the symmetry loader would change it).
    bulk = Batch.from_data_list(make_structures(16, 0))
    module.eval()
    energy = module.predict({"bulk": bulk})["bulk"]["ScalarRegressionTask"]["energy"]
    expected_mae = (energy.squeeze(-1) - bulk.energy).abs().mean()
    assert float(run_metrics["val/bulk/ScalarRegressionTask/energy/mae"]) == pytest.approx(
        float(expected_mae), rel=1e-5
    )
    assert "val/symmetry/CrystalSymmetryClassificationTask/spacegroup/top1" in metrics
    expected_total = sum(float(run_metrics[f"val/{task_id}/loss"]) for task_id in module.task_names)
    assert float(run_metrics["val/loss"]) == pytest.approx(expected_total, rel=1e-5)


def test_parameter_groups_with_per_group_learning_rates() -> None:
    module = two_dataset_module(group_lr={"encoder": 1e-4, "bulk/ScalarRegressionTask": 1e-2})
    optimizer = module.configure_optimizers()
    groups = {group["name"]: group for group in optimizer.param_groups}
    assert list(groups) == ["encoder", *module.task_names]
    assert groups["encoder"]["lr"] == 1e-4
    assert groups["bulk/ScalarRegressionTask"]["lr"] == 1e-2
    assert groups["bulk/BinaryClassificationTask"]["lr"] == module.lr


def test_loss_weight_schedules() -> None:
    linear = LossWeightSchedule("linear", start=0.0, end=2.0, steps=10)
    cosine = LossWeightSchedule("cosine", start=1.0, end=0.0, steps=4)
    step = LossWeightSchedule("step", milestones=(2, 5), values=(1.0, 0.5, 0.1))
    assert [linear(s) for s in (0, 5, 10, 20)] == [0.0, 1.0, 2.0, 2.0]
    assert [round(cosine(s), 6) for s in (0, 2, 4)] == [1.0, 0.5, 0.0]
    assert [step(s) for s in (0, 1, 2, 4, 5, 9)] == [1.0, 1.0, 0.5, 0.5, 0.1, 0.1]
    assert LossWeightSchedule.from_config(step.to_config(), argument="x") == step
    with pytest.raises(ValueError, match="one more value than milestones"):
        LossWeightSchedule("step", milestones=(2,), values=(1.0,))
    with pytest.raises(ValueError, match="not fields of a 'linear' schedule"):
        LossWeightSchedule.from_config({"kind": "linear", "milestones": [1]}, argument="x")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"task_scaling": {"bulk/Nope": 1.0}}, "unknown names"),
        ({"group_lr": {"decoder": 1.0}}, "unknown names"),
        ({"loss_weight_schedules": {"bulk/ScalarRegressionTask": {"kind": "exp"}}}, "'kind'"),
    ],
)
def test_bad_arguments_are_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        two_dataset_module(**kwargs)


def test_bad_task_lists_are_refused() -> None:
    with pytest.raises(ValueError, match="give tasks"):
        MultiTaskLitModule()
    with pytest.raises(ValueError, match="must be non-empty, without"):
        MultiTaskLitModule(("a.b", ScalarRegressionTask(task_keys=["energy"], **ENCODER)))
    with pytest.raises(ValueError, match="tasks share the module's encoder"):
        MultiTaskLitModule(
            task_configs=[
                {
                    "dataset": "a",
                    "class_path": "matsci.tasks.core.ScalarRegressionTask",
                    "init_args": {"task_keys": ["energy"], **ENCODER},
                }
            ],
            **ENCODER,
        )
    with pytest.raises(ValueError, match="embedding_dim"):
        MultiTaskLitModule(
            ("a", ScalarRegressionTask(encoder=TinyEncoder(8), task_keys=["energy"])),
            encoder=TinyEncoder(16),
        )
    with pytest.raises(ValueError, match="not a task"):
        MultiTaskLitModule(
            task_configs=[{"dataset": "a", "class_path": "torch.nn.Linear"}], **ENCODER
        )
    module = two_dataset_module()
    with pytest.raises(ValueError, match="unknown datasets"):
        module.training_step({"other": batches({"other": 2})["other"]}, 0)
    with pytest.raises(KeyError, match="tasks are"):
        module.task("bulk/Missing")


def test_state_dict_holds_the_shared_encoder_once_and_reloads_strictly(tmp_path: Path) -> None:
    module = two_dataset_module()
    encoder_keys = set(module.encoder.state_dict())
    state = module.state_dict()
    assert {key for key in state if ".encoder." in key or key.startswith("encoder.")} == {
        f"encoder.{key}" for key in encoder_keys
    }
    # Three tasks, each with the encoder as a submodule: without the hooks, four copies.
    assert sum(".encoder." in key for key in module.state_dict(keep_vars=True)) == 0
    # Each task alone still sees its encoder (task.to(), extract_task, its own state_dict).
    for name in module.task_names:
        assert set(module.task(name).state_dict()) >= {f"encoder.{key}" for key in encoder_keys}

    other = two_dataset_module()
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.add_(torch.randn_like(parameter))
    assert other.load_state_dict(module.state_dict(), strict=True) is not None
    for name in module.task_names:
        assert other.task(name).encoder is other.encoder
    test = batches({"bulk": 5, "symmetry": 4}, seed=3)
    module.eval()
    other.eval()
    expected, got = module.predict(test), other.predict(test)
    for dataset, tasks in expected.items():
        for name, outputs in tasks.items():
            for key, value in outputs.items():
                assert torch.equal(value, got[dataset][name][key]), (dataset, name, key)
