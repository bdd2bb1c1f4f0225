"""Checks that every encoder must pass, reused by the tests of each encoder.

An encoder is any ``nn.Module`` whose ``forward(batch)`` returns
:class:`~matsci.tasks.core.Embeddings`. The physical checks go through a small
:class:`~matsci.tasks.physics.ForceRegressionTask` around the encoder (:func:`energy_model`), so
they test what users get: energies, forces (autograd) and stresses (strain derivative).

Tolerances are relative to the magnitude of the reference values: ``1e-5`` in float32 and
``1e-10`` in float64 (:data:`TOLERANCES`).

Functions
---------
random_periodic_structure
    A random crystal (skewed cell, a few elements of the EMT data) with its radius graph.
energy_model
    A ForceRegressionTask around an encoder, in eval mode and the given dtype.
assert_invariant_energy_equivariant_forces
    Rotations (and inversion), translations, permutations.
assert_supercell_consistency
    A 2x2x2 supercell has the same energy per atom, forces and stress.
assert_smooth_at_cutoff
    Energy continuous as an atom crosses the cutoff; edges beyond it contribute nothing.
assert_compile_matches_eager
    ``torch.compile(dynamic=True)`` gives the outputs (and position gradients) of eager mode.
fit_emt_forces
    Train on the bundled EMT data; returns (test force MAE, zero-force predictor MAE).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping, Sequence
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor, nn
from torch_geometric.data import Batch, Data

from matsci.contract import Embeddings
from matsci.tasks.physics import ForceRegressionTask
from matsci.transforms import PeriodicRadiusGraph

TOLERANCES: dict[torch.dtype, float] = {torch.float32: 1e-5, torch.float64: 1e-10}
"""Relative tolerance of the symmetry checks per dtype."""

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


def _predict(task: ForceRegressionTask, data: Data) -> tuple[Tensor, Tensor, Tensor | None]:
    """Energy [1], forces [N, 3] and stress [1, 3, 3] or ``None`` of one structure."""
    return task.energy_and_derivatives(Batch.from_data_list([data]), keep_graph=False)


def _tolerance(dtype: torch.dtype) -> float:
    return TOLERANCES.get(dtype, 1e-5)


def assert_close_relative(
    actual: Tensor,
    expected: Tensor,
    dtype: torch.dtype,
    what: str,
    *,
    factor: float = 1.0,
    floor: float = 1e-3,
) -> None:
    """``|actual - expected| <= tol(dtype) * factor * max(max|expected|, floor)``, else fail.

    ``floor`` keeps the bound meaningful when the values happen to be small: energies are
    sums of per-atom terms that may cancel, so energy checks use ``floor=1`` (eV).
    """
    assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
    scale = max(float(expected.abs().max()), floor) if expected.numel() else 1.0
    bound = _tolerance(dtype) * factor * scale
    error = float((actual - expected).abs().max()) if expected.numel() else 0.0
    assert error <= bound, f"{what}: max error {error:.3g} > {bound:.3g} (scale {scale:.3g})"


# -- symmetries ------------------------------------------------------------------------------


def random_rotation(seed: int, dtype: torch.dtype = torch.float64) -> Tensor:
    """A random proper rotation [3, 3] (QR of a Gaussian matrix, sign fixed, det +1)."""
    gaussian = torch.randn(3, 3, generator=_generator(seed), dtype=torch.float64)
    q, r = torch.linalg.qr(gaussian)
    q = q * torch.sign(torch.diagonal(r)).unsqueeze(0)
    if torch.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    rotation: Tensor = q.to(dtype)
    return rotation


def assert_invariant_energy_equivariant_forces(
    task: ForceRegressionTask,
    data: Data,
    dtype: torch.dtype,
    *,
    graph_cutoff: float | None = None,
    parity: bool = True,
    seed: int = 0,
) -> None:
    """Energy invariant; forces and stress equivariant under rotations, translations, permutations.

    - rotation ``R`` (and, with ``parity``, the improper ``-R``): ``pos @ R.T``, ``cell @ R.T``,
      same graph; energy unchanged, forces ``F @ R.T``, stress ``R S R.T``;
    - translation by a random vector: all unchanged;
    - permutation of the atoms with the graph rebuilt by ``PeriodicRadiusGraph(graph_cutoff)``
      (default: the encoder's ``cutoff``), so edges come in another order: energy and stress
      unchanged, forces permuted.

    ``data`` is one structure in ``dtype`` with a graph; the task must be in ``dtype`` too.
    """
    energy, force, stress = _predict(task, data)
    generator = _generator(seed)
    rotations = [random_rotation(seed, dtype)]
    if parity:
        rotations.append(-random_rotation(seed + 1, dtype))
    for rotation in rotations:
        name = "rotation" if torch.linalg.det(rotation) > 0 else "rotation with inversion"
        moved = data.clone()
        moved.pos = data.pos @ rotation.T
        moved.cell = data.cell @ rotation.T
        energy_r, force_r, stress_r = _predict(task, moved)
        assert_close_relative(energy_r, energy, dtype, f"energy after {name}", floor=1.0)
        assert_close_relative(force_r, force @ rotation.T, dtype, f"forces after {name}")
        if stress is not None and stress_r is not None:
            expected = rotation @ stress[0] @ rotation.T
            assert_close_relative(stress_r[0], expected, dtype, f"stress after {name}")

    shifted = data.clone()
    shift = 2.0 * torch.rand(3, generator=generator, dtype=torch.float64) - 1.0
    shifted.pos = data.pos + shift.to(dtype)
    energy_t, force_t, stress_t = _predict(task, shifted)
    assert_close_relative(energy_t, energy, dtype, "energy after translation", floor=1.0)
    assert_close_relative(force_t, force, dtype, "forces after translation")
    if stress is not None and stress_t is not None:
        assert_close_relative(stress_t, stress, dtype, "stress after translation")

    order = torch.randperm(data.num_nodes, generator=generator)
    permuted = Data(
        **{key: value[order] if key in ("pos", "atomic_numbers") else value
           for key, value in data.items() if key not in ("edge_index", "cell_offsets")}
    )  # fmt: skip
    permuted = _with_graph(permuted, _graph_cutoff(task, graph_cutoff))
    energy_p, force_p, stress_p = _predict(task, permuted)
    assert_close_relative(energy_p, energy, dtype, "energy after permutation", floor=1.0)
    assert_close_relative(force_p, force[order], dtype, "forces after permutation")
    if stress is not None and stress_p is not None:
        assert_close_relative(stress_p, stress, dtype, "stress after permutation")


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
    dtype = data.pos.dtype
    energy, force, stress = _predict(task, data)
    big = _with_graph(supercell(data), _graph_cutoff(task, graph_cutoff))
    energy_s, force_s, stress_s = _predict(task, big)
    n = data.num_nodes
    assert_close_relative(energy_s / (8 * n), energy / n, dtype, "energy per atom",
                          factor=factor, floor=1.0)  # fmt: skip
    for copy in range(8):
        assert_close_relative(force_s[copy * n : (copy + 1) * n], force, dtype,
                              f"forces on copy {copy} of the supercell", factor=factor)  # fmt: skip
    if stress is not None and stress_s is not None:
        assert_close_relative(stress_s, stress, dtype, "stress", factor=factor)


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
        assert abs(energy - isolated) <= 10 * _tolerance(dtype) * scale, (
            f"an edge of {distance} Å beyond the cutoff {cutoff} changes the energy: "
            f"{energy} != {isolated} without it"
        )
        assert force <= 10 * _tolerance(dtype) * scale, (
            f"an edge of {distance} Å beyond the cutoff {cutoff} gives a force {force}"
        )
    gaps = [abs(energy_force(cutoff - h)[0] - isolated) for h in (1e-1, 1e-2, 1e-3)]
    noise = 10 * _tolerance(dtype) * scale
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


# -- compilation -----------------------------------------------------------------------------


def assert_compile_matches_eager(
    encoder: nn.Module,
    batch: Batch,
    *,
    other_batch: Batch | None = None,
    check_gradients: bool = True,
    allow_recompile: bool = False,
    factor: float = 10.0,
) -> None:
    """``torch.compile(encoder, dynamic=True)`` gives eager's embeddings and position gradients.

    Runs on ``batch`` and, if given, on ``other_batch``: another number of structures, atoms
    and edges, which must reuse the compiled graph (unless ``allow_recompile``). Pick sizes
    other than 2 and 3 for the number of structures: dynamic shapes "duck-size" dimensions of
    equal value, so ``cell`` [3, 3, 3] would be specialized. Gradients are those of the summed
    embeddings with respect to ``pos`` (what forces are made of). Tolerance: ``factor`` times
    the dtype's relative tolerance (compiled kernels fuse and reorder sums).
    """
    compiled = torch.compile(encoder, dynamic=True)
    for index, current in enumerate([batch] if other_batch is None else [batch, other_batch]):
        dtype = current.pos.dtype
        eager_out, eager_grad = _embed(encoder, current, check_gradients)
        recompile_ok = index == 0 or allow_recompile
        with torch.compiler.set_stance("default" if recompile_ok else "fail_on_recompile"):
            compiled_out, compiled_grad = _embed(compiled, current, check_gradients)
        for name in ("point_embedding", "system_embedding"):
            expected, actual = getattr(eager_out, name), getattr(compiled_out, name)
            assert (expected is None) == (actual is None), name
            if expected is not None:
                assert_close_relative(actual, expected, dtype, f"compiled {name}", factor=factor)
        if eager_grad is not None and compiled_grad is not None:
            assert_close_relative(compiled_grad, eager_grad, dtype, "compiled d(sum)/d(pos)",
                                  factor=factor)  # fmt: skip


def _embed(module: Any, batch: Batch, gradients: bool) -> tuple[Embeddings, Tensor | None]:
    work = batch.clone()
    work.pos = batch.pos.detach().clone().requires_grad_(gradients)
    out: Embeddings = module(work)
    if not gradients:
        return out, None
    total = sum(
        (t.sum() for t in (out.point_embedding, out.system_embedding) if t is not None),
        torch.zeros((), dtype=work.pos.dtype),
    )
    (grad,) = torch.autograd.grad(total, work.pos)
    return Embeddings(
        point_embedding=None if out.point_embedding is None else out.point_embedding.detach(),
        system_embedding=None if out.system_embedding is None else out.system_embedding.detach(),
    ), grad


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
    _trainer(max_epochs=epochs).fit(task, datamodule=data)
    metrics = _trainer().test(task, datamodule=data, verbose=False)[0]
    forces = torch.cat([batch.force for batch in data.test_dataloader()])
    return float(metrics["test/force/mae"]), float(forces.abs().mean())


def _trainer(**kwargs: Any) -> pl.Trainer:
    options: dict[str, Any] = {
        "accelerator": "cpu", "max_epochs": 1, "logger": False, "enable_checkpointing": False,
        "enable_progress_bar": False, "enable_model_summary": False,
    }  # fmt: skip
    options.update(kwargs)
    return pl.Trainer(**options)


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
    "TOLERANCES",
    "assert_close_relative",
    "assert_compile_matches_eager",
    "assert_invariant_energy_equivariant_forces",
    "assert_smooth_at_cutoff",
    "assert_supercell_consistency",
    "energy_model",
    "fit_emt_forces",
    "random_periodic_structure",
    "random_rotation",
    "seconds_per_structure",
    "supercell",
]
