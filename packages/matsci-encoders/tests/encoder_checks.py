"""Checks that every encoder must pass, reused by the tests of each encoder.

An encoder is any ``nn.Module`` whose ``forward(batch)`` returns
:class:`~matsci.contract.Embeddings`. The physical checks go through a small
:class:`~matsci.tasks.physics.ForceRegressionTask` around the encoder (:func:`energy_model`), so
they test what users get: energies, forces (autograd) and stresses (strain derivative).

The symmetry, batching and compilation checks themselves are the shared ones of
:mod:`matsci.contract.testing` (tolerances relative to the magnitude of the reference values:
``1e-5`` in float32 and ``1e-10`` in float64); this module adds what is particular to
encoders of periodic structures.

Functions
---------
random_periodic_structure
    A random crystal (skewed cell, a few elements of the EMT data) with its radius graph.
energy_model
    A ForceRegressionTask around an encoder, in eval mode and the given dtype.
energy_force_stress
    The task as a model for the shared checks: ``{"energy", "force", "stress"}`` of a structure.
assert_invariant_energy_equivariant_forces
    Rotations (and inversion), translations, permutations.
assert_supercell_consistency
    A 2x2x2 supercell has the same energy per atom, forces and stress.
assert_smooth_at_cutoff
    Energy continuous as an atom crosses the cutoff; edges beyond it contribute nothing.
fit_emt_forces
    Train on the bundled EMT data; returns (test force MAE, zero-force predictor MAE).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from torch import Tensor, nn
from torch_geometric.data import Batch, Data

from matsci.contract.testing import (
    Representation,
    assert_close_relative,
    assert_equivariant,
    assert_permutation_equivariant,
    assert_translation_invariant,
    quiet_trainer,
    tolerance,
)
from matsci.tasks.physics import ForceRegressionTask
from matsci.transforms import PeriodicRadiusGraph

ELEMENTS: tuple[int, ...] = (13, 28, 29, 46, 47, 78, 79)
"""Atomic numbers of random structures (the metals of ASE's EMT)."""


# -- structures ------------------------------------------------------------------------------


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_periodic_structure(
    seed: int,
    n_atoms: int = 6,
    cutoff: float = 4.0,
    dtype: torch.dtype = torch.float64,
    *,
    volume_per_atom: float = 14.0,
    skew: float = 0.25,
) -> Data:
    """A random crystal with its periodic radius graph.

    A roughly cubic cell with random skew holding ``n_atoms`` atoms at random positions (no two
    closer than about 1.2 Å, so energies stay moderate), random elements from
    :data:`ELEMENTS`, and ``edge_index``/``cell_offsets`` from
    ``PeriodicRadiusGraph(cutoff)``. Small cells make atoms neighbour their own images.

    Returns
    -------
    Data
        ``pos`` [N, 3], ``atomic_numbers`` [N], ``natoms`` [1], ``cell`` [1, 3, 3],
        ``pbc`` [1, 3], ``edge_index`` [2, E], ``cell_offsets`` [E, 3], all in ``dtype``.
    """
    generator = _generator(seed)
    box = (volume_per_atom * n_atoms) ** (1.0 / 3.0)
    cell = box * torch.eye(3, dtype=torch.float64)
    cell = cell + skew * (2.0 * torch.rand(3, 3, generator=generator, dtype=torch.float64) - 1.0)
    positions: list[Tensor] = []
    for _ in range(1000 * n_atoms):  # rejection sampling of well-separated atoms
        if len(positions) == n_atoms:
            break
        candidate = torch.rand(1, 3, generator=generator, dtype=torch.float64) @ cell
        if positions and _min_periodic_distance(candidate, torch.cat(positions), cell) < 1.2:
            continue
        positions.append(candidate)
    if len(positions) != n_atoms:
        raise ValueError(f"random_periodic_structure: cannot place {n_atoms} atoms in the cell")
    choice = torch.randint(len(ELEMENTS), (n_atoms,), generator=generator)
    data = Data(
        pos=torch.cat(positions).to(dtype),
        atomic_numbers=torch.tensor(ELEMENTS)[choice],
        natoms=torch.tensor([n_atoms]),
        cell=cell.to(dtype).unsqueeze(0),
        pbc=torch.ones(1, 3, dtype=torch.bool),
    )
    graph: Data = PeriodicRadiusGraph(cutoff)(data)
    return graph


def _min_periodic_distance(point: Tensor, others: Tensor, cell: Tensor) -> float:
    shifts = torch.cartesian_prod(*[torch.tensor([-1.0, 0.0, 1.0], dtype=cell.dtype)] * 3)
    images = (others.unsqueeze(1) + (shifts @ cell).unsqueeze(0)).reshape(-1, 3)
    return float((images - point).norm(dim=-1).min())


def _with_graph(data: Data, cutoff: float) -> Data:
    """A copy of ``data`` without edges, then with a new ``PeriodicRadiusGraph(cutoff)``."""
    fresh = Data(**{key: value for key, value in data.items()
                    if key not in ("edge_index", "cell_offsets")})  # fmt: skip
    rebuilt: Data = PeriodicRadiusGraph(cutoff)(fresh)
    return rebuilt


def _graph_cutoff(task: ForceRegressionTask, cutoff: float | None) -> float:
    if cutoff is not None:
        return float(cutoff)
    encoder_cutoff = getattr(task.encoder, "cutoff", None)
    if encoder_cutoff is None:
        raise ValueError("the encoder has no `cutoff` attribute: pass graph_cutoff=")
    return float(encoder_cutoff)


# -- the model under test --------------------------------------------------------------------


def energy_model(
    encoder: nn.Module,
    dtype: torch.dtype = torch.float64,
    *,
    compute_stress: bool = True,
    hidden_dim: int = 16,
) -> ForceRegressionTask:
    """A small ForceRegressionTask around ``encoder``, in eval mode and ``dtype``.

    ``task.energy_and_derivatives(batch)`` gives energy [B], forces [N, 3] and stress
    [B, 3, 3] (or ``None`` without ``compute_stress``).
    """
    task = ForceRegressionTask(
        encoder=encoder, compute_stress=compute_stress, output_kwargs={"hidden_dim": hidden_dim}
    )
    return task.to(dtype).eval()


def energy_force_stress(task: ForceRegressionTask) -> Callable[[Data], dict[str, Tensor | None]]:
    """The task as a model of one structure: energy [1], forces [N, 3], stress [1, 3, 3] or None."""

    def model(data: Data) -> dict[str, Tensor | None]:
        batch = data if isinstance(data, Batch) else Batch.from_data_list([data])
        energy, force, stress = task.energy_and_derivatives(batch, keep_graph=False)
        return {"energy": energy, "force": force, "stress": stress}

    return model


def _predict(task: ForceRegressionTask, data: Data) -> tuple[Tensor, Tensor, Tensor | None]:
    """Energy [1], forces [N, 3] and stress [1, 3, 3] or ``None`` of one structure."""
    return task.energy_and_derivatives(Batch.from_data_list([data]), keep_graph=False)


# -- symmetries ------------------------------------------------------------------------------


def assert_invariant_energy_equivariant_forces(
    task: ForceRegressionTask,
    data: Data,
    dtype: torch.dtype,
    *,
    parity: bool = True,
    seed: int = 0,
) -> None:
    """Energy invariant; forces and stress equivariant under rotations, translations, permutations.

    The shared checks of :mod:`matsci.contract.testing` on energy, forces and stress:

    - rotation ``R`` (and, with ``parity``, the improper ``-R'``): ``pos @ R.T``, ``cell @ R.T``,
      same graph; energy unchanged, forces ``F @ R.T``, stress ``R S R.T``;
    - translation by a random vector: all unchanged;
    - permutation of the atoms, with the graph renumbered and its edges shuffled: energy and
      stress unchanged, forces permuted.

    Energies are compared relative to at least 1 eV (sums of terms may cancel). ``data`` is one
    structure in ``dtype`` with a graph; the task must be in ``dtype`` too.
    """
    assert data.pos.dtype == dtype, (data.pos.dtype, dtype)
    model = energy_force_stress(task)
    floor = {"energy": 1.0}
    representations: dict[str, Representation] = {
        "energy": "scalar",
        "force": "vector",
        "stress": "matrix",
    }
    assert_equivariant(model, data, representations, parity=parity, seed=seed, floor=floor)
    assert_translation_invariant(model, data, seed=seed, floor=floor)
    kinds: dict[str, Literal["node", "invariant"]] = {
        "energy": "invariant",
        "force": "node",
        "stress": "invariant",
    }
    assert_permutation_equivariant(model, data, kinds, seed=seed, floor=floor)


def supercell(data: Data, repeats: Sequence[int] = (2, 2, 2)) -> Data:
    """The structure repeated ``repeats`` times along the lattice vectors, without a graph.

    Copy ``k`` (in ``itertools.product`` order of the shifts) holds atoms
    ``k * N ... (k + 1) * N - 1``.
    """
    cell = data.cell.reshape(3, 3)
    grids = [torch.arange(n, dtype=cell.dtype) for n in repeats]
    shifts = torch.cartesian_prod(*grids).reshape(-1, 3) @ cell  # [K, 3]
    copies = len(shifts)
    pos = (data.pos.unsqueeze(0) + shifts.unsqueeze(1)).reshape(-1, 3)  # [K * N, 3]
    scale = torch.tensor(list(repeats), dtype=cell.dtype).unsqueeze(-1)
    return Data(
        pos=pos,
        atomic_numbers=data.atomic_numbers.repeat(copies),
        natoms=torch.tensor([copies * data.num_nodes]),
        cell=(cell * scale).unsqueeze(0),
        pbc=data.pbc.clone(),
    )


def assert_supercell_consistency(
    task: ForceRegressionTask,
    data: Data,
    *,
    graph_cutoff: float | None = None,
    factor: float = 10.0,
) -> None:
    """A 2x2x2 supercell gives the same energy per atom, the same forces and the same stress.

    The supercell's graph is built by ``PeriodicRadiusGraph(graph_cutoff)`` (default: the
    encoder's ``cutoff``). Tolerance: ``factor`` times the dtype's relative tolerance (sums
    over 8 times more atoms round differently).
    """
    energy, force, stress = _predict(task, data)
    big = _with_graph(supercell(data), _graph_cutoff(task, graph_cutoff))
    energy_s, force_s, stress_s = _predict(task, big)
    n = data.num_nodes
    assert_close_relative(energy_s / (8 * n), energy / n, what="energy per atom",
                          factor=factor, floor=1.0)  # fmt: skip
    for copy in range(8):
        assert_close_relative(force_s[copy * n : (copy + 1) * n], force, factor=factor,
                              what=f"forces on copy {copy} of the supercell")  # fmt: skip
    if stress is not None and stress_s is not None:
        assert_close_relative(stress_s, stress, what="stress", factor=factor)


# -- smoothness ------------------------------------------------------------------------------


def _pair(distance: float, box: float, dtype: torch.dtype, graph_cutoff: float) -> Data:
    """Two atoms (Cu, Au) ``distance`` apart along a skewed direction in a big cubic box."""
    direction = torch.tensor([0.6, 0.48, 0.64], dtype=torch.float64)
    direction = direction / direction.norm()
    centre = torch.full((3,), box / 2, dtype=torch.float64)
    pos = torch.stack([centre - 0.5 * distance * direction, centre + 0.5 * distance * direction])
    data = Data(
        pos=pos.to(dtype),
        atomic_numbers=torch.tensor([29, 79]),
        natoms=torch.tensor([2]),
        cell=(box * torch.eye(3, dtype=dtype)).unsqueeze(0),
        pbc=torch.ones(1, 3, dtype=torch.bool),
    )
    graph: Data = PeriodicRadiusGraph(graph_cutoff)(data)
    return graph


def assert_smooth_at_cutoff(
    task: ForceRegressionTask,
    cutoff: float,
    *,
    graph_cutoff: float | None = None,
    jump_tolerance: float = 1e-6,
) -> None:
    """Energy continuous as an atom crosses ``cutoff``; edges beyond it contribute nothing.

    Two atoms in a periodic box large enough that no image is within the graph cutoff
    (default ``cutoff + 1``, so edges longer than ``cutoff`` are in the graph). Checks:

    1. the pair interacts inside the cutoff (else the check proves nothing);
    2. beyond the cutoff, energy equals that of the same atoms without any edge, forces vanish;
    3. the gap ``|E(cutoff - h) - E(beyond)|`` shrinks as ``h`` shrinks, and is below
       ``jump_tolerance`` for ``h = 1e-5`` Å: no jump at the crossing;
    4. on a fine scan across the cutoff, consecutive energy differences are bounded by the
       step times the largest force nearby (no hidden steps).

    Use a float64 task: float32 rounding of energies (about 1e-7 relative) limits what a
    jump test can see.
    """
    graph_cutoff = cutoff + 1.0 if graph_cutoff is None else graph_cutoff
    dtype = next(task.parameters()).dtype
    box = 2.0 * graph_cutoff + 4.0

    def energy_force(distance: float, with_edges: bool = True) -> tuple[float, float]:
        data = _pair(distance, box, dtype, graph_cutoff)
        if not with_edges:
            data.edge_index = data.edge_index[:, :0]
            data.cell_offsets = data.cell_offsets[:0]
        energy, force, _ = _predict(task, data)
        return float(energy[0]), float(force.abs().max())

    isolated, _ = energy_force(cutoff + 0.5, with_edges=False)
    scale = max(abs(isolated), 1.0)
    inside, _ = energy_force(0.6 * cutoff)
    assert abs(inside - isolated) > 1e3 * jump_tolerance, (
        f"the pair does not interact at {0.6 * cutoff:.2f} Å < cutoff: energy {inside} equals "
        f"the isolated atoms' {isolated}; the smoothness check would prove nothing"
    )
    for distance in (cutoff + 1e-6, cutoff + 1e-3, cutoff + 0.3, graph_cutoff - 1e-3):
        energy, force = energy_force(distance)
        assert abs(energy - isolated) <= 10 * tolerance(dtype) * scale, (
            f"an edge of {distance} Å beyond the cutoff {cutoff} changes the energy: "
            f"{energy} != {isolated} without it"
        )
        assert force <= 10 * tolerance(dtype) * scale, (
            f"an edge of {distance} Å beyond the cutoff {cutoff} gives a force {force}"
        )
    gaps = [abs(energy_force(cutoff - h)[0] - isolated) for h in (1e-1, 1e-2, 1e-3)]
    noise = 10 * tolerance(dtype) * scale
    for (wide, narrow), h in zip(itertools.pairwise(gaps), (1e-2, 1e-3), strict=True):
        assert narrow <= 0.5 * wide + noise, (
            f"energy gap to the cutoff does not shrink with the step: {gaps} at h = 1e-1, "
            f"1e-2, 1e-3 Å (failed at h = {h})"
        )
    jump = abs(energy_force(cutoff - 1e-5)[0] - energy_force(cutoff + 1e-5)[0])
    assert jump <= jump_tolerance, f"energy jumps by {jump} across the cutoff {cutoff}"
    step = 2e-3
    scan = [energy_force(cutoff + step * k) for k in range(-10, 11)]
    for (e0, f0), (e1, f1) in itertools.pairwise(scan):
        bound = 1.5 * step * max(f0, f1) + noise
        assert abs(e1 - e0) <= bound, (
            f"energy step {abs(e1 - e0)} over {step} Å near the cutoff exceeds {bound} "
            "(step times the force)"
        )


# -- learning --------------------------------------------------------------------------------


def fit_emt_forces(
    encoder_class: str | type[nn.Module],
    encoder_kwargs: Mapping[str, Any],
    epochs: int = 10,
    *,
    cutoff: float | None = None,
    lr: float = 3e-3,
    force_weight: float = 10.0,
    batch_size: int = 8,
    seed: int = 0,
    output_kwargs: Mapping[str, Any] | None = None,
) -> tuple[float, float]:
    """Train a ForceRegressionTask on the bundled EMT data (CPU) and test its forces.

    The graph cutoff is ``cutoff`` or ``encoder_kwargs["cutoff"]``. Normalizers (reference
    energies, force scale) are fitted on the training data first.

    Returns
    -------
    tuple[float, float]
        Test force MAE of the trained task and of the zero-force predictor, in eV/Å.
    """
    from matsci.data import AtomsDataModule
    from matsci.data.examples import bundled_dataset_path

    graph_cutoff = float(cutoff if cutoff is not None else encoder_kwargs["cutoff"])
    pl.seed_everything(seed, verbose=False)
    data = AtomsDataModule(
        bundled_dataset_path("emt"), keys=["energy", "force"],
        transform=PeriodicRadiusGraph(graph_cutoff), batch_size=batch_size, seed=seed,
    )  # fmt: skip
    data.setup("fit")
    task = ForceRegressionTask(
        encoder_class=encoder_class, encoder_kwargs=dict(encoder_kwargs), lr=lr,
        output_kwargs=dict(output_kwargs or {"hidden_dim": 32}),
        task_loss_scaling={"energy": 1.0, "force": force_weight},
    )  # fmt: skip
    task.fit_normalizers(data.train_dataloader())
    quiet_trainer(max_epochs=epochs).fit(task, datamodule=data)
    metrics = quiet_trainer().test(task, datamodule=data, verbose=False)[0]
    forces = torch.cat([batch.force for batch in data.test_dataloader()])
    return float(metrics["test/force/mae"]), float(forces.abs().mean())


# -- cost ------------------------------------------------------------------------------------


def seconds_per_structure(
    encoder: nn.Module, batch: Batch, *, repeats: int = 5, warmup: int = 1
) -> float:
    """Median wall time of energy + forces per structure (CPU or the batch's device), seconds."""
    task = energy_model(encoder, batch.pos.dtype, compute_stress=False)
    task = task.to(batch.pos.device)
    times = []
    for run in range(warmup + repeats):
        if batch.pos.is_cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        task.energy_and_derivatives(batch, keep_graph=False)
        if batch.pos.is_cuda:
            torch.cuda.synchronize()
        if run >= warmup:
            times.append(time.perf_counter() - start)
    times.sort()
    return times[len(times) // 2] / int(batch.num_graphs)


__all__ = [
    "ELEMENTS",
    "assert_invariant_energy_equivariant_forces",
    "assert_smooth_at_cutoff",
    "assert_supercell_consistency",
    "energy_force_stress",
    "energy_model",
    "fit_emt_forces",
    "random_periodic_structure",
    "seconds_per_structure",
    "supercell",
]
