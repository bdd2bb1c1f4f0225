import itertools
from typing import Any, ClassVar

import pytest
import torch
from tasks_core_helpers import encoder_kwargs, loader, make_structures, trainer

from matsci.tasks.core import (
    ScalarRegressionTask,
    WarmupCosineLR,
    build_scheduler,
    check_scheduler_kwargs,
)

# Bare class names are looked up in torch.optim.lr_scheduler; ours takes its full path.
RUN_LENGTH_COSINE = {"class_path": "matsci.tasks.core.WarmupCosineLR", "interval": "step"}


def _optimizer(lr: float = 2.0) -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=lr)


def _rates(optimizer: torch.optim.Optimizer, scheduler: Any, steps: int) -> list[float]:
    rates = []
    for _ in range(steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


def test_without_warmup_it_is_torchs_cosine_annealing_to_the_last_step() -> None:
    ours, torchs = _optimizer(), _optimizer()
    schedule = WarmupCosineLR(ours, total_steps=12, final_factor=0.05)
    reference = torch.optim.lr_scheduler.CosineAnnealingLR(torchs, T_max=12, eta_min=0.1)
    assert _rates(ours, schedule, 16) == pytest.approx(_rates(torchs, reference, 13) + [0.1] * 3)


def test_warmup_rises_linearly_then_the_cosine_starts_at_the_peak() -> None:
    optimizer = _optimizer(lr=1.0)
    rates = _rates(optimizer, WarmupCosineLR(optimizer, 20, warmup_fraction=0.2), 21)
    assert rates[:5] == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0])
    halfway = 4 + 8  # warm-up steps + half of the 16 cosine steps
    assert rates[halfway] == pytest.approx(0.02 + 0.98 * 0.5)
    assert rates[20] == pytest.approx(0.02)
    assert all(a >= b for a, b in itertools.pairwise(rates[4:]))


def test_a_resumed_schedule_continues_where_it_stopped() -> None:
    optimizer = _optimizer()
    schedule = WarmupCosineLR(optimizer, 10, warmup_fraction=0.3)
    first = _rates(optimizer, schedule, 4)
    resumed_optimizer = _optimizer()
    resumed = WarmupCosineLR(resumed_optimizer, 10, warmup_fraction=0.3)
    resumed.load_state_dict(schedule.state_dict())
    resumed_optimizer.param_groups[0]["lr"] = optimizer.param_groups[0]["lr"]
    fresh_optimizer = _optimizer()
    fresh = WarmupCosineLR(fresh_optimizer, 10, warmup_fraction=0.3)
    assert first + _rates(resumed_optimizer, resumed, 6) == pytest.approx(
        _rates(fresh_optimizer, fresh, 10)
    )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"total_steps": 0}, "total_steps must be a positive integer, got 0"),
        ({"total_steps": 10.0}, "total_steps must be a positive integer"),
        ({"total_steps": 10, "warmup_fraction": 1.0}, r"warmup_fraction must be in \[0, 1\)"),
        ({"total_steps": 10, "final_factor": -0.1}, r"final_factor must be in \[0, 1\]"),
    ],
)
def test_bad_schedule_arguments(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        WarmupCosineLR(_optimizer(), **kwargs)


def test_build_scheduler_fills_total_steps_only_where_it_is_left_out() -> None:
    calls: list[int] = []

    def run_length() -> int:
        calls.append(1)
        return 30

    config = check_scheduler_kwargs(RUN_LENGTH_COSINE)
    assert config is not None
    assert build_scheduler(config, _optimizer(), run_length)["scheduler"].total_steps == 30
    given = check_scheduler_kwargs({**RUN_LENGTH_COSINE, "init_args": {"total_steps": 7}})
    assert given is not None
    assert build_scheduler(given, _optimizer(), run_length)["scheduler"].total_steps == 7
    one_cycle = check_scheduler_kwargs(
        {"class_path": "OneCycleLR", "init_args": {"max_lr": 1.0}, "interval": "step"}
    )
    assert one_cycle is not None
    assert build_scheduler(one_cycle, _optimizer(), run_length)["scheduler"].total_steps == 30
    by_epochs = check_scheduler_kwargs(
        {"class_path": "OneCycleLR", "interval": "step",
         "init_args": {"max_lr": 1.0, "epochs": 2, "steps_per_epoch": 4}}
    )  # fmt: skip
    assert by_epochs is not None
    assert build_scheduler(by_epochs, _optimizer(), run_length)["scheduler"].total_steps == 8
    assert len(calls) == 2  # StepLR-like descriptions never ask for the run's length
    build_scheduler(check_scheduler_kwargs({"class_path": "StepLR", "init_args": {
        "step_size": 2}}) or {}, _optimizer(), run_length)  # fmt: skip
    assert len(calls) == 2


def test_the_run_length_is_counted_in_steps_only() -> None:
    per_epoch = check_scheduler_kwargs({**RUN_LENGTH_COSINE, "interval": "epoch"})
    assert per_epoch is not None
    with pytest.raises(ValueError, match=r"needs the run's total_steps.*'interval': 'step'"):
        build_scheduler(per_epoch, _optimizer(), lambda: 30)


class _CosineByDefault(ScalarRegressionTask):
    default_scheduler_kwargs: ClassVar[dict[str, Any]] = RUN_LENGTH_COSINE


def _task(cls: type[ScalarRegressionTask] = _CosineByDefault, **kwargs: Any) -> Any:
    return cls(**encoder_kwargs(), task_keys=["energy"], lr=0.1, **kwargs)


def test_the_default_schedule_ends_with_the_fit() -> None:
    task = _task()
    data = loader(make_structures(16, seed=0), batch_size=4)  # 4 batches per epoch
    run = trainer(max_epochs=3, limit_train_batches=3, accumulate_grad_batches=1)
    run.fit(task, data)
    (config,) = run.lr_scheduler_configs
    assert isinstance(config.scheduler, WarmupCosineLR)
    assert config.interval == "step"
    assert config.scheduler.total_steps == 9  # 3 epochs of 3 batches
    assert run.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.1 * 0.02)


def test_a_given_schedule_replaces_the_default_and_none_stays_constant() -> None:
    data = loader(make_structures(8, seed=0), batch_size=4)
    given = _task(scheduler_kwargs={"class_path": "ConstantLR", "init_args": {"factor": 1.0}})
    plain = _task(ScalarRegressionTask)
    for task in (given, plain):
        run = trainer(max_epochs=2)
        run.fit(task, data)
        assert run.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.1)
        assert len(run.lr_scheduler_configs) == (1 if task is given else 0)


def test_a_schedule_that_ends_with_the_run_needs_a_run_with_an_end() -> None:
    with pytest.raises(ValueError, match="only a Trainer knows"):
        _task().configure_optimizers()
    run = trainer(max_epochs=-1, max_steps=-1)
    with pytest.raises(ValueError, match=r"has no end \(max_epochs=-1"):
        run.fit(_task(), loader(make_structures(8, seed=0), batch_size=4))
