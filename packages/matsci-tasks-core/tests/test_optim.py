import pytest
import torch

from matsci.tasks.core import (
    build_optimizer,
    build_scheduler,
    check_scheduler_kwargs,
    optimizer_path,
)

WARMUP_COSINE = {
    "class_path": "SequentialLR",
    "init_args": {
        "schedulers": [
            {"class_path": "LinearLR", "init_args": {"start_factor": 0.1, "total_iters": 5}},
            {"class_path": "CosineAnnealingLR", "init_args": {"T_max": 10}},
        ],
        "milestones": [5],
    },
    "interval": "step",
}


def _optimizer() -> torch.optim.Optimizer:
    params = [{"params": [torch.nn.Parameter(torch.zeros(2))]}]
    return build_optimizer(optimizer_path("AdamW"), params, lr=1.0, weight_decay=0.0)


def test_optimizer_names() -> None:
    assert optimizer_path("AdamW") == "torch.optim.adamw.AdamW"
    assert optimizer_path(torch.optim.SGD) == "torch.optim.sgd.SGD"
    with pytest.raises(ValueError, match=r"does not name a subclass of torch\.optim"):
        optimizer_path("Adamm")


def test_warmup_then_cosine_schedule() -> None:
    config = check_scheduler_kwargs(WARMUP_COSINE)
    assert config is not None
    optimizer = _optimizer()
    lightning_config = build_scheduler(config, optimizer)
    assert lightning_config["interval"] == "step"
    scheduler = lightning_config["scheduler"]
    rates = []
    for _ in range(15):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates[0] == pytest.approx(0.1)
    assert rates[0] < rates[2] < rates[4] < 1.0  # linear warm-up
    assert rates[5] == pytest.approx(1.0)  # cosine starts at the base rate
    assert rates[14] < rates[10] < rates[6]  # and decays


def test_plateau_needs_monitor() -> None:
    with pytest.raises(ValueError, match="ReduceLROnPlateau needs 'monitor'"):
        check_scheduler_kwargs({"class_path": "ReduceLROnPlateau"})
    config = check_scheduler_kwargs(
        {"class_path": "ReduceLROnPlateau", "init_args": {"patience": 2}, "monitor": "val/loss"}
    )
    assert config is not None
    assert build_scheduler(config, _optimizer())["monitor"] == "val/loss"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"class_path": "StepLR", "every": 3}, "unknown keys"),
        ({"init_args": {}}, "no 'class_path'"),
        ({"class_path": "StepLR", "interval": "batch"}, "interval 'batch'"),
        ({"class_path": "torch.optim.AdamW"}, "not a learning-rate scheduler"),
    ],
)
def test_bad_scheduler_kwargs(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        check_scheduler_kwargs(kwargs)
