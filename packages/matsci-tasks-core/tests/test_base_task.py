from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from tasks_core_helpers import TinyEncoder, encoder_kwargs, loader, make_structures, trainer
from torch import nn
from torch_geometric.data import Batch

from matsci.tasks.core import (
    BinaryClassificationTask,
    CrystalSymmetryClassificationTask,
    Embeddings,
    ScalarRegressionTask,
)
from matsci.tasks.core._loss_weights import weighted_sum


def _regression(**kwargs: Any) -> ScalarRegressionTask:
    options: dict[str, Any] = {**encoder_kwargs(), "task_keys": ["energy"]}
    options.update(kwargs)
    return ScalarRegressionTask(**options)


# -- construction -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"loss_func": {"energy": "L1Loss", "gap": "L1Loss"}}, r"losses without a key \['gap'\]"),
        (
            {"task_keys": ["energy", "gap"], "loss_func": {"energy": "L1Loss"}},
            r"keys without a loss \['gap'\]",
        ),
        ({"embedding_reduction_type": "median"}, "embedding_reduction_type='median'"),
        ({"task_keys": ["energy", "energy"]}, r"duplicate keys \['energy'\]"),
        ({"task_keys": []}, "expected a non-empty list"),
        ({"task_keys": "energy"}, "expected a non-empty list"),
        ({"task_loss_scaling": {"gap": 2.0}}, r"task_loss_scaling\): keys \['gap'\]"),
        ({"normalize_kwargs": {"gap": {"mean": 0.0}}}, r"normalize_kwargs\): unknown keys"),
        ({"normalize_kwargs": {"energy": {"avg": 0.0}}}, "expected keys 'mean' and 'std'"),
        ({"loss_func": "torch.nn.NotALoss"}, "does not name a subclass"),
        ({"optimizer": "Adamm"}, "does not name a subclass of torch.optim"),
        ({"encoder_class": None}, "give encoder= .an instance. or encoder_class="),
        ({"encoder": TinyEncoder()}, "encoder is a .*TinyEncoder but encoder_class is"),
    ],
)
def test_bad_arguments_fail_at_construction(kwargs: dict[str, Any], match: str) -> None:
    options: dict[str, Any] = {**encoder_kwargs(), "task_keys": ["energy"]}
    options.update(kwargs)
    if "encoder" in kwargs:
        options["encoder_class"] = "torch.nn.Linear"
    with pytest.raises(ValueError, match=match):
        ScalarRegressionTask(**options)


def test_encoder_without_embedding_dim_is_refused() -> None:
    with pytest.raises(ValueError, match="has no embedding_dim attribute"):
        ScalarRegressionTask(encoder=nn.Linear(3, 3), task_keys=["energy"])


def test_heads_follow_the_users_key_order() -> None:
    keys = ["zeta", "alpha", "mid"]
    task = _regression(task_keys=keys)
    assert list(task.output_heads) == keys
    assert list(task.losses) == keys
    assert task.hparams["task_keys"] == keys


def test_output_kwargs_are_stored_as_plain_data() -> None:
    task = _regression(output_kwargs={"activation": nn.GELU, "hidden_dim": 8})
    assert task.hparams["output_kwargs"] == {"activation": "torch.nn.GELU", "hidden_dim": 8}
    with pytest.raises(ValueError, match=r"output_kwargs\['norm'\]: LayerNorm is not plain data"):
        _regression(output_kwargs={"norm": nn.LayerNorm(128)})


def test_heads_fit_any_embedding_width() -> None:
    task = _regression(encoder_kwargs={"embedding_dim": 37})
    assert task.output_heads["energy"].blocks[0].linear.in_features == 37  # type: ignore[index]


def test_parameter_groups_cover_every_parameter_once() -> None:
    task = _regression()
    groups = task.parameter_groups()
    assert [group["name"] for group in groups] == ["encoder", "heads"]
    grouped = [id(p) for group in groups for p in group["params"]]
    assert sorted(grouped) == sorted(id(p) for p in task.parameters())


# -- stages on a fresh task --------------------------------------------------------------------


@pytest.mark.parametrize(
    "task_class",
    [ScalarRegressionTask, BinaryClassificationTask, CrystalSymmetryClassificationTask],
)
def test_validate_and_test_work_on_an_untrained_task(task_class: type) -> None:
    keys = {ScalarRegressionTask: ["energy"], BinaryClassificationTask: ["stable"]}
    extra = {"task_keys": keys[task_class]} if task_class in keys else {}
    task = task_class(**encoder_kwargs(), **extra)
    data = loader(make_structures(20, seed=3))
    validated = trainer().validate(task, data, verbose=False)
    tested = trainer().test(task, data, verbose=False)
    assert "val/loss" in validated[0]
    assert "test/loss" in tested[0]
    assert all(torch.isfinite(torch.tensor(v)) for v in tested[0].values())


def test_logged_names_per_stage_and_key() -> None:
    task = _regression(task_keys=["energy", "properties"], output_dims={"properties": 2})
    data = loader(make_structures(32, seed=0))
    run = trainer(max_steps=2, limit_val_batches=1)
    run.fit(task, data, data)
    names = set(run.callback_metrics)
    for stage in ("train", "val"):
        for key in ("energy", "properties"):
            assert {f"{stage}/{key}/mae", f"{stage}/{key}/rmse", f"{stage}/{key}/loss"} <= names
        assert f"{stage}/loss" in names


def test_predict_step_with_trainer_returns_physical_units() -> None:
    # An intensive head: normalize_kwargs are the statistics of the target itself (an extensive
    # energy takes per-atom ones).
    task = _regression(normalize_kwargs={"energy": {"mean": 100.0, "std": 1e-6}}, extensive_keys=[])
    outputs = trainer().predict(task, loader(make_structures(10, seed=0), batch_size=4))
    assert outputs is not None
    energies = torch.cat([out["energy"] for out in outputs])  # type: ignore[index]
    assert energies.shape == (10, 1)
    # std 1e-6 around 100: de-normalized outputs sit at 100 whatever the (untrained) head says.
    torch.testing.assert_close(energies, torch.full((10, 1), 100.0), atol=1e-3, rtol=0)


# -- checkpoints ---------------------------------------------------------------------------------


def _trained_checkpoint(tmp_path: Path, task: pl.LightningModule) -> Path:
    data = loader(make_structures(32, seed=0))
    run = trainer(max_steps=3, default_root_dir=tmp_path)
    run.fit(task, data)
    path = tmp_path / "task.ckpt"
    run.save_checkpoint(path)
    return path


@pytest.mark.parametrize(
    "task_class",
    [ScalarRegressionTask, BinaryClassificationTask, CrystalSymmetryClassificationTask],
)
def test_checkpoint_reloads_to_identical_predictions(tmp_path: Path, task_class: type) -> None:
    if task_class is ScalarRegressionTask:
        task = _regression(
            loss_func=nn.HuberLoss(delta=0.5),
            normalize_kwargs={"energy": {"mean": 3.0, "std": 2.0}},
        )
    elif task_class is BinaryClassificationTask:
        task = task_class(**encoder_kwargs(), task_keys=["stable"], pos_weight=2.0)
    else:
        task = task_class(**encoder_kwargs(), label_smoothing=0.1)
    path = _trained_checkpoint(tmp_path, task)
    # The checkpoint holds plain data only: it loads with weights_only=True.
    torch.load(path, weights_only=True)
    reloaded = task_class.load_from_checkpoint(path, weights_only=True)
    batch = Batch.from_data_list(make_structures(8, seed=5))
    task.eval()
    reloaded.eval()
    for key, value in task.predict(batch).items():
        assert torch.equal(reloaded.predict(batch)[key], value), key
    assert reloaded.hparams["loss_func"] == task.hparams["loss_func"]
    for (name, buffer), (_, other) in zip(
        task.state_dict().items(), reloaded.state_dict().items(), strict=True
    ):
        assert torch.equal(buffer, other), name


def test_reloaded_loss_keeps_its_arguments(tmp_path: Path) -> None:
    task = BinaryClassificationTask(**encoder_kwargs(), task_keys=["stable"], pos_weight=4.0)
    reloaded = BinaryClassificationTask.load_from_checkpoint(_trained_checkpoint(tmp_path, task))
    loss = reloaded.losses["stable"].loss  # type: ignore[union-attr]
    assert isinstance(loss, nn.BCEWithLogitsLoss)
    assert torch.equal(loss.pos_weight, torch.tensor([4.0]))


def test_task_built_from_an_instance_reloads_with_the_instance(tmp_path: Path) -> None:
    task = ScalarRegressionTask(encoder=TinyEncoder(embedding_dim=8), task_keys=["energy"])
    path = _trained_checkpoint(tmp_path, task)
    reloaded = ScalarRegressionTask.load_from_checkpoint(path, encoder=TinyEncoder(embedding_dim=8))
    batch = Batch.from_data_list(make_structures(4, seed=1))
    assert torch.equal(
        reloaded.eval().predict(batch)["energy"], task.eval().predict(batch)["energy"]
    )


def test_from_pretrained_encoder_copies_weights_exactly(tmp_path: Path) -> None:
    pretrained = CrystalSymmetryClassificationTask(**encoder_kwargs())
    path = _trained_checkpoint(tmp_path, pretrained)
    task = ScalarRegressionTask.from_pretrained_encoder(path, task_keys=["energy"], lr=1e-4)
    assert isinstance(task, ScalarRegressionTask)
    trained_state = pretrained.encoder.state_dict()
    assert trained_state.keys() == task.encoder.state_dict().keys()
    for name, value in task.encoder.state_dict().items():
        assert torch.equal(value, trained_state[name]), name
    # The pretrained encoder really changed during training, so the equality means something.
    fresh = TinyEncoder(embedding_dim=16).state_dict()
    assert any(not torch.equal(fresh[n], v) for n, v in trained_state.items())


def test_from_pretrained_encoder_renames_only_the_leading_prefix(tmp_path: Path) -> None:
    class Nested(TinyEncoder):
        pass

    pretrained = _regression()
    # A submodule named "encoder" inside the encoder keeps its name: encoder.encoder.* -> encoder.*
    pretrained.encoder.encoder = nn.Linear(2, 2)  # type: ignore[assignment]
    state = {"state_dict": pretrained.state_dict(), "hyper_parameters": dict(pretrained.hparams)}
    path = tmp_path / "nested.ckpt"
    torch.save(state, path)
    target = _regression()
    target.encoder.encoder = nn.Linear(2, 2)  # type: ignore[assignment]
    rebuilt = ScalarRegressionTask.from_pretrained_encoder(
        path, encoder=target.encoder, task_keys=["energy"]
    )
    assert torch.equal(rebuilt.encoder.encoder.weight, pretrained.encoder.encoder.weight)  # type: ignore[union-attr]


# -- normalization and missing targets ----------------------------------------------------------


def test_fitted_normalizer_equals_dataset_statistics() -> None:
    structures = make_structures(100, seed=0)
    task = _regression(task_keys=["energy", "properties"], output_dims={"properties": 2},
                       extensive_keys=[])  # fmt: skip
    task.fit_normalizers(loader(structures, batch_size=7))
    for key, width in (("energy", 1), ("properties", 2)):
        values = torch.cat([d[key].reshape(1, width) for d in structures]).double()
        normalizer = task.normalizers[key]
        torch.testing.assert_close(normalizer.mean, values.mean(0))
        torch.testing.assert_close(normalizer.std, values.std(0, correction=0))
    assert "normalizers.energy.mean" in task.state_dict()


def test_nan_targets_are_masked_from_loss_and_metrics() -> None:
    task = _regression()
    structures = make_structures(8, seed=0)
    clean = Batch.from_data_list(structures[:5])
    for data in structures[5:]:
        data.energy = torch.tensor([float("nan")])
    with_missing = Batch.from_data_list(structures)
    task.eval()
    with torch.no_grad():
        loss_missing, _ = task.compute_losses(task(with_missing), with_missing)
        loss_clean, _ = task.compute_losses(task(clean), clean)
    torch.testing.assert_close(loss_missing, loss_clean)
    run = trainer()
    result = run.validate(task, loader(structures, batch_size=8), verbose=False)
    assert torch.isfinite(torch.tensor(result[0]["val/energy/mae"]))


# -- optimization -------------------------------------------------------------------------------


def test_plateau_scheduler_monitors_a_validation_metric() -> None:
    task = _regression(
        lr=0.1,
        scheduler_kwargs={
            "class_path": "ReduceLROnPlateau",
            "init_args": {"patience": 0, "factor": 0.5, "threshold": 10.0},
            "monitor": "val/loss",
        },
    )
    data = loader(make_structures(16, seed=0))
    run = trainer(max_epochs=3)
    run.fit(task, data, data)
    # A relative threshold of 10 means no epoch counts as an improvement (not even the first,
    # against an infinite best), so the rate halves after each of the 3 validations.
    assert run.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.1 * 0.5**3)


@pytest.mark.parametrize("clip", [None, 1e-3], ids=["no-clip", "clip"])
def test_trainer_gradient_clipping_and_accumulation_apply(clip: float | None) -> None:
    # SGD with lr 1 and no weight decay: the step is exactly the (clipped) gradient.
    task = _regression(optimizer="SGD", lr=1.0)
    data = loader(make_structures(64, seed=0), batch_size=8)
    run = trainer(max_steps=1, gradient_clip_val=clip, accumulate_grad_batches=4)
    before = torch.cat([p.detach().flatten().clone() for p in task.parameters()])
    run.fit(task, data)
    assert run.global_step == 1
    assert run.fit_loop.epoch_loop.batch_progress.total.completed == 4  # 4 batches, one step
    step = float((torch.cat([p.detach().flatten() for p in task.parameters()]) - before).norm())
    if clip is None:
        assert step > 0.05  # the unclipped gradient norm is far above the clip value
    else:  # torch scales the gradient to clip / (norm + 1e-6)
        assert 0.99 * clip <= step <= 1.01 * clip, step


@pytest.mark.parametrize("reduction", ["mean", "sum", "max"])
def test_embedding_reduction_pools_atom_embeddings(reduction: str) -> None:
    class PointOnly(nn.Module):
        embedding_dim = 3

        def forward(self, batch: Batch) -> Embeddings:
            return Embeddings(point_embedding=batch.pos)

    task = ScalarRegressionTask(
        encoder=PointOnly(), task_keys=["energy"], embedding_reduction_type=reduction
    )
    batch = Batch.from_data_list(make_structures(3, seed=0))
    pooled = task.system_embedding(task.encoder(batch), batch)
    first = batch.pos[batch.batch == 0]
    expected = {"mean": first.mean(0), "sum": first.sum(0), "max": first.amax(0)}[reduction]
    torch.testing.assert_close(pooled[0], expected)
    assert pooled.shape == (3, 3)


def test_weighted_sum_skips_only_operations_that_cannot_change_it() -> None:
    a, b = torch.tensor(0.1), torch.tensor(0.7)
    assert weighted_sum([(1.0, a)]) is a
    assert torch.equal(weighted_sum([(1.0, a), (3.0, b)]), torch.stack([1.0 * a, 3.0 * b]).sum())
    assert weighted_sum([(2.0, a)]).item() == pytest.approx(0.2)
    # A zero weight still multiplies: a NaN loss stays NaN, it does not vanish.
    assert weighted_sum([(0.0, torch.tensor(float("nan"))), (1.0, b)]).isnan()
