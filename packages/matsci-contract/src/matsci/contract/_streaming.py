"""Streaming moments and root mean square: per-column statistics, one chunk at a time.

Every mean, standard deviation and root mean square of the toolkit is computed here, in float64,
so datasets of any size stream through: per-column mean and standard deviation
(:class:`StreamingMoments`) and the root mean square of forces (:class:`StreamingRMS`).
:func:`matsci.data.compute_statistics` and the tasks' normalizers use the same classes.
"""

from __future__ import annotations

import math
from typing import Final

import torch
from torch import Tensor

__all__ = ["StreamingMoments", "StreamingRMS"]

_DTYPE: Final = torch.float64
"""Every accumulator is float64."""


class StreamingMoments:
    r"""Per-column count, mean and sum of squared deviations, merged one chunk at a time.

    Each chunk's count :math:`n_b`, mean :math:`\bar{x}_b` and sum of squared deviations
    :math:`M_{2,b}` are merged into the running ones with the parallel update of Chan, Golub
    and LeVeque (1979), so the result does not depend on how the data is split:

    .. math::
        n = n_a + n_b, \quad \delta = \bar{x}_b - \bar{x}_a, \quad
        \bar{x} = \bar{x}_a + \delta\,\frac{n_b}{n}, \quad
        M_2 = M_{2,a} + M_{2,b} + \delta^2\,\frac{n_a n_b}{n}.

    ``NaN`` entries are missing values and are skipped per column. The accumulators are float64
    on ``device``.

    Parameters
    ----------
    dim : int
        Number of columns ``k``.
    device : torch.device or str, optional
        Where the accumulators live; the CPU by default.

    Attributes
    ----------
    count : Tensor
        [k] values seen per column (float64).
    mean : Tensor
        [k] running mean per column; 0 for a column without values.
    m2 : Tensor
        [k] sum of squared deviations from the mean per column.

    Raises
    ------
    ValueError
        If ``dim`` is not a positive int.

    Examples
    --------
    >>> import torch
    >>> from matsci.contract import StreamingMoments
    >>> moments = StreamingMoments(dim=2)
    >>> moments.update(torch.tensor([[1.0, 2.0], [3.0, float("nan")]]))
    >>> moments.update(torch.tensor([[5.0, 6.0]]))
    >>> moments.count, moments.mean
    (tensor([3., 2.], dtype=torch.float64), tensor([3., 4.], dtype=torch.float64))
    >>> moments.std  # population std: sqrt(8 / 3) and 2
    tensor([1.6330, 2.0000], dtype=torch.float64)
    """

    def __init__(self, dim: int, device: torch.device | str | None = None) -> None:
        if isinstance(dim, bool) or not isinstance(dim, int) or dim <= 0:
            raise ValueError(f"StreamingMoments(dim={dim!r}): expected a positive int")
        self.dim = dim
        self.count = torch.zeros(dim, dtype=_DTYPE, device=device)
        self.mean = torch.zeros(dim, dtype=_DTYPE, device=device)
        self.m2 = torch.zeros(dim, dtype=_DTYPE, device=device)

    @classmethod
    def from_state(cls, count: Tensor, mean: Tensor, m2: Tensor) -> StreamingMoments:
        """Continue from saved accumulators (as a checkpoint holds them).

        Parameters
        ----------
        count, mean, m2 : Tensor
            [k] each, as in the attributes of the same names; cast to float64, not copied
            otherwise (:meth:`update` replaces them, never changes them in place).

        Returns
        -------
        StreamingMoments
            Moments on the device of ``count``.

        Raises
        ------
        ValueError
            If the three are not 1-D tensors of one length k >= 1.
        """
        shapes = [tuple(tensor.shape) for tensor in (count, mean, m2)]
        if count.ndim != 1 or count.shape[0] == 0 or len(set(shapes)) != 1:
            raise ValueError(
                f"StreamingMoments.from_state: count, mean and m2 of shapes {shapes[0]}, "
                f"{shapes[1]} and {shapes[2]}; expected three [k] tensors with k >= 1"
            )
        moments = cls(count.shape[0], device=count.device)
        device = count.device
        moments.count, moments.mean, moments.m2 = (
            tensor.to(device=device, dtype=_DTYPE) for tensor in (count, mean, m2)
        )
        return moments

    @torch.no_grad()
    def update(self, values: Tensor, *, context: str | None = None) -> None:
        """Merge one chunk of M rows.

        Parameters
        ----------
        values : Tensor
            [M, k], or [M] when ``k == 1``; any real dtype. NaN entries are skipped.
        context : str, optional
            Start of error messages (who called), e.g. ``"Normalizer(dim=3).update"``.

        Raises
        ------
        TypeError
            If ``values`` is complex or boolean.
        ValueError
            If ``values`` has the wrong shape or holds an infinite value (nothing is merged).
        """
        where = context or f"StreamingMoments(dim={self.dim}).update"
        if values.is_complex() or values.dtype == torch.bool:
            raise TypeError(f"{where}: expected real values, got dtype {values.dtype}")
        if not (values.ndim == 2 and values.shape[1] == self.dim) and not (
            values.ndim == 1 and self.dim == 1
        ):
            expected = "[M, dim] or [M]" if self.dim == 1 else "[M, dim]"
            raise ValueError(
                f"{where}: values of shape {tuple(values.shape)} do not match {expected} with "
                f"dim {self.dim}"
            )
        chunk = values.detach().to(device=self.count.device, dtype=_DTYPE)
        chunk = chunk.reshape(chunk.shape[0], self.dim)  # [M, k]
        infinite = torch.isinf(chunk)
        if bool(infinite.any()):
            columns = infinite.any(dim=0).nonzero().flatten().tolist()
            raise ValueError(
                f"{where}: infinite value in column(s) {columns}; use NaN for a missing value"
            )
        present = ~torch.isnan(chunk)  # [M, k]
        chunk = torch.where(present, chunk, 0.0)
        count_b = present.sum(dim=0).to(_DTYPE)  # [k]
        mean_b = chunk.sum(dim=0) / count_b.clamp(min=1.0)
        m2_b = torch.where(present, chunk - mean_b, 0.0).square().sum(dim=0)
        self._merge(count_b, mean_b, m2_b)

    def merge(self, other: StreamingMoments) -> None:
        """Merge the moments of another part of the data (another worker, say).

        Parameters
        ----------
        other : StreamingMoments
            Moments with the same number of columns.

        Raises
        ------
        ValueError
            If the numbers of columns differ.
        """
        if other.dim != self.dim:
            raise ValueError(f"StreamingMoments.merge: dim {other.dim} != {self.dim}")
        device = self.count.device
        self._merge(other.count.to(device), other.mean.to(device), other.m2.to(device))

    def _merge(self, count_b: Tensor, mean_b: Tensor, m2_b: Tensor) -> None:
        total = self.count + count_b
        safe_total = total.clamp(min=1.0)  # columns still empty stay at 0
        delta = mean_b - self.mean
        self.mean = self.mean + delta * (count_b / safe_total)
        self.m2 = self.m2 + m2_b + delta.square() * (self.count * count_b / safe_total)
        self.count = total

    @property
    def variance(self) -> Tensor:
        """[k] population variance, ``m2 / count``; NaN for a column without values."""
        return self.m2.clamp(min=0.0) / self.count

    @property
    def std(self) -> Tensor:
        """[k] population standard deviation; NaN for a column without values."""
        return self.variance.sqrt()

    def __repr__(self) -> str:
        return f"StreamingMoments(dim={self.dim}, count={self.count.tolist()})"


class StreamingRMS:
    r"""Root mean square of every entry of a stream of tensors, :math:`\sqrt{\sum x^2 / n}`.

    NaN entries are missing values and are skipped. Sums are float64.

    Attributes
    ----------
    sum_squares : float
        Sum of the squares seen.
    count : int
        Number of entries seen (not NaN).

    Examples
    --------
    >>> import torch
    >>> from matsci.contract import StreamingRMS
    >>> rms = StreamingRMS()
    >>> rms.update(torch.tensor([[3.0, float("nan")], [4.0, 0.0]]))
    >>> rms.update(torch.tensor([0.0]))
    >>> rms.count, rms.rms  # sqrt(25 / 4)
    (4, 2.5)
    """

    def __init__(self) -> None:
        self.sum_squares = 0.0
        self.count = 0

    @torch.no_grad()
    def update(self, values: Tensor) -> None:
        """Add the entries of ``values`` (any shape, real dtype); NaN entries are skipped."""
        chunk = values.detach().to(_DTYPE)
        present = ~torch.isnan(chunk)
        self.sum_squares += float(chunk[present].square().sum())
        self.count += int(present.sum())

    @property
    def rms(self) -> float:
        """The root mean square; NaN before any entry was seen."""
        return math.sqrt(self.sum_squares / self.count) if self.count else math.nan

    def __repr__(self) -> str:
        return f"StreamingRMS(count={self.count}, rms={self.rms:.6g})"
