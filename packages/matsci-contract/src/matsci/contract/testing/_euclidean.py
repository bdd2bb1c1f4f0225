"""Euclidean symmetry checks: rotation (with inversion) equivariance and translation invariance.

How a quantity transforms is its :data:`Representation`; :func:`random_rotation` draws the
rotations, the same for the same seed on every machine.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Literal, TypeAlias

import torch
from torch import Tensor
from torch_geometric.data import Data

from matsci.contract import keys
from matsci.contract.testing._compare import _as_dict, _compare, _Model

__all__ = [
    "Representation",
    "assert_equivariant",
    "assert_translation_invariant",
    "random_rotation",
]

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
