"""Export a trained force field as a metatomic ``AtomisticModel`` (one TorchScript file).

An energy model (:class:`~matsci.tasks.physics.ForceRegressionTask`) gives metatomic's
``energy`` output; a direct-force model (:class:`~matsci.tasks.physics.GradFreeForceRegression`)
gives its ``non_conservative_force`` output and no energy.
"""

import copy
import os
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple  # noqa: UP035 (TorchScript)

import torch
from torch import Tensor, nn

from matsci.simulate._atom_energies import (
    AtomEnergies,
    check_on_other_graphs,
    exported_force_task,
)
from matsci.simulate._direct_forces import AtomForces, direct_force_elements
from matsci.tasks.physics import ForceRegressionTask, GradFreeForceRegression, KnownElements

__all__ = ["export_metatomic"]

_DTYPES = {torch.float32: "float32", torch.float64: "float64"}

FORCE_OUTPUT = "non_conservative_force"
"""metatomic's standard output of forces that are not an energy gradient (metatomic-torch 0.1;
``non_conservative_forces`` is its deprecated spelling)."""


@contextmanager
def _builtin_index_select() -> Iterator[None]:
    """TorchScript can compile ``torch.index_select`` while this context is active.

    PyTorch Geometric (2.8) replaces ``torch.index_select`` with a Python function for its
    ``HashTensor``, which TorchScript cannot compile; metatensor's operations, scripted when
    ``metatomic.torch`` is first imported, call it. Inside this context the name refers to
    the ATen operator again (``torch.ops.aten.index_select``, the same kernel).
    """
    replaced = torch.index_select
    torch.index_select = torch.ops.aten.index_select
    try:
        yield
    finally:
        torch.index_select = replaced


# TorchScript resolves the annotations of the exported module from these module globals.
try:
    with _builtin_index_select():
        from metatensor.torch import Labels, TensorBlock, TensorMap  # type: ignore[import-untyped]
        from metatomic.torch import (  # type: ignore[import-untyped]
            AtomisticModel,
            ModelCapabilities,
            ModelMetadata,
            ModelOutput,
            NeighborListOptions,
            System,
        )
except ImportError as error:  # pragma: no cover - the extra is missing
    _MISSING: ImportError | None = error
else:
    _MISSING = None


def _flatten_systems(
    systems: List[System],  # noqa: UP006
    options: NeighborListOptions,
) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:  # noqa: UP006
    """All systems as one graph (scripted with the ``forward`` that calls it).

    Edge vectors [E, 3], atomic numbers [N], edges [2, E], and each atom's system and index
    within it [N].
    """
    device = systems[0].positions.device
    vectors: List[Tensor] = []  # noqa: UP006
    numbers: List[Tensor] = []  # noqa: UP006
    pairs: List[Tensor] = []  # noqa: UP006
    system_index: List[Tensor] = []  # noqa: UP006
    atom_index: List[Tensor] = []  # noqa: UP006
    start = 0
    for i, system in enumerate(systems):
        neighbors = system.get_neighbor_list(options)
        samples = neighbors.samples.values  # [E, 5]: first, second, shift a, b, c
        vectors.append(neighbors.values.reshape(-1, 3))
        pairs.append(samples[:, :2].T.to(torch.long) + start)
        count = system.types.shape[0]
        numbers.append(system.types.to(torch.long))
        system_index.append(torch.full((count,), i, dtype=torch.long, device=device))
        atom_index.append(torch.arange(count, dtype=torch.long, device=device))
        start += count
    return (torch.cat(vectors), torch.cat(numbers), torch.cat(pairs, dim=1),
            torch.cat(system_index), torch.cat(atom_index))  # fmt: skip


def _selected(selected_atoms: Labels, structure: Tensor, num_systems: int) -> Tensor:
    """Boolean mask [N] of the atoms that ``selected_atoms`` (rows: system, atom) names."""
    device = structure.device
    wanted = torch.zeros(structure.shape[0], dtype=torch.bool, device=device)
    chosen = selected_atoms.values.to(torch.long)  # [M, 2]: system, atom
    first = torch.zeros(num_systems + 1, dtype=torch.long, device=device)
    first[1:] = torch.bincount(structure, minlength=num_systems).cumsum(0)
    wanted[first[chosen[:, 0]] + chosen[:, 1]] = True
    return wanted


class _MetatomicForceField(nn.Module):
    """The module that metatomic runs: systems in, ``energy`` TensorMap out."""

    def __init__(self, atom_energies: nn.Module, neighbors: NeighborListOptions) -> None:
        super().__init__()
        self.atom_energies = atom_energies
        self.neighbors = neighbors

    def requested_neighbor_lists(self) -> List[NeighborListOptions]:  # noqa: UP006
        return [self.neighbors]

    def forward(
        self,
        systems: List[System],  # noqa: UP006
        outputs: Dict[str, ModelOutput],  # noqa: UP006
        selected_atoms: Optional[Labels] = None,  # noqa: UP045
    ) -> Dict[str, TensorMap]:  # noqa: UP006
        results: Dict[str, TensorMap] = {}  # noqa: UP006
        if "energy" not in outputs:
            return results
        device = systems[0].positions.device
        vectors, numbers, pairs, structure, atom = _flatten_systems(systems, self.neighbors)
        atoms = self.atom_energies(vectors, numbers, pairs)  # [N]
        if selected_atoms is not None:
            wanted = _selected(selected_atoms, structure, len(systems))
            atoms, structure, atom = atoms[wanted], structure[wanted], atom[wanted]
        properties = Labels(["energy"], torch.zeros((1, 1), dtype=torch.int32, device=device))
        if outputs["energy"].sample_kind == "atom":
            samples = Labels(
                ["system", "atom"], torch.stack([structure, atom], dim=1).to(torch.int32)
            )
            values = atoms.unsqueeze(-1)  # [N, 1]
        else:
            total = atoms.new_zeros(len(systems)).index_add(0, structure, atoms)  # [B]
            samples = Labels(
                ["system"],
                torch.arange(len(systems), dtype=torch.int32, device=device).unsqueeze(-1),
            )
            values = total.unsqueeze(-1)  # [B, 1]
        block = TensorBlock(values=values, samples=samples, components=[], properties=properties)
        keys_ = Labels(["_"], torch.zeros((1, 1), dtype=torch.int32, device=device))
        results["energy"] = TensorMap(keys_, [block])
        return results


class _MetatomicDirectForces(nn.Module):
    """The module that metatomic runs for a direct-force model: ``non_conservative_force``.

    Per-atom samples ``(system, atom)``, one component ``xyz`` (0, 1, 2) and one property, in
    eV/Å; ``selected_atoms`` keeps those atoms' rows.
    """

    def __init__(self, atom_forces: nn.Module, neighbors: NeighborListOptions) -> None:
        super().__init__()
        self.atom_forces = atom_forces
        self.neighbors = neighbors

    def requested_neighbor_lists(self) -> List[NeighborListOptions]:  # noqa: UP006
        return [self.neighbors]

    def forward(
        self,
        systems: List[System],  # noqa: UP006
        outputs: Dict[str, ModelOutput],  # noqa: UP006
        selected_atoms: Optional[Labels] = None,  # noqa: UP045
    ) -> Dict[str, TensorMap]:  # noqa: UP006
        results: Dict[str, TensorMap] = {}  # noqa: UP006
        if "non_conservative_force" not in outputs:
            return results
        device = systems[0].positions.device
        vectors, numbers, pairs, structure, atom = _flatten_systems(systems, self.neighbors)
        forces = self.atom_forces(vectors, numbers, pairs)  # [N, 3]
        if selected_atoms is not None:
            wanted = _selected(selected_atoms, structure, len(systems))
            forces, structure, atom = forces[wanted], structure[wanted], atom[wanted]
        block = TensorBlock(
            values=forces.unsqueeze(-1),  # [N, 3, 1]
            samples=Labels(
                ["system", "atom"], torch.stack([structure, atom], dim=1).to(torch.int32)
            ),
            components=[
                Labels(["xyz"], torch.arange(3, dtype=torch.int32, device=device).unsqueeze(-1))
            ],
            properties=Labels(
                ["non_conservative_force"], torch.zeros((1, 1), dtype=torch.int32, device=device)
            ),
        )
        keys_ = Labels(["_"], torch.zeros((1, 1), dtype=torch.int32, device=device))
        results["non_conservative_force"] = TensorMap(keys_, [block])
        return results


def _example_graph(
    num_atoms: int, numbers: Sequence[int], cutoff: float, dtype: torch.dtype, seed: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Random edge vectors (inside ``cutoff``), atomic numbers and edges for tracing."""
    generator = torch.Generator().manual_seed(seed)
    pick = torch.randint(len(numbers), (num_atoms,), generator=generator)
    types = torch.tensor(list(numbers), dtype=torch.long)[pick]
    pairs = torch.combinations(torch.arange(num_atoms), 2)  # [P, 2]
    pairs = torch.cat([pairs, pairs.flip(1)]).T.contiguous()  # [2, 2P], a full list
    directions = torch.randn(pairs.shape[1], 3, generator=generator, dtype=torch.float64)
    lengths = 0.5 + (cutoff - 0.6) * torch.rand(pairs.shape[1], 1, generator=generator)
    vectors = directions / directions.norm(dim=-1, keepdim=True) * lengths
    return vectors.to(dtype), types, pairs


def _trace(
    module: AtomEnergies | AtomForces, numbers: Sequence[int], cutoff: float, dtype: torch.dtype
) -> Any:
    """Trace the per-atom energies (or forces) and check the trace on graphs of other sizes."""
    example = _example_graph(5, numbers, cutoff, dtype, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # type: ignore[attr-defined]
        traced = torch.jit.trace(module, example, check_trace=False)  # type: ignore[no-untyped-call]
    check_on_other_graphs(
        module,
        traced,
        [
            (size, _example_graph(size, numbers, cutoff, dtype, seed))
            for seed, size in ((1, 2), (2, 9))
        ],
        dtype,
        failure=f"export_metatomic: the encoder {type(module.encoder).__name__} cannot be traced "
        "for graphs of any size",
    )
    return traced


def export_metatomic(
    checkpoint_or_task: str | os.PathLike[str] | ForceRegressionTask | GradFreeForceRegression,
    path: str | os.PathLike[str],
    *,
    dtype: torch.dtype = torch.float32,
    task: str | int | None = None,
    cutoff: float | None = None,
    atomic_types: Sequence[int] | None = None,
    name: str = "matsci force field",
) -> Path:
    r"""Write a trained force field as a metatomic ``AtomisticModel`` file.

    The file is one TorchScript archive that metatomic's engines load without matsci
    (ASE through ``metatomic_ase.MetatomicCalculator``, torch-sim, i-PI, LAMMPS built with
    metatomic). It computes the energy of :class:`~matsci.tasks.physics.ForceRegressionTask`,
    :math:`E = \sum_i (s\,\varepsilon_i + \mu + E^{\mathrm{ref}}_{Z_i})` in eV, per structure
    or per atom, from the engine's full, strict neighbour list with the model's cutoff; the
    engine takes forces and stress as its derivatives through the neighbour-list distance
    vectors. The encoder and head are traced (:func:`torch.jit.trace`) inside a scripted
    module; the trace is checked on graphs of other sizes before the file is written.

    A direct-force model (:class:`~matsci.tasks.physics.GradFreeForceRegression`) is written
    with metatomic's ``non_conservative_force`` output only, no ``energy``: per atom (samples
    ``system``, ``atom``), one component ``xyz`` and one property, in eV/Å; the forces its
    vector head predicts, as ``task.predict(batch)["force"]``. Engines that need an energy
    refuse such a model: ``metatomic_ase.MetatomicCalculator`` (0.1) raises
    ``PropertyNotImplementedError`` for ``atoms.get_forces()`` even with
    ``non_conservative="forces"``, and ``metatomic_torchsim.MetatomicModel`` (0.1) refuses to
    load it; ``MetatomicCalculator(path).run_model(atoms, {"non_conservative_force":
    ModelOutput(unit="eV/Angstrom", sample_kind="atom")})`` and the ``AtomisticModel`` itself
    give the forces.

    Parameters
    ----------
    checkpoint_or_task
        A Lightning checkpoint (read with :func:`~matsci.training.load_model`) or a
        :class:`~matsci.tasks.physics.ForceRegressionTask` or
        :class:`~matsci.tasks.physics.GradFreeForceRegression`.
    path
        The file to write (conventionally ``*.pt``).
    dtype
        ``torch.float32`` or ``torch.float64``: the model's (and the engine's) floating type.
    task
        For a multi-task checkpoint, the force task's name or index.
    cutoff
        Neighbour-list cutoff in Å; by default the one recorded in the checkpoint, else the
        encoder's ``cutoff``.
    atomic_types
        Atomic numbers the model accepts; by default those with a nonzero reference energy
        (the trained elements), and for a direct-force model (which cannot tell them) every
        element its encoder embeds (``1..max_atomic_number``).
    name
        The model's name in its metadata.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    ValueError
        If the checkpoint's task is neither a ``ForceRegressionTask`` nor a
        ``GradFreeForceRegression``, no cutoff is known, the checkpoint's
        graph keeps only ``max_neighbors`` neighbours (metatomic's lists keep all), ``dtype``
        is not float32/float64, no atomic type is known, or the encoder cannot be traced.
    """
    if dtype not in _DTYPES:
        raise ValueError(f"export_metatomic(dtype={dtype}): expected torch.float32 or float64")
    if _MISSING is not None:
        raise ImportError(
            "export_metatomic needs metatomic-torch: pip install 'matsci-simulate[metatomic]'"
        ) from _MISSING
    force_task, cutoff = exported_force_task(
        checkpoint_or_task, task, cutoff, owner="export_metatomic"
    )
    force_task = copy.deepcopy(force_task).to(device="cpu", dtype=dtype).eval()
    conservative = isinstance(force_task, ForceRegressionTask)
    if isinstance(force_task, GradFreeForceRegression) and atomic_types is None:
        types = direct_force_elements(force_task)
    else:
        known = KnownElements.of(force_task, atomic_types, owner="export_metatomic")
        types = sorted(known.numbers or ())
    if not types:
        raise ValueError(
            "export_metatomic: the task has no nonzero reference energy to tell its elements; "
            "give atomic_types="
        )
    for parameter in force_task.parameters():
        parameter.requires_grad_(False)
    options = NeighborListOptions(cutoff=cutoff, full_list=True, strict=True)
    module: nn.Module
    readout_hops = 0
    if isinstance(force_task, ForceRegressionTask):
        traced = _trace(AtomEnergies(force_task), types, cutoff, dtype)
        module = _MetatomicForceField(traced, options)
        output = ModelOutput(unit="eV", sample_kind="system")
    else:
        forces = AtomForces(force_task)
        # The edge readout reads its neighbours' embeddings: one cutoff further.
        readout_hops = int(forces.edge_readout)
        module = _MetatomicDirectForces(_trace(forces, types, cutoff, dtype), options)
        output = ModelOutput(unit="eV/Angstrom", sample_kind="atom")
    # Message passing: an atom feels atoms up to one cutoff per layer away.
    encoder = force_task.encoder
    layers = int(getattr(encoder, "num_interactions", getattr(encoder, "num_layers", 1)))
    layers += readout_hops
    capabilities = ModelCapabilities(
        outputs={"energy" if conservative else FORCE_OUTPUT: output},
        atomic_types=types,
        interaction_range=cutoff * layers,
        length_unit="Angstrom",
        supported_devices=["cpu"],
        dtype=_DTYPES[dtype],
    )  # fmt: skip
    metadata = ModelMetadata(name=name, description="Exported by matsci.")
    model = AtomisticModel(module.eval(), metadata, capabilities)
    target = Path(path)
    with _builtin_index_select(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.jit.script.*deprecated")
        model.save(os.fspath(target))
    return target
