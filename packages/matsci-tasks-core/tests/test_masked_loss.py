from typing import Any

import pytest
import torch
from torch import nn

from matsci.tasks.core import MaskedLoss


@pytest.mark.parametrize("loss", [nn.MSELoss(), nn.L1Loss(), nn.HuberLoss(delta=0.3)])
def test_missing_entries_are_left_out_of_the_mean(loss: nn.Module) -> None:
    prediction = torch.randn(6, 2)
    target = torch.randn(6, 2)
    target[1, 0] = float("nan")
    target[4] = float("nan")
    present = ~target.isnan()
    expected = type(loss)(**({"delta": 0.3} if isinstance(loss, nn.HuberLoss) else {}))(
        prediction[present], target[present]
    )
    torch.testing.assert_close(MaskedLoss(loss)(prediction, target, present), expected)


def test_sum_reduction_and_gradients_of_missing_entries_are_zero() -> None:
    prediction = torch.randn(4, requires_grad=True)
    target = torch.tensor([1.0, float("nan"), 0.0, 2.0])
    loss = MaskedLoss(nn.MSELoss(reduction="sum"))(prediction, target, ~target.isnan())
    loss.backward()  # type: ignore[no-untyped-call]
    assert prediction.grad is not None
    assert prediction.grad[1] == 0
    assert torch.isfinite(loss)


def test_nothing_present_gives_zero() -> None:
    target = torch.full((3,), float("nan"))
    assert MaskedLoss(nn.MSELoss())(torch.randn(3), target, ~target.isnan()) == 0


def test_cross_entropy_with_integer_labels() -> None:
    logits = torch.randn(5, 7)
    labels = torch.tensor([0, 6, 2, 2, 1])
    present = torch.ones(5, dtype=torch.bool)
    torch.testing.assert_close(
        MaskedLoss(nn.CrossEntropyLoss())(logits, labels, present),
        nn.functional.cross_entropy(logits, labels),
    )


def test_reduction_none_is_refused() -> None:
    with pytest.raises(ValueError, match="reduction='none'"):
        MaskedLoss(nn.MSELoss(reduction="none"))


class _MSELossSubclass(nn.MSELoss):
    """An MSELoss subclass: it takes the general path, whatever it computes."""


@pytest.mark.parametrize(
    "make_loss",
    [
        nn.MSELoss,
        nn.L1Loss,
        lambda: nn.HuberLoss(delta=0.3),
        lambda: nn.SmoothL1Loss(beta=0.5),
        lambda: nn.MSELoss(reduction="sum"),
    ],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_short_path_matches_the_general_one_bit_for_bit(make_loss: Any, dtype: torch.dtype) -> None:
    # MSE, L1, Huber and smooth L1 replace missing targets by the prediction and sum in one
    # call; the loss and every gradient must equal the masked element-wise computation.
    prediction = torch.randn(12, 3, dtype=dtype)
    prediction[0] = -2.0  # negative predictions at missing entries
    target = torch.randn(12, 3, dtype=dtype)
    target[0, 1] = float("nan")
    target[5] = float("nan")
    present = ~target.isnan()
    short = MaskedLoss(make_loss())
    general = MaskedLoss(make_loss())
    general._summed = None  # force the element-wise path
    results = []
    for masked in (short, general):
        leaf = prediction.clone().requires_grad_(True)
        value = masked(leaf, target, present)
        value.backward()  # type: ignore[no-untyped-call]
        assert leaf.grad is not None
        results.append((value.detach(), leaf.grad))
    assert short._summed is not None
    assert torch.equal(results[0][0], results[1][0])
    assert torch.equal(results[0][1], results[1][1])
    assert results[0][1][5].abs().sum() == 0


def test_subclasses_take_the_general_path() -> None:
    loss = MaskedLoss(_MSELossSubclass())
    assert loss._summed is None
    prediction = torch.tensor([[1.0], [2.0], [4.0]])
    target = torch.tensor([[0.0], [float("nan")], [2.0]])
    # ((1 - 0)^2 + (4 - 2)^2) / 2 present entries
    torch.testing.assert_close(loss(prediction, target, ~target.isnan()), torch.tensor(2.5))
