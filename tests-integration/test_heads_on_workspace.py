"""Heads used the way the task packages use them: one shared embedding, several heads."""

import importlib.metadata

import torch

import matsci.heads
import matsci.tasks.core
import matsci.tasks.physics
import matsci.transforms
from matsci.heads import OutputHead


def test_every_package_imports_with_its_own_version() -> None:
    for module, distribution in [
        (matsci.heads, "matsci-heads"),
        (matsci.transforms, "matsci-transforms"),
        (matsci.tasks.core, "matsci-tasks-core"),
        (matsci.tasks.physics, "matsci-tasks-physics"),
    ]:
        assert module.__version__ == importlib.metadata.version(distribution)


def test_heads_on_shared_embedding_train_jointly() -> None:
    torch.manual_seed(0)
    embedding = torch.nn.Linear(6, 24)
    heads = torch.nn.ModuleDict(
        {
            "energy": OutputHead(1, 32, input_dim=24, activation="SiLU"),
            "band_gap": OutputHead(1, 32, input_dim=24, activation="SiLU"),
        }
    )
    x = torch.randn(128, 6)
    targets = {"energy": x.sum(1, keepdim=True), "band_gap": (x**2).sum(1, keepdim=True)}
    params = list(embedding.parameters()) + list(heads.parameters())
    optimizer = torch.optim.Adam(params, lr=1e-2)

    def loss() -> torch.Tensor:
        shared = embedding(x)
        return sum(
            (
                torch.nn.functional.mse_loss(head(shared), targets[key])
                for key, head in heads.items()
            ),
            torch.tensor(0.0),
        )

    initial = loss().item()
    for _ in range(200):
        optimizer.zero_grad()
        value = loss()
        value.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
    # Both heads learn through one embedding: far better than predicting the mean.
    mean_baseline = sum(float(t.var()) for t in targets.values())
    assert loss().item() < 0.1 * mean_baseline
    assert loss().item() < initial
