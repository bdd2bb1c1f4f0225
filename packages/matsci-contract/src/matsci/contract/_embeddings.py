"""The encoder contract: what an encoder returns and what it must expose."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from torch import Tensor
from torch_geometric.data import Batch


@dataclass
class Embeddings:
    """What an encoder returns for a batch of B structures with N atoms in all.

    Either field may be ``None`` when no task in use needs it; a task that needs a missing
    embedding raises a ``ValueError`` saying which.

    Parameters
    ----------
    system_embedding
        One vector per structure, shape ``[B, D]``.
    point_embedding
        One vector per atom, shape ``[N, D]`` (for equivariant encoders, ``[N, irreps.dim]``).

    Examples
    --------
    >>> import torch
    >>> from matsci.contract import Embeddings
    >>> out = Embeddings(system_embedding=torch.zeros(2, 8), point_embedding=torch.zeros(5, 8))
    >>> out.system_embedding.shape
    torch.Size([2, 8])
    """

    system_embedding: Tensor | None = None
    point_embedding: Tensor | None = None


@runtime_checkable
class Encoder(Protocol):
    """An ``nn.Module`` that turns a batch into :class:`Embeddings`.

    Any module with this ``forward`` and an ``embedding_dim`` attribute works with every task:
    that is how users bring their own model. ``embedding_dim`` is the width ``D`` as an int, or an
    ``e3nn.o3.Irreps`` for equivariant encoders whose point embeddings are irreps features.

    Examples
    --------
    >>> import torch
    >>> from matsci.contract import Embeddings, Encoder
    >>> class AtomTypeEncoder(torch.nn.Module):
    ...     embedding_dim = 4
    ...     def __init__(self) -> None:
    ...         super().__init__()
    ...         self.table = torch.nn.Embedding(100, 4)
    ...     def forward(self, batch):
    ...         return Embeddings(point_embedding=self.table(batch.atomic_numbers))
    >>> isinstance(AtomTypeEncoder(), Encoder)
    True
    """

    embedding_dim: Any

    def __call__(self, batch: Batch) -> Embeddings:
        """Embed a batch (``nn.Module.__call__`` runs ``forward``)."""
        ...

    def forward(self, batch: Batch) -> Embeddings:
        """Embed a batch of structures."""
        ...
