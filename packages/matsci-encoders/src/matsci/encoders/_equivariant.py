"""An E(3)-equivariant message-passing encoder from e3nn operations (NequIP-like)."""

from __future__ import annotations

import functools
import itertools
import math
from typing import Any, Literal, NamedTuple

import torch
from e3nn import o3
from e3nn.math import normalize2mom
from e3nn.nn import Gate
from torch import Tensor, nn
from torch_geometric.data import Batch
from torch_geometric.utils import scatter

from matsci.contract import Embeddings, keys
from matsci.encoders._radial import RadialBasis
from matsci.transforms import edge_vectors

Readout = Literal["sum", "mean"]
_READOUTS: tuple[Readout, ...] = ("sum", "mean")
TensorProductBackend = Literal["e3nn", "cuequivariance"]
_BACKENDS: tuple[TensorProductBackend, ...] = ("e3nn", "cuequivariance")
_MAX_LMAX = 6
_SCALAR_ACTIVATIONS = {1: nn.functional.silu, -1: torch.tanh}  # by parity, as in NequIP
_GATE_ACTIVATIONS = {1: torch.sigmoid, -1: torch.tanh}


class EquivariantEncoder(nn.Module):
    r"""E(3)-equivariant message passing on e3nn irreps, after NequIP (Batzner et al. 2022).

    Atoms start from a learned embedding of their atomic number (``num_channels`` even scalars).
    Each of ``num_layers`` interaction layers computes, for every edge from a neighbour ``j`` to
    its centre ``i`` (``edge_index`` rows 1 and 0, :math:`\mathbf{r}_{ij} = \mathbf{x}_j -
    \mathbf{x}_i + \mathbf{S}\mathbf{C}`),

    .. math:: \mathbf{m}_i = \frac{1}{\sqrt{\bar n}} \sum_{j \in \mathcal{N}(i)}
              W\big(R(d_{ij})\big) \left( L_1 \mathbf{h}_j \otimes Y(\hat{\mathbf{r}}_{ij}) \right),
              \qquad
              \mathbf{h}_i \leftarrow \mathbf{h}_i + \mathrm{Gate}\left( L_2 \mathbf{m}_i +
              L_3 \mathbf{h}_i \right),

    with spherical harmonics :math:`Y` up to ``lmax``, a Bessel radial basis :math:`R` times a
    polynomial envelope (exactly zero, with zero derivatives, at and beyond ``cutoff``), a
    tensor product whose per-edge weights come from an MLP :math:`W` of the radial basis,
    equivariant linear maps :math:`L_k` (:class:`e3nn.o3.Linear`), gated nonlinearities
    (:class:`e3nn.nn.Gate`) and :math:`\bar n` = ``avg_num_neighbors``. The residual term is
    used where the layer's input and output irreps agree (all layers but the first, by
    default). Edges at or beyond ``cutoff`` contribute nothing, and the energy of a task on
    this encoder is smooth as an atom crosses the cutoff.

    Edge vectors are recomputed from ``batch.pos`` (and ``cell``, ``cell_offsets``) with
    :func:`matsci.transforms.edge_vectors`, so forces and stresses come through autograd. The
    batch needs ``edge_index`` (for example from :class:`~matsci.transforms.PeriodicRadiusGraph`
    with the same cutoff); ``cell`` and ``cell_offsets`` are optional (molecules).

    Parameters
    ----------
    num_channels
        Width of the atom embedding, and of the default hidden irreps.
    lmax
        Highest degree of the spherical harmonics of edge directions (1 to 6).
    num_layers
        Number of interaction layers.
    cutoff
        Cutoff radius in Å; edges at or beyond it are ignored.
    num_basis
        Number of Bessel radial basis functions.
    max_atomic_number
        Largest atomic number the embedding table holds.
    hidden_irreps
        Irreps of the node features, e.g. ``"32x0e+16x1o+8x2e"``. Default:
        ``{C}x0e + {C/2}x1o + {C/4}x2e + ...`` with ``C = num_channels``, up to ``lmax``, parity
        :math:`(-1)^l` (at least one copy of each). Must hold even scalars (``0e``), and every
        irrep must be reachable from scalars through ``num_layers`` products with the spherical
        harmonics.
    avg_num_neighbors
        Typical number of neighbours :math:`\bar n`; the sum of messages is divided by
        :math:`\sqrt{\bar n}`.
    readout
        How the even scalars of the atoms are pooled into the structure embedding: ``"sum"``
        or ``"mean"``.
    radial_hidden
        Width of the two hidden layers of the MLP from the radial basis to the tensor-product
        weights.
    tensor_product_backend
        What computes the edge tensor products (gathered, multiplied, summed onto the
        centres): ``"e3nn"`` (default; e3nn's Clebsch-Gordan coefficients, path by path in
        PyTorch, on any device) or ``"cuequivariance"`` (:mod:`cuequivariance_torch`, from the
        extra ``matsci-encoders[cuequivariance]``: its CUDA kernel on a GPU where
        ``cuequivariance-ops-torch`` is installed and every irrep of ``hidden_irreps`` has the
        same multiplicity, its PyTorch fallback otherwise). Both give the same numbers from
        the same parameters, so a checkpoint loads with either.

    Attributes
    ----------
    embedding_dim : e3nn.o3.Irreps
        Irreps of the point embeddings (the node features after the last layer).
    system_embedding_dim : int
        Number of even scalars, the width of the structure embedding.
    cutoff : float
        The cutoff radius in Å.

    Raises
    ------
    ValueError
        If an argument is out of range, ``readout`` or ``tensor_product_backend`` is unknown,
        or ``hidden_irreps`` cannot be parsed, holds no ``0e`` or holds irreps the layers
        cannot produce.
    ImportError
        If ``tensor_product_backend="cuequivariance"`` and cuequivariance-torch is not
        installed.

    Examples
    --------
    >>> import torch
    >>> from torch_geometric.data import Batch, Data
    >>> from matsci.encoders import EquivariantEncoder
    >>> from matsci.transforms import PeriodicRadiusGraph
    >>> encoder = EquivariantEncoder(num_channels=8, lmax=1, num_layers=2, cutoff=3.0)
    >>> encoder.embedding_dim, encoder.system_embedding_dim
    (8x0e+4x1o, 8)
    >>> data = Data(pos=torch.rand(4, 3) * 3.0, atomic_numbers=torch.tensor([29, 29, 13, 13]),
    ...             cell=3.0 * torch.eye(3).unsqueeze(0), natoms=torch.tensor([4]))
    >>> batch = Batch.from_data_list([PeriodicRadiusGraph(cutoff=3.0)(data)])
    >>> out = encoder(batch)
    >>> out.point_embedding.shape, out.system_embedding.shape
    (torch.Size([4, 20]), torch.Size([1, 8]))
    """

    def __init__(
        self,
        num_channels: int = 32,
        lmax: int = 2,
        num_layers: int = 3,
        cutoff: float = 5.0,
        num_basis: int = 8,
        max_atomic_number: int = 100,
        hidden_irreps: str | None = None,
        avg_num_neighbors: float = 10.0,
        readout: Readout = "sum",
        radial_hidden: int = 64,
        tensor_product_backend: TensorProductBackend = "e3nn",
    ) -> None:
        super().__init__()
        _check_int("num_channels", num_channels, 1)
        _check_int("lmax", lmax, 1, _MAX_LMAX)
        _check_int("num_layers", num_layers, 1)
        _check_int("num_basis", num_basis, 1)
        _check_int("max_atomic_number", max_atomic_number, 1)
        _check_int("radial_hidden", radial_hidden, 1)
        _check_positive("cutoff", cutoff)
        _check_positive("avg_num_neighbors", avg_num_neighbors)
        if readout not in _READOUTS:
            raise ValueError(
                f"EquivariantEncoder(readout={readout!r}): expected one of {list(_READOUTS)}"
            )
        if tensor_product_backend not in _BACKENDS:
            raise ValueError(
                f"EquivariantEncoder(tensor_product_backend={tensor_product_backend!r}): "
                f"expected one of {list(_BACKENDS)}"
            )
        target = _parse_hidden_irreps(hidden_irreps, num_channels, lmax)
        # The constructor's arguments, read back by tasks so a checkpoint rebuilds this encoder.
        self.init_args: dict[str, Any] = {
            "num_channels": num_channels, "lmax": lmax, "num_layers": num_layers,
            "cutoff": float(cutoff), "num_basis": num_basis,
            "max_atomic_number": max_atomic_number,
            "hidden_irreps": None if hidden_irreps is None else str(hidden_irreps),
            "avg_num_neighbors": float(avg_num_neighbors), "readout": readout,
            "radial_hidden": radial_hidden, "tensor_product_backend": tensor_product_backend,
        }  # fmt: skip
        self.num_channels = num_channels
        self.lmax = lmax
        self.num_layers = num_layers
        self.cutoff = float(cutoff)
        self.readout: Readout = readout
        self.hidden_irreps = target
        self.irreps_sh = o3.Irreps.spherical_harmonics(lmax)
        # The module form of o3.spherical_harmonics (normalize=True, "component"): torch.compile
        # cannot guard on the Irreps argument of the function.
        self.spherical_harmonics = o3.SphericalHarmonics(
            self.irreps_sh, normalize=True, normalization="component"
        )

        self.sh_dims = [2 * degree + 1 for degree in range(lmax + 1)]
        self.atom_embedding = nn.Embedding(max_atomic_number + 1, num_channels)
        self.radial_basis = RadialBasis(self.cutoff, num_basis)
        irreps = o3.Irreps(f"{num_channels}x0e")
        layers = []
        for _ in range(num_layers):
            layer = _Interaction(
                irreps, self.irreps_sh, target, num_basis, radial_hidden,
                float(avg_num_neighbors), tensor_product_backend,
            )  # fmt: skip
            layers.append(layer)
            irreps = layer.irreps_out
        self.layers = nn.ModuleList(layers)
        missing = [f"{mul}x{ir}" for mul, ir in target if ir not in irreps]
        if missing:
            raise ValueError(
                f"EquivariantEncoder(hidden_irreps={str(target)!r}): {missing} cannot be produced "
                f"from scalars by {num_layers} layer(s) of products with spherical harmonics up to "
                f"lmax={lmax} (parity (-1)^l); use other irreps, a larger lmax or more layers"
            )
        self.embedding_dim: o3.Irreps = irreps
        scalar_index = [
            index
            for (mul, ir), part in zip(irreps, irreps.slices(), strict=True)
            if ir == o3.Irrep("0e")
            for index in range(part.start, part.stop)
        ]
        self.system_embedding_dim: int = len(scalar_index)
        self.register_buffer("scalar_index", torch.tensor(scalar_index), persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Draw new weights: e3nn's standard-normal initialisation, Bessel frequencies ``nπ``."""
        self.atom_embedding.reset_parameters()
        self.radial_basis.reset_parameters()
        for name, parameter in self.layers.named_parameters():
            with torch.no_grad():
                if name.endswith("bias"):
                    parameter.zero_()
                else:
                    parameter.normal_()

    def forward(self, batch: Batch) -> Embeddings:
        """Embed a batch of B structures with N atoms and E edges.

        Parameters
        ----------
        batch
            A batch following the data contract, with ``edge_index`` (and ``cell``,
            ``cell_offsets`` for periodic structures).

        Returns
        -------
        Embeddings
            ``point_embedding`` [N, embedding_dim.dim] irreps features (e3nn layout) and
            ``system_embedding`` [B, system_embedding_dim] pooled even scalars.
        """
        graph_index = getattr(batch, keys.BATCH, None)
        cell = getattr(batch, keys.CELL, None)
        # Molecules (no cell) may still carry all-zero cell_offsets from PeriodicRadiusGraph.
        offsets = getattr(batch, keys.CELL_OFFSETS, None) if cell is not None else None
        edge_index: Tensor = batch[keys.EDGE_INDEX]
        vectors, distances = edge_vectors(batch[keys.POS], edge_index, cell, offsets, graph_index)
        centre, neighbour = edge_index[0], edge_index[1]
        # [E, 2l+1] per degree l; vectors point from the centre i to the neighbour j.
        # Split by degree once: torch.split's backward is one concatenation.
        sh = torch.split(self.spherical_harmonics(vectors), self.sh_dims, dim=1)
        radial = self.radial_basis(distances)  # [E, num_basis], zero beyond the cutoff
        features = self.atom_embedding(batch[keys.ATOMIC_NUMBERS])  # [N, C] even scalars
        for layer in self.layers:
            features = layer(features, sh, radial, centre, neighbour)  # [N, irreps.dim]
        scalars = features.index_select(1, self.scalar_index)  # [N, S] invariant
        if graph_index is None:  # a single structure, not collated
            pooled = scalars.sum(0, True) if self.readout == "sum" else scalars.mean(0, True)
        else:
            # B from natoms' size, not the int num_graphs: it stays symbolic under torch.compile.
            natoms = getattr(batch, keys.NATOMS, None)
            num_structures = natoms.shape[0] if natoms is not None else batch.num_graphs
            pooled = scatter(
                scalars, graph_index, dim=0, dim_size=num_structures, reduce=self.readout
            )  # [B, S]
        return Embeddings(system_embedding=pooled, point_embedding=features)

    def __repr__(self) -> str:
        return (
            f"EquivariantEncoder(hidden_irreps={self.embedding_dim}, lmax={self.lmax}, "
            f"num_layers={self.num_layers}, cutoff={self.cutoff}, readout={self.readout!r})"
        )


class _Interaction(nn.Module):
    """One NequIP-style layer: tensor-product convolution, self-interaction, gate, residual."""

    def __init__(
        self,
        irreps_in: o3.Irreps,
        irreps_sh: o3.Irreps,
        target: o3.Irreps,
        num_basis: int,
        radial_hidden: int,
        avg_num_neighbors: float,
        backend: TensorProductBackend = "e3nn",
    ) -> None:
        super().__init__()
        reachable = {ir_out for _, ir_in in irreps_in for _, ir_sh in irreps_sh
                     for ir_out in ir_in * ir_sh}  # fmt: skip
        scalars = o3.Irreps([(mul, ir) for mul, ir in target if ir.l == 0 and ir in reachable])
        gated = o3.Irreps([(mul, ir) for mul, ir in target if ir.l > 0 and ir in reachable])
        gates = o3.Irreps(f"{gated.num_irreps}x0e" if gated.num_irreps else "")
        self.gate = Gate(
            scalars, [_SCALAR_ACTIVATIONS[ir.p] for _, ir in scalars],
            gates, [_GATE_ACTIVATIONS[ir.p] for _, ir in gates],
            gated,
        )  # fmt: skip
        irreps_gate_in: o3.Irreps = self.gate.irreps_in
        # Paths of the convolution: every (input, harmonic) pair that gives a wanted irrep.
        mid: list[tuple[int, o3.Irrep]] = []
        instructions: list[tuple[int, int, int, str, bool]] = []
        for i, (mul, ir_in) in enumerate(irreps_in):
            for j, (_, ir_sh) in enumerate(irreps_sh):
                for ir_out in ir_in * ir_sh:
                    if ir_out in irreps_gate_in:
                        instructions.append((i, j, len(mid), "uvu", True))
                        mid.append((mul, ir_out))
        irreps_mid, permutation, _ = o3.Irreps(mid).sort()
        instructions = [
            (i, j, permutation[k], mode, train) for i, j, k, mode, train in instructions
        ]
        self.linear_in = o3.Linear(irreps_in, irreps_in)
        self.tensor_product = o3.TensorProduct(
            irreps_in, irreps_sh, irreps_mid, instructions,
            shared_weights=False, internal_weights=False,
        )  # fmt: skip
        # No biases and silu(0) = 0: zero radial basis (beyond the cutoff) gives zero weights.
        self.radial_mlp = _RadialMLP(
            [num_basis, radial_hidden, radial_hidden, self.tensor_product.weight_numel]
        )
        self.linear_out = o3.Linear(irreps_mid.simplify(), irreps_gate_in)
        self.self_interaction = o3.Linear(irreps_in, irreps_gate_in)
        self.irreps_out: o3.Irreps = self.gate.irreps_out
        self.residual = irreps_in == self.irreps_out
        self.message_scale = 1.0 / math.sqrt(avg_num_neighbors)

        # The same products as self.tensor_product (kept for its weight layout and state-dict
        # keys), computed path by path and summed onto the centres (see _EdgeTensorProduct).
        self.edge_products: nn.Module
        if backend == "e3nn":
            self.edge_products = _EdgeTensorProduct(self.tensor_product)
        else:  # the optional backend; its module builds on edge_paths below
            from matsci.encoders._cuequivariance import CueEdgeTensorProduct

            self.edge_products = CueEdgeTensorProduct(self.tensor_product)

    def forward(
        self,
        features: Tensor,
        sh: tuple[Tensor, ...],
        radial: Tensor,
        centre: Tensor,
        neighbour: Tensor,
    ) -> Tensor:
        weights = self.radial_mlp(radial)  # [E, weight_numel]
        source = self.linear_in(features)  # [N, irreps_in.dim]
        summed: Tensor = self.edge_products(source, sh, weights, centre, neighbour)  # [N, mid]
        update: Tensor = self.gate(
            self.linear_out(summed * self.message_scale) + self.self_interaction(features)
        )
        return features + update if self.residual else update


class EdgePath(NamedTuple):
    """One path (instruction) of an edge tensor product, as both backends compute it."""

    i_in: int
    """The block of the first input (node features)."""
    i_sh: int
    """The block of the second input (spherical harmonics, one copy of each degree)."""
    i_out: int
    """The block of the output."""
    ir_in: o3.Irrep
    ir_sh: o3.Irrep
    ir_out: o3.Irrep
    mul: int
    """U, the input block's multiplicity: the path's number of per-edge weights."""
    block: Tensor
    """``path_weight`` times e3nn's Clebsch-Gordan block, float64 [l_1 dim, l_2 dim, l_3 dim]."""


def edge_paths(tp: o3.TensorProduct) -> list[EdgePath]:
    """The paths of an edge tensor product ``tp``, in instruction (and weight) order.

    Parameters
    ----------
    tp
        The e3nn tensor product: every instruction ``"uvu"`` with per-edge weights.

    Returns
    -------
    list[EdgePath]
        One per instruction: its blocks, irreps, weight count ``U`` and coefficients.

    Examples
    --------
    >>> tp = o3.TensorProduct("2x0e", "1x1o", "2x1o", [(0, 0, 0, "uvu", True)])
    >>> [(path.ir_out, path.mul, tuple(path.block.shape)) for path in edge_paths(tp)]
    [(1o, 2, (1, 3, 3))]
    """
    paths = []
    for ins in tp.instructions:
        assert ins.connection_mode == "uvu", ins
        assert ins.has_weight, ins
        (mul, ir_in), ir_sh = tp.irreps_in1[ins.i_in1], tp.irreps_in2[ins.i_in2].ir
        ir_out = tp.irreps_out[ins.i_out].ir
        block = ins.path_weight * o3.wigner_3j(ir_in.l, ir_sh.l, ir_out.l, dtype=torch.float64)
        paths.append(EdgePath(ins.i_in1, ins.i_in2, ins.i_out, ir_in, ir_sh, ir_out, mul, block))
    return paths


class _EdgeTensorProduct(nn.Module):
    r"""An e3nn ``"uvu"`` tensor product of gathered node features with edge harmonics, summed.

    Computes ``zeros(N).index_add(0, centre, tp(x[neighbour], sh, weights))`` for the
    :class:`e3nn.o3.TensorProduct` ``tp`` (first input ``x`` [N, irreps_in1.dim], second input
    the spherical harmonics, one copy of each degree, per-edge weights, every instruction
    ``"uvu"``) with the same numbers, but path by path: each input block is gathered once at
    its own width; each path's product is a broadcast or a batched ``[U, l_1] x [l_1, l_3]``
    product with the harmonics contracted into the Clebsch-Gordan block beforehand; and each
    path is summed onto the centres by itself, so the edge-sized message tensor of ``tp`` and
    the slices and concatenations of it (whose backward and double backward allocate and
    zero-fill edge-sized tensors) do not exist. Inputs and weights are split with
    :func:`torch.split`, whose backward is one concatenation.
    """

    def __init__(self, tp: o3.TensorProduct) -> None:
        super().__init__()
        irreps_in, irreps_sh, irreps_out = tp.irreps_in1, tp.irreps_in2, tp.irreps_out
        assert all(mul == 1 for mul, _ in irreps_sh), "one copy of each harmonic"
        self.in_dims = [mul_ir.dim for mul_ir in irreps_in]
        self.in_ir_dims = [mul_ir.ir.dim for mul_ir in irreps_in]
        self.sh_dims = [mul_ir.dim for mul_ir in irreps_sh]
        self.weight_sizes: list[int] = []
        # Per path: (input block, harmonic block, output block, U, l_1 dim, l_3 dim, coefficient).
        self.paths: list[tuple[int, int, int, int, int, int, float]] = []
        for index, path in enumerate(edge_paths(tp)):
            block, dim_1, dim_2, dim_3 = path.block, path.ir_in.dim, path.ir_sh.dim, path.ir_out.dim
            coefficient = 0.0
            if path.ir_in.l == 0 or path.ir_sh.l == 0:  # the block is a multiple of the identity
                coefficient = float(block.flatten()[0])
                identity = torch.eye(dim_3, dtype=torch.float64).reshape(block.shape)
                assert torch.allclose(block, coefficient * identity), (path, block)
            # [l_2 dim, l_1 dim * l_3 dim]: the harmonics of an edge times it give the edge's
            # [l_1, l_3] map.
            self.register_buffer(
                f"block_{index}",
                block.permute(1, 0, 2).reshape(dim_2, dim_1 * dim_3).contiguous(),
                persistent=False,
            )
            self.weight_sizes.append(path.mul)
            self.paths.append(
                (path.i_in, path.i_sh, path.i_out, path.mul, dim_1, dim_3, coefficient)
            )
        self.out_dims = [mul_ir.dim for mul_ir in irreps_out]

    def forward(
        self,
        x: Tensor,
        sh: tuple[Tensor, ...],
        weights: Tensor,
        centre: Tensor,
        neighbour: Tensor,
    ) -> Tensor:
        """Products summed onto centres: x [N, in.dim], sh per degree [E, 2l+1] -> [N, out.dim]."""
        num_nodes, num_edges = x.shape[0], neighbour.shape[0]
        sources = [
            block.index_select(0, neighbour).view(num_edges, mul_dim // d, d)
            for block, mul_dim, d in zip(
                torch.split(x, self.in_dims, dim=1), self.in_dims, self.in_ir_dims, strict=True
            )
        ]  # [E, U, l_1 dim] per input block
        path_weights = torch.split(weights, self.weight_sizes, dim=1)  # [E, U] per path
        outputs: list[Tensor | None] = [None] * len(self.out_dims)
        for index, (i_1, i_2, i_3, mul, dim_1, dim_3, coefficient) in enumerate(self.paths):
            source, harmonic, weight = sources[i_1], sh[i_2], path_weights[index]
            if dim_1 == 1:  # scalar input: w x_u Y(r) c
                message = (source.view(num_edges, mul, 1) * weight.unsqueeze(2)) * (
                    harmonic * coefficient
                ).unsqueeze(1)
            elif harmonic.shape[1] == 1:  # scalar harmonic: w x_u Y_0 c
                message = source * (weight * (harmonic * coefficient)).unsqueeze(2)
            else:
                block: Tensor = getattr(self, f"block_{index}")
                # Built in float64 (a float32 default would round the coefficients for good).
                edge_map = (harmonic @ block.to(harmonic.dtype)).view(num_edges, dim_1, dim_3)
                message = torch.bmm(source * weight.unsqueeze(2), edge_map)  # [E, U, l_3]
            summed = message.new_zeros(num_nodes, mul * dim_3)
            outputs[i_3] = summed.index_add(0, centre, message.view(num_edges, mul * dim_3))
        return torch.cat([output for output in outputs if output is not None], dim=1)


class _RadialMLP(nn.Module):
    r"""The MLP of e3nn's ``FullyConnectedNet(sizes, silu)``, its constant factors folded in.

    Same parameters (``layer{k}.weight`` [in, out], standard normal at initialisation) and the
    same function: ``x @ (W / sqrt(in))`` between e3nn's second-moment-normalized SiLU
    :math:`c\,\mathrm{silu}`, no biases, no activation after the last layer. The factors
    :math:`c / \sqrt{\mathrm{in}}` multiply the small weight matrices instead of the [E, width]
    activations, which saves two elementwise passes per hidden layer in the forward pass and
    more in the backward and double-backward passes.
    """

    def __init__(self, sizes: list[int]) -> None:
        super().__init__()
        self.sizes = sizes
        self.scales: list[float] = []
        for index, (size_in, size_out) in enumerate(itertools.pairwise(sizes)):
            holder = nn.Module()
            holder.weight = nn.Parameter(torch.randn(size_in, size_out))
            self.add_module(f"layer{index}", holder)
            # The activation's factor c before every layer but the first.
            factor = 1.0 if index == 0 else _silu_factor()
            self.scales.append(factor / math.sqrt(size_in))
        self.weight_numel = sizes[-1]

    def forward(self, x: Tensor) -> Tensor:
        """[E, sizes[0]] -> [E, sizes[-1]]."""
        last = len(self.scales) - 1
        for index, scale in enumerate(self.scales):
            weight: Tensor = getattr(self, f"layer{index}").weight
            x = x @ (weight * scale)
            if index < last:
                x = nn.functional.silu(x)
        return x

    def __repr__(self) -> str:
        return f"_RadialMLP({self.sizes})"


@functools.cache
def _silu_factor() -> float:
    """e3nn's second-moment normalization of SiLU (``normalize2mom(silu).cst``)."""
    return float(normalize2mom(nn.functional.silu).cst)


def _check_int(name: str, value: Any, low: int, high: int | None = None) -> None:
    allowed = f"an int >= {low}" if high is None else f"an int in {low}..{high}"
    if (
        not isinstance(value, int)
        or isinstance(value, bool)
        or value < low
        or (high is not None and value > high)
    ):
        raise ValueError(f"EquivariantEncoder({name}={value!r}): expected {allowed}")


def _check_positive(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
        raise ValueError(f"EquivariantEncoder({name}={value!r}): expected a finite number > 0")


def _parse_hidden_irreps(hidden_irreps: str | None, num_channels: int, lmax: int) -> o3.Irreps:
    if hidden_irreps is None:
        parts = [f"{max(num_channels >> degree, 1)}x{degree}{'e' if degree % 2 == 0 else 'o'}"
                 for degree in range(lmax + 1)]  # fmt: skip
        hidden_irreps = "+".join(parts)
    try:
        irreps = o3.Irreps(hidden_irreps)
    except (ValueError, AssertionError, TypeError) as error:
        raise ValueError(
            f"EquivariantEncoder(hidden_irreps={hidden_irreps!r}): not valid irreps ({error}); "
            "expected e.g. '32x0e+16x1o+8x2e'"
        ) from error
    irreps = irreps.sort().irreps.simplify()
    if o3.Irrep("0e") not in irreps:
        raise ValueError(
            f"EquivariantEncoder(hidden_irreps={hidden_irreps!r}): needs even scalars (0e) for "
            "the structure embedding"
        )
    return irreps
