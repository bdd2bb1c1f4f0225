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


class _AverageAfterEachStep(pl.Callback):
    """The averaged weight after every optimizer step (runs after the EMA callback)."""

    def __init__(self, ema: ExponentialMovingAverage) -> None:
        self.ema = ema
        self.values: list[float] = []

    @override
    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
        batch_idx: int,
    ) -> None:  # fmt: skip
        self.values.append(float(self.ema.averaged_state_dict()["w"]))


def _averages(ema: ExponentialMovingAverage, start: float, values: list[float]) -> list[float]:
    record = _AverageAfterEachStep(ema)
    data = torch.utils.data.DataLoader(torch.zeros(len(values), 1), batch_size=1)
    trainer(max_steps=len(values), callbacks=[ema, record]).fit(_Scripted(start, values), data)
    return record.values


def test_warm_up_on_a_hand_computed_case() -> None:
    # d_n = min(0.3, (1 + n) / (10 + n)): 0.1, 2/11, 0.25, then 0.3 (4/13 > 0.3).
    averages = _averages(ExponentialMovingAverage(decay=0.3), 0.0, [4.0, 8.0, 16.0, 0.0])
    # 0.1 * 0 + 0.9 * 4 = 3.6; 2/11 * 3.6 + 9/11 * 8 = 7.2; 0.25 * 7.2 + 0.75 * 16 = 13.8;
    # 0.3 * 13.8 + 0.7 * 0 = 4.14
    assert averages == pytest.approx([3.6, 7.2, 13.8, 4.14], rel=1e-12)


def test_without_warm_up_the_decay_applies_from_the_first_step() -> None:
    ema = ExponentialMovingAverage(decay=0.3, warmup=False)
    averages = _averages(ema, 0.0, [4.0, 8.0])
    assert averages == pytest.approx([2.8, 0.3 * 2.8 + 0.7 * 8.0], rel=1e-12)
    assert ema.num_updates == 2


def test_after_300_steps_the_initial_weights_are_forgotten() -> None:
    # The initial weight 1 is followed by 300 steps at 0: what remains of it is the product of
    # the decays, 0.999**300 = 74% without warm-up.
    warm = _averages(ExponentialMovingAverage(decay=0.999), 1.0, [0.0] * 300)[-1]
    cold = _averages(ExponentialMovingAverage(decay=0.999, warmup=False), 1.0, [0.0] * 300)[-1]
    assert cold == pytest.approx(0.999**300, rel=1e-9)
    assert cold == pytest.approx(0.7407, abs=1e-4)
    assert warm == pytest.approx(math.prod((1 + n) / (10 + n) for n in range(300)), rel=1e-9)
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
    checkpoints = ModelCheckpoint(dirpath=folder, save_last=True, save_top_k=0)
    run = trainer(max_epochs=2, callbacks=[ema, record, checkpoints], num_sanity_val_steps=0,
                  enable_checkpointing=True)  # fmt: skip
    val = loader(make_structures(8, 1), batch_size=8)  # one batch
    run.fit(task, loader(make_structures(32, 0), batch_size=8), val)
    return {"task": task, "ema": ema, "record": record, "initial": initial, "run": run,
            "val": val, "path": folder / "last.ckpt", "folder": folder}  # fmt: skip


def _expected_average(trained: dict[str, Any]) -> dict[str, Tensor]:
    ema: ExponentialMovingAverage = trained["ema"]
    expected = dict(trained["initial"])
    for n, weights in enumerate(trained["record"].steps):  # one entry per optimizer step
        d = min(DECAY, (1 + n) / (10 + n))
        expected = {k: d * expected[k] + (1 - d) * weights[k] for k in expected}
    assert ema.num_updates == len(trained["record"].steps) == 8
    return expected


def test_average_follows_the_recurrence_and_the_module_ends_with_it(
    trained: dict[str, Any],
) -> None:
    expected = _expected_average(trained)
    averaged = trained["ema"].averaged_state_dict()
    for name, value in expected.items():
        torch.testing.assert_close(averaged[name], value, rtol=1e-5, atol=1e-6)
        # After fit the module holds the average (Lightning's behaviour).
        torch.testing.assert_close(trained["task"].state_dict()[name], averaged[name])


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


def test_a_checkpoint_saved_after_fit_keeps_the_raw_weights(
    trained: dict[str, Any], tmp_path: Path
) -> None:
    path = tmp_path / "after.ckpt"
    trained["run"].save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=True)
    saved = torch.load(trained["path"], weights_only=True)
    for name, value in saved["current_model_state"].items():
        assert torch.equal(checkpoint["current_model_state"][name], value)
        assert torch.equal(checkpoint["state_dict"][name], saved["state_dict"][name])


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
    assert ema.averaged_state_dict() == {}
    assert repr(ema) == "ExponentialMovingAverage(decay=0.999, warmup=True)"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_the_update_does_not_synchronize_with_the_device() -> None:
    ema = ExponentialMovingAverage(decay=0.9)
    update = ema.on_train_batch_end

    def checked(*args: Any, **kwargs: Any) -> None:
        torch.cuda.set_sync_debug_mode("error")  # any host synchronization raises
        try:
            update(*args, **kwargs)
        finally:
            torch.cuda.set_sync_debug_mode("default")

    ema.on_train_batch_end = checked  # type: ignore[method-assign]
    run = trainer(max_steps=3, accelerator="gpu", deterministic=None, callbacks=[ema])
    run.fit(_task(), loader(make_structures(24, 0), batch_size=8))
    assert ema.num_updates == 3
    assert ema.averaged_state_dict()["encoder.mix.weight"].device.type == "cuda"


def test_a_second_fit_starts_a_new_average() -> None:
    ema = ExponentialMovingAverage(decay=0.3)
    assert _averages(ema, 0.0, [4.0, 8.0]) == pytest.approx([3.6, 7.2], rel=1e-12)
    # A new Trainer counts its steps from 0 again; the callback averages from its first step.
    assert _averages(ema, 1.0, [2.0]) == pytest.approx([0.1 * 1.0 + 0.9 * 2.0], rel=1e-12)
    assert ema.num_updates == 1
