"""Every shipped task speaks through the documented extension surface, nothing else."""

from __future__ import annotations

import inspect

import pytest

from matsci.tasks.core import (
    BaseTaskModule,
    BinaryClassificationTask,
    CrystalSymmetryClassificationTask,
    ScalarRegressionTask,
)
from matsci.tasks.physics import ForceRegressionTask, GradFreeForceRegression, NodeDenoisingTask

HOOKS = {
    "build_head",  # heads
    "target_specs",  # target specs
    "build_metrics",  # metrics
    "input_request",  # encoder input
    "compute_outputs",  # outputs
    "loss_target",  # loss target
    "get_target",  # target transform
    "to_physical",  # predictions (and what the metrics compare)
    "physical_predictions",  # predictions that differ from what the metrics compare
}
"""The hooks of docs/tasks.rst's "Writing a task" table."""

DECLARATIONS = {"default_loss_config"}
"""A default loss with constructor arguments (class weights, pos_weight)."""

STATISTICS = {"apply_statistics", "fit_normalizers"}
"""The statistics entry points, which the force and scalar tasks implement for their own."""


@pytest.mark.parametrize(
    "task_class",
    [
        ScalarRegressionTask,
        BinaryClassificationTask,
        CrystalSymmetryClassificationTask,
        ForceRegressionTask,
        GradFreeForceRegression,
        NodeDenoisingTask,
    ],
)
def test_shipped_tasks_override_only_the_documented_hooks(task_class: type) -> None:
    base = {name for name, _ in inspect.getmembers(BaseTaskModule, inspect.isfunction)}
    overridden = {
        name
        for name, value in vars(task_class).items()
        if name in base and inspect.isfunction(value) and name != "__init__"
    }
    assert overridden <= HOOKS | DECLARATIONS | STATISTICS, sorted(
        overridden - HOOKS - DECLARATIONS - STATISTICS
    )


def test_the_removed_hooks_are_gone() -> None:
    # A subclass still defining one of these would be silently ignored by the engine.
    for name in ("outputs_from_embeddings", "metric_inputs", "update_metric", "normalizer_dim"):
        assert not hasattr(BaseTaskModule, name)


def test_a_subclass_with_a_removed_hook_is_refused() -> None:
    with pytest.raises(TypeError, match="outputs_from_embeddings: this hook was removed; define"):

        class WithOutputsFromEmbeddings(BaseTaskModule):
            def outputs_from_embeddings(self, embeddings: object, encoder_input: object) -> None:
                pass

    with pytest.raises(TypeError, match="metrics compare to_physical"):

        class WithMetricInputs(BaseTaskModule):
            def metric_inputs(self, key: str, output: object) -> None:
                pass

    with pytest.raises(TypeError, match="normalizes_targets = True"):

        class WithNormalizerDim(BaseTaskModule):
            def normalizer_dim(self, key: str) -> None:
                pass

    with pytest.raises(TypeError, match=r"the batch is encoder_input\.batch"):

        class WithOldComputeOutputs(BaseTaskModule):
            def compute_outputs(self, embeddings: object, batch: object) -> None:  # type: ignore[override]
                pass
