"""Statistics are computed once, in matsci.data, and applied to tasks: the same numbers as
streaming over the loader inside the task."""

import torch
from physics_helpers import SmoothEncoder

from matsci.data import AtomsDataModule
from matsci.data.examples import bundled_dataset_path
from matsci.tasks.core import ScalarRegressionTask
from matsci.tasks.physics import ForceRegressionTask
from matsci.transforms import PeriodicRadiusGraph


def _emt() -> AtomsDataModule:
    data = AtomsDataModule(
        bundled_dataset_path("emt"), keys=["energy", "force"],
        transform=PeriodicRadiusGraph(cutoff=4.0), batch_size=8, seed=0,
    )  # fmt: skip
    data.setup("fit")
    return data


def test_force_task_statistics_match_its_own_fit() -> None:
    data = _emt()
    kwargs = {"encoder_class": SmoothEncoder, "encoder_kwargs": {"embedding_dim": 8}}
    streamed, applied = ForceRegressionTask(**kwargs), ForceRegressionTask(**kwargs)
    streamed.fit_normalizers(data.train_dataloader())
    applied.apply_statistics(data.statistics(keys=["energy", "force"]))
    assert float(applied.energy_scale) > 0.1  # set: the default is exactly 1
    torch.testing.assert_close(applied.energy_scale, streamed.energy_scale)
    torch.testing.assert_close(applied.reference_energies, streamed.reference_energies)
    assert applied.reference_energies.abs().max() > 0.05  # fitted: the default is all zeros


def test_scalar_task_statistics_match_its_own_fit() -> None:
    data = _emt()
    kwargs = {"encoder_class": SmoothEncoder, "encoder_kwargs": {"embedding_dim": 8}}
    streamed = ScalarRegressionTask(**kwargs, task_keys=["energy"])
    applied = ScalarRegressionTask(**kwargs, task_keys=["energy"])
    streamed.fit_normalizers(data.train_dataloader())
    applied.apply_statistics(data.statistics(keys=["energy"]))
    for name in ("mean", "std"):
        expected = getattr(streamed.normalizers["energy"], name)
        torch.testing.assert_close(getattr(applied.normalizers["energy"], name), expected)
    # The energy is extensive: references per element, and the per-atom residual's scale.
    torch.testing.assert_close(
        applied.element_references["energy"].values,
        streamed.element_references["energy"].values,
    )
    assert 0.01 < float(streamed.normalizers["energy"].std) < 0.5  # type: ignore[arg-type]
