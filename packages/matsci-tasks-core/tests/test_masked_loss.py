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
