import pytest
import torch
from physics_helpers import SmoothEncoder, random_crystal
from torch import Tensor, nn
from torch_geometric.data import Batch
from torch_geometric.loader import DataLoader

from matsci.contract import Embeddings
from matsci.contract.testing import quiet_trainer
from matsci.tasks.physics import NodeDenoisingTask
from matsci.transforms import NoisyPositions


def _noisy(count: int, seed: int = 0) -> list:
    noise = NoisyPositions(scale=0.1, generator=torch.Generator().manual_seed(seed))
    return [noise(random_crystal(s, n_atoms=6, dtype=torch.float32)) for s in range(count)]


class RecordingEncoder(nn.Module):
    """Remembers the positions it was given."""

    embedding_dim = 3

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[Tensor] = []
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, batch: Batch) -> Embeddings:
        self.seen.append(batch.pos)
        return Embeddings(point_embedding=batch.pos * self.scale)


def test_encoder_sees_noisy_positions_only_and_batch_is_untouched() -> None:
    encoder = RecordingEncoder()
    task = NodeDenoisingTask(encoder=encoder)
    batch = Batch.from_data_list(_noisy(3))
    clean = batch.pos.clone()
    task.compute_losses(task(batch), batch)
    assert len(encoder.seen) == 1
    assert torch.equal(encoder.seen[0], batch.noisy_pos)
    assert not torch.equal(encoder.seen[0], clean)
    assert torch.equal(batch.pos, clean)


def test_missing_noisy_positions_says_what_to_add() -> None:
    task = NodeDenoisingTask(encoder_class=SmoothEncoder)
    batch = Batch.from_data_list([random_crystal(0, dtype=torch.float32)])
    with pytest.raises(ValueError, match=r"add matsci\.transforms\.NoisyPositions"):
        task.check_batch(batch)
    with pytest.raises(ValueError, match="NoisyPositions"):
        task(batch)


def test_denoising_lowers_the_loss() -> None:
    train, held_out = _noisy(96, seed=1), _noisy(24, seed=2)
    task = NodeDenoisingTask(
        encoder_class=SmoothEncoder,
        encoder_kwargs={"embedding_dim": 16, "vector_channels": 8},
        lr=5e-3,
    )
    loader = DataLoader(held_out, batch_size=24)
    before = quiet_trainer().validate(task, loader, verbose=False)[0]["val/loss"]
    quiet_trainer(max_epochs=12).fit(task, DataLoader(train, batch_size=8, shuffle=True))
    after = quiet_trainer().validate(task, loader, verbose=False)[0]["val/loss"]
    assert after < 0.8 * before, (before, after)
