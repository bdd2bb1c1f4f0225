import torch
from torch import nn

from matsci.contract import Embeddings, Encoder


class TinyEncoder(nn.Module):
    embedding_dim = 4

    def forward(self, batch: object) -> Embeddings:
        return Embeddings()


def test_tiny_encoder_meets_the_protocol() -> None:
    assert isinstance(TinyEncoder(), Encoder)


def test_module_without_embedding_dim_does_not() -> None:
    assert not isinstance(nn.Linear(2, 2), Encoder)


def test_embeddings_default_to_absent() -> None:
    empty = Embeddings()
    assert empty.system_embedding is None
    assert empty.point_embedding is None
    full = Embeddings(torch.zeros(2, 4), torch.zeros(7, 4))
    assert full.point_embedding is not None
    assert full.point_embedding.shape == (7, 4)
