import pytest
import torch
from physics_helpers import SmoothEncoder, random_crystal
from torch_geometric.data import Batch, Data
from torch_geometric.loader import DataLoader

from matsci.contract.testing import quiet_trainer
from matsci.tasks.physics import GradFreeForceRegression, GradFreeForceRegressionTask


def _pair_force_structures(count: int) -> list[Data]:
    """Forces of a smooth pair potential, a rule the direct head can learn."""
    structures = []
    for seed in range(count):
        data = random_crystal(seed, n_atoms=4, dtype=torch.float32)
        i, j = data.edge_index
        vectors = data.pos[j] - data.pos[i] + data.cell_offsets @ data.cell[0]
        distance = vectors.norm(dim=-1, keepdim=True)
        pair = torch.exp(-distance) * vectors / distance  # repulsion along each bond
        data.force = torch.zeros_like(data.pos).index_add(0, i, -pair)
        structures.append(data)
    return structures


def test_alias() -> None:
    assert GradFreeForceRegressionTask is GradFreeForceRegression


def test_trains_below_the_zero_force_predictor() -> None:
    train, held_out = _pair_force_structures(96), _pair_force_structures(120)[96:]
    task = GradFreeForceRegression(
        encoder_class=SmoothEncoder,
        encoder_kwargs={"embedding_dim": 16, "vector_channels": 8},
        lr=5e-3,
    )
    quiet_trainer(max_epochs=15).fit(task, DataLoader(train, batch_size=8, shuffle=True))
    batch = Batch.from_data_list(held_out)
    predicted = task.predict(batch)["force"]
    assert predicted.shape == batch.force.shape
    zero_mae = float(batch.force.abs().mean())
    assert float((predicted - batch.force).abs().mean()) < 0.6 * zero_mae


def test_wrong_key_and_missing_force() -> None:
    with pytest.raises(ValueError, match="the only key is"):
        GradFreeForceRegression(encoder_class=SmoothEncoder, task_keys=["forces"])
    task = GradFreeForceRegression(encoder_class=SmoothEncoder)
    with pytest.raises(ValueError, match="force"):
        task.check_batch(Batch.from_data_list([random_crystal(0, dtype=torch.float32)]))
