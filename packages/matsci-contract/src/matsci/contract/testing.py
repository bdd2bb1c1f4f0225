"""Checks that tests of models on atoms share: symmetries, derivatives, batching, compilation.

A public submodule for the tests of every matsci package and of users' own encoders, heads and
tasks (it is not imported by ``import matsci.contract``). Each ``assert_*`` function raises an
``AssertionError`` that names the output, the transformation and the error when the property
does not hold, and a ``ValueError`` when it is called wrongly.

The model under test is any callable. It takes what the check hands it (a ``Data``/``Batch``
or a tensor) and returns a ``Tensor``, a mapping of names to tensors (``None`` values are
left out) or :class:`~matsci.contract.Embeddings`.

Tolerances depend on the dtype (:data:`TOLERANCES`): the largest absolute error may be
``tolerance(dtype) * factor * max(max|expected|, floor)``. Pass ``rtol``/``atol`` instead to
bound each element by ``atol + rtol * |expected|``, as :func:`torch.testing.assert_close`
does.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final, Literal, TypeAlias

import torch
from torch import Tensor
from torch_geometric.data import Batch, Data

from matsci.contract import keys
from matsci.contract._embeddings import Embeddings

if TYPE_CHECKING:  # lightning is optional: quiet_trainer imports it when called
    import lightning.pytorch as pl  # type: ignore[import-not-found, unused-ignore]

__all__ = [
    "TOLERANCES",
    "Representation",
    "assert_batch_matches_single",
    "assert_close_relative",
    "assert_compile_matches_eager",
    "assert_equivariant",
    "assert_forces_are_energy_gradient",
    "assert_permutation_equivariant",
    "assert_stress_is_strain_derivative",
    "assert_translation_invariant",
    "quiet_trainer",
    "random_rotation",
    "tolerance",
]

TOLERANCES: Final[Mapping[torch.dtype, float]] = MappingProxyType(
    {torch.float32: 1e-5, torch.float64: 1e-10}
)
"""Relative tolerance of the checks per floating dtype (integer outputs must match exactly)."""

_FINITE_DIFFERENCES: Final = MappingProxyType(
    {torch.float32: (1e-2, 1e-2, 1e-3), torch.float64: (1e-5, 1e-6, 1e-8)}
)
"""Step (Å, or strain), rtol and atol of the finite-difference checks per dtype."""

Representation: TypeAlias = (
    Literal["scalar", "pseudoscalar", "vector", "pseudovector", "matrix"]
    | Callable[[Tensor], Tensor]
)
"""How a quantity transforms under a rotation ``R`` [3, 3] (``det R = -1`` with inversion).

``"scalar"`` is unchanged, ``"pseudoscalar"`` is multiplied by ``det R``; ``"vector"`` [..., 3]
becomes ``x @ R.T`` (a polar vector: forces, positions, lattice vectors as rows),
``"pseudovector"`` ``det R * x @ R.T``; ``"matrix"`` [..., 3, 3] becomes ``R @ x @ R.T``
(stress). A callable maps ``R`` to a matrix ``D(R)`` [d, d] that acts on the last dimension,
``x @ D(R).T``: for irreps features, ``e3nn.o3.Irreps(...).D_from_matrix``."""

_Model: TypeAlias = Callable[[Any], Any]
"""A model under test: returns a Tensor, a mapping of names to tensors, or Embeddings."""


# -- comparisons --------------------------------------------------------------------------------


def tolerance(dtype: torch.dtype) -> float:
    """The relative tolerance of ``dtype``: ``TOLERANCES[dtype]``, 0 for integer and bool dtypes.

    Raises
    ------
    ValueError
        For floating dtypes without an entry in :data:`TOLERANCES` (float16, bfloat16).
    """
    if not (dtype.is_floating_point or dtype.is_complex):
        return 0.0
    if dtype not in TOLERANCES:
        raise ValueError(
            f"tolerance(dtype={dtype}): no tolerance for this dtype; expected one of "
            f"{list(TOLERANCES)} or pass rtol/atol"
        )
    return TOLERANCES[dtype]


def assert_close_relative(
    actual: Tensor,
    expected: Tensor,
    *,
    what: str = "values",
    factor: float = 1.0,
    floor: float = 1e-3,
    rtol: float | None = None,
    atol: float | None = None,
) -> None:
    r"""Assert ``actual`` equals ``expected`` up to the tolerance of ``expected``'s dtype.

    .. math:: \max |a - e| \le \mathrm{tol}(\mathrm{dtype}) \cdot \mathrm{factor} \cdot
              \max(\max |e|, \mathrm{floor})

    ``floor`` keeps the bound meaningful when the values happen to be small: energies are sums
    of terms that may cancel, so energy checks use ``floor=1`` (eV). With ``rtol`` or ``atol``,
    every element is bounded instead: ``|a - e| <= atol + rtol * |e|`` (missing ones are 0).
    NaN never compares equal.

    Parameters
    ----------
    actual, expected
        Tensors of the same shape, on any device.
    what
        Names the values in the error message.
    factor, floor
        Scale of the dtype's tolerance, and the smallest magnitude it is relative to.
    rtol, atol
        Element-wise bounds that replace the dtype's tolerance.

    Raises
    ------
    AssertionError
        When shapes differ or an error exceeds the bound.

    Examples
    --------
    >>> import torch
    >>> from matsci.contract.testing import assert_close_relative
    >>> assert_close_relative(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 2.00001]))
    >>> assert_close_relative(torch.tensor([1.0]), torch.tensor([1.1]), what="energy")
    Traceback (most recent call last):
    ...
    AssertionError: energy: max error 0.1 > 1.1e-05 (1e-05 of scale 1.1)
    """
    if actual.shape != expected.shape:
        raise AssertionError(
            f"{what}: shape {tuple(actual.shape)} != expected {tuple(expected.shape)}"
        )
    if expected.numel() == 0:
        return
    a = actual.detach().to("cpu", torch.float64)
    e = expected.detach().to("cpu", torch.float64)
    error = (a - e).abs()
    if rtol is not None or atol is not None:
        bound = (0.0 if atol is None else atol) + (0.0 if rtol is None else rtol) * e.abs()
        excess = error - bound
        worst = int(torch.nan_to_num(excess, nan=math.inf).argmax())
        if not bool((error <= bound).all()):
            raise AssertionError(
                f"{what}: error {float(error.reshape(-1)[worst]):.3g} at flat index {worst} > "
                f"{float(bound.reshape(-1)[worst]):.3g} (atol {atol}, rtol {rtol})"
            )
        return
    relative = tolerance(expected.dtype) * factor
    scale = max(float(e.abs().max()), floor)
    largest = float(error.max())
    if not largest <= relative * scale:  # also fails on NaN
        raise AssertionError(
            f"{what}: max error {largest:.3g} > {relative * scale:.3g} "
            f"({relative:.3g} of scale {scale:.3g})"
        )


def _as_dict(result: object) -> dict[str, Tensor]:
    if isinstance(result, Tensor):
        return {"output": result}
    if isinstance(result, Embeddings):
        fields = {"system_embedding": result.system_embedding,
                  "point_embedding": result.point_embedding}  # fmt: skip
        return {name: value for name, value in fields.items() if value is not None}
    if isinstance(result, Mapping):
        outputs = {str(name): value for name, value in result.items() if value is not None}
        if all(isinstance(value, Tensor) for value in outputs.values()):
            return outputs
    raise TypeError(
        f"the model returned {type(result).__name__}; expected a Tensor, a mapping of names to "
        "tensors, or Embeddings"
    )


def _floor(floor: float | Mapping[str, float], name: str) -> float:
    return floor if isinstance(floor, int | float) else float(floor.get(name, 1e-3))


def _compare(
    actual: Mapping[str, Tensor],
    expected: Mapping[str, Tensor],
    what: str,
    *,
    factor: float,
    floor: float | Mapping[str, float],
    rtol: float | None,
    atol: float | None,
) -> None:
    if actual.keys() != expected.keys():
        raise AssertionError(f"outputs {what}: {sorted(actual)} != expected {sorted(expected)}")
    for name, value in expected.items():
        assert_close_relative(actual[name], value, what=f"{name} {what}", factor=factor,
                              floor=_floor(floor, name), rtol=rtol, atol=atol)  # fmt: skip


# -- rotations ----------------------------------------------------------------------------------


def random_rotation(
    seed: int = 0, dtype: torch.dtype = torch.float64, *, improper: bool = False
) -> Tensor:
    """A random rotation matrix [3, 3], the same for the same seed on every machine.

    The Q of the QR decomposition of a Gaussian matrix (signs fixed so that it is uniform over
    rotations), with ``det = +1``; ``improper=True`` returns its negative (``det = -1``: the
    rotation followed by inversion).

    Examples
    --------
    >>> import torch
    >>> from matsci.contract.testing import random_rotation
    >>> rotation = random_rotation(seed=3)
    >>> torch.allclose(rotation @ rotation.T, torch.eye(3, dtype=torch.float64))
    True
    >>> round(float(torch.linalg.det(random_rotation(seed=3, improper=True))), 6)
    -1.0
    """
    generator = torch.Generator().manual_seed(seed)
    gaussian = torch.randn(3, 3, generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(gaussian)
    q = q * torch.sign(torch.diagonal(r)).unsqueeze(0)
    if torch.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    rotation: Tensor = (-q if improper else q).to(dtype)
    return rotation


def _check_representation(representation: Representation, where: str) -> None:
    if callable(representation):
        return
    allowed = ("scalar", "pseudoscalar", "vector", "pseudovector", "matrix")
    if representation not in allowed:
        raise ValueError(f"{where}: {representation!r} is not a representation; expected one "
                         f"of {list(allowed)} or a callable R -> D(R)")  # fmt: skip


def _transform(representation: Representation, value: Tensor, rotation: Tensor) -> Tensor:
    """``value`` after the rotation, as its representation says."""
    if representation == "scalar":
        return value
    sign = float(torch.linalg.det(rotation.double()).sign())
    if representation == "pseudoscalar":
        return sign * value
    matrix = rotation.to(device=value.device, dtype=value.dtype)
    if callable(representation):
        wigner = representation(matrix).to(device=value.device, dtype=value.dtype)
        return value @ wigner.T
    if representation in ("vector", "pseudovector"):
        rotated = value @ matrix.T
        return sign * rotated if representation == "pseudovector" else rotated
    return matrix @ value @ matrix.T  # "matrix"


def _specs(
    outputs: Representation | Mapping[str, Representation], names: Sequence[str], where: str
) -> dict[str, Representation]:
    if isinstance(outputs, Mapping):
        missing = sorted(set(names) - set(outputs))
        if missing:
            raise ValueError(f"{where}: the model returns {missing} but `outputs` does not say "
                             "how they transform")  # fmt: skip
        specs = {name: outputs[name] for name in names}
    else:
        specs = dict.fromkeys(names, outputs)
    for name, representation in specs.items():
        _check_representation(representation, f"{where}: output {name!r}")
    return specs


def assert_equivariant(
    model: _Model,
    data: Data,
    outputs: Representation | Mapping[str, Representation],
    *,
    inputs: Mapping[str, Representation] | None = None,
    parity: bool = True,
    seed: int = 0,
    factor: float = 1.0,
    floor: float | Mapping[str, float] = 1e-3,
    rtol: float | None = None,
    atol: float | None = None,
) -> None:
    """Assert that rotating the input rotates each output as its representation says.

    Under a random rotation ``R`` (and, with ``parity``, an improper one: a second random
    rotation followed by inversion), each input attribute is transformed by its representation
    (by default ``pos`` and ``cell``, whichever are present, as vectors: positions and
    lattice vectors rotate together, the graph stays), and ``model(rotated)`` must equal
    ``model(data)`` with each output transformed by its representation.

    Parameters
    ----------
    model
        Takes a copy of ``data`` and returns the outputs to check.
    data
        A structure (``Data``) or a ``Batch``; not modified.
    outputs
        One :data:`Representation` for every output, or one per output name (a tensor output
        is named ``"output"``; :class:`~matsci.contract.Embeddings` give
        ``"point_embedding"`` and ``"system_embedding"``). Scalars stay, vectors rotate.
    inputs
        The attributes of ``data`` to transform and how; other attributes are copied
        unchanged. For features of irreps: ``{"x": irreps.D_from_matrix}``.
    parity
        Also check an improper rotation; leave it out for chiral models.
    seed
        Picks the rotations (:func:`random_rotation` with ``seed`` and ``seed + 1``).
    factor, floor, rtol, atol
        The tolerance, as in :func:`assert_close_relative`; ``floor`` may be given per output
        name (1e-3 for names it leaves out).

    Raises
    ------
    AssertionError
        When an output does not transform as stated.
    ValueError
        For an unknown representation or input attribute.

    Examples
    --------
    Forces of a harmonic pair potential rotate, its energy stays:

    >>> import torch
    >>> from torch_geometric.data import Data
    >>> from matsci.contract.testing import assert_equivariant
    >>> def pair_model(data):
    ...     pos = data.pos.detach().requires_grad_(True)
    ...     energy = ((pos[0] - pos[1]).norm() - 1.0) ** 2
    ...     (grad,) = torch.autograd.grad(energy, pos)
    ...     return {"energy": energy.detach(), "force": -grad}
    >>> data = Data(pos=torch.rand(2, 3, dtype=torch.float64))
    >>> assert_equivariant(pair_model, data, {"energy": "scalar", "force": "vector"})
    """
    if inputs is None:
        inputs = {name: "vector" for name in (keys.POS, keys.CELL) if data.get(name) is not None}
    for name, representation in inputs.items():
        if data.get(name) is None:
            raise ValueError(f"assert_equivariant: inputs names {name!r}, which data lacks")
        _check_representation(representation, f"assert_equivariant: input {name!r}")
    reference = _as_dict(model(data.clone()))
    specs = _specs(outputs, list(reference), "assert_equivariant")
    rotations = [random_rotation(seed)]
    if parity:
        rotations.append(random_rotation(seed + 1, improper=True))
    for rotation in rotations:
        moved = data.clone()
        for name, representation in inputs.items():
            moved[name] = _transform(representation, data[name], rotation)
        expected = {name: _transform(specs[name], value, rotation)
                    for name, value in reference.items()}  # fmt: skip
        name = "rotation" if torch.linalg.det(rotation) > 0 else "rotation with inversion"
        _compare(_as_dict(model(moved)), expected, f"after {name}", factor=factor, floor=floor,
                 rtol=rtol, atol=atol)  # fmt: skip


def assert_translation_invariant(
    model: _Model,
    data: Data,
    *,
    shift: Sequence[float] | Tensor | None = None,
    seed: int = 0,
    factor: float = 1.0,
    floor: float | Mapping[str, float] = 1e-3,
    rtol: float | None = None,
    atol: float | None = None,
) -> None:
    """Assert that shifting every position by one vector changes no output.

    Parameters
    ----------
    model
        Takes a copy of ``data`` and returns the outputs to check.
    data
        A structure or a ``Batch`` with ``pos`` [N, 3]; not modified.
    shift
        The vector [3] in Å; by default a random one in ``[-1, 1)³`` drawn from ``seed``.
    factor, floor, rtol, atol
        The tolerance, as in :func:`assert_equivariant`.

    Raises
    ------
    AssertionError
        When an output changes.
    """
    if shift is None:
        generator = torch.Generator().manual_seed(seed)
        shift = 2.0 * torch.rand(3, generator=generator, dtype=torch.float64) - 1.0
    vector = torch.as_tensor(shift, dtype=data.pos.dtype, device=data.pos.device)
    reference = _as_dict(model(data.clone()))
    moved = data.clone()
    moved.pos = data.pos + vector
    _compare(_as_dict(model(moved)), reference, "after translation", factor=factor,
             floor=floor, rtol=rtol, atol=atol)  # fmt: skip


# -- permutations -------------------------------------------------------------------------------

_NODE_KEYS: Final = (keys.POS, keys.ATOMIC_NUMBERS, keys.FORCE, keys.NOISY_POS, keys.DENOISE)


def _permutation(data: Data, seed: int) -> Tensor:
    """A random order of the atoms [N], within each structure of a batch, not the identity."""
    count = int(data.num_nodes)
    generator = torch.Generator().manual_seed(seed)
    structure = data.get(keys.BATCH)
    group = torch.zeros(count, dtype=torch.float64) if structure is None else structure.cpu()
    for _ in range(100):
        noise = torch.rand(count, generator=generator, dtype=torch.float64)
        order = torch.argsort(2.0 * group.double() + noise)  # grouped, random within groups
        if not torch.equal(order, torch.arange(count)):
            return order
    raise ValueError("assert_permutation_equivariant: no structure has two atoms to swap")


def assert_permutation_equivariant(
    model: _Model,
    data: Data,
    outputs: Literal["node", "invariant"] | Mapping[str, Literal["node", "invariant"]],
    *,
    node_keys: Sequence[str] | None = None,
    edge_keys: Sequence[str] | None = None,
    seed: int = 0,
    factor: float = 1.0,
    floor: float | Mapping[str, float] = 1e-3,
    rtol: float | None = None,
    atol: float | None = None,
) -> None:
    """Assert that reordering the atoms (and the edges) reorders per-atom outputs only.

    The atoms are put in a random order ``order`` (within each structure of a batch): atom
    ``k`` of the permuted input is atom ``order[k]`` of ``data``. ``edge_index`` is renumbered
    to match, and the edges are shuffled too. A ``"node"`` output must become
    ``output[order]``; an ``"invariant"`` one (energy, stress, system embeddings) must stay.

    Parameters
    ----------
    model
        Takes a copy of ``data`` and returns the outputs to check.
    data
        A structure or a ``Batch`` with at least two atoms in a structure; not modified.
    outputs
        ``"node"`` or ``"invariant"`` for every output, or one per output name.
    node_keys
        The per-atom attributes [N, ...] to reorder; by default those of ``pos``,
        ``atomic_numbers``, ``force``, ``noisy_pos`` and ``denoise`` that are present.
    edge_keys
        The per-edge attributes [E, ...] to shuffle with the edges; by default
        ``cell_offsets`` when present.
    seed
        Picks the permutations.
    factor, floor, rtol, atol
        The tolerance, as in :func:`assert_equivariant`.

    Raises
    ------
    AssertionError
        When an output is not permuted (or changed) as stated.
    ValueError
        For an unknown kind of output, or a structure too small to permute.
    """
    if node_keys is None:
        node_keys = [name for name in _NODE_KEYS if data.get(name) is not None]
    if edge_keys is None:
        edge_keys = [name for name in (keys.CELL_OFFSETS,) if data.get(name) is not None]
    order = _permutation(data, seed).to(data.pos.device)
    reference = _as_dict(model(data.clone()))
    kinds = outputs if isinstance(outputs, Mapping) else dict.fromkeys(reference, outputs)
    for name in reference:
        if kinds.get(name) not in ("node", "invariant"):
            raise ValueError(f"assert_permutation_equivariant: output {name!r} is "
                             f"{kinds.get(name)!r}; expected 'node' or 'invariant'")  # fmt: skip
    permuted = data.clone()
    for name in node_keys:
        permuted[name] = data[name][order]
    edge_index = data.get(keys.EDGE_INDEX)
    if edge_index is not None:
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(len(order), device=order.device)
        generator = torch.Generator().manual_seed(seed + 1)
        shuffle = torch.randperm(edge_index.shape[1], generator=generator).to(order.device)
        permuted[keys.EDGE_INDEX] = inverse[edge_index][:, shuffle]
        for name in edge_keys:
            permuted[name] = data[name][shuffle]
    expected = {name: value[order] if kinds[name] == "node" else value
                for name, value in reference.items()}  # fmt: skip
    _compare(_as_dict(model(permuted)), expected, "after permuting the atoms", factor=factor,
             floor=floor, rtol=rtol, atol=atol)  # fmt: skip


# -- derivatives --------------------------------------------------------------------------------


def _difference_settings(
    dtype: torch.dtype, step: float | None, rtol: float | None, atol: float | None, where: str
) -> tuple[float, float, float]:
    if dtype not in _FINITE_DIFFERENCES:
        raise ValueError(f"{where}: positions of dtype {dtype}; expected float32 or float64")
    default_step, default_rtol, default_atol = _FINITE_DIFFERENCES[dtype]
    return (
        default_step if step is None else step,
        default_rtol if rtol is None else rtol,
        default_atol if atol is None else atol,
    )


def _total(energy: Tensor | float) -> float:
    return float(energy.detach().sum()) if isinstance(energy, Tensor) else float(energy)


def assert_forces_are_energy_gradient(
    energy: Callable[[Tensor], Tensor | float],
    pos: Tensor,
    forces: Tensor,
    *,
    atoms: Sequence[int] | None = None,
    step: float | None = None,
    rtol: float | None = None,
    atol: float | None = None,
) -> None:
    r"""Assert ``forces`` are minus the central finite-difference gradient of ``energy``.

    .. math:: F_{ia} = -\frac{E(x + h e_{ia}) - E(x - h e_{ia})}{2h}

    Parameters
    ----------
    energy
        Maps positions [N, 3] to the energy in eV (a float or a tensor, summed when it has
        several elements: a batch's total energy).
    pos
        Positions [N, 3] in Å, float32 or float64.
    forces
        The forces to check [N, 3] in eV/Å.
    atoms
        Check only these atoms (each costs six energies); by default all.
    step, rtol, atol
        The displacement ``h`` in Å and the element-wise tolerance; by default ``1e-5``,
        ``1e-6``, ``1e-8`` in float64 and ``1e-2``, ``1e-2``, ``1e-3`` in float32.

    Raises
    ------
    AssertionError
        When a force differs from the finite difference.
    ValueError
        When shapes do not match or the dtype is not float32 or float64.

    Examples
    --------
    >>> import torch
    >>> from matsci.contract.testing import assert_forces_are_energy_gradient
    >>> pos = torch.tensor([[0.0, 0.0, 0.0], [1.2, 0.0, 0.0]], dtype=torch.float64)
    >>> def energy(p):
    ...     return ((p[0] - p[1]).norm() - 1.0) ** 2
    >>> force_on_1 = torch.tensor([-0.4, 0.0, 0.0], dtype=torch.float64)  # pulled back to 1 Å
    >>> assert_forces_are_energy_gradient(energy, pos, torch.stack([-force_on_1, force_on_1]))
    """
    if forces.shape != pos.shape or pos.ndim != 2 or pos.shape[-1] != 3:
        raise ValueError(f"assert_forces_are_energy_gradient: pos {tuple(pos.shape)} and "
                         f"forces {tuple(forces.shape)}; expected both [N, 3]")  # fmt: skip
    step, rtol, atol = _difference_settings(
        pos.dtype, step, rtol, atol, "assert_forces_are_energy_gradient"
    )
    chosen = list(range(pos.shape[0])) if atoms is None else [int(i) for i in atoms]
    base = pos.detach()
    numerical = torch.zeros(len(chosen), 3, dtype=torch.float64)
    for row, atom in enumerate(chosen):
        for axis in range(3):
            plus, minus = base.clone(), base.clone()
            plus[atom, axis] += step
            minus[atom, axis] -= step
            numerical[row, axis] = -(_total(energy(plus)) - _total(energy(minus))) / (2 * step)
    assert_close_relative(forces.detach()[chosen], numerical.to(forces.dtype),
                          what="forces vs. -dE/dpos by finite differences", rtol=rtol,
                          atol=atol)  # fmt: skip


def assert_stress_is_strain_derivative(
    energy: Callable[[Tensor, Tensor], Tensor | float],
    pos: Tensor,
    cell: Tensor,
    stress: Tensor,
    *,
    step: float | None = None,
    rtol: float | None = None,
    atol: float | None = None,
) -> None:
    r"""Assert ``stress`` is the strain derivative of ``energy`` over the volume (ASE's sign).

    .. math:: \sigma_{ij} = \frac{1}{V} \frac{\partial E}{\partial \varepsilon_{ij}},
              \qquad x \to x (I + \varepsilon), \quad C \to C (I + \varepsilon)

    for a symmetric strain ``ε`` that deforms the positions and the cell (lattice vectors as
    rows) together, by central differences: positive stress means the energy rises as the
    cell stretches (a crystal under tension), as ``ase.Atoms.get_stress`` reports it.

    Parameters
    ----------
    energy
        Maps positions [N, 3] and cell (in the shape of ``cell``) to the energy in eV.
    pos
        Positions [N, 3] in Å of one structure, float32 or float64.
    cell
        Its lattice vectors as rows, [3, 3] or [1, 3, 3], in Å.
    stress
        The stress to check, [3, 3] or [1, 3, 3], in eV/Å³.
    step, rtol, atol
        The strain step and the element-wise tolerance; by default ``1e-5``, ``1e-6``,
        ``1e-8`` in float64 and ``1e-2``, ``1e-2``, ``1e-3`` in float32.

    Raises
    ------
    AssertionError
        When the stress (or its asymmetric part) differs from the finite difference.
    ValueError
        When shapes do not match or the dtype is not float32 or float64.

    Examples
    --------
    An energy proportional to the volume, ``E = p V``, has the stress ``p I``:

    >>> import torch
    >>> from matsci.contract.testing import assert_stress_is_strain_derivative
    >>> cell = torch.tensor([[3.0, 0, 0], [0.5, 3.0, 0], [0, 0, 4.0]], dtype=torch.float64)
    >>> def energy(pos, cell):
    ...     return 0.2 * torch.linalg.det(cell)
    >>> stress = 0.2 * torch.eye(3, dtype=torch.float64)
    >>> assert_stress_is_strain_derivative(energy, torch.zeros(1, 3).double(), cell, stress)
    """
    if cell.reshape(-1).shape != (9,) or stress.reshape(-1).shape != (9,):
        raise ValueError(f"assert_stress_is_strain_derivative: cell {tuple(cell.shape)} and "
                         f"stress {tuple(stress.shape)}; expected [3, 3] or [1, 3, 3] each, "
                         "one structure")  # fmt: skip
    step, rtol, atol = _difference_settings(
        pos.dtype, step, rtol, atol, "assert_stress_is_strain_derivative"
    )
    lattice = cell.detach().reshape(3, 3)
    volume = abs(float(torch.linalg.det(lattice.double())))
    numerical = torch.zeros(3, 3, dtype=torch.float64)
    for i in range(3):
        for j in range(i, 3):
            strain = torch.zeros(3, 3, dtype=pos.dtype, device=pos.device)
            strain[i, j] += 0.5 * step
            strain[j, i] += 0.5 * step

            def strained(sign: float, strain: Tensor = strain) -> float:
                deformation = torch.eye(3, dtype=pos.dtype, device=pos.device) + sign * strain
                moved_cell = (lattice @ deformation).reshape(cell.shape)
                return _total(energy(pos.detach() @ deformation, moved_cell))

            derivative = (strained(1.0) - strained(-1.0)) / (2 * step * volume)
            numerical[i, j] = numerical[j, i] = derivative
    assert_close_relative(stress.detach().reshape(3, 3), numerical.to(stress.dtype),
                          what="stress vs. (1/V) dE/dstrain by finite differences",
                          rtol=rtol, atol=atol)  # fmt: skip


# -- batches and compilation --------------------------------------------------------------------


def assert_batch_matches_single(
    model: _Model,
    structures: Sequence[Data],
    *,
    factor: float = 1.0,
    floor: float | Mapping[str, float] = 1e-3,
    rtol: float | None = None,
    atol: float | None = None,
) -> None:
    """Assert the outputs of a batch are those of its structures, one at a time, concatenated.

    ``model(Batch.from_data_list(structures))`` must equal the concatenation (along the first
    dimension) of ``model(Batch.from_data_list([s]))`` over ``structures``: per structure
    [B, ...], per atom [N, ...] and per edge [E, ...] outputs alike. Each structure's part is
    compared on its own (the tolerance is relative to that structure's values). Structures of
    different sizes catch more mistakes (a wrong offset, a mixed-up structure).

    Parameters
    ----------
    model
        Takes a ``Batch`` and returns the outputs to check.
    structures
        Two or more structures; not modified.
    factor, floor, rtol, atol
        The tolerance, as in :func:`assert_equivariant`.

    Raises
    ------
    AssertionError
        When the batched outputs differ.
    ValueError
        For fewer than two structures.
    """
    if len(structures) < 2:
        raise ValueError(f"assert_batch_matches_single: {len(structures)} structure(s); "
                         "expected two or more")  # fmt: skip
    together = _as_dict(model(Batch.from_data_list(list(structures))))
    offsets = dict.fromkeys(together, 0)
    for index, data in enumerate(structures):
        alone = _as_dict(model(Batch.from_data_list([data])))
        if alone.keys() != together.keys():
            raise AssertionError(f"outputs of structure {index} alone: {sorted(alone)} != "
                                 f"{sorted(together)} of the batch")  # fmt: skip
        for name, expected in alone.items():
            start, offsets[name] = offsets[name], offsets[name] + len(expected)
            assert_close_relative(together[name][start : offsets[name]], expected,
                                  what=f"{name} of structure {index} in the batch vs. alone",
                                  factor=factor, floor=_floor(floor, name), rtol=rtol,
                                  atol=atol)  # fmt: skip
    for name, value in together.items():
        if len(value) != offsets[name]:
            raise AssertionError(f"{name} of the batch: {len(value)} rows; the structures alone "
                                 f"give {offsets[name]}")  # fmt: skip


def _run(module: _Model, value: Any, gradients: bool) -> dict[str, Tensor]:
    """The outputs of ``module(value)`` and, with ``gradients``, d(sum of outputs)/d(input)."""
    if isinstance(value, Tensor):
        work: Any = value.detach().clone().requires_grad_(gradients)
        leaf: Tensor = work
    else:
        work = value.clone()
        work.pos = value.pos.detach().clone().requires_grad_(gradients)
        leaf = work.pos
    outputs = _as_dict(module(work))
    result = {name: tensor.detach() for name, tensor in outputs.items()}
    if gradients:
        total = sum((t.sum() for t in outputs.values() if t.is_floating_point()),
                    torch.zeros((), dtype=leaf.dtype, device=leaf.device))  # fmt: skip
        (result["d(sum)/d(input)"],) = torch.autograd.grad(total, leaf)
    return result


def assert_compile_matches_eager(
    module: _Model,
    inputs: Sequence[Any],
    *,
    dynamic: bool = True,
    recompile: bool = False,
    gradients: bool = False,
    backend: str = "inductor",
    factor: float = 10.0,
    floor: float | Mapping[str, float] = 1e-3,
    rtol: float | None = None,
    atol: float | None = None,
) -> None:
    """Assert ``torch.compile(module)`` gives the outputs (and gradients) of eager mode.

    Every input after the first must reuse the compiled graph unless ``recompile``: give
    inputs of other sizes to check that shapes are dynamic. Dynamic shapes "duck-size"
    dimensions of equal value, so avoid sizes that equal others (3 structures make
    ``cell`` [3, 3, 3], which would be specialized).

    Parameters
    ----------
    module
        An ``nn.Module`` (or function) of a tensor or a ``Data``/``Batch``.
    inputs
        One or more inputs; not modified.
    dynamic
        Passed to ``torch.compile``.
    recompile
        Allow recompiling for later inputs.
    gradients
        Also compare the gradient of the sum of all outputs with respect to the input (a
        tensor) or its ``pos`` (what forces are made of).
    backend
        Passed to ``torch.compile``; ``"eager"`` or ``"aot_eager"`` trace without generating
        kernels (fast, for checks of tracing and guards only).
    factor, floor, rtol, atol
        The tolerance, as in :func:`assert_equivariant`; ``factor`` defaults to 10, since
        compiled kernels fuse and reorder sums.

    Raises
    ------
    AssertionError
        When an output or gradient differs, or a later input recompiles the module.
    """
    compiled = torch.compile(module, dynamic=dynamic, backend=backend)
    for index, value in enumerate(inputs):
        eager = _run(module, value, gradients)
        first = index == 0 or recompile
        try:
            with torch.compiler.set_stance("default" if first else "fail_on_recompile"):
                result = _run(compiled, value, gradients)
        except RuntimeError as error:
            if "fail_on_recompile" not in str(error):
                raise
            raise AssertionError(f"compiled: input {index} recompiled the module: "
                                 f"{str(error).splitlines()[0]}") from error  # fmt: skip
        _compare(result, eager, f"compiled (input {index})", factor=factor, floor=floor,
                 rtol=rtol, atol=atol)  # fmt: skip


# -- training -----------------------------------------------------------------------------------


def quiet_trainer(**kwargs: Any) -> pl.Trainer:
    """A Lightning ``Trainer`` for tests: one CPU device, deterministic, and silent.

    No logger, no checkpoint callback, no progress bar, no model summary, one epoch; any
    keyword replaces a default and the rest go to ``lightning.pytorch.Trainer``. It needs
    ``lightning`` installed, which ``matsci-contract`` does not depend on.

    ``deterministic=True`` makes Lightning call ``torch.use_deterministic_algorithms(True)``
    for the rest of the process; pass ``deterministic=None`` to leave it as it is.

    Returns
    -------
    lightning.pytorch.Trainer

    Examples
    --------
    Not run here, since ``lightning`` may be missing::

        trainer = quiet_trainer(max_steps=2, gradient_clip_val=1.0)
        trainer.fit(task, train_loader)
        metrics = quiet_trainer().test(task, test_loader, verbose=False)[0]
    """
    import lightning.pytorch as pl  # type: ignore[import-not-found, unused-ignore]

    options: dict[str, Any] = {
        "accelerator": "cpu",
        "devices": 1,
        "max_epochs": 1,
        "deterministic": True,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
    }
    options.update(kwargs)
    return pl.Trainer(**options)
