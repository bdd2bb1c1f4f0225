from pathlib import Path
from typing import Any

import pytest
import torch
from tasks_core_helpers import (
    SizedEncoder,
    TinyEncoder,
    encoder_kwargs,
    loader,
    make_structures,
    trainer,
)
from torch_geometric.data import Batch

from matsci.tasks.core import (
    CHECKPOINT_RECORD,
    BinaryClassificationTask,
    CrystalSymmetryClassificationTask,
    MultiTaskLitModule,
    ScalarRegressionTask,
    TaskEngine,
)


def _batch(count: int = 6, seed: int = 3) -> Batch:
    return Batch.from_data_list(make_structures(count, seed=seed))


# -- one engine ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "hook",
    ["training_step", "validation_step", "test_step", "predict_step", "configure_optimizers",
     "on_train_epoch_end", "on_validation_epoch_end"],
)  # fmt: skip
def test_a_task_and_a_multitask_module_run_the_same_hooks(hook: str) -> None:
    assert getattr(ScalarRegressionTask, hook) is getattr(TaskEngine, hook)
    assert getattr(MultiTaskLitModule, hook) is getattr(TaskEngine, hook)
    assert (
        ScalarRegressionTask.load_from_checkpoint.__func__  # type: ignore[attr-defined]
        is MultiTaskLitModule.load_from_checkpoint.__func__  # type: ignore[attr-defined]
    )


def test_a_task_alone_and_inside_a_multitask_module_give_the_same_loss() -> None:
    task = ScalarRegressionTask(**encoder_kwargs(), task_keys=["energy", "properties"],
                                output_dims={"properties": 2})  # fmt: skip
    batch = _batch()
    task.train()
    alone = task.training_step(batch, 0)
    module = MultiTaskLitModule(("bulk", task))
    module.train()
    inside = module.training_step({"bulk": batch}, 0)
    torch.testing.assert_close(inside, alone, rtol=0, atol=0)


# -- multi-task forward on a plain batch ----------------------------------------------------------


def test_multitask_forward_takes_a_plain_batch_of_its_only_dataset() -> None:
    encoder = TinyEncoder()
    module = MultiTaskLitModule(
        ("bulk", ScalarRegressionTask(encoder=encoder, task_keys=["energy"])),
        ("bulk", BinaryClassificationTask(encoder=encoder, task_keys=["stable"])),
    )
    batch = _batch()
    plain, keyed = module(batch), module({"bulk": batch})
    assert sorted(plain) == ["bulk/BinaryClassificationTask", "bulk/ScalarRegressionTask"]
    for name, outputs in keyed.items():
        for key, value in outputs.items():
            assert torch.equal(plain[name][key], value)
    assert module.predict(batch)["bulk"]["ScalarRegressionTask"]["energy"].shape == (6, 1)


def test_multitask_forward_refuses_a_plain_batch_with_several_datasets() -> None:
    encoder = TinyEncoder()
    module = MultiTaskLitModule(
        ("bulk", ScalarRegressionTask(encoder=encoder, task_keys=["energy"])),
        ("symmetry", CrystalSymmetryClassificationTask(encoder=encoder)),
    )
    with pytest.raises(ValueError, match=r"without its dataset name.*'bulk', 'symmetry'"):
        module(_batch())


# -- a task's optimization settings inside a multi-task module ---------------------------------


def test_a_tasks_lr_and_weight_decay_become_its_parameter_group() -> None:
    encoder = TinyEncoder()
    fast = ScalarRegressionTask(encoder=encoder, task_keys=["energy"], lr=5e-2, weight_decay=0.1)
    default = BinaryClassificationTask(encoder=encoder, task_keys=["stable"])
    module = MultiTaskLitModule(("bulk", fast), ("bulk", default), lr=1e-3)
    run = trainer(max_steps=1)
    run.fit(module, {"bulk": loader(make_structures(8, 0), batch_size=8)})
    groups = {group["name"]: group for group in run.optimizers[0].param_groups}
    assert groups["bulk/ScalarRegressionTask"]["lr"] == 5e-2
    assert groups["bulk/ScalarRegressionTask"]["weight_decay"] == 0.1
    assert groups["bulk/BinaryClassificationTask"]["lr"] == 1e-3
    assert groups["encoder"]["lr"] == 1e-3
    # Every parameter is in exactly one group.
    ids = [id(p) for group in groups.values() for p in group["params"]]
    assert len(ids) == len(set(ids)) == len(list(module.parameters()))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"scheduler_kwargs": {"class_path": "StepLR", "init_args": {"step_size": 1}}},
         r"own scheduler_kwargs.*MultiTaskLitModule\(scheduler_kwargs"),
        ({"optimizer": "SGD"}, r"asks for optimizer torch.optim.sgd.SGD"),
    ],
)  # fmt: skip
def test_settings_one_optimizer_cannot_honour_are_refused(
    kwargs: dict[str, Any], match: str
) -> None:
    task = ScalarRegressionTask(encoder=TinyEncoder(), task_keys=["energy"], **kwargs)
    with pytest.raises(ValueError, match=match):
        MultiTaskLitModule(("bulk", task))


# -- validate before fit ------------------------------------------------------------------------


def test_validate_before_fit_then_fit_trains() -> None:
    task = ScalarRegressionTask(**encoder_kwargs(), task_keys=["energy"], lr=1e-2)
    train = loader(make_structures(32, 0), batch_size=8)
    val = loader(make_structures(16, 1), batch_size=8)
    before = trainer().validate(task, val, verbose=False)[0]["val/energy/mae"]
    run = trainer(max_epochs=3)
    run.fit(task, train, val)
    after = float(run.callback_metrics["val/energy/mae"])
    assert after < before


# -- what a checkpoint stores -------------------------------------------------------------------


def test_stored_hyperparameters_are_the_constructor_arguments() -> None:
    task = BinaryClassificationTask(**encoder_kwargs(), task_keys=["stable"], pos_weight=2.0,
                                    lr=0.01, output_kwargs={"hidden_dim": 8})  # fmt: skip
    assert task.hparams["pos_weight"] == 2.0
    assert task.hparams["loss_func"] is None  # not given: the task derives it from pos_weight
    assert task.hparams["output_kwargs"] == {"hidden_dim": 8}
    assert dict(task.hparams) == dict(task.hparams_initial)
    rebuilt = BinaryClassificationTask(**task.hparams)
    rebuilt.load_state_dict(task.state_dict())
    batch = _batch()
    assert torch.equal(
        rebuilt.eval().predict(batch)["stable"], task.eval().predict(batch)["stable"]
    )
    loss = rebuilt.losses["stable"].loss  # type: ignore[union-attr]
    assert torch.equal(loss.pos_weight, torch.tensor([2.0]))


def test_an_encoder_instance_is_recorded_with_its_own_arguments(tmp_path: Path) -> None:
    task = ScalarRegressionTask(encoder=SizedEncoder(width=8, scale=2.5), task_keys=["energy"])
    assert task.hparams["encoder_class"] == "tasks_core_helpers.SizedEncoder"
    assert task.hparams["encoder_kwargs"] == {"width": 8, "scale": 2.5}
    run = trainer(max_steps=2)
    run.fit(task, loader(make_structures(16, 0), batch_size=8))
    path = tmp_path / "task.ckpt"
    run.save_checkpoint(path)
    reloaded = ScalarRegressionTask.load_from_checkpoint(path)  # the checkpoint alone
    assert reloaded.encoder.scale == 2.5
    batch = _batch()
    assert torch.equal(
        reloaded.eval().predict(batch)["energy"], task.eval().predict(batch)["energy"]
    )
    record = torch.load(path, weights_only=True)[CHECKPOINT_RECORD]
    assert record == {"model_class": "matsci.tasks.core._scalar_regression.ScalarRegressionTask"}


def test_an_encoder_whose_arguments_cannot_be_read_needs_the_instance(tmp_path: Path) -> None:
    # TinyEncoder keeps no `num_elements` attribute: its arguments cannot be recorded, so the
    # checkpoint refuses to guess a default-size encoder.
    task = ScalarRegressionTask(encoder=TinyEncoder(embedding_dim=8), task_keys=["energy"])
    assert task.hparams["encoder_class"] is None
    run = trainer(max_steps=1)
    run.fit(task, loader(make_structures(8, 0), batch_size=8))
    path = tmp_path / "task.ckpt"
    run.save_checkpoint(path)
    with pytest.raises(ValueError, match=r"load_from_checkpoint\(path, encoder=...\)"):
        ScalarRegressionTask.load_from_checkpoint(path)
