"""Gaussian noise on atomic positions, the input and target of denoising pretraining."""

from __future__ import annotations

import math

import torch
from torch_geometric.data import Data
from torch_geometric.transforms import BaseTransform

from matsci.contract import keys

__all__ = ["NoisyPositions"]


class NoisyPositions(BaseTransform):  # type: ignore[misc]  # PyG ships no type hints
    r"""Add i.i.d. Gaussian noise to the positions; keep the noise as the denoising target.

    .. math:: \tilde{\mathbf{x}}_a = \mathbf{x}_a + \boldsymbol{\epsilon}_a,
              \qquad \boldsymbol{\epsilon}_a \sim \mathcal{N}(0, \sigma^2 \mathbf{I}_3),

    with :math:`\sigma` = ``scale``. Stores ``noisy_pos`` [N, 3] (:math:`\tilde{\mathbf{x}}`) and
    ``denoise`` [N, 3] (:math:`\boldsymbol{\epsilon}`, or :math:`\boldsymbol{\epsilon}/\sigma`
    when ``normalize``); ``pos`` is left untouched. Works on one
    :class:`~torch_geometric.data.Data` and on a :class:`~torch_geometric.data.Batch` (every
    atom of the batch gets its own noise; attributes added to a batch are not split again by
    ``Batch.to_data_list()``, so apply the transform before collation when you need them per
    structure).

    **Order with the neighbour graph.** Build the graph first, then add noise:
    ``Compose([PeriodicRadiusGraph(cutoff), NoisyPositions(scale)])``. The graph is then the
    clean structure's graph, and it stays exact for the noisy positions in this sense: an edge
    ``(i, j, S)`` names atom ``i`` and the image of atom ``j`` shifted by the integer lattice
    vector ``S``; because the shift is a lattice translation, the vector between the displaced
    atoms is

    .. math:: \tilde{\mathbf{x}}_j - \tilde{\mathbf{x}}_i + \mathbf{S}\,\mathbf{C}
              = \mathbf{r}_{ij} + \boldsymbol{\epsilon}_j - \boldsymbol{\epsilon}_i,

    which is what :func:`edge_vectors` returns when given ``noisy_pos``. What no longer holds is
    the cutoff: an edge's noisy length may exceed the cutoff, and pairs that noise brings inside
    the cutoff are absent; lengths change by :math:`|\boldsymbol{\epsilon}_j -
    \boldsymbol{\epsilon}_i|`, of order :math:`\sqrt{2}\,\sigma`. Use a scale well below the
    cutoff (and an encoder with a smooth cutoff envelope). Never wrap ``noisy_pos`` back into
    the cell: that would change which image each offset refers to.

    Parameters
    ----------
    scale
        Standard deviation :math:`\sigma` of the noise in Å, positive and finite.
    normalize
        Store the noise divided by ``scale`` (unit variance) as ``denoise``.
    generator
        Random generator for reproducible noise; ``None`` draws from PyTorch's global
        generator. Noise is drawn on the generator's device and moved to the device of ``pos``.
        With DataLoader workers each worker holds a copy of the generator, so workers repeat
        each other's noise; leave it ``None`` for training (PyTorch seeds every worker
        differently) and pass one for reproducible evaluation.

    Raises
    ------
    ValueError
        If ``scale`` is not positive and finite; when called, if ``pos`` is not [N, 3] float.

    Examples
    --------
    >>> import torch
    >>> from torch_geometric.data import Data
    >>> from matsci.transforms import NoisyPositions
    >>> transform = NoisyPositions(scale=0.1, generator=torch.Generator().manual_seed(0))
    >>> data = transform(Data(pos=torch.zeros(2, 3)))
    >>> data.noisy_pos
    tensor([[ 0.1541, -0.0293, -0.2179],
            [ 0.0568, -0.1085, -0.1399]])
    >>> torch.equal(data.denoise, data.noisy_pos - data.pos)
    True
    """

    def __init__(
        self,
        scale: float = 0.1,
        normalize: bool = False,
        generator: torch.Generator | None = None,
    ) -> None:
        if not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"NoisyPositions(scale={scale!r}): scale must be positive and finite")
        self.scale = float(scale)
        self.normalize = bool(normalize)
        self.generator = generator

    def forward(self, data: Data) -> Data:
        """Add ``noisy_pos`` [N, 3] and ``denoise`` [N, 3] to a structure or a batch."""
        pos = getattr(data, keys.POS, None)
        if not isinstance(pos, torch.Tensor) or pos.dim() != 2 or pos.shape[1] != 3:
            shape = tuple(pos.shape) if isinstance(pos, torch.Tensor) else type(pos).__name__
            raise ValueError(f"NoisyPositions: {keys.POS} must have shape [N, 3], got {shape}")
        if not pos.is_floating_point():
            raise ValueError(f"NoisyPositions: {keys.POS} must be floating point, got {pos.dtype}")
        device = pos.device if self.generator is None else self.generator.device
        unit = torch.randn(pos.shape, generator=self.generator, dtype=pos.dtype, device=device)
        unit = unit.to(pos.device)  # [N, 3], standard normal
        noise = unit * self.scale  # [N, 3]
        setattr(data, keys.NOISY_POS, pos + noise)
        setattr(data, keys.DENOISE, unit if self.normalize else noise)
        return data

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(scale={self.scale}, normalize={self.normalize})"
