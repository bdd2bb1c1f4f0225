import math
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import Tensor
from training_helpers import encoder_kwargs, loader, make_structures, trainer
from typing_extensions import override

from matsci.data import ResumableDataLoader
from matsci.tasks.core import ScalarRegressionTask
from matsci.training import ExponentialMovingAverage

DECAY = 0.6


# -- a one-weight model whose optimizer sets the weight to scripted values ---------------------


class _SetTo(torch.optim.Optimizer):
    """Each step sets the (single) parameter to the next scripted value."""

    def __init__(self, params: Any, values: list[float]) -> None:
        super().__init__(params, {})
        self.values = iter(values)

    @override
    def step(self, closure: Any = None) -> None:  # type: ignore[override]
        if closure is not None:
            with torch.enable_grad():
                closure()
        with torch.no_grad():
            self.param_groups[0]["params"][0].fill_(next(self.values))


class _Scripted(pl.LightningModule):
    def __init__(self, start: float, values: list[float]) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor([start], dtype=torch.float64))
        self.values = values

    @override
    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        return (self.w * 0.0).sum()

    @override
    def configure_optimizers(self) -> torch.optim.Optimizer:
        return _SetTo(self.parameters(), self.values)


def _averages(ema: ExponentialMovingAverage, start: float, values: list[float]) -> list[float]:
    """The average after each step: fits of 1, 2, ... steps (a module ends fit with it)."""
    averages = []
    for count in range(1, len(values) + 1):
        module = _Scripted(start, values[:count])
        data = torch.utils.data.DataLoader(torch.zeros(count, 1), batch_size=1)
        trainer(max_steps=count, callbacks=[ema]).fit(module, data)
        averages.append(float(module.w))
    return averages


def test_warm_up_on_a_hand_computed_case() -> None:
    # The first step's weights are copied; then d_n = min(0.3, (1 + n) / (10 + n)) = 0.1,
    # 2/11, 0.25: 4; 0.1 * 4 + 0.9 * 8 = 7.6; 2/11 * 7.6 + 9/11 * 16 = 14.4727...;
    # 0.25 * 14.4727... + 0.75 * 0 = 3.6181...
    averages = _averages(ExponentialMovingAverage(decay=0.3), 0.0, [4.0, 8.0, 16.0, 0.0])
    third = 2 / 11 * 7.6 + 9 / 11 * 16
    assert averages == pytest.approx([4.0, 7.6, third, 0.25 * third], rel=1e-12)


def test_without_warm_up_the_decay_applies_from_the_first_update() -> None:
    ema = ExponentialMovingAverage(decay=0.3, warmup=False)
    averages = _averages(ema, 0.0, [4.0, 8.0, 16.0])
    assert averages == pytest.approx([4.0, 6.8, 0.3 * 6.8 + 0.7 * 16.0], rel=1e-12)
    assert ema.num_updates == 2  # the last fit: a copy, then two updates


def test_after_300_steps_the_first_weights_are_forgotten() -> None:
    # The weight 1 after the first step is followed by 299 steps at 0: what remains of it is the
    # product of the decays, 0.999**299 = 74% without warm-up.
    def last(ema: ExponentialMovingAverage) -> float:
        module = _Scripted(0.0, [1.0] + [0.0] * 299)
        data = torch.utils.data.DataLoader(torch.zeros(300, 1), batch_size=1)
        trainer(max_steps=300, callbacks=[ema]).fit(module, data)
        return float(module.w)

    warm = last(ExponentialMovingAverage(decay=0.999))
    cold = last(ExponentialMovingAverage(decay=0.999, warmup=False))
    assert cold == pytest.approx(0.999**299, rel=1e-9)
    assert cold == pytest.approx(0.7414, abs=1e-4)
    assert warm == pytest.approx(math.prod((1 + n) / (10 + n) for n in range(299)), rel=1e-9)
    assert warm < 1e-16


# -- a task trained with an average: checkpoint layout, validation, resume ---------------------


class _Record(pl.Callback):
    """Raw weights after every step and predictions on the last validation batch."""

    def __init__(self) -> None:
        self.steps: list[dict[str, Tensor]] = []
        self.validation: list[Tensor] = []

    @override
    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
        batch_idx: int,
    ) -> None:  # fmt: skip
        self.steps.append({n: p.detach().clone() for n, p in pl_module.named_parameters()})

    @override
    def on_validation_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
        batch_idx: int, dataloader_idx: int = 0,
    ) -> None:  # fmt: skip
        assert isinstance(pl_module, ScalarRegressionTask)
        self.validation.append(pl_module.predict(batch)["energy"].clone())


def _task() -> ScalarRegressionTask:
    return ScalarRegressionTask(**encoder_kwargs(), task_keys=["energy"], lr=1e-2)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("ema")
    task = _task()
    initial = {n: p.detach().clone() for n, p in task.named_parameters()}
    ema, record = ExponentialMovingAverage(decay=DECAY), _Record()
    # Saved after the last optimizer step, mid-fit: Lightning's callback puts the average into
    # the module when training ends, so a checkpoint saved then holds it twice.
    checkpoints = ModelCheckpoint(dirpath=folder, filename="last", every_n_train_steps=8,
                                  save_top_k=-1)  # fmt: skip
    run = trainer(max_epochs=2, callbacks=[ema, record, checkpoints], num_sanity_val_steps=0,
                  enable_checkpointing=True)  # fmt: skip
    val = loader(make_structures(8, 1), batch_size=8)  # one batch
    run.fit(task, loader(make_structures(32, 0), batch_size=8), val)
    return {"task": task, "ema": ema, "record": record, "initial": initial, "run": run,
            "val": val, "path": folder / "last.ckpt", "folder": folder}  # fmt: skip


def _expected_average(trained: dict[str, Any]) -> dict[str, Tensor]:
    ema: ExponentialMovingAverage = trained["ema"]
    steps = trained["record"].steps  # the raw weights after each optimizer step
    expected = dict(steps[0])  # the average starts as a copy of the first step's weights
    for n, weights in enumerate(steps[1:]):
        d = min(DECAY, (1 + n) / (10 + n))
        expected = {k: d * expected[k] + (1 - d) * weights[k] for k in expected}
    assert len(steps) == 8
    assert ema.num_updates == 7
    return expected


def test_average_follows_the_recurrence_and_the_module_ends_with_it(
    trained: dict[str, Any],
) -> None:
    expected = _expected_average(trained)
    for name, value in expected.items():
        # After fit the module holds the average (Lightning's behaviour).
        torch.testing.assert_close(trained["task"].state_dict()[name], value, rtol=1e-5,
                                   atol=1e-6)  # fmt: skip


def test_checkpoint_layout_is_lightnings(trained: dict[str, Any]) -> None:
    checkpoint = torch.load(trained["path"], weights_only=True)
    expected = _expected_average(trained)
    raw = trained["record"].steps[-1]
    for name in expected:
        torch.testing.assert_close(checkpoint["state_dict"][name], expected[name], rtol=1e-5,
                                   atol=1e-6)  # fmt: skip
        assert torch.equal(checkpoint["current_model_state"][name], raw[name])
    assert set(checkpoint["state_dict"]) == set(checkpoint["current_model_state"])
    assert int(checkpoint["averaging_state"]["n_averaged"]) == 8
    assert "ema" not in checkpoint


def test_plain_load_gives_the_weights_validation_used(trained: dict[str, Any]) -> None:
    restored = ScalarRegressionTask.load_from_checkpoint(trained["path"])
    batch = next(iter(trained["val"]))
    # The last validation (after the last step) ran with the average swapped in.
    torch.testing.assert_close(restored.predict(batch)["energy"], trained["record"].validation[-1])
    raw = ScalarRegressionTask.load_from_checkpoint(trained["path"], weights="raw")
    for name, value in trained["record"].steps[-1].items():
        assert torch.equal(raw.state_dict()[name], value)
    assert not torch.allclose(raw.predict(batch)["energy"], trained["record"].validation[-1])


def test_a_pretrained_encoder_gets_the_same_weights_as_a_plain_load(
    trained: dict[str, Any],
) -> None:
    # Both read the checkpoint's state_dict, which holds the average: nothing to keep in step.
    loaded = ScalarRegressionTask.load_from_checkpoint(trained["path"]).encoder.state_dict()
    new = ScalarRegressionTask.from_pretrained_encoder(trained["path"], task_keys=["properties"])
    average = _expected_average(trained)
    for name, value in new.encoder.state_dict().items():
        assert torch.equal(value, loaded[name]), name
        torch.testing.assert_close(value, average[f"encoder.{name}"], rtol=1e-5, atol=1e-6)


def test_validation_puts_the_raw_weights_back() -> None:
    ema, record = ExponentialMovingAverage(decay=DECAY), _Record()
    weights: list[dict[str, Tensor]] = []

    class _AfterValidation(pl.Callback):
        @override
        def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            weights.append({n: p.detach().clone() for n, p in pl_module.named_parameters()})

    run = trainer(max_steps=4, val_check_interval=2, num_sanity_val_steps=0,
                  callbacks=[ema, record, _AfterValidation()])  # fmt: skip
    run.fit(_task(), loader(make_structures(32, 0), batch_size=8),
            loader(make_structures(8, 1), batch_size=8))  # fmt: skip
    # After the validation at step 2 training went on from the raw weights of step 2.
    for name, value in record.steps[1].items():
        assert torch.equal(weights[0][name], value)


def test_testing_a_checkpoint_after_fit_uses_its_average(trained: dict[str, Any]) -> None:
    run, task = trained["run"], trained["task"]
    from_checkpoint = run.test(task, trained["val"], ckpt_path=trained["path"], verbose=False)
    restored = ScalarRegressionTask.load_from_checkpoint(trained["path"])
    plain = trainer().test(restored, trained["val"], verbose=False)
    assert from_checkpoint[0]["test/loss"] == pytest.approx(plain[0]["test/loss"], rel=1e-6)


def _fit(max_steps: int, folder: Path, ckpt_path: Path | None = None) -> dict[str, Any]:
    torch.manual_seed(0)
    task, ema = _task(), ExponentialMovingAverage(decay=0.8)
    checkpoints = ModelCheckpoint(dirpath=folder, save_last=True, save_top_k=0,
                                  every_n_train_steps=1)  # fmt: skip
    run = trainer(max_steps=max_steps, callbacks=[ema, checkpoints], enable_checkpointing=True,
                  limit_val_batches=0)  # fmt: skip
    data = ResumableDataLoader(make_structures(48, 0), batch_size=8)  # resumes mid-epoch
    run.fit(task, data, ckpt_path=ckpt_path)
    return torch.load(folder / "last.ckpt", weights_only=True)


def test_resume_continues_raw_weights_and_average_exactly(tmp_path: Path) -> None:
    straight = _fit(5, tmp_path / "straight")
    _fit(3, tmp_path / "resumed")  # interrupted after 3 steps
    resumed = _fit(5, tmp_path / "resumed", ckpt_path=tmp_path / "resumed" / "last.ckpt")
    assert resumed["global_step"] == straight["global_step"] == 5
    for key in ("state_dict", "current_model_state"):
        for name, value in straight[key].items():
            torch.testing.assert_close(resumed[key][name], value, rtol=0, atol=0)
    assert int(resumed["averaging_state"]["n_averaged"]) == 5
    states = [
        {key: value for key, value in run["callbacks"].items() if "Exponential" in key}
        for run in (straight, resumed)
    ]
    assert states[0] == states[1]  # the warm-up count came back too


@pytest.mark.parametrize("decay", [-0.1, 1.0, float("nan"), "0.9", True])
def test_bad_decay(decay: Any) -> None:
    with pytest.raises(
        ValueError, match=r"ExponentialMovingAverage\(decay=.*\): expected a number in \[0, 1\)"
    ):
        ExponentialMovingAverage(decay=decay)


def test_bad_warmup() -> None:
    with pytest.raises(ValueError, match=r"ExponentialMovingAverage\(warmup=1\): expected a bool"):
        ExponentialMovingAverage(warmup=1)  # type: ignore[arg-type]


def test_decays_and_repr() -> None:
    ema = ExponentialMovingAverage(decay=0.999)
    assert ema.decay_at(0) == pytest.approx(0.1)
    assert ema.decay_at(8000) == 8001 / 8010
    assert ema.decay_at(9000) == 0.999  # (1 + n) / (10 + n) reaches 0.999 at n = 8990
    assert repr(ema) == "ExponentialMovingAverage(decay=0.999, warmup=True)"


def test_a_second_fit_starts_a_new_average() -> None:
    ema = ExponentialMovingAverage(decay=0.3)
    assert _averages(ema, 0.0, [4.0, 8.0]) == pytest.approx([4.0, 7.6], rel=1e-12)
    # A new fit starts a new average (a copy, then warm-up from n = 0 again).
    assert _averages(ema, 1.0, [2.0, 3.0]) == pytest.approx([2.0, 0.1 * 2.0 + 0.9 * 3.0])
    assert ema.num_updates == 1
