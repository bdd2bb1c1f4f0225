"""Radial basis of edge lengths with a smooth cutoff: Bessel functions times an envelope."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def polynomial_envelope(x: Tensor, exponent: int = 6) -> Tensor:
    r"""Smooth cutoff envelope of DimeNet, one at ``x = 0`` and zero for ``x >= 1``.

    .. math:: u(x) = 1 - \frac{(p+1)(p+2)}{2} x^p + p(p+2) x^{p+1} - \frac{p(p+1)}{2} x^{p+2}

    for :math:`0 \le x < 1` and :math:`u(x) = 0` beyond, with :math:`p` = ``exponent``. The value
    and the first two derivatives vanish at :math:`x = 1`, so an energy built from it is twice
    continuously differentiable as an atom crosses the cutoff (Gasteiger, Groß and Günnemann,
    *Directional Message Passing for Molecular Graphs*, ICLR 2020, eq. 8).

    Parameters
    ----------
    x
        [...] distances divided by the cutoff (non-negative).
    exponent
        The exponent :math:`p`.

    Returns
    -------
    Tensor
        [...] envelope values.
    """
    p = exponent
    inside = x < 1.0
    xs = torch.where(inside, x, torch.zeros_like(x))  # no large powers beyond the cutoff
    xp = xs**p
    value = (
        1.0
        - 0.5 * (p + 1) * (p + 2) * xp
        + p * (p + 2) * xp * xs
        - 0.5 * p * (p + 1) * xp * xs * xs
    )
    return torch.where(inside, value, torch.zeros_like(value))


class RadialBasis(nn.Module):
    r"""Bessel radial basis with a polynomial envelope, as in DimeNet and NequIP.

    .. math:: e_n(d) = \sqrt{\frac{2}{c}}\, \frac{\sin(\omega_n d / c)}{d}\; u(d / c),
              \qquad \omega_n = n \pi \text{ at initialisation},

    with cutoff :math:`c` and the envelope :math:`u` of :func:`polynomial_envelope`: every basis
    function is exactly zero for :math:`d \ge c`, with zero first and second derivatives at the
    cutoff. The frequencies :math:`\omega_n` are trained (NequIP's ``BesselBasis``).

    Parameters
    ----------
    cutoff
        Cutoff radius :math:`c` in Å.
    num_basis
        Number of basis functions.
    envelope_exponent
        Exponent :math:`p` of the envelope.

    Examples
    --------
    >>> import torch
    >>> from matsci.encoders._radial import RadialBasis
    >>> basis = RadialBasis(cutoff=4.0, num_basis=3)
    >>> basis(torch.tensor([1.0, 4.0, 5.0])).shape
    torch.Size([3, 3])
    >>> basis(torch.tensor([4.0, 5.0])).abs().max().item()
    0.0
    """

    def __init__(self, cutoff: float, num_basis: int, envelope_exponent: int = 6) -> None:
        super().__init__()
        self.cutoff = float(cutoff)
        self.num_basis = num_basis
        self.envelope_exponent = envelope_exponent
        self.frequencies = nn.Parameter(torch.empty(num_basis))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        r"""Set the frequencies back to :math:`\omega_n = n\pi`."""
        with torch.no_grad():
            self.frequencies.copy_(torch.arange(1, self.num_basis + 1) * math.pi)

    def forward(self, distances: Tensor) -> Tensor:
        """Expand edge lengths [E] (Å, positive) into [E, num_basis] basis values."""
        scaled = (distances / self.cutoff).unsqueeze(-1)  # [E, 1]
        bessel = torch.sin(self.frequencies * scaled) / distances.unsqueeze(-1)  # [E, num_basis]
        envelope = polynomial_envelope(scaled, self.envelope_exponent)  # [E, 1], 0 beyond cutoff
        return math.sqrt(2.0 / self.cutoff) * bessel * envelope

    def __repr__(self) -> str:
        return f"RadialBasis(cutoff={self.cutoff}, num_basis={self.num_basis})"
