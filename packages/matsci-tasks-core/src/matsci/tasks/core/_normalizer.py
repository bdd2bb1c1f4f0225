"""Per-column target normalization with statistics fitted by streaming over chunks."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import NamedTuple, Self

import torch
from torch import Tensor

from matsci.contract import StreamingMoments

_STATS_DTYPE = torch.float64
"""Dtype of every buffer: statistics are accumulated and stored in double precision."""


class Normalizer(torch.nn.Module):
    r"""Per-column mean and standard deviation of a target, stored as buffers.

    .. math:: \hat{y} = (y - \mu) / \sigma, \qquad y = \hat{y}\,\sigma + \mu

    ``mean`` and ``std`` are buffers, so they travel with ``state_dict`` and Lightning checkpoints.
    They can be given directly or fitted from data that never has to fit in memory: :meth:`update`
    streams one chunk at a time into per-column running accumulators (``count``,
    ``running_mean``, ``m2``; also buffers, so a fit can be resumed from a checkpoint) with the
    parallel algorithm of Chan, Golub and LeVeque (1979), as
    :class:`~matsci.contract.StreamingMoments` implements it, and :meth:`finalize` turns them
    into ``mean`` and ``std``; :meth:`load_statistics` takes them from a
    :class:`~matsci.contract.DatasetStatistics` instead:

    .. math::
        n = n_a + n_b, \quad \delta = \bar{x}_b - \bar{x}_a, \quad
        \bar{x} = \bar{x}_a + \delta\,\frac{n_b}{n}, \quad
        M_2 = M_{2,a} + M_{2,b} + \delta^2\,\frac{n_a n_b}{n}.

    All buffers are float64 and are cast to the input's dtype when normalizing; the cast copies
    are kept and reused until a buffer is changed (in place, as by ``load_state_dict`` or
    :meth:`finalize`, or replaced, as by ``.to()``), so a training step pays no cast. Casting the
    module itself (``.half()``, Lightning's ``"16-true"`` precision) casts the buffers too and
    loses precision.

    Parameters
    ----------
    dim
        Number of target columns ``k``.
    mean
        Initial mean: a number (used for every column), a sequence or 1-D tensor of length
        ``dim``, or ``None`` for 0.
    std
        Initial standard deviation, given like ``mean``; ``None`` for 1. Must be finite and > 0.
    eps
        Absolute threshold, > 0: a fitted std below it is replaced by 1 (see :meth:`finalize`).

    Raises
    ------
    ValueError
        If ``dim`` is not a positive int, ``eps`` is not positive and finite, ``mean`` or ``std``
        has the wrong length or is not finite, or ``std`` is not positive.

    Examples
    --------
    >>> import torch
    >>> from matsci.tasks.core import Normalizer
    >>> normalizer = Normalizer(dim=2).fit([torch.tensor([[1.0, 10.0], [3.0, 10.0]])])
    >>> normalizer
    Normalizer(dim=2, mean=[2, 10], std=[1, 1])
    >>> normalizer.normalize(torch.tensor([[5.0, 12.0]]))
    tensor([[3., 2.]])
    >>> normalizer.denormalize(torch.tensor([[3.0, 2.0]]))
    tensor([[ 5., 12.]])
    >>> Normalizer(dim=2, std=[1.0, 2.0, 3.0])
    Traceback (most recent call last):
    ...
    ValueError: Normalizer(std=...): length 3 != dim 2; ...
    """

    mean: Tensor
    std: Tensor
    count: Tensor
    running_mean: Tensor
    m2: Tensor

    def __init__(
        self,
        dim: int = 1,
        mean: float | Sequence[float] | Tensor | None = None,
        std: float | Sequence[float] | Tensor | None = None,
        eps: float = 1e-8,
    ) -> None:
        super().__init__()
        if isinstance(dim, bool) or not isinstance(dim, int) or dim <= 0:
            raise ValueError(f"Normalizer(dim={dim!r}): expected a positive int")
        if not (math.isfinite(eps) and eps > 0.0):
            raise ValueError(f"Normalizer(eps={eps!r}): expected a finite number > 0")
        self.dim = dim
        self.eps = float(eps)
        mean_values = _column_values("mean", 0.0 if mean is None else mean, dim)
        std_values = _column_values("std", 1.0 if std is None else std, dim)
        if not bool((std_values > 0.0).all()):
            raise ValueError(
                f"Normalizer(std={_format(std_values)}): expected every std > 0; "
                "a column with zero spread cannot be normalized"
            )
        self.register_buffer("mean", mean_values)
        self.register_buffer("std", std_values)
        zeros = torch.zeros(dim, dtype=_STATS_DTYPE)
        self.register_buffer("count", zeros.clone())
        self.register_buffer("running_mean", zeros.clone())
        self.register_buffer("m2", zeros.clone())
        self._cast_cache: dict[tuple[torch.dtype, bool], _CastStatistics] = {}

    def normalize(self, values: Tensor) -> Tensor:
        """Map targets to normalized units, ``(values - mean) / std``.

        Parameters
        ----------
        values
            Targets of shape ``[..., dim]``, or ``[B]`` when ``dim == 1``; float32 or float64.

        Returns
        -------
        Tensor
            Normalized targets with the shape and dtype of ``values``.

        Raises
        ------
        ValueError
            If the last dimension of ``values`` is not ``dim``.
        TypeError
            If ``values`` is not a floating-point tensor.
        """
        self._check_shape("normalize", values)
        mean, std = self._statistics(values.dtype)
        return (values - mean) / std

    def denormalize(self, values: Tensor) -> Tensor:
        """Map normalized values back to target units, ``values * std + mean``.

        Parameters
        ----------
        values
            Normalized values of shape ``[..., dim]``, or ``[B]`` when ``dim == 1``.

        Returns
        -------
        Tensor
            Values in target units with the shape and dtype of ``values``.

        Raises
        ------
        ValueError
            If the last dimension of ``values`` is not ``dim``.
        TypeError
            If ``values`` is not a floating-point tensor.
        """
        self._check_shape("denormalize", values)
        mean, std = self._statistics(values.dtype)
        return values * std + mean

    @torch.no_grad()
    def update(self, values: Tensor) -> None:
        """Stream one chunk of targets into the running accumulators.

        The chunk's per-column count, mean and sum of squared deviations are computed in float64
        and merged with Chan et al.'s parallel update (:class:`~matsci.contract.StreamingMoments`),
        so the result does not depend on how the data is split into chunks. ``NaN`` entries mark
        missing targets and are skipped per column. Call :meth:`finalize` after the last chunk.

        Parameters
        ----------
        values
            A chunk of M rows, shape ``[M, dim]`` (or ``[M]`` when ``dim == 1``); any real dtype.

        Raises
        ------
        ValueError
            If ``values`` has the wrong shape or holds an infinite value.
        TypeError
            If ``values`` is complex or boolean.
        """
        moments = StreamingMoments.from_state(self.count, self.running_mean, self.m2)
        moments.update(values, context=f"Normalizer(dim={self.dim}).update")
        self.count.copy_(moments.count)
        self.running_mean.copy_(moments.mean)
        self.m2.copy_(moments.m2)

    @torch.no_grad()
    def finalize(self) -> None:
        """Set ``mean`` and ``std`` from the accumulators.

        ``std`` is the population standard deviation (divided by the count, not count - 1). A
        column whose std is below ``eps`` (a constant target) gets ``std = 1`` instead: dividing by
        a vanishing std would blow any later deviation up to huge normalized values, while 1 keeps
        the column merely shifted by its mean.

        Raises
        ------
        ValueError
            If a column has seen no (non-NaN) value.
        """
        empty = (self.count == 0).nonzero().flatten().tolist()
        if empty:
            raise ValueError(
                f"Normalizer(dim={self.dim}).finalize: column(s) {empty} have no values; "
                "call update() with data holding at least one non-NaN value per column"
            )
        std = StreamingMoments.from_state(self.count, self.running_mean, self.m2).std
        self.mean.copy_(self.running_mean)
        self.std.copy_(self._usable_std(std))

    @torch.no_grad()
    def load_statistics(self, mean: Tensor, std: Tensor, count: Tensor | None = None) -> None:
        """Set ``mean`` and ``std`` from statistics computed elsewhere, as :meth:`finalize` would.

        Takes what :func:`matsci.data.compute_statistics` reports for a key
        (``stats.mean[key]``, ``stats.std[key]``, ``stats.count[key]`` of a
        :class:`~matsci.contract.DatasetStatistics`): fed the same chunks, :meth:`fit` and this
        method give the same ``mean`` and ``std``. A std below ``eps`` becomes 1, as in
        :meth:`finalize`. With ``count`` the accumulators are set to the statistics
        (``m2 = std² · count``), so later :meth:`update` calls extend the fit; without it they
        are zeroed.

        Parameters
        ----------
        mean
            ``[dim]`` mean per column.
        std
            ``[dim]`` population standard deviation per column, >= 0.
        count
            ``[dim]`` number of values per column, optional.

        Raises
        ------
        ValueError
            If a tensor is not ``[dim]``, a column has no values (``count`` 0), or ``mean`` or
            ``std`` is not finite or ``std`` is negative.

        Examples
        --------
        >>> import torch
        >>> from matsci.tasks.core import Normalizer
        >>> normalizer = Normalizer(dim=2)
        >>> normalizer.load_statistics(torch.tensor([1.0, 2.0]), torch.tensor([0.5, 0.0]))
        >>> normalizer
        Normalizer(dim=2, mean=[1, 2], std=[0.5, 1])
        """
        where = f"Normalizer(dim={self.dim}).load_statistics"
        given = {"mean": mean, "std": std} | ({} if count is None else {"count": count})
        columns: dict[str, Tensor] = {}
        for name, tensor in given.items():
            if tuple(tensor.shape) != (self.dim,):
                raise ValueError(
                    f"{where}: {name} of shape {tuple(tensor.shape)}; expected [{self.dim}]"
                )
            columns[name] = tensor.detach().to(device=self.mean.device, dtype=_STATS_DTYPE)
        if "count" in columns:
            empty = (columns["count"] == 0).nonzero().flatten().tolist()
            if empty:
                raise ValueError(f"{where}: column(s) {empty} have no values")
        mean, std = columns["mean"], columns["std"]
        if not bool(torch.isfinite(mean).all() & torch.isfinite(std).all() & (std >= 0).all()):
            raise ValueError(
                f"{where}: mean={_format(mean)}, std={_format(std)}; expected finite values "
                "and std >= 0"
            )
        self.mean.copy_(mean)
        self.std.copy_(self._usable_std(std))
        if "count" in columns:
            self.count.copy_(columns["count"])
            self.running_mean.copy_(mean)
            self.m2.copy_(std.square() * columns["count"])
        else:
            self.reset_statistics()

    def _usable_std(self, std: Tensor) -> Tensor:
        """``std`` with every value below ``eps`` (a constant column) replaced by 1."""
        return torch.where(std < self.eps, 1.0, std)

    def reset_statistics(self) -> None:
        """Zero the running accumulators; ``mean`` and ``std`` are left as they are."""
        self.count.zero_()
        self.running_mean.zero_()
        self.m2.zero_()

    def fit(self, batches: Iterable[Tensor]) -> Self:
        """Fit ``mean`` and ``std`` to a stream of chunks: reset, update with each, finalize.

        Parameters
        ----------
        batches
            Chunks accepted by :meth:`update`, e.g. target tensors from a data loader.

        Returns
        -------
        Normalizer
            This normalizer, fitted.

        Raises
        ------
        ValueError
            If a chunk is invalid (see :meth:`update`) or a column has no values.
        """
        self.reset_statistics()
        for batch in batches:
            self.update(batch)
        self.finalize()
        return self

    def extra_repr(self) -> str:
        return f"dim={self.dim}, mean={_format(self.mean)}, std={_format(self.std)}"

    def _statistics(self, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """``mean`` and ``std`` cast to ``dtype``, cast once and reused while the buffers stay.

        A cached copy is reused only for the same buffer objects at the same version (every
        in-place change bumps a tensor's version; ``.to()`` and assignment replace the object),
        and only in the inference mode it was made in: a copy made in inference mode cannot
        be saved for backward, and inference-mode buffers carry no version to check. Under
        ``torch.compile`` the cast is traced as before (the compiled graph holds it).
        """
        mean, std = self.mean, self.std
        if torch.compiler.is_compiling() or mean.is_inference() or std.is_inference():
            return mean.to(dtype), std.to(dtype)
        key = (dtype, torch.is_inference_mode_enabled())
        cached = self._cast_cache.get(key)
        if (
            cached is not None
            and cached.mean_source is mean
            and cached.std_source is std
            and cached.versions == (mean._version, std._version)
        ):
            return cached.mean, cached.std
        cast = _CastStatistics(mean, std, (mean._version, std._version), mean.to(dtype),
                               std.to(dtype))  # fmt: skip
        self._cast_cache[key] = cast
        return cast.mean, cast.std

    def _check_shape(self, method: str, values: Tensor) -> None:
        """Refuse inputs whose last dimension is not ``dim`` (``[B]`` is allowed for ``dim == 1``).

        Only shapes and dtypes are read, so the check costs no device synchronization.
        """
        if not values.is_floating_point():
            raise TypeError(
                f"Normalizer.{method}: expected a floating-point tensor, got dtype {values.dtype}"
            )
        flat_single_column = values.ndim == 1 and self.dim == 1  # [B] targets
        if values.ndim == 0 or (values.shape[-1] != self.dim and not flat_single_column):
            expected = "[..., dim] or [B]" if self.dim == 1 else "[..., dim]"
            raise ValueError(
                f"Normalizer(dim={self.dim}).{method}: values of shape {tuple(values.shape)} do "
                f"not match {expected}; the last dimension must be {self.dim}"
            )


class _CastStatistics(NamedTuple):
    """The buffers a cast was made from, their versions then, and the cast copies."""

    mean_source: Tensor
    std_source: Tensor
    versions: tuple[int, int]
    mean: Tensor
    std: Tensor


def _column_values(name: str, value: float | Sequence[float] | Tensor, dim: int) -> Tensor:
    """Coerce a number, sequence or tensor into a finite float64 ``[dim]`` tensor."""
    try:
        tensor = torch.as_tensor(
            value.detach() if isinstance(value, Tensor) else value, dtype=_STATS_DTYPE
        ).cpu()
    except (TypeError, ValueError, RuntimeError) as error:
        raise ValueError(
            f"Normalizer({name}={value!r}): expected a number or a sequence of numbers"
        ) from error
    if tensor.ndim == 0:
        tensor = tensor.expand(dim)
    elif tensor.ndim != 1 or tensor.shape[0] != dim:
        length = tensor.shape[0] if tensor.ndim == 1 else tuple(tensor.shape)
        raise ValueError(
            f"Normalizer({name}=...): length {length} != dim {dim}; pass a number or one value "
            "per column"
        )
    if not bool(torch.isfinite(tensor).all()):
        raise ValueError(f"Normalizer({name}={_format(tensor)}): expected finite values")
    return tensor.clone()


def _format(values: Tensor, limit: int = 4) -> str:
    """Format a 1-D tensor briefly, e.g. ``[2, 0.5]`` or ``[1, 2, 3, ... (10 values)]``."""
    numbers = [f"{number:.4g}" for number in values.tolist()[:limit]]
    if values.numel() > limit:
        numbers.append(f"... ({values.numel()} values)")
    return "[" + ", ".join(numbers) + "]"
