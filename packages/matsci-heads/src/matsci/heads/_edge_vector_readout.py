"""A vector per atom from invariant atom features: learned weights on the unit edge vectors."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from matsci.heads._output_head import OutputHead
from matsci.heads._resolve import ModuleSpec, build_module


class EdgeVectorReadout(nn.Module):
    r"""Rotation-equivariant vectors per atom from invariant atom embeddings.

    A dense head on invariant features (SchNet's, or any encoder whose ``embedding_dim`` is an
    int) cannot predict a vector: rotate the structure and the features stay, so the output
    stays instead of rotating. This readout builds vectors from the geometry instead:

    .. math:: \mathbf{v}_i = \sum_{j \in \mathcal{N}(i)} w\big(\mathbf{h}_i, \mathbf{h}_j,
              d_{ij}\big)\, f_c(d_{ij})\, \hat{\mathbf{r}}_{ij},
              \qquad w = W_2\, \sigma\big(W_s \mathbf{a}_i + W_t \mathbf{a}_j
              + W_r\, \mathbf{e}(d_{ij})\big),

    where ``a = MLP(h)`` are atom features, ``e`` a Gaussian expansion of the distance on
    ``[0, cutoff]`` and :math:`f_c(d) = \tfrac12(\cos(\pi d / r_c) + 1)` for :math:`d < r_c`, 0
    beyond (the weight and its derivative vanish at the cutoff, so predictions are smooth as
    atoms move in and out of range). The weights are invariant and :math:`\hat{\mathbf{r}}_{ij}`
    rotates with the structure, so :math:`\mathbf{v}_i` is rotation-equivariant by construction,
    translation-invariant and odd under inversion (a polar vector, like a force). Edge vectors
    are the caller's, so periodic images are handled wherever the vectors were computed
    (``pos``, ``cell`` and ``cell_offsets``, e.g. by :func:`matsci.transforms.edge_vectors`).

    Shapes: ``N`` atoms, ``E`` edges, ``D`` embedding width, ``C`` = ``num_vectors``.

    Parameters
    ----------
    input_dim
        Width ``D`` of the atom embeddings.
    cutoff
        Radius :math:`r_c` in Å beyond which an edge contributes nothing; positive.
    hidden_dim
        Width of the atom features and of the edge weight network.
    num_hidden
        Hidden blocks of the atom-feature MLP (as in :class:`OutputHead`).
    num_vectors
        Vectors per atom ``C``; with 1 the output is ``[N, 3]``, otherwise ``[N, C, 3]``.
    num_radial
        Gaussians in the distance expansion.
    activation
        Activation of the atom MLP and the edge network (instance, class or dotted name).
    **head_kwargs
        Further arguments of the atom-feature :class:`OutputHead` (``norm``, ``dropout``, ...).

    Raises
    ------
    ValueError
        If a size is not positive or ``cutoff`` is not a positive finite number.

    Examples
    --------
    >>> import torch
    >>> from matsci.heads import EdgeVectorReadout
    >>> readout = EdgeVectorReadout(input_dim=8, cutoff=3.0)
    >>> edge_index = torch.tensor([[0, 1], [1, 0]])
    >>> edge_vectors = torch.tensor([[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0]])
    >>> forces = readout(torch.randn(2, 8), edge_index, edge_vectors)
    >>> forces.shape
    torch.Size([2, 3])
    >>> bool((forces[:, 1:] == 0).all())  # along the only edge, the x axis
    True
    """

    def __init__(
        self,
        input_dim: int,
        cutoff: float,
        hidden_dim: int = 64,
        num_hidden: int = 1,
        num_vectors: int = 1,
        num_radial: int = 16,
        activation: ModuleSpec | None = "torch.nn.SiLU",
        **head_kwargs: Any,
    ) -> None:
        super().__init__()
        for name, value in (
            ("input_dim", input_dim),
            ("hidden_dim", hidden_dim),
            ("num_vectors", num_vectors),
            ("num_radial", num_radial),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"EdgeVectorReadout({name}={value!r}): expected a positive int")
        if (
            isinstance(cutoff, bool)
            or not (isinstance(cutoff, int | float))
            or not (0 < cutoff < math.inf)
        ):
            raise ValueError(
                f"EdgeVectorReadout(cutoff={cutoff!r}): expected a positive finite radius in Å"
            )
        self.input_dim = input_dim
        self.cutoff = float(cutoff)
        self.num_vectors = num_vectors
        self.atom_features = OutputHead(
            hidden_dim, hidden_dim, num_hidden, activation=activation, input_dim=input_dim,
            **head_kwargs,
        )  # fmt: skip
        self.source_weight = nn.Linear(hidden_dim, hidden_dim)
        self.target_weight = nn.Linear(hidden_dim, hidden_dim, bias=False)
        self.radial_weight = nn.Linear(num_radial, hidden_dim, bias=False)
        self.edge_activation = build_module(activation, argument="activation")
        self.edge_output = nn.Linear(hidden_dim, num_vectors)
        self.register_buffer(
            "centers", torch.linspace(0.0, self.cutoff, num_radial), persistent=False
        )
        self.width = self.cutoff / num_radial

    def reset_parameters(self) -> None:
        """Re-initialize every layer."""
        self.atom_features.reset_parameters()
        for layer in (
            self.source_weight, self.target_weight, self.radial_weight, self.edge_output
        ):  # fmt: skip
            layer.reset_parameters()

    def forward(self, point_embedding: Tensor, edge_index: Tensor, edge_vectors: Tensor) -> Tensor:
        """Vectors per atom, summed over the edges that leave it.

        Parameters
        ----------
        point_embedding
            ``[N, D]`` invariant atom embeddings.
        edge_index
            ``[2, E]`` long; edge ``e`` goes from atom ``edge_index[0, e]`` (whose vector it
            adds to) to atom ``edge_index[1, e]``.
        edge_vectors
            ``[E, 3]`` vector from the source atom to the target atom (its periodic image).

        Returns
        -------
        Tensor
            ``[N, 3]`` for one vector per atom, ``[N, C, 3]`` for ``num_vectors = C``.

        Raises
        ------
        ValueError
            If a shape is wrong.
        """
        if point_embedding.dim() != 2 or point_embedding.shape[1] != self.input_dim:
            raise ValueError(
                f"EdgeVectorReadout: point_embedding must have shape [N, {self.input_dim}], "
                f"got {tuple(point_embedding.shape)}"
            )
        if edge_index.dim() != 2 or edge_index.shape[0] != 2:
            raise ValueError(
                f"EdgeVectorReadout: edge_index must have shape [2, E], "
                f"got {tuple(edge_index.shape)}"
            )
        if edge_vectors.shape != (edge_index.shape[1], 3):
            raise ValueError(
                f"EdgeVectorReadout: edge_vectors must have shape [E, 3] = "
                f"[{edge_index.shape[1]}, 3], got {tuple(edge_vectors.shape)}"
            )
        source, target = edge_index[0], edge_index[1]  # [E], [E]
        features = self.atom_features(point_embedding)  # [N, H]
        distances = edge_vectors.norm(dim=-1)  # [E]
        # Gaussians on [0, cutoff]; distances beyond it are clamped (the envelope is 0 there).
        clamped = distances.clamp(max=self.cutoff).unsqueeze(-1)  # [E, 1]
        radial = torch.exp(-(((clamped - self.centers) / self.width) ** 2))  # [E, R]
        # W_s a_i + W_t a_j once per atom, gathered per edge: cheaper than an MLP on [a_i, a_j].
        hidden = (
            self.source_weight(features)[source]
            + self.target_weight(features)[target]
            + self.radial_weight(radial)
        )  # [E, H]
        envelope = 0.5 * (torch.cos(math.pi * clamped / self.cutoff) + 1.0)  # [E, 1]
        weights: Tensor = self.edge_output(self.edge_activation(hidden)) * envelope  # [E, C]
        # Zero-length edges (an atom and its own image at the same place) have no direction.
        unit = edge_vectors / distances.clamp(min=torch.finfo(distances.dtype).tiny).unsqueeze(-1)
        contributions: Tensor = weights.unsqueeze(-1) * unit.unsqueeze(1)  # [E, C, 3]
        # shape[0], not len(): a traced or exported graph keeps the atom count symbolic.
        vectors = contributions.new_zeros(point_embedding.shape[0], self.num_vectors, 3)
        vectors = vectors.index_add(0, source, contributions)  # [N, C, 3]
        return vectors.squeeze(1) if self.num_vectors == 1 else vectors

    def extra_repr(self) -> str:
        """Sizes and cutoff for ``print(readout)``."""
        return f"input_dim={self.input_dim}, cutoff={self.cutoff}, num_vectors={self.num_vectors}"
