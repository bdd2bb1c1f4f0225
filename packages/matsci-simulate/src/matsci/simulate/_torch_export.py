"""Export a trained force field as a ``torch.export`` program (energy, forces, stress)."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.fx.experimental.proxy_tensor import make_fx

from matsci.simulate._atom_energies import (
    AtomEnergies,
    ExportedTask,
    check_on_other_graphs,
    exported_force_task,
)
from matsci.simulate._direct_forces import AtomForces
from matsci.tasks.physics import ForceRegressionTask, GradFreeForceRegression, KnownElements

__all__ = ["export_program"]

_OWNER = "export_program"

_METADATA_FILE = "matsci.json"
"""Name of the extra file in the program that describes the model (JSON)."""


class _Outputs(nn.Module):
    r"""What the program computes for one structure from its full neighbour list.

    From per-atom energies (:class:`AtomEnergies`): energy, forces and stress. The forces and
    the virial come from one gradient, with respect to the edge vectors
    :math:`\mathbf{r}_{ij} = \mathbf{x}_j - \mathbf{x}_i + \mathbf{s}_{ij}`:
    :math:`\mathbf{F}_k = \sum_{i=k} \mathbf{g}_{ij} - \sum_{j=k} \mathbf{g}_{ij}` and
    :math:`\sigma = \operatorname{sym}(\sum_{ij} \mathbf{r}_{ij} \otimes \mathbf{g}_{ij}) / V`
    with :math:`\mathbf{g}_{ij} = \partial E / \partial \mathbf{r}_{ij}`, the same numbers
    as the strain derivative of :class:`~matsci.tasks.physics.ForceRegressionTask`.

    From direct forces (:class:`AtomForces`): ``(forces,)``; the cell is not read.
    """

    def __init__(self, model: AtomEnergies | AtomForces) -> None:
        super().__init__()
        self.model = model
        self.conservative = isinstance(model, AtomEnergies)

    def forward(
        self,
        positions: Tensor,
        numbers: Tensor,
        edge_index: Tensor,
        edge_shifts: Tensor,
        cell: Tensor,
    ) -> tuple[Tensor, ...]:
        source, target = edge_index[0], edge_index[1]
        vectors = positions[target] - positions[source] + edge_shifts  # [E, 3]
        if not self.conservative:
            return (self.model(vectors, numbers, edge_index),)  # [N, 3]
        with torch.enable_grad():
            vectors = vectors.detach().requires_grad_(True)
            energy = self.model(vectors, numbers, edge_index).sum()  # []
            (gradient,) = torch.autograd.grad(energy, [vectors])  # [E, 3]
        forces = torch.zeros_like(positions).index_add(0, source, gradient)
        forces = forces.index_add(0, target, -gradient)  # [N, 3]
        virial = vectors.detach().transpose(0, 1) @ gradient  # [3, 3]
        volume = torch.linalg.det(cell).abs()  # []
        stress = 0.5 * (virial + virial.transpose(0, 1)) / volume
        stress = torch.where(volume > 0, stress, torch.full_like(stress, float("nan")))
        return energy.detach(), forces, stress


class _Program(nn.Module):
    """A traced function of (weights, inputs), with the weights held as buffers."""

    def __init__(self, traced: nn.Module, state: dict[str, Tensor]) -> None:
        super().__init__()
        self.traced = traced
        self.names = list(state)
        for index, tensor in enumerate(state.values()):
            self.register_buffer(f"weight_{index}", tensor.detach().clone())

    def forward(
        self,
        positions: Tensor,
        numbers: Tensor,
        edge_index: Tensor,
        edge_shifts: Tensor,
        cell: Tensor,
    ) -> tuple[Tensor, ...]:
        state = {name: self.get_buffer(f"weight_{i}") for i, name in enumerate(self.names)}
        result: tuple[Tensor, ...] = self.traced(
            state, positions, numbers, edge_index, edge_shifts, cell
        )
        return result


def _example(
    num_atoms: int, num_edges: int, numbers: list[int], cutoff: float, dtype: torch.dtype, seed: int
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """A random structure with ``num_edges`` edges (vectors within ``cutoff``) for tracing."""
    generator = torch.Generator().manual_seed(seed)
    pick = torch.randint(len(numbers), (num_atoms,), generator=generator)
    types = torch.tensor(numbers, dtype=torch.long)[pick]
    pairs = torch.randint(num_atoms, (2, num_edges), generator=generator)
    positions = 3.0 * torch.rand(num_atoms, 3, generator=generator, dtype=torch.float64)
    directions = torch.randn(num_edges, 3, generator=generator, dtype=torch.float64)
    lengths = 0.5 + (cutoff - 0.6) * torch.rand(num_edges, 1, generator=generator)
    vectors = directions / directions.norm(dim=-1, keepdim=True) * lengths
    shifts = vectors - (positions[pairs[1]] - positions[pairs[0]])
    cell = torch.diag(torch.tensor([5.0, 6.0, 7.0], dtype=torch.float64))
    return positions.to(dtype), types, pairs, shifts.to(dtype), cell.to(dtype)


def _export(
    module: _Outputs,
    encoder: str,
    numbers: list[int],
    cutoff: float,
    dtype: torch.dtype,
) -> torch.export.ExportedProgram:
    """Trace the outputs (and derivatives) into one graph, export it, check it on other sizes."""
    # Tracing leaves fake tensors in the traced module's weights: trace a copy, keep the
    # original to check the program against.
    copied = copy.deepcopy(module)
    state = {**dict(copied.named_parameters()), **dict(copied.named_buffers())}

    def function(
        weights: dict[str, Tensor],
        positions: Tensor,
        numbers: Tensor,
        edge_index: Tensor,
        edge_shifts: Tensor,
        cell: Tensor,
    ) -> tuple[Tensor, ...]:
        inputs = (positions, numbers, edge_index, edge_shifts, cell)
        result: tuple[Tensor, ...] = torch.func.functional_call(copied, weights, inputs)
        return result

    example = _example(5, 23, numbers, cutoff, dtype, seed=0)
    atoms, edges = torch.export.Dim("atoms", min=1), torch.export.Dim("edges", min=1)
    shapes = ({0: atoms}, {0: atoms}, {1: edges}, {0: edges}, None)
    try:
        # torch.export cannot trace torch.autograd.grad itself; make_fx records the backward
        # pass as ordinary ATen operators, and that graph is exported with dynamic sizes.
        traced = make_fx(function, tracing_mode="symbolic")(state, *example)
        program = torch.export.export(
            _Program(traced, state).eval(), example, dynamic_shapes=shapes, strict=False
        )
    except Exception as error:
        raise ValueError(
            f"{_OWNER}: the encoder {encoder} cannot be exported with torch.export "
            f"({type(error).__name__}: {error})"
        ) from error
    check_on_other_graphs(
        module,
        program.module(),
        [
            (atoms, _example(atoms, edges, numbers, cutoff, dtype, seed))
            for seed, (atoms, edges) in ((1, (2, 3)), (2, (11, 61)))
        ],
        dtype,
        failure=f"{_OWNER}: the exported encoder {encoder} is wrong on a graph of another size",
    )
    return program


def export_program(
    checkpoint_or_task: str | os.PathLike[str] | ForceRegressionTask | GradFreeForceRegression,
    path: str | os.PathLike[str],
    *,
    dtype: torch.dtype = torch.float32,
    task: str | int | None = None,
    cutoff: float | None = None,
) -> Path:
    r"""Write a trained force field as a ``torch.export`` program (energy, forces, stress).

    A direct-force model (:class:`~matsci.tasks.physics.GradFreeForceRegression`) is written
    as a program of its forces alone; see below.

    The file (:func:`torch.export.save`, conventionally ``*.pt2``) runs with PyTorch alone:
    ``torch.export.load(path).module()`` needs neither matsci nor PyTorch Geometric nor
    Lightning. It computes, for one structure with N atoms and E edges (both any size, without
    re-exporting), the energy of a :class:`~matsci.tasks.physics.ForceRegressionTask`,
    :math:`E = \sum_i (s\,\varepsilon_i + \mu + E^{\mathrm{ref}}_{Z_i})`, and its derivatives:

    ``module(positions, atomic_numbers, edge_index, edge_shifts, cell)``
    ``-> (energy, forces, stress)``

    - ``positions`` [N, 3] (Å) and ``edge_shifts`` [E, 3] (Å), in ``dtype``;
    - ``atomic_numbers`` [N] and ``edge_index`` [2, E], ``torch.int64``: the full neighbour
      list within the cutoff (both ``i -> j`` and ``j -> i``), with
      :math:`\mathbf{r}_{ij} = \mathbf{x}_j - \mathbf{x}_i + \mathbf{s}_{ij}` for
      ``i, j = edge_index`` and ``s = edge_shifts`` (the image shift ``S @ cell`` for integer
      image offsets ``S``, as in :func:`~matsci.transforms.edge_vectors`);
    - ``cell`` [3, 3] (Å, lattice vectors as rows), read only for the volume of the stress;
      give zeros for a molecule;
    - ``energy`` [] (eV), ``forces`` [N, 3] (eV/Å, :math:`-\partial E/\partial \mathbf{x}`),
      ``stress`` [3, 3] (eV/Å³, ASE's sign: :math:`V^{-1}\,\partial E/\partial\varepsilon`,
      positive under tension). The stress is NaN when the cell has zero volume (a molecule).

    Several structures can be evaluated at once as one disjoint graph (atoms and edges
    concatenated, ``edge_index`` offset): the forces are those of each structure and the
    energy is their sum; the stress is then meaningless. The program runs on the CPU and
    computes the derivatives with backward operators recorded in the graph, so it works
    under :func:`torch.no_grad` and :func:`torch.inference_mode` too. The neighbour list
    must hold every neighbour within the cutoff (the model's ``cutoff``, from the
    checkpoint), including periodic images of an atom itself. AOTInductor packaging
    (compiled ``.pt2`` packages) is left out: its API is private to ``torch._inductor``.

    A :class:`~matsci.tasks.physics.GradFreeForceRegression` has no energy: its program takes
    the same five inputs and returns a tuple of one tensor, ``(forces,)`` [N, 3] (eV/Å, the
    forces its vector head predicts, as ``task.predict(batch)["force"]``; ``cell`` is not
    read). The record stored in the file (``matsci.json``, an extra file of
    :func:`torch.export.save`) names the outputs in order: ``"outputs": ["forces"]`` here,
    ``["energy", "forces", "stress"]`` for an energy model.

    A helper that builds the inputs of an ASE structure with ``ase.neighborlist`` (vesin's
    ``NeighborList(cutoff=..., full_list=True).compute(points, box, periodic, "ijS")``
    gives the same arrays)::

        import numpy as np
        import torch
        from ase.neighborlist import neighbor_list

        def program_inputs(atoms, cutoff, dtype=torch.float32):
            i, j, shifts = neighbor_list("ijS", atoms, cutoff)  # full list, every image
            cell = atoms.cell.array if atoms.cell.rank == 3 else np.zeros((3, 3))
            return (
                torch.tensor(atoms.positions, dtype=dtype),
                torch.tensor(atoms.numbers, dtype=torch.int64),
                torch.tensor(np.stack([i, j]), dtype=torch.int64),
                torch.tensor(shifts @ atoms.cell.array, dtype=dtype),
                torch.tensor(cell, dtype=dtype),
            )

        model = torch.export.load("model.pt2").module()
        energy, forces, stress = model(*program_inputs(atoms, cutoff=4.0))

    Parameters
    ----------
    checkpoint_or_task
        A Lightning checkpoint (read with :func:`~matsci.training.load_model`) or a
        :class:`~matsci.tasks.physics.ForceRegressionTask` or
        :class:`~matsci.tasks.physics.GradFreeForceRegression`.
    path
        The file to write (conventionally ``*.pt2``).
    dtype
        ``torch.float32`` or ``torch.float64``: the floating type of the weights and of the
        program's floating inputs and outputs.
    task
        For a multi-task checkpoint, the force task's name or index.
    cutoff
        The neighbour-list cutoff in Å the model expects; by default the one recorded in the
        checkpoint, else the encoder's ``cutoff``. Only checked here; the caller builds the
        neighbour list.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    ValueError
        If the checkpoint's task is neither a ``ForceRegressionTask`` nor a
        ``GradFreeForceRegression``, no cutoff is known, the checkpoint's graph keeps only
        ``max_neighbors`` neighbours, ``dtype`` is not float32/float64, or the encoder cannot
        be exported (the message gives PyTorch's reason) or its export is wrong on a graph of
        another size.
    TypeError
        If ``checkpoint_or_task`` is another task object.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> import torch
    >>> from matsci.encoders import SchNetEncoder
    >>> from matsci.simulate import export_program
    >>> from matsci.tasks.physics import ForceRegressionTask
    >>> task = ForceRegressionTask(
    ...     encoder=SchNetEncoder(hidden_channels=8, num_filters=8, num_interactions=1,
    ...                           num_gaussians=8, cutoff=3.0),
    ...     reference_energies={29: -0.5},
    ... )
    >>> path = export_program(task, Path(tempfile.mkdtemp()) / "cu.pt2")
    >>> model = torch.export.load(path).module()
    >>> positions = torch.tensor([[0.0, 0.0, 0.0], [2.5, 0.0, 0.0]])
    >>> edge_index = torch.tensor([[0, 1], [1, 0]])
    >>> energy, forces, stress = model(
    ...     positions, torch.tensor([29, 29]), edge_index, torch.zeros(2, 3), torch.zeros(3, 3)
    ... )
    >>> energy.shape, forces.shape, bool(torch.allclose(forces[0], -forces[1]))
    (torch.Size([]), torch.Size([2, 3]), True)
    """
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"{_OWNER}(dtype={dtype}): expected torch.float32 or torch.float64")
    force_task, cutoff = exported_force_task(checkpoint_or_task, task, cutoff, owner=_OWNER)
    force_task = copy.deepcopy(force_task).to(device="cpu", dtype=dtype).eval()
    for parameter in force_task.parameters():
        parameter.requires_grad_(False)
    known = KnownElements.of(force_task, None, owner=_OWNER).numbers
    numbers = sorted(known) if known else [1, 6, 8]
    module = _program_module(force_task)
    encoder = type(force_task.encoder).__name__
    program = _export(module, encoder, numbers, cutoff, dtype)
    conservative = isinstance(force_task, ForceRegressionTask)
    metadata = {
        "cutoff": cutoff,
        "dtype": str(dtype).removeprefix("torch."),
        "atomic_numbers": sorted(known) if known else None,
        "inputs": ["positions", "atomic_numbers", "edge_index", "edge_shifts", "cell"],
        "outputs": ["energy", "forces", "stress"] if conservative else ["forces"],
        "units": {"length": "Angstrom", "energy": "eV"},
        "encoder": encoder,
    }
    target = Path(path)
    torch.export.save(
        program, os.fspath(target), extra_files={_METADATA_FILE: json.dumps(metadata)}
    )
    return target


def _program_module(task: ExportedTask) -> _Outputs:
    """What the program computes: energy and its derivatives, or the task's direct forces."""
    if isinstance(task, ForceRegressionTask):
        return _Outputs(AtomEnergies(task)).eval()
    return _Outputs(AtomForces(task)).eval()
