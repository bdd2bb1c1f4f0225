"""Batch schema: declare the attributes a task reads and check a batch against them once.

A task lists what it reads as :class:`AttributeSpec` objects (level, shape, dtype, finiteness);
:func:`validate_batch` turns a malformed batch into one ``ValueError`` that names the attribute,
what was found and what was expected, instead of a shape error deep inside torch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal, TypeAlias, get_args

import torch
from torch import Tensor
from torch_geometric.data import Batch, Data

from matsci.contract import keys

Level = Literal["node", "graph", "edge"]
"""Leading dimension of an attribute: N atoms, B structures or E edges."""
DType = Literal["float", "int", "bool", "label"]
"""Kind of dtype: any floating dtype; ``torch.int64`` or ``torch.int32``; ``torch.bool``; or
``"label"``: any of these (binary labels come as floats, integers or booleans)."""

ValueCheck: TypeAlias = "Callable[[Tensor, BatchSizes], str | None]"
"""A check of an attribute's values, carried by its :class:`AttributeSpec`: it gets the tensor
and the batch's sizes and returns what is wrong, as words that follow "batch attribute 'name'"
(for example ``"has values [0] outside 1..230"``), or ``None`` when the values are fine."""

_LEVELS: tuple[str, ...] = get_args(Level)
_DTYPES: tuple[str, ...] = get_args(DType)
_SYMBOL: dict[str, str] = {"node": "N", "graph": "B", "edge": "E"}
_NOUN: dict[str, str] = {"node": "atoms", "graph": "structures", "edge": "edges"}
_INT_DTYPES: tuple[torch.dtype, ...] = (torch.int64, torch.int32)
_DTYPE_TEXT: dict[str, str] = {
    "float": "a floating dtype",
    "int": "torch.int64 or torch.int32",
    "bool": "torch.bool",
    "label": "a floating, integer or bool dtype",
}


@dataclass(frozen=True)
class AttributeSpec:
    """What one batch attribute must look like.

    The expected shape is ``[L, *trailing]`` where the leading size ``L`` is N (atoms, for
    ``level="node"``), B (structures, ``"graph"``) or E (edges, ``"edge"``). ``edge_index`` is the
    one exception: its shape is always ``[2, E]``, so its spec is
    ``AttributeSpec("edge_index", "edge", dtype="int")``.

    Parameters
    ----------
    name
        Batch attribute name, one of the constants in :mod:`matsci.contract.keys` or a target key.
    level
        ``"node"``, ``"graph"`` or ``"edge"``: which size the leading dimension has.
    trailing
        Shape after the leading dimension; ``None`` in a place accepts any size there.
    dtype
        ``"float"`` (any floating dtype), ``"int"`` (``torch.int64`` or ``torch.int32``),
        ``"bool"``, or ``"label"`` (any of the three).
    finite
        Refuse NaN and infinite values. Only for ``dtype="float"``.
    optional
        The attribute may be absent; when present it is checked.
    squeeze_ok
        With ``trailing=(1,)`` on a node or graph level, also accept ``[N]`` or ``[B]``.
    values
        A :data:`ValueCheck` run after the shape and dtype checks, such as
        :func:`values_within`; ``None`` checks no values.
    hint
        Advice added to the message when the attribute is missing (how to get it).

    Raises
    ------
    ValueError
        If ``name`` is empty, ``level`` or ``dtype`` is not one of the allowed names, a trailing
        size is below 1, ``squeeze_ok`` is set without ``trailing=(1,)`` on a node or graph level,
        ``finite`` is set on a non-float attribute, or an ``edge_index`` spec is not
        ``level="edge"``, ``dtype="int"`` with no trailing shape.

    Examples
    --------
    >>> from matsci.contract import AttributeSpec
    >>> AttributeSpec("force", "node", (3,), finite=True).trailing
    (3,)
    >>> AttributeSpec("charge", "atom")
    Traceback (most recent call last):
    ...
    ValueError: AttributeSpec('charge'): level 'atom' is not one of 'node', 'graph', 'edge'
    """

    name: str
    level: Level
    trailing: tuple[int | None, ...] = ()
    dtype: DType = "float"
    finite: bool = False
    optional: bool = False
    squeeze_ok: bool = False
    values: ValueCheck | None = None
    hint: str = ""

    def __post_init__(self) -> None:
        where = f"AttributeSpec({self.name!r})"
        if not self.name:
            raise ValueError("AttributeSpec: name must be a non-empty string")
        if self.level not in _LEVELS:
            raise ValueError(f"{where}: level {self.level!r} is not one of {_names(_LEVELS)}")
        if self.dtype not in _DTYPES:
            raise ValueError(f"{where}: dtype {self.dtype!r} is not one of {_names(_DTYPES)}")
        trailing = tuple(self.trailing)  # a list from a config file becomes a tuple
        for size in trailing:
            if size is not None and (isinstance(size, bool) or size < 1):
                raise ValueError(
                    f"{where}: trailing sizes must be positive ints or None, got {trailing}"
                )
        object.__setattr__(self, "trailing", trailing)
        if self.squeeze_ok and (self.level == "edge" or trailing != (1,)):
            raise ValueError(
                f"{where}: squeeze_ok needs level 'node' or 'graph' with trailing=(1,), got "
                f"level {self.level!r} with trailing={trailing}"
            )
        if self.finite and self.dtype != "float":
            raise ValueError(
                f"{where}: finite=True applies to float attributes, not {self.dtype!r}"
            )
        if self.name == keys.EDGE_INDEX and (
            self.level != "edge" or trailing or self.dtype != "int"
        ):
            raise ValueError(
                f"{where}: edge_index is always [2, E] int; "
                f"use AttributeSpec({keys.EDGE_INDEX!r}, 'edge', dtype='int')"
            )

    @classmethod
    def graph_target(cls, name: str, width: int = 1) -> AttributeSpec:
        """Spec of a float per-structure target, ``[B, width]``; ``[B]`` too when ``width == 1``.

        NaN is accepted, so a structure can mark a missing target value.

        Parameters
        ----------
        name
            Target key, such as ``"energy"``.
        width
            Number of values per structure.

        Returns
        -------
        AttributeSpec
            A required graph-level float spec.

        Raises
        ------
        ValueError
            If ``width < 1``.

        Examples
        --------
        >>> from matsci.contract import AttributeSpec
        >>> spec = AttributeSpec.graph_target("energy")
        >>> spec.level, spec.trailing, spec.squeeze_ok
        ('graph', (1,), True)
        """
        if width < 1:
            raise ValueError(
                f"AttributeSpec.graph_target({name!r}): width must be >= 1, got {width}"
            )
        return cls(name, "graph", (width,), squeeze_ok=width == 1)

    @classmethod
    def node_target(cls, name: str, width: int) -> AttributeSpec:
        """Spec of a float per-atom target, ``[N, width]``.

        Parameters
        ----------
        name
            Target key, such as ``"force"``.
        width
            Number of values per atom.

        Returns
        -------
        AttributeSpec
            A required node-level float spec.

        Raises
        ------
        ValueError
            If ``width < 1``.

        Examples
        --------
        >>> from matsci.contract import AttributeSpec
        >>> AttributeSpec.node_target("force", 3).trailing
        (3,)
        """
        if width < 1:
            raise ValueError(
                f"AttributeSpec.node_target({name!r}): width must be >= 1, got {width}"
            )
        return cls(name, "node", (width,))


def values_within(low: float, high: float) -> ValueCheck:
    """A :data:`ValueCheck` that every value lies in ``low..high`` (inclusive; NaN is not checked).

    Parameters
    ----------
    low, high
        The smallest and largest allowed value.

    Returns
    -------
    ValueCheck
        A check whose message lists up to ten of the values outside.

    Examples
    --------
    >>> import torch
    >>> from matsci.contract import AttributeSpec, values_within
    >>> spec = AttributeSpec("spacegroup", "graph", dtype="int", values=values_within(1, 230))
    >>> spec.values(torch.tensor([225, 0, 231]), None)
    'has values [0, 231] outside 1..230'
    """

    def check(value: Tensor, sizes: BatchSizes) -> str | None:
        if value.numel() == 0:
            return None
        smallest, largest = torch.stack(torch.aminmax(value)).tolist()  # one host sync
        if smallest >= low and largest <= high:
            return None
        outside = sorted(set(value[(value < low) | (value > high)].tolist()))
        return f"has values {outside[:10]} outside {_number(low)}..{_number(high)}"

    return check


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _known_elements(value: Tensor, sizes: BatchSizes) -> str | None:
    message = values_within(1, keys.MAX_ATOMIC_NUMBER)(value, sizes)
    if message is None:
        return None
    unknown = message.removeprefix("has values ").split(" outside")[0]
    return f"has unknown elements {unknown}, expected atomic numbers 1 to {keys.MAX_ATOMIC_NUMBER}"


def _atom_counts(value: Tensor, sizes: BatchSizes) -> str | None:
    total, num_atoms = int(value.sum()), sizes.num_atoms()
    if total != num_atoms:
        return f"sums to {total}, expected N={num_atoms} atoms in the batch"
    empty = (value.reshape(-1) < 1).nonzero().reshape(-1)
    if empty.numel() > 0:
        return f"has structures {empty.tolist()} with no atoms; every structure needs at least one"
    return None


def _plausible_positions(value: Tensor, sizes: BatchSizes) -> str | None:
    if value.numel() == 0:
        return None
    largest = float(value.detach().abs().amax())
    if largest > keys.MAX_ABS_POSITION:
        return (
            f"has a coordinate of magnitude {largest:.3g} Å, expected at most "
            f"{keys.MAX_ABS_POSITION:.0e} Å (corrupt or unwrapped positions?)"
        )
    return None


def _atom_indices(value: Tensor, sizes: BatchSizes) -> str | None:
    if value.numel() == 0:
        return None
    num_atoms = sizes.num_atoms()
    low, high = torch.stack(torch.aminmax(value)).tolist()  # one host sync
    if low < 0 or high >= num_atoms:
        outside = int(((value < 0) | (value >= num_atoms)).sum())
        return (
            f"has {outside} values outside [0, N) with N={num_atoms} atoms (min {low}, max {high})"
        )
    return None


STRUCTURE_SPECS: tuple[AttributeSpec, ...] = (
    AttributeSpec(keys.POS, "node", (3,), finite=True, values=_plausible_positions),
    AttributeSpec(keys.ATOMIC_NUMBERS, "node", dtype="int", values=_known_elements),
    AttributeSpec(keys.NATOMS, "graph", dtype="int", values=_atom_counts),
    AttributeSpec(keys.CELL, "graph", (3, 3), finite=True, optional=True),
    AttributeSpec(keys.PBC, "graph", (3,), dtype="bool", optional=True),
    AttributeSpec(keys.EDGE_INDEX, "edge", dtype="int", optional=True, values=_atom_indices),
    AttributeSpec(keys.CELL_OFFSETS, "edge", (3,), finite=True, optional=True),
)
"""The structure attributes of the data contract: ``pos``, ``atomic_numbers`` and ``natoms``
required; ``cell``, ``pbc``, ``edge_index`` and ``cell_offsets`` checked when present. Their value
checks: ``natoms`` sums to N with an atom in every structure, atomic numbers are elements (1 to
118), coordinates at most 1e5 Å, ``edge_index`` values in ``[0, N)``."""


def validate_batch(batch: Batch | Data, specs: Iterable[AttributeSpec], *, context: str) -> None:
    """Check that a batch has every attribute in ``specs`` with the right shape and dtype.

    The sizes are B structures (``batch.num_graphs``; 1 for a single :class:`Data`), N atoms
    (the length of the ``batch`` vector that PyG adds when collating; ``data.num_nodes`` for a
    single :class:`Data`) and E edges (``edge_index.shape[1]``). Beyond each spec, ``natoms``
    each spec's value check runs (:data:`STRUCTURE_SPECS` carries the contract's: ``natoms``
    sums to N, elements 1 to 118, coordinates at most 1e5 Å, ``edge_index`` in ``[0, N)``).
    Each check is a few tensor operations, with no Python loop over atoms or edges; the first
    failure raises.

    Parameters
    ----------
    batch
        A :class:`~torch_geometric.data.Batch` of structures, or one structure as a
        :class:`~torch_geometric.data.Data`.
    specs
        The attributes to check, in order.
    context
        Who is checking, such as ``"ScalarRegressionTask"``; every message starts with it.

    Raises
    ------
    TypeError
        If ``batch`` is not a ``Data`` or ``Batch``.
    ValueError
        If the batch holds no structures, or an attribute is missing (and not optional), is not a
        tensor, has the wrong shape, dtype or non-finite values, if ``natoms`` does not sum to N
        or a structure has no atoms, ``atomic_numbers`` lie outside 1 to 118, a coordinate of
        ``pos`` exceeds :data:`~matsci.contract.keys.MAX_ABS_POSITION` (1e5 Å), or
        ``edge_index`` points outside ``[0, N)``. The message names the attribute, what was
        found and what was expected, with symbolic and concrete sizes.

    Examples
    --------
    >>> import torch
    >>> from torch_geometric.data import Batch, Data
    >>> from matsci.contract import STRUCTURE_SPECS, AttributeSpec, validate_batch
    >>> structures = [
    ...     Data(pos=torch.zeros(n, 3), atomic_numbers=torch.ones(n, dtype=torch.long),
    ...          natoms=torch.tensor([n]), energy=torch.tensor([[1.0, 2.0]]))
    ...     for n in (2, 3, 1, 2)
    ... ]
    >>> batch = Batch.from_data_list(structures)
    >>> validate_batch(batch, STRUCTURE_SPECS, context="ScalarRegressionTask")
    >>> validate_batch(batch, [AttributeSpec.graph_target("energy")], context="ScalarRegressionTask")
    Traceback (most recent call last):
    ...
    ValueError: ScalarRegressionTask: batch attribute 'energy' has shape [4, 2], expected [B] or [B, 1] with B=4 structures
    """  # noqa: E501
    if not isinstance(batch, Data):
        raise TypeError(
            f"{context}: expected a torch_geometric Batch or Data, got {type(batch).__name__}"
        )
    sizes = BatchSizes(batch, context)
    if sizes.num_structures == 0:
        raise ValueError(f"{context}: the batch holds no structures (B=0); nothing to check")
    for spec in specs:
        _check_attribute(batch, spec, sizes, context)


class BatchSizes:
    """B, N and E of one batch, as :func:`validate_batch` counts them; N and E when first needed.

    Value checks (:data:`ValueCheck`) receive it to compare values with the batch's sizes.

    Parameters
    ----------
    batch
        The batch (or one structure).
    context
        Who is checking, for messages.

    Attributes
    ----------
    num_structures
        B, the number of structures.
    """

    def __init__(self, batch: Data, context: str) -> None:
        self._batch = batch
        self._context = context
        self.num_structures = _count_structures(batch, context)
        self._num_atoms: int | None = None
        self._num_edges: int | None = None

    def of(self, level: str) -> int:
        """The size of a level: B for ``"graph"``, N for ``"node"``, E for ``"edge"``."""
        if level == "graph":
            return self.num_structures
        return self.num_atoms() if level == "node" else self.num_edges()

    def num_atoms(self) -> int:
        """N, the number of atoms (the length of the ``batch`` vector)."""
        if self._num_atoms is None:
            self._num_atoms = _count_atoms(self._batch, self._context)
        return self._num_atoms

    def num_edges(self) -> int:
        """E, the number of edges (``edge_index.shape[1]``)."""
        if self._num_edges is None:
            self._num_edges = _count_edges(self._batch, self._context)
        return self._num_edges


def _count_structures(batch: Data, context: str) -> int:
    if not isinstance(batch, Batch):
        return 1
    try:
        return int(batch.num_graphs)
    except (AttributeError, ValueError, RuntimeError) as error:
        raise ValueError(
            f"{context}: cannot tell how many structures the batch holds; it has no 'ptr' or "
            f"{keys.BATCH!r} vector (build it with Batch.from_data_list)"
        ) from error


def _count_atoms(batch: Data, context: str) -> int:
    vector = batch.get(keys.BATCH) if isinstance(batch, Batch) else None
    if isinstance(vector, Tensor) and vector.dim() == 1:
        return int(vector.shape[0])
    num_atoms = batch.num_nodes
    if num_atoms is None:
        raise ValueError(
            f"{context}: cannot tell how many atoms the batch holds (N); it has no "
            f"{keys.POS!r} or {keys.BATCH!r} vector"
        )
    return int(num_atoms)


def _count_edges(batch: Data, context: str) -> int:
    edge_index = batch.get(keys.EDGE_INDEX)
    if edge_index is None:
        found = "has none"
    elif not isinstance(edge_index, Tensor):
        found = f"is a {type(edge_index).__name__}"
    elif edge_index.dim() != 2 or edge_index.shape[0] != 2:
        found = f"has shape {_shape(edge_index)}"
    else:
        return int(edge_index.shape[1])
    raise ValueError(
        f"{context}: edge-level attributes need {keys.EDGE_INDEX!r} of shape [2, E] to give the "
        f"number of edges E, but the batch {found}"
    )


def _check_attribute(batch: Data, spec: AttributeSpec, sizes: BatchSizes, context: str) -> None:
    label = f"{context}: batch attribute {spec.name!r}"
    value = batch.get(spec.name)  # PyG stores no None values: None means absent
    if value is None:
        if spec.optional:
            return
        present = ", ".join(repr(key) for key in sorted(batch.keys())) or "no attributes"
        hint = f"; {spec.hint}" if spec.hint else ""
        raise ValueError(
            f"{label} is missing, expected {spec.dtype} {_expected_shape(spec)}; "
            f"the batch has {present}{hint}"
        )
    if not isinstance(value, Tensor):
        raise ValueError(
            f"{label} is a {type(value).__name__}, expected a torch.Tensor of "
            f"{spec.dtype} {_expected_shape(spec)}"
        )
    if spec.name == keys.EDGE_INDEX:
        if value.dim() != 2 or value.shape[0] != 2:
            raise ValueError(f"{label} has shape {_shape(value)}, expected [2, E]")
    else:
        size = sizes.of(spec.level)
        if not _shape_matches(tuple(value.shape), size, spec):
            raise ValueError(
                f"{label} has shape {_shape(value)}, expected {_expected_shape(spec)} with "
                f"{_SYMBOL[spec.level]}={size} {_NOUN[spec.level]}"
            )
    if not _dtype_matches(value.dtype, spec.dtype):
        raise ValueError(f"{label} has dtype {value.dtype}, expected {_DTYPE_TEXT[spec.dtype]}")
    if spec.finite and not _all_finite(value):
        num_nan = int(value.isnan().sum())
        num_inf = int(value.isinf().sum())
        raise ValueError(
            f"{label} has {num_nan + num_inf} non-finite values ({num_nan} NaN, {num_inf} inf) "
            f"out of {value.numel()}, expected all finite"
        )
    if spec.values is not None:
        problem = spec.values(value, sizes)
        if problem is not None:
            raise ValueError(f"{label} {problem}")


def _all_finite(value: Tensor) -> bool:
    # NaN or inf anywhere makes the sum non-finite, so a finite sum proves every value finite
    # (about twice as fast as isfinite().all()); a sum that overflowed gets the exact check.
    return bool(value.sum().isfinite()) or bool(value.isfinite().all())


def _shape_matches(shape: tuple[int, ...], size: int, spec: AttributeSpec) -> bool:
    if spec.squeeze_ok and shape == (size,):
        return True
    if len(shape) != 1 + len(spec.trailing) or shape[0] != size:
        return False
    return all(
        want is None or want == got for want, got in zip(spec.trailing, shape[1:], strict=True)
    )


def _dtype_matches(dtype: torch.dtype, kind: str) -> bool:
    if kind == "float":
        return dtype.is_floating_point
    if kind == "int":
        return dtype in _INT_DTYPES
    if kind == "label":
        return dtype.is_floating_point or dtype in _INT_DTYPES or dtype == torch.bool
    return dtype == torch.bool


def _expected_shape(spec: AttributeSpec) -> str:
    if spec.name == keys.EDGE_INDEX:
        return "[2, E]"
    symbol = _SYMBOL[spec.level]
    full = ", ".join([symbol, *("*" if size is None else str(size) for size in spec.trailing)])
    return f"[{symbol}] or [{full}]" if spec.squeeze_ok else f"[{full}]"


def _shape(value: Tensor) -> str:
    return str(list(value.shape))


def _names(allowed: tuple[str, ...]) -> str:
    return ", ".join(repr(name) for name in allowed)
