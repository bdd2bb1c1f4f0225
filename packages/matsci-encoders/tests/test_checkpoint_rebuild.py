"""A task built on an encoder instance rebuilds the same encoder from its checkpoint alone."""

from pathlib import Path

import pytest
import torch
from encoder_checks import random_periodic_structure
from torch import nn
from torch_geometric.data import Batch

from matsci.encoders import EquivariantEncoder, SchNetEncoder
from matsci.tasks.physics import ForceRegressionTask


@pytest.mark.parametrize(
    "encoder",
    [
        SchNetEncoder(hidden_channels=16, num_filters=8, num_interactions=1, num_gaussians=6,
                      cutoff=3.5),
        EquivariantEncoder(num_channels=8, lmax=1, num_layers=1, cutoff=4.0, num_basis=4,
                           radial_hidden=8, avg_num_neighbors=6.0),
    ],
    ids=["schnet", "equivariant"],
)  # fmt: skip
def test_non_default_encoder_instances_reload_from_the_checkpoint_alone(
    encoder: nn.Module, tmp_path: Path
) -> None:
    task = ForceRegressionTask(encoder=encoder, output_kwargs={"hidden_dim": 8})
    path = tmp_path / "task.ckpt"
    torch.save(
        {"state_dict": task.state_dict(), "hyper_parameters": dict(task.hparams),
         "pytorch-lightning_version": "2.6.0"},
        path,
    )  # fmt: skip
    reloaded = ForceRegressionTask.load_from_checkpoint(path)
    assert reloaded.encoder.cutoff == encoder.cutoff  # type: ignore[union-attr]
    structure = random_periodic_structure(2, n_atoms=7, cutoff=5.0, dtype=torch.float32)
    batch = Batch.from_data_list([structure])
    expected, actual = task.eval().predict(batch), reloaded.eval().predict(batch)
    for key in ("energy", "force"):
        torch.testing.assert_close(actual[key], expected[key], rtol=0, atol=0)
