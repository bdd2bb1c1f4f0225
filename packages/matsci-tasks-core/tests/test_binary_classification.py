import pytest
import torch
from tasks_core_helpers import encoder_kwargs, loader, make_structures, trainer
from torch_geometric.data import Batch

from matsci.tasks.core import BinaryClassificationTask


def test_trains_and_beats_the_majority_class() -> None:
    train, held_out = make_structures(384, seed=0), make_structures(128, seed=1)
    task = BinaryClassificationTask(**encoder_kwargs(), task_keys=["stable"], lr=5e-3)
    trainer(max_epochs=6).fit(task, loader(train, shuffle=True))
    batch = Batch.from_data_list(held_out)
    probability = task.predict(batch)["stable"].reshape(-1)
    labels = batch.stable
    majority = max(float(labels.mean()), 1 - float(labels.mean()))
    accuracy = float(((probability > 0.5).float() == labels).float().mean())
    assert accuracy > majority + 0.1
    assert bool(((probability >= 0) & (probability <= 1)).all())
    metrics = trainer().test(task, loader(held_out), verbose=False)[0]
    assert metrics["test/stable/accuracy"] == pytest.approx(accuracy, abs=1e-6)
    assert metrics["test/stable/auroc"] > 0.8
    assert {"test/stable/f1", "test/loss"} <= set(metrics)


@pytest.mark.parametrize("dtype", [torch.float32, torch.long, torch.bool])
def test_labels_of_any_dtype_are_accepted(dtype: torch.dtype) -> None:
    task = BinaryClassificationTask(**encoder_kwargs(), task_keys=["stable"])
    batch = Batch.from_data_list(make_structures(6, seed=0))
    batch.stable = batch.stable.to(dtype)
    task.check_batch(batch)
    total, _ = task.compute_losses(task(batch), batch)
    assert torch.isfinite(total)


def test_pos_weight_weighs_positive_examples() -> None:
    plain = BinaryClassificationTask(**encoder_kwargs(), task_keys=["stable"])
    weighted = BinaryClassificationTask(**encoder_kwargs(), task_keys=["stable"], pos_weight=5.0)
    weighted.load_state_dict(plain.state_dict(), strict=False)
    batch = Batch.from_data_list(make_structures(16, seed=0))
    batch.stable = torch.ones(16)
    plain_loss, _ = plain.compute_losses(plain(batch), batch)
    weighted_loss, _ = weighted.compute_losses(weighted(batch), batch)
    torch.testing.assert_close(weighted_loss, 5.0 * plain_loss)


def test_pos_weight_errors() -> None:
    with pytest.raises(ValueError, match="pos_weight or a custom loss_func, not both"):
        BinaryClassificationTask(
            **encoder_kwargs(), task_keys=["stable"], pos_weight=2.0, loss_func="BCELoss"
        )
    with pytest.raises(ValueError, match=r"keys \['metal'\] are not task keys"):
        BinaryClassificationTask(**encoder_kwargs(), task_keys=["stable"], pos_weight={"metal": 2})


def test_wrong_label_shape_is_a_clear_error() -> None:
    task = BinaryClassificationTask(**encoder_kwargs(), task_keys=["stable"])
    batch = Batch.from_data_list(make_structures(4, seed=0))
    batch.stable = torch.zeros(4, 2)
    with pytest.raises(ValueError, match=r"'stable' has shape \[4, 2\]"):
        task.check_batch(batch)
