"""The edge tensor products of :class:`~matsci.encoders.EquivariantEncoder` on cuEquivariance."""

from __future__ import annotations

import importlib
import itertools
from typing import Any

import torch
from e3nn import o3
from torch import Tensor, nn

from matsci.encoders._equivariant import edge_paths

EXTRA_HINT = "pip install 'matsci-encoders[cuequivariance]'"


def import_cuequivariance() -> tuple[Any, Any]:
    """``(cuequivariance, cuequivariance_torch)``, or an ImportError that names the extra."""
    try:
        cue = importlib.import_module("cuequivariance")
        cuet = importlib.import_module("cuequivariance_torch")
    except ImportError as error:
        raise ImportError(
            "EquivariantEncoder(tensor_product_backend='cuequivariance') needs the "
            f"cuequivariance-torch package: {EXTRA_HINT} (GPU kernels also need "
            f"cuequivariance-ops-torch-cu12 or -cu13); missing: {error.name}"
        ) from error
    return cue, cuet


class CueEdgeTensorProduct(nn.Module):
    r"""The e3nn ``"uvu"`` edge tensor product ``tp``, gathered and summed, on cuEquivariance.

    Computes ``zeros(N).index_add(0, centre, tp(x[neighbour], sh, weights))`` with
    :class:`cuequivariance_torch.ChannelWiseTensorProduct`, which gathers the inputs and sums
    the outputs inside its kernel (``indices_1``, ``indices_out``). The weights keep e3nn's
    layout (one block of ``U`` per instruction, in instruction order): they are permuted into
    cuEquivariance's path order and divided by the ratio of its coefficients to e3nn's
    (``path_weight`` times :func:`e3nn.o3.wigner_3j`; checked to be proportional when built),
    and the summed output is permuted back into e3nn's output layout, so parameters and
    checkpoints are the same for both backends.

    On a GPU with ``cuequivariance-ops-torch`` installed and equal multiplicities in the
    hidden irreps, cuEquivariance runs its CUDA kernel (``uniform_1d``); otherwise its
    pure-PyTorch implementation (``naive``) runs, on CPU too.

    Parameters
    ----------
    tp
        The e3nn tensor product: second input one copy of each spherical harmonic, every
        instruction ``"uvu"`` with per-edge weights.

    Raises
    ------
    ImportError
        If cuequivariance-torch is not installed (the message names the extra).
    """

    weight_index: Tensor
    weight_scale: Tensor
    output_index: Tensor

    def __init__(self, tp: o3.TensorProduct) -> None:
        super().__init__()
        cue, cuet = import_cuequivariance()
        irreps_in, irreps_sh, irreps_mid = tp.irreps_in1, tp.irreps_in2, tp.irreps_out
        filter_out = [cue.O3(ir.l, ir.p) for ir in sorted({ir for _, ir in irreps_mid})]
        cue_in, cue_sh = cue.Irreps("O3", str(irreps_in)), cue.Irreps("O3", str(irreps_sh))
        self.product = cuet.ChannelWiseTensorProduct(
            cue_in, cue_sh, filter_out, layout=cue.mul_ir,
            shared_weights=False, internal_weights=False,
        )  # fmt: skip
        # Its buffers are constants of the descriptor, rebuilt here: out of the state dict, so
        # checkpoints are the same for both backends.
        for module in self.product.modules():
            for name, buffer in list(module.named_buffers(recurse=False)):
                module.register_buffer(name, buffer, persistent=False)
        descriptor = cue.descriptors.channelwise_tensor_product(cue_in, cue_sh, filter_out)
        ((_, stp),) = descriptor.polynomial.operations
        cue_out = descriptor.outputs[0].irreps
        assert str(cue_out) == str(self.product.irreps_out), (cue_out, self.product.irreps_out)
        # e3nn's paths by (input block, harmonic block, output irrep), and their weight offsets.
        e3nn_paths = edge_paths(tp)
        by_key = {
            (ref.i_in, ref.i_sh, ref.ir_out.l, ref.ir_out.p): index
            for index, ref in enumerate(e3nn_paths)
        }
        offsets = [0, *itertools.accumulate(ref.mul for ref in e3nn_paths)]
        cue_offsets = [0]
        for mul_ir in cue_out:
            cue_offsets.append(cue_offsets[-1] + mul_ir.mul * mul_ir.ir.dim)
        weight_index: list[int] = []
        weight_scale: list[float] = []
        # The e3nn output block (i_out) -> the columns of cuEquivariance's output block.
        columns: dict[int, list[int]] = {}
        paths = sorted(stp.paths, key=lambda path: path.indices[0])  # by weight segment
        if len(paths) != len(e3nn_paths):
            raise AssertionError(f"{len(paths)} cuEquivariance paths, {len(e3nn_paths)} e3nn")
        for path in paths:
            _, i_in, i_sh, i_out = path.indices
            ir_out = cue_out[i_out].ir
            index = by_key[(i_in, i_sh, ir_out.l, ir_out.p)]
            ref = e3nn_paths[index]  # the e3nn path it computes
            cue_block = torch.as_tensor(path.coefficients, dtype=torch.float64)
            cue_block = cue_block.reshape(ref.block.shape)
            ratio = float((cue_block * ref.block).sum() / (ref.block**2).sum())
            if not torch.allclose(cue_block, ratio * ref.block, atol=1e-6):
                raise AssertionError(f"cuEquivariance path {path.indices} differs from e3nn")
            weight_index += range(offsets[index], offsets[index + 1])
            weight_scale += [1.0 / ratio] * ref.mul
            columns[ref.i_out] = list(range(cue_offsets[i_out], cue_offsets[i_out + 1]))
        self.register_buffer("weight_index", torch.tensor(weight_index), persistent=False)
        self.register_buffer(
            "weight_scale",
            torch.tensor(weight_scale, dtype=torch.get_default_dtype()),
            persistent=False,
        )
        output_index = [column for i_out in sorted(columns) for column in columns[i_out]]
        self.register_buffer("output_index", torch.tensor(output_index), persistent=False)

    def forward(
        self,
        x: Tensor,
        sh: tuple[Tensor, ...],
        weights: Tensor,
        centre: Tensor,
        neighbour: Tensor,
    ) -> Tensor:
        """Products summed onto centres: x [N, in.dim], sh per degree [E, 2l+1] -> [N, out.dim]."""
        cue_weights = weights.index_select(1, self.weight_index) * self.weight_scale  # [E, W]
        summed: Tensor = self.product(
            x,
            torch.cat(sh, dim=1),
            cue_weights,
            indices_1=neighbour,
            indices_out=centre,
            size_out=x.shape[0],
        )  # [N, mid.dim], cuEquivariance's block order
        return summed.index_select(1, self.output_index)

    def __repr__(self) -> str:
        return f"CueEdgeTensorProduct({self.product.irreps_in1} x {self.product.irreps_in2})"


__all__ = ["EXTRA_HINT", "CueEdgeTensorProduct", "import_cuequivariance"]
