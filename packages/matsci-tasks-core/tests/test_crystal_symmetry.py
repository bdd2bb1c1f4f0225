import pytest
import torch
from tasks_core_helpers import encoder_kwargs, loader, make_structures, trainer
from torch_geometric.data import Batch

from matsci.tasks.core import NUM_SPACEGROUPS, CrystalSymmetryClassificationTask


def test_trains_and_beats_the_majority_class() -> None:
    train, held_out = make_structures(384, seed=0), make_structures(128, seed=1)
    task = CrystalSymmetryClassificationTask(**encoder_kwargs(), lr=5e-3)
    trainer(max_epochs=6).fit(task, loader(train, shuffle=True))
    batch = Batch.from_data_list(held_out)
    out = task.predict(batch)
    labels = batch.spacegroup
    majority = float(torch.bincount(labels).max()) / len(labels)
    accuracy = float((out["spacegroup"] == labels).float().mean())
    assert accuracy > majority + 0.2
    assert out["spacegroup_probability"].shape == (len(held_out),)
    assert bool(((out["spacegroup"] >= 1) & (out["spacegroup"] <= NUM_SPACEGROUPS)).all())
    metrics = trainer().test(task, loader(held_out), verbose=False)[0]
    assert metrics["test/spacegroup/top1"] == pytest.approx(accuracy, abs=1e-6)
    assert metrics["test/spacegroup/top5"] >= metrics["test/spacegroup/top1"]
    assert "test/spacegroup/f1_macro" in metrics


@pytest.mark.parametrize("label", [0, 231, -5])
def test_label_outside_1_to_230_is_a_clear_error(label: int) -> None:
    task = CrystalSymmetryClassificationTask(**encoder_kwargs())
    batch = Batch.from_data_list(make_structures(4, seed=0))
    batch.spacegroup[2] = label
    with pytest.raises(ValueError, match=rf"'spacegroup' has values \[{label}\] outside 1\.\.230"):
        task.compute_losses(task(batch), batch)


def test_spacegroup_225_is_column_224() -> None:
    task = CrystalSymmetryClassificationTask(**encoder_kwargs())
    batch = Batch.from_data_list(make_structures(2, seed=0))
    logits = torch.full((2, NUM_SPACEGROUPS), -20.0)
    logits[:, 224] = 20.0
    batch.spacegroup = torch.tensor([225, 225])
    loss, _ = task.compute_losses({"spacegroup": logits}, batch)
    assert float(loss) < 1e-6


def test_class_weights_and_label_smoothing_reach_the_loss() -> None:
    weights = [1.0] * NUM_SPACEGROUPS
    weights[224] = 3.0
    task = CrystalSymmetryClassificationTask(
        **encoder_kwargs(), class_weights=weights, label_smoothing=0.2
    )
    loss = task.losses["spacegroup"].loss  # type: ignore[union-attr]
    assert isinstance(loss, torch.nn.CrossEntropyLoss)
    assert loss.label_smoothing == pytest.approx(0.2)
    assert float(loss.weight[224]) == 3.0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"class_weights": [1.0] * 10}, "10 weights given, expected 230"),
        ({"task_keys": ["symmetry"]}, "the only key is"),
        ({"label_smoothing": 0.1, "loss_func": "CrossEntropyLoss"}, "not both"),
    ],
)
def test_bad_arguments(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        CrystalSymmetryClassificationTask(**encoder_kwargs(), **kwargs)


def test_first_batch_check_names_labels_outside_1_to_230() -> None:
    # On an accelerator get_target does not read labels back; the first batch of each stage
    # still gets the clear error, through check_batch.
    task = CrystalSymmetryClassificationTask(**encoder_kwargs())
    batch = Batch.from_data_list(make_structures(4, seed=0))
    task.check_batch(batch)
    batch.spacegroup[1] = 0
    with pytest.raises(ValueError, match=r"'spacegroup' has values \[0\] outside 1\.\.230"):
        task.check_batch(batch)
    task.check_batch(batch, with_targets=False)  # prediction needs no labels


def test_labels_on_an_accelerator_are_not_read_back_in_the_step() -> None:
    # Labels on the meta device cannot be read: get_target must not look at their values
    # (no host synchronisation per step on an accelerator); check_batch checks first batches.
    task = CrystalSymmetryClassificationTask(**encoder_kwargs())
    batch = Batch.from_data_list(make_structures(4, seed=0))
    batch.spacegroup = torch.tensor([225, 0, 231, 14], device="meta")
    labels = task.get_target(batch, "spacegroup")
    assert labels.device.type == "meta"
    assert labels.shape == (4,)


def test_a_bad_label_in_a_later_training_batch_stops_fit_with_the_clear_error() -> None:
    structures = make_structures(8, seed=0)
    structures[6].spacegroup = torch.tensor([0])
    task = CrystalSymmetryClassificationTask(**encoder_kwargs())
    with pytest.raises(ValueError, match=r"'spacegroup' has values \[0\] outside 1\.\.230"):
        trainer(max_epochs=1).fit(task, loader(structures, batch_size=2))
