from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from tasks_core_helpers import encoder_kwargs, loader, make_structures, trainer
from typing_extensions import override

from matsci.tasks.core import ExponentialMovingAverage, ScalarRegressionTask

DECAY = 0.6


class _RecordWeights(pl.Callback):
    def __init__(self) -> None:
        self.steps: list[dict[str, torch.Tensor]] = []

    @override
    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
        batch_idx: int,
    ) -> None:  # fmt: skip
        self.steps.append({n: p.detach().clone() for n, p in pl_module.named_parameters()})


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    torch.manual_seed(0)
    task = ScalarRegressionTask(**encoder_kwargs(), task_keys=["energy"], lr=1e-2)
    initial = {n: p.detach().clone() for n, p in task.named_parameters()}
    ema, record = ExponentialMovingAverage(decay=DECAY), _RecordWeights()
    run = trainer(max_epochs=2, callbacks=[ema, record], num_sanity_val_steps=0)
    val = loader(make_structures(16, 1), batch_size=8)
    run.fit(task, loader(make_structures(32, 0), batch_size=8), val)
    path = tmp_path_factory.mktemp("ema") / "task.ckpt"
    run.save_checkpoint(path)
    return {"task": task, "ema": ema, "record": record, "initial": initial, "run": run,
            "val": val, "path": path}  # fmt: skip


def test_average_follows_the_recurrence(trained: dict[str, Any]) -> None:
    expected = dict(trained["initial"])
    for weights in trained["record"].steps:  # one entry per optimizer step
        expected = {n: DECAY * expected[n] + (1 - DECAY) * weights[n] for n in expected}
    averaged = trained["ema"].averaged_state_dict()
    assert trained["ema"].num_updates == len(trained["record"].steps) == 8
    assert list(averaged) == list(expected)
    for name, value in expected.items():
        torch.testing.assert_close(averaged[name], value, rtol=1e-5, atol=1e-6)
    # The raw weights are the last step's, not the average.
    last = trained["record"].steps[-1]
    for name, parameter in trained["task"].named_parameters():
        assert torch.equal(parameter.detach(), last[name])


def test_evaluation_uses_the_average_and_puts_the_raw_weights_back(
    trained: dict[str, Any],
) -> None:
    task, run, ema = trained["task"], trained["run"], trained["ema"]
    raw = {n: p.detach().clone() for n, p in task.named_parameters()}
    with_average = run.validate(task, trained["val"], verbose=False)[0]["val/loss"]
    for name, parameter in task.named_parameters():
        assert torch.equal(parameter.detach(), raw[name])
    averaged_task = ScalarRegressionTask(**encoder_kwargs(), task_keys=["energy"])
    averaged_task.load_state_dict({**task.state_dict(), **ema.averaged_state_dict()})
    plain = trainer().validate(averaged_task, trained["val"], verbose=False)[0]["val/loss"]
    raw_loss = trainer().validate(task, trained["val"], verbose=False)[0]["val/loss"]
    assert with_average == pytest.approx(plain, rel=1e-6)
    assert abs(with_average - raw_loss) > 1e-6


def test_prediction_uses_the_average(trained: dict[str, Any]) -> None:
    task, ema = trained["task"], trained["ema"]
    batches = loader(make_structures(4, 2), batch_size=4)
    predictions = trainer(callbacks=[ema]).predict(task, batches)
    assert predictions is not None
    averaged_task = ScalarRegressionTask(**encoder_kwargs(), task_keys=["energy"])
    averaged_task.load_state_dict({**task.state_dict(), **ema.averaged_state_dict()})
    expected = averaged_task.predict(next(iter(batches)))["energy"]
    torch.testing.assert_close(predictions[0]["energy"], expected)


def test_checkpoint_keeps_raw_and_averaged_weights(trained: dict[str, Any]) -> None:
    checkpoint = torch.load(trained["path"], weights_only=True)
    task, ema = trained["task"], trained["ema"]
    for name, value in task.state_dict().items():
        assert torch.equal(checkpoint["state_dict"][name], value)
    record = checkpoint["ema"]
    assert record["decay"] == DECAY
    assert record["applied_to"] == "evaluation"
    assert record["num_updates"] == 8
    for name, value in ema.averaged_state_dict().items():
        assert torch.equal(record["state_dict"][name], value)


def test_load_from_checkpoint_gives_evaluation_or_raw_weights(trained: dict[str, Any]) -> None:
    task, ema, path = trained["task"], trained["ema"], trained["path"]
    evaluated = ScalarRegressionTask.load_from_checkpoint(path)
    raw = ScalarRegressionTask.load_from_checkpoint(path, weights="raw")
    averaged = ema.averaged_state_dict()
    for name, value in evaluated.state_dict().items():
        assert torch.equal(value, averaged.get(name, task.state_dict()[name]))
    for name, value in raw.state_dict().items():
        assert torch.equal(value, task.state_dict()[name])
    with pytest.raises(ValueError, match=r"weights='best'\): expected 'evaluation'"):
        ScalarRegressionTask.load_from_checkpoint(path, weights="best")  # type: ignore[arg-type]


def test_checkpoint_saved_during_validation_still_holds_raw_weights(
    trained: dict[str, Any], tmp_path: Path
) -> None:
    task, ema = trained["task"], trained["ema"]
    raw = {n: v.clone() for n, v in task.state_dict().items()}
    ema.on_validation_start(trained["run"], task)  # the average is swapped in
    checkpoint: dict[str, Any] = {
        "state_dict": {n: v.clone() for n, v in task.state_dict().items()}
    }
    ema.on_save_checkpoint(trained["run"], task, checkpoint)
    ema.on_validation_end(trained["run"], task)
    for name, value in raw.items():
        assert torch.equal(checkpoint["state_dict"][name], value)
        assert torch.equal(task.state_dict()[name], value)


def test_resume_restores_the_average(trained: dict[str, Any]) -> None:
    checkpoint = torch.load(trained["path"], weights_only=True)
    fresh = ExponentialMovingAverage(decay=DECAY)
    task = ScalarRegressionTask(**encoder_kwargs(), task_keys=["energy"])
    fresh.on_load_checkpoint(trained["run"], task, checkpoint)
    fresh.load_state_dict(checkpoint["callbacks"][fresh.state_key])
    assert fresh.num_updates == 8
    for name, value in trained["ema"].averaged_state_dict().items():
        assert torch.equal(fresh.averaged_state_dict()[name], value)


@pytest.mark.parametrize("decay", [-0.1, 1.0, float("nan"), "0.9"])
def test_bad_decay(decay: Any) -> None:
    with pytest.raises(
        ValueError, match=r"ExponentialMovingAverage\(decay=.*\): expected a number"
    ):
        ExponentialMovingAverage(decay=decay)
