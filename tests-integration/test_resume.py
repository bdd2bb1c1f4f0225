"""A run killed with SIGKILL mid-epoch resumes from ``last.ckpt`` and ends where an uninterrupted
run ends: same weights, averaged weights, optimizer state, schedules and batches.

The test runs this file as a script in fresh interpreters (a killed process cannot be the test
process): once uninterrupted, once killed after nine optimizer steps (the last checkpoint is
from step eight, mid-way through the second epoch), and once resumed with ``ckpt_path="last"``.
Each run writes the structures of every batch it trains on, and its final state.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

HERE = Path(__file__).parent
ROOT = HERE.parent
KILL_AT_STEP = 9
CHECKPOINT_EVERY = 2


def _start(out: Path, kind: str, mode: str, *extra: str) -> subprocess.Popen[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, __file__, str(out), kind, mode, *extra],
        cwd=HERE,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(process: subprocess.Popen[str]) -> subprocess.CompletedProcess[str]:
    stdout, stderr = process.communicate(timeout=400)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def _run(out: Path, kind: str, mode: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return _finish(_start(out, kind, mode, *extra))


def _ok(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, f"run failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"


def _max_difference(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]) -> float:
    assert list(first) == list(second)
    return max(float((first[k].double() - second[k].double()).abs().max()) for k in first)


def _optimizer_difference(first: dict[str, Any], second: dict[str, Any]) -> float:
    differences = [0.0]
    assert first["param_groups"] == second["param_groups"]  # lr, step counts of the schedule
    for index, state in first["state"].items():
        for name, value in state.items():
            other = second["state"][index][name]
            differences.append(float((value.double() - other.double()).abs().max()))
    return max(differences)


@pytest.mark.parametrize("kind", ["single", pytest.param("multi", marks=pytest.mark.slow)])
def test_killed_run_resumes_to_the_weights_of_an_uninterrupted_run(
    tmp_path: Path, kind: str
) -> None:
    full, interrupted = tmp_path / "full", tmp_path / "interrupted"
    # The uninterrupted run and the run that gets killed go side by side (two cores).
    uninterrupted = _start(full, kind, "full")
    killed = _run(interrupted, kind, "kill")
    _ok(_finish(uninterrupted))
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert not (interrupted / "final.pt").exists()
    checkpoint = torch.load(interrupted / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == KILL_AT_STEP - 1  # mid-epoch: 5 batches per epoch
    assert checkpoint["loops"]["fit_loop"]["epoch_progress"]["current"]["completed"] == 1
    # Lightning's layout: the averaged weights are the state_dict, the raw ones ride along.
    assert set(checkpoint["current_model_state"]) == set(checkpoint["state_dict"])
    assert int(checkpoint["averaging_state"]["n_averaged"]) == KILL_AT_STEP - 1
    _ok(_run(interrupted, kind, "resume"))

    expected = torch.load(full / "final.pt", weights_only=True)
    resumed = torch.load(interrupted / "final.pt", weights_only=True)
    # The resumed run trained on exactly the batches the uninterrupted one did after step 8.
    batches_full = (full / "batches.txt").read_text().splitlines()
    batches_run = (interrupted / "batches.txt").read_text().splitlines()
    # Batches 8 and 9 (counting from 0) ran before the kill, and again after resuming from 8.
    assert len(batches_run) == len(batches_full) + 2
    assert batches_run[: KILL_AT_STEP + 1] == batches_full[: KILL_AT_STEP + 1]
    assert batches_run[KILL_AT_STEP + 1 :] == batches_full[KILL_AT_STEP - 1 :]
    assert resumed["global_step"] == expected["global_step"] == 15
    # Same raw weights, averaged weights and optimizer moments, bit for bit on one CPU thread.
    assert _max_difference(expected["state_dict"], resumed["state_dict"]) == 0.0
    assert _max_difference(expected["ema"], resumed["ema"]) == 0.0
    assert _optimizer_difference(expected["optimizer"], resumed["optimizer"]) == 0.0
    assert expected["scheduler"] == resumed["scheduler"]
    assert expected["loss_weights"] == resumed["loss_weights"]
    if kind == "multi":  # the linear ramp over 30 steps is half-way after 15
        assert resumed["loss_weights"]["small/ScalarRegressionTask"] == pytest.approx(0.5)
    assert expected["val_loss"] == resumed["val_loss"]
    # 15 steps: a first copy of the weights, then 14 updates of the average.
    assert expected["ema_updates"] == resumed["ema_updates"] == 14
    assert _max_difference(expected["state_dict"], expected["ema"]) > 0.0  # two weight sets


@pytest.mark.slow
def test_without_random_states_dropout_makes_the_resumed_run_differ(tmp_path: Path) -> None:
    """The control: without RandomStateCheckpoint the resumed run draws other dropout masks."""
    full, interrupted = tmp_path / "full", tmp_path / "interrupted"
    uninterrupted = _start(full, "single", "full")
    assert _run(interrupted, "single", "kill").returncode == -signal.SIGKILL
    _ok(_finish(uninterrupted))
    _ok(_run(interrupted, "single", "resume", "--no-random-state"))
    expected = torch.load(full / "final.pt", weights_only=True)
    resumed = torch.load(interrupted / "final.pt", weights_only=True)
    assert _max_difference(expected["state_dict"], resumed["state_dict"]) > 1e-4


def test_kill_while_saving_keeps_the_previous_last_checkpoint(tmp_path: Path) -> None:
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import ModelCheckpoint

    from matsci.training import AtomicCheckpointIO

    process = _start(tmp_path, "save", "kill-while-saving")
    marker = tmp_path / "half-written"
    deadline = time.monotonic() + 300
    while not marker.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert marker.exists(), _finish(process).stderr[-3000:]
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=60) == -signal.SIGKILL

    last = tmp_path / "last.ckpt"
    assert torch.load(last, weights_only=True)["version"] == 1  # the old one, whole
    (temporary,) = tmp_path.glob(".last.ckpt.*.tmp")  # the torn new one, beside it
    assert 0 < temporary.stat().st_size < last.stat().st_size
    # Lightning's ckpt_path="last" looks for last*.ckpt: the torn file is never picked up.
    callback = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    assert callback._find_last_checkpoints(pl.Trainer(logger=False)) == {str(last)}
    # The next save of the same name cleans up.
    AtomicCheckpointIO().save_checkpoint({"version": 3}, last)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["half-written", "last.ckpt"]
    assert torch.load(last, weights_only=True)["version"] == 3


# -- the script (runs in its own interpreter) -------------------------------------------------


def _main(out: Path, kind: str, mode: str, random_state: bool) -> None:
    sys.path.insert(0, str(ROOT / "packages" / "matsci-tasks-core" / "tests"))
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import ModelCheckpoint
    from tasks_core_helpers import TinyEncoder, make_structures
    from typing_extensions import override

    from matsci.data import ResumableDataLoader
    from matsci.tasks.core import (
        BinaryClassificationTask,
        MultiTaskLitModule,
        ScalarRegressionTask,
    )
    from matsci.training import (
        AtomicCheckpointIO,
        ExponentialMovingAverage,
        NonFiniteGuard,
        RandomStateCheckpoint,
    )

    class RecordBatches(pl.Callback):
        """Appends the structure ids of each training batch (flushed: survives SIGKILL)."""

        def __init__(self, path: Path) -> None:
            self.path = path

        @override
        def on_train_batch_start(
            self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
        ) -> None:
            parts = batch.values() if isinstance(batch, dict) else [batch]
            ids = [data.structure_id.tolist() for data in parts if data is not None]
            with self.path.open("a") as file:
                file.write(f"{trainer.global_step} {ids}\n")
                file.flush()
                os.fsync(file.fileno())
            if mode == "kill" and trainer.global_step == KILL_AT_STEP:
                os.kill(os.getpid(), signal.SIGKILL)

    class KeepRawWeights(pl.Callback):
        """The raw weights after the last optimizer step (the module ends fit with the average)."""

        def __init__(self) -> None:
            self.weights: dict[str, torch.Tensor] = {}

        @override
        def on_train_batch_end(
            self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
            batch_idx: int,
        ) -> None:  # fmt: skip
            self.weights = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}

    torch.set_num_threads(1)
    pl.seed_everything(0, workers=True, verbose=False)
    out.mkdir(parents=True, exist_ok=True)

    def structures(count: int, seed: int) -> list[Any]:
        data = make_structures(count, seed)
        for index, item in enumerate(data):
            item.structure_id = torch.tensor([seed * 1000 + index])
        return data

    heads = {"hidden_dim": 32, "dropout": 0.2}
    scheduler = {"class_path": "StepLR", "init_args": {"step_size": 4, "gamma": 0.7},
                 "interval": "step"}  # fmt: skip
    encoder = {"encoder_class": TinyEncoder, "encoder_kwargs": {"embedding_dim": 16}}
    regression = ScalarRegressionTask(
        **encoder, task_keys=["energy", "properties"], output_dims={"properties": 2},
        output_kwargs=heads, lr=5e-3,
        # Alone it schedules itself; in multi-task training the module holds the one schedule.
        scheduler_kwargs=scheduler if kind == "single" else None,
    )  # fmt: skip
    if kind == "single":
        module: pl.LightningModule = regression
        train: Any = ResumableDataLoader(structures(40, 1), batch_size=8, shuffle=True, seed=7)
        val: Any = ResumableDataLoader(structures(12, 2), batch_size=8)
    else:
        module = MultiTaskLitModule(
            ("bulk", regression),
            ("bulk", BinaryClassificationTask(**encoder, task_keys=["stable"],
                                              output_kwargs=heads)),
            ("small", ScalarRegressionTask(**encoder, task_keys=["energy"], output_kwargs=heads)),
            loss_weight_schedules={
                "small/ScalarRegressionTask": {"kind": "linear", "start": 0.0, "end": 1.0,
                                               "steps": 30},
            },
            lr=5e-3,
            scheduler_kwargs=scheduler,
        )  # fmt: skip
        # 5 batches of "bulk" per epoch; "small" has 3 and restarts within the epoch.
        train = {
            "bulk": ResumableDataLoader(structures(40, 1), batch_size=8, shuffle=True, seed=7),
            "small": ResumableDataLoader(structures(24, 3), batch_size=8, shuffle=True, seed=8),
        }
        val = {"bulk": ResumableDataLoader(structures(12, 2), batch_size=8)}
    ema = ExponentialMovingAverage(decay=0.8)
    guard = NonFiniteGuard(max_consecutive=3)
    callbacks: list[pl.Callback] = [
        ModelCheckpoint(dirpath=out / "checkpoints", every_n_train_steps=CHECKPOINT_EVERY,
                        save_top_k=0, save_last=True),
        ema, guard, RecordBatches(out / "batches.txt"), raw := KeepRawWeights(),
    ]  # fmt: skip
    if random_state:
        callbacks.append(RandomStateCheckpoint())
    trainer = pl.Trainer(
        accelerator="cpu", max_epochs=3, deterministic=True, logger=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
        callbacks=callbacks, plugins=[AtomicCheckpointIO()],
    )  # fmt: skip
    trainer.fit(module, train, val, ckpt_path="last" if mode == "resume" else None)
    optimizer = trainer.optimizers[0]
    weights = {}
    if isinstance(module, MultiTaskLitModule):
        weights = {name: module.loss_weight(name) for name in module.task_names}
    # After fit the module holds the average (Lightning's layout); the raw weights were kept.
    torch.save(
        {
            "global_step": trainer.global_step,
            "state_dict": raw.weights,
            "ema": module.state_dict(),
            "ema_updates": ema.num_updates,
            "optimizer": optimizer.state_dict(),
            "scheduler": trainer.lr_scheduler_configs[0].scheduler.state_dict(),
            "loss_weights": weights,
            "val_loss": float(trainer.callback_metrics["val/loss"]),
            "skipped": guard.skipped_steps,
        },
        out / "final.pt",
    )


def _kill_while_saving(out: Path) -> None:
    """Save version 1, then start saving version 2 and hang half-way (the test kills us)."""
    import io
    import time as clock

    from matsci.training import AtomicCheckpointIO

    writer = AtomicCheckpointIO()
    weights = torch.arange(200_000, dtype=torch.float32)
    writer.save_checkpoint({"version": 1, "weights": weights}, out / "last.ckpt")
    save = torch.save

    def half_then_hang(obj: Any, file: Any) -> None:
        buffer = io.BytesIO()
        save(obj, buffer)
        file.write(buffer.getvalue()[: buffer.tell() // 2])
        file.flush()
        (out / "half-written").touch()
        clock.sleep(600)

    torch.save = half_then_hang
    writer.save_checkpoint({"version": 2, "weights": weights + 1}, out / "last.ckpt")


if __name__ == "__main__":
    if sys.argv[2] == "save":
        _kill_while_saving(Path(sys.argv[1]))
        sys.exit(0)
    _main(Path(sys.argv[1]), sys.argv[2], sys.argv[3], "--no-random-state" not in sys.argv)
