"""SchNet from PyTorch Geometric's building blocks, on the batch's periodic edges."""

from __future__ import annotations

import math
from typing import Any, Literal, cast

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch_geometric.data import Batch
from torch_geometric.nn.models.schnet import GaussianSmearing, InteractionBlock, ShiftedSoftplus
from torch_geometric.utils import scatter

from matsci.contract import Embeddings, keys
from matsci.transforms import edge_vectors

__all__ = ["SchNetEncoder"]

Readout = Literal["sum", "mean"]
_READOUTS: tuple[Readout, ...] = ("sum", "mean")


def _check_positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"SchNetEncoder({name}={value!r}): expected a positive int")
    return value


class _ShiftedSoftplus(torch.autograd.Function):
    """``softplus(x) - log 2`` with the derivative ``sigmoid(x)`` written out.

    Autograd's own derivative of ``softplus`` differentiates again (forces, then weight
    gradients) through a slow composite; ``sigmoid`` has a fused derivative. Same values
    (``F.softplus`` forward); derivatives differ from ``softplus_backward`` only beyond its
    linear threshold (x > 20), by less than ``exp(-20)``.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        ctx.save_for_backward(x)
        return F.softplus(x) - math.log(2.0)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        (x,) = ctx.saved_tensors
        return grad * torch.sigmoid(x)  # differentiable: double backward works


def _ssp(x: Tensor) -> Tensor:
    """Shifted softplus ``log(0.5 e^x + 0.5)``, zero at 0 (SchNet's activation)."""
    if torch.jit.is_tracing():  # type: ignore[attr-defined,no-untyped-call]  # public, untyped
        # TorchScript cannot hold a Python autograd Function (the metatomic export traces).
        return F.softplus(x) - math.log(2.0)
    return cast(Tensor, _ShiftedSoftplus.apply(x))


def _interaction(
    block: InteractionBlock,
    h: Tensor,
    source: Tensor,
    target: Tensor,
    expansion: Tensor,
    envelope: Tensor,
) -> Tensor:
    """The update ``Δh`` [N, D] of one PyG ``InteractionBlock``, with its weights.

    The same mathematics as ``block(h, edge_index, distance, expansion)``: filters
    ``W = Dense(ssp(Dense(e))) f_c`` [E, F], messages ``lin1(h)[source] * W`` summed at
    ``target`` (``index_add``: no broadcast index, no ``MessagePassing`` dispatch), then
    ``lin(ssp(lin2(·)))``. ``envelope`` [E, 1] is the cosine cutoff, computed once for all
    blocks.
    """
    mlp, conv = block.mlp, block.conv
    filters = mlp[2](_ssp(mlp[0](expansion))) * envelope  # [E, F]
    x = conv.lin1(h)  # [N, F]
    messages = x.index_select(0, source) * filters  # [E, F]
    summed = torch.zeros_like(x).index_add(0, target, messages)  # [N, F]
    return cast(Tensor, block.lin(_ssp(conv.lin2(summed))))  # [N, D]


def _gaussians(smearing: GaussianSmearing, distance: Tensor) -> Tensor:
    """PyG's ``GaussianSmearing`` [E, G], with ``square`` (a cheaper derivative than ``pow``)."""
    offset: Tensor = smearing.offset
    return torch.exp(smearing.coeff * (distance.unsqueeze(-1) - offset).square())


def _clamp_to_cutoff(distance: Tensor, cutoff: float) -> Tensor:
    """Distances clamped to ``cutoff``, where the cosine cutoff of PyG's ``CFConv`` is zero.

    ``CFConv`` multiplies the filters by ``0.5 (cos(π d / r_c) + 1)``, which rises again beyond
    ``r_c``. At ``d = r_c`` it and its derivative are 0, so after clamping longer edges
    contribute exactly nothing, and the energy stays continuously differentiable.
    """
    return distance.clamp(max=cutoff)


class SchNetEncoder(nn.Module):
    r"""SchNet, the continuous-filter convolutional network, on periodic neighbour graphs.

    From Schütt et al., `"SchNet: A continuous-filter convolutional neural network for
    modeling quantum interactions" <https://arxiv.org/abs/1706.08566>`_, assembled from the
    layers of :mod:`torch_geometric.nn.models.schnet`: an embedding of the atomic number, then
    ``num_interactions`` residual interaction blocks

    .. math:: \mathbf{h}_i \leftarrow \mathbf{h}_i + \mathrm{Dense}\,\mathrm{ssp}\Big(
              \mathrm{Dense} \sum_{j \in \mathcal{N}(i)} \mathrm{Dense}(\mathbf{h}_j) \odot
              W\big(\mathbf{e}(d_{ij})\big)\, f_c(d_{ij}) \Big),

    with ``num_gaussians`` Gaussians :math:`\mathbf{e}` spread over ``[0, cutoff]``, a filter
    network ``W`` and the cosine cutoff
    :math:`f_c(d) = \tfrac12 (\cos(\pi d / r_c) + 1)` for :math:`d < r_c`, and 0 beyond, so
    the energy and its first derivative are continuous as atoms cross the cutoff.

    Edges are the batch's own (``edge_index``, with ``cell_offsets`` and ``cell`` for periodic
    structures, e.g. from :class:`~matsci.transforms.PeriodicRadiusGraph`); their lengths are
    recomputed from ``pos`` by :func:`~matsci.transforms.edge_vectors`, so forces and stress
    follow by autograd. Molecules have no ``cell``; their ``cell_offsets``, if any, are
    ignored. The graph's cutoff must be at least ``cutoff``; longer edges may be present and
    contribute nothing. (PyG's :class:`~torch_geometric.nn.models.SchNet` builds
    a non-periodic radius graph itself, which needs ``torch-cluster``, and its ``CFConv``
    cosine does not vanish beyond the cutoff; here distances are clamped to ``cutoff`` before
    it.)

    Shapes: ``N`` atoms, ``E`` edges, ``B`` structures.

    Parameters
    ----------
    hidden_channels
        Width ``D`` of the atom features (``embedding_dim``).
    num_filters
        Width of the continuous filters.
    num_interactions
        Number of interaction blocks.
    num_gaussians
        Number of Gaussians in the distance expansion.
    cutoff
        Cutoff radius :math:`r_c` in Å; positive and finite.
    max_atomic_number
        Largest atomic number the embedding table holds.
    readout
        Pooling of atom features into ``system_embedding``: ``"sum"`` (extensive) or ``"mean"``.

    Raises
    ------
    ValueError
        If a width or count is not a positive int, ``cutoff`` is not positive and finite, or
        ``readout`` is not ``"sum"`` or ``"mean"``.

    Examples
    --------
    >>> import torch
    >>> from torch_geometric.data import Batch, Data
    >>> from matsci.encoders import SchNetEncoder
    >>> from matsci.transforms import PeriodicRadiusGraph
    >>> encoder = SchNetEncoder(hidden_channels=16, num_filters=16, num_interactions=2,
    ...                         num_gaussians=10, cutoff=3.0)
    >>> encoder
    SchNetEncoder(hidden_channels=16, num_filters=16, ..., cutoff=3.0, ..., readout='sum')
    >>> crystal = Data(pos=torch.tensor([[0.0, 0.0, 0.0], [1.2, 1.2, 1.2]]),
    ...                atomic_numbers=torch.tensor([29, 79]), natoms=torch.tensor([2]),
    ...                cell=2.4 * torch.eye(3).unsqueeze(0), pbc=torch.ones(1, 3, dtype=torch.bool))
    >>> batch = Batch.from_data_list([PeriodicRadiusGraph(cutoff=3.0)(crystal)] * 3)
    >>> out = encoder(batch)
    >>> out.point_embedding.shape, out.system_embedding.shape
    (torch.Size([6, 16]), torch.Size([3, 16]))
    >>> torch.allclose(out.system_embedding[0], out.system_embedding[2])
    True
    """

    def __init__(
        self,
        hidden_channels: int = 128,
        num_filters: int = 128,
        num_interactions: int = 3,
        num_gaussians: int = 50,
        cutoff: float = 5.0,
        max_atomic_number: int = 100,
        readout: Readout = "sum",
    ) -> None:
        super().__init__()
        self.hidden_channels = _check_positive_int("hidden_channels", hidden_channels)
        self.num_filters = _check_positive_int("num_filters", num_filters)
        self.num_interactions = _check_positive_int("num_interactions", num_interactions)
        # PyG's GaussianSmearing divides by the spacing of the centres: at least two.
        if _check_positive_int("num_gaussians", num_gaussians) < 2:
            raise ValueError(f"SchNetEncoder(num_gaussians={num_gaussians!r}): expected >= 2")
        self.num_gaussians = num_gaussians
        self.max_atomic_number = _check_positive_int("max_atomic_number", max_atomic_number)
        if (
            isinstance(cutoff, bool)
            or not isinstance(cutoff, int | float)
            or not math.isfinite(cutoff)
            or not cutoff > 0
        ):
            raise ValueError(f"SchNetEncoder(cutoff={cutoff!r}): expected a positive finite float")
        self.cutoff = float(cutoff)
        if readout not in _READOUTS:
            raise ValueError(f"SchNetEncoder(readout={readout!r}): expected one of {_READOUTS}")
        self.readout: Readout = readout
        self.embedding_dim: int = self.hidden_channels

        self.embedding = nn.Embedding(max_atomic_number + 1, hidden_channels)
        self.distance_expansion = GaussianSmearing(0.0, self.cutoff, num_gaussians)
        self.interactions = nn.ModuleList(
            InteractionBlock(hidden_channels, num_gaussians, num_filters, self.cutoff)
            for _ in range(num_interactions)
        )
        for module in self.modules():
            if isinstance(module, ShiftedSoftplus):
                # PyG stores log 2 rounded to float32; exact, ssp(0) = 0 in float64 too.
                module.shift = math.log(2.0)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Re-initialize the embedding table and every interaction block (as PyG's SchNet)."""
        self.embedding.reset_parameters()
        for interaction in self.interactions:
            cast(InteractionBlock, interaction).reset_parameters()

    def forward(self, batch: Batch) -> Embeddings:
        """Embed a batch of structures.

        Parameters
        ----------
        batch
            ``pos`` [N, 3], ``atomic_numbers`` [N], ``edge_index`` [2, E]; for periodic
            structures ``cell`` [B, 3, 3] and ``cell_offsets`` [E, 3]; ``batch`` [N] (absent
            for a single :class:`~torch_geometric.data.Data`: one structure).

        Returns
        -------
        Embeddings
            ``point_embedding`` [N, D] and ``system_embedding`` [B, D], ``D = hidden_channels``.
        """
        pos: Tensor = batch[keys.POS]
        edge_index: Tensor = batch[keys.EDGE_INDEX]
        structure = getattr(batch, keys.BATCH, None)
        cell = getattr(batch, keys.CELL, None)
        # molecules have no cell (their zero cell_offsets, if any, are not needed)
        offsets = getattr(batch, keys.CELL_OFFSETS, None) if cell is not None else None
        _, distance = edge_vectors(pos, edge_index, cell, offsets, structure)  # [E]
        distance = _clamp_to_cutoff(distance, self.cutoff)  # [E]
        expansion = _gaussians(self.distance_expansion, distance)  # [E, num_gaussians]
        # CFConv's cosine cutoff, once for every block
        envelope = 0.5 * (torch.cos(distance * math.pi / self.cutoff) + 1.0)  # [E]
        envelope = envelope.unsqueeze(-1)  # [E, 1]
        source, target = edge_index[0], edge_index[1]  # [E], [E]
        h = self.embedding(batch[keys.ATOMIC_NUMBERS])  # [N, D]
        for interaction in self.interactions:
            block = cast(InteractionBlock, interaction)
            h = h + _interaction(block, h, source, target, expansion, envelope)
        if structure is None:
            structure = torch.zeros(h.shape[0], dtype=torch.long, device=h.device)
        # B from a tensor's size (natoms [B]), not the int num_graphs: under torch.compile
        # with dynamic shapes it stays symbolic, so a new batch size needs no recompilation.
        natoms = getattr(batch, keys.NATOMS, None)
        num_structures = natoms.shape[0] if natoms is not None else batch.num_graphs
        system = scatter(h, structure, dim=0, dim_size=num_structures, reduce=self.readout)
        return Embeddings(system_embedding=system, point_embedding=h)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(hidden_channels={self.hidden_channels}, "
            f"num_filters={self.num_filters}, num_interactions={self.num_interactions}, "
            f"num_gaussians={self.num_gaussians}, cutoff={self.cutoff}, "
            f"max_atomic_number={self.max_atomic_number}, readout={self.readout!r})"
        )
