"""Derivative checks: forces and stress against central finite differences of the energy."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from types import MappingProxyType
from typing import Final

import torch
from torch import Tensor

from matsci.contract.testing._compare import assert_close_relative

__all__ = ["assert_forces_are_energy_gradient", "assert_stress_is_strain_derivative"]

_FINITE_DIFFERENCES: Final = MappingProxyType(
    {torch.float32: (1e-2, 1e-2, 1e-3), torch.float64: (1e-5, 1e-6, 1e-8)}
)
"""Step (Å, or strain), rtol and atol of the finite-difference checks per dtype."""


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
