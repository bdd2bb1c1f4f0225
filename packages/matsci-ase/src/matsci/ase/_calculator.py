# mypy: untyped-calls-exclude=ase
"""An ASE calculator around a trained energy, force and stress model."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from numbers import Integral
from typing import Any

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes
from ase.data import atomic_numbers, chemical_symbols
from ase.stress import full_3x3_to_voigt_6_stress
from torch_geometric.data import Batch, Data

from matsci.ase._checkpoint import load_force_task
from matsci.contract import keys
from matsci.tasks.physics import ForceRegressionTask
from matsci.transforms import PeriodicRadiusGraph

__all__ = ["MatsciCalculator"]


class MatsciCalculator(Calculator):
    r"""ASE calculator of a trained :class:`~matsci.tasks.physics.ForceRegressionTask`.

    Gives ``energy`` and ``free_energy`` (the same number, eV), ``forces`` (eV/Å, the negative
    gradient of the energy) and ``stress`` (eV/Å³, ASE's Voigt order xx, yy, zz, yz, xz, xy and
    sign: :math:`\sigma = V^{-1}\, \partial E / \partial \varepsilon`, positive under tension),
    so ASE's molecular dynamics, optimizers (``BFGS``, ``FIRE``) and cell filters
    (``FrechetCellFilter``, ``ExpCellFilter``) run on the model. Every evaluation builds the
    neighbour graph with :class:`~matsci.transforms.PeriodicRadiusGraph`, as in training, and
    runs the task in eval mode without keeping an autograd graph.

    Periodic crystals, slabs (mixed ``pbc``) and molecules (no cell) are supported. The stress
    needs a task trained with ``compute_stress=True`` and a structure periodic in all three
    directions; otherwise asking for it raises
    :class:`~ase.calculators.calculator.PropertyNotImplementedError`. Energy and forces of
    other structures still work.

    The calculator refuses structures with elements the model never saw. Unless ``elements``
    says otherwise, the known elements are those with a nonzero per-element reference energy:
    :meth:`~matsci.tasks.physics.ForceRegressionTask.fit_normalizers` fits one for every
    element of the training data (a fitted value of exactly 0 eV does not happen in practice)
    and leaves the others at 0. When every reference energy is 0 (references never fitted nor
    given), the calculator cannot tell and accepts every element.

    Use :meth:`from_checkpoint` to load a trained model; :meth:`calculate_many` evaluates many
    structures in batches, much faster per structure than one call each.

    Parameters
    ----------
    task
        The trained task. It is moved to ``device`` and ``dtype`` and put in eval mode.
    cutoff
        Cutoff (Å) of the neighbour graph; by default the encoder's ``cutoff`` attribute (as
        :class:`~matsci.encoders.SchNetEncoder` has). Use the training graph's cutoff.
    max_neighbors
        Neighbours kept per atom, as in training (``None``: all within the cutoff).
    device
        Where the model runs (``"cpu"``, ``"cuda"``, ...); ``None`` leaves the task where it is.
    dtype
        Floating-point type of the model and inputs (``torch.float64`` for tight finite
        differences); ``None`` keeps the task's.
    elements
        Chemical symbols or atomic numbers the model may be used on; by default the elements
        with a nonzero reference energy (see above).

    Raises
    ------
    TypeError
        If ``task`` is not a ``ForceRegressionTask``.
    ValueError
        If no cutoff is given and the encoder has none, the graph settings are invalid,
        ``dtype`` is not a floating-point type or ``elements`` holds an unknown element.

    Examples
    --------
    >>> import torch
    >>> from ase.build import bulk
    >>> from matsci.encoders import SchNetEncoder
    >>> from matsci.tasks.physics import ForceRegressionTask
    >>> task = ForceRegressionTask(
    ...     encoder=SchNetEncoder(hidden_channels=8, num_filters=8, num_interactions=1,
    ...                           num_gaussians=8, cutoff=3.0),
    ...     compute_stress=True, reference_energies={29: -0.5},
    ... )
    >>> atoms = bulk("Cu", "fcc", a=3.6) * (2, 2, 2)
    >>> atoms.calc = MatsciCalculator(task, dtype=torch.float64)
    >>> atoms.calc
    MatsciCalculator(cutoff=3.0, max_neighbors=None, ..., dtype=torch.float64, elements=['Cu'])
    >>> atoms.get_forces().shape, atoms.get_stress().shape
    ((8, 3), (6,))
    >>> atoms[0].symbol = "Au"
    >>> atoms.get_potential_energy()
    Traceback (most recent call last):
    ...
    ValueError: MatsciCalculator: structure AuCu7 has element ['Au'] the model was not ...
    """

    implemented_properties: list[str] = ["energy", "free_energy", "forces", "stress"]  # noqa: RUF012

    def __init__(
        self,
        task: ForceRegressionTask,
        *,
        cutoff: float | None = None,
        max_neighbors: int | None = None,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        elements: Iterable[str | int] | None = None,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        if not isinstance(task, ForceRegressionTask):
            raise TypeError(
                f"MatsciCalculator(task={type(task).__name__}): expected a ForceRegressionTask"
            )
        if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise ValueError(
                f"MatsciCalculator(dtype={dtype!r}): expected a floating-point torch.dtype such "
                "as torch.float32 or torch.float64"
            )
        if cutoff is None:
            cutoff = getattr(task.encoder, "cutoff", None)
            if cutoff is None:
                raise ValueError(
                    f"MatsciCalculator: give cutoff= (the neighbour graph's cutoff in training); "
                    f"the encoder {type(task.encoder).__name__} has no 'cutoff' attribute"
                )
        self.graph = PeriodicRadiusGraph(cutoff=float(cutoff), max_neighbors=max_neighbors)
        self.task = task.to(device=device, dtype=dtype).eval()
        self.device: torch.device = self.task.energy_scale.device
        self.dtype: torch.dtype = self.task.energy_scale.dtype
        self._known = self._known_elements(elements)

    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike[str],
        *,
        task: str | int | None = None,
        cutoff: float | None = None,
        max_neighbors: int | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | None = None,
        elements: Iterable[str | int] | None = None,
    ) -> MatsciCalculator:
        """Load a trained model from a Lightning checkpoint.

        The checkpoint, read once by :func:`~matsci.training.load_model`, holds a
        :class:`~matsci.tasks.physics.ForceRegressionTask`, or a
        :class:`~matsci.tasks.core.MultiTaskLitModule` from which ``task`` picks one. The
        neighbour graph is built as in training: with the ``cutoff`` and
        ``max_neighbors`` given here, else those the data module recorded in the checkpoint
        (:class:`~matsci.data.AtomsDataModule` does, also inside a
        :class:`~matsci.data.MultiDataModule`, when trained with
        ``trainer.fit(module, datamodule=...)``), else the encoder's ``cutoff`` attribute with
        all neighbours.

        Parameters
        ----------
        path
            The checkpoint file (loaded with ``weights_only=True``).
        task
            For a multi-task checkpoint: the task's name (``"<dataset>/<task>"``) or index (not
            needed when it has one task).
        cutoff
            Cutoff (Å) of the neighbour graph, overriding the checkpoint's.
        max_neighbors
            Neighbours kept per atom, overriding the checkpoint's (only with ``cutoff``).
        device
            Where the model runs.
        dtype
            Floating-point type of the model; ``None`` keeps the checkpoint's.
        elements
            Elements the model may be used on; by default those with a nonzero reference
            energy.

        Returns
        -------
        MatsciCalculator
            The calculator.

        Raises
        ------
        FileNotFoundError
            If ``path`` does not exist.
        ValueError
            If the file is not a matsci checkpoint, holds no force task, is a multi-task
            checkpoint without ``task`` (the message lists the tasks) or ``task`` names none of
            its tasks, names no cutoff anywhere, or ``max_neighbors`` is given without
            ``cutoff``.
        """
        if max_neighbors is not None and cutoff is None:
            raise ValueError(
                f"MatsciCalculator.from_checkpoint(max_neighbors={max_neighbors}): give cutoff= "
                "too; the two describe one neighbour graph"
            )
        force_task, recorded = load_force_task(path, task)
        if cutoff is None:
            if recorded is not None:
                cutoff, max_neighbors = recorded.cutoff, recorded.max_neighbors
            elif getattr(force_task.encoder, "cutoff", None) is None:
                raise ValueError(
                    f"MatsciCalculator.from_checkpoint(path={os.fspath(path)!r}): the checkpoint "
                    "records no neighbour graph (no AtomsDataModule radius_graph) and the "
                    f"encoder {type(force_task.encoder).__name__} has no 'cutoff'; give cutoff= "
                    "(and max_neighbors=) as in training"
                )
        return cls(
            force_task,
            cutoff=cutoff,
            max_neighbors=max_neighbors,
            device=device,
            dtype=dtype,
            elements=elements,
        )

    # -- known elements -------------------------------------------------------------------------

    def _known_elements(self, elements: Iterable[str | int] | None) -> frozenset[int] | None:
        if elements is None:
            nonzero = torch.nonzero(self.task.reference_energies).reshape(-1).tolist()
            return frozenset(int(z) for z in nonzero) or None
        known = set()
        for element in elements:
            # Any integer kind (numpy's too), but not a bool.
            number: object = atomic_numbers.get(element) if isinstance(element, str) else element
            if (
                isinstance(number, bool)
                or not isinstance(number, Integral)
                or not 1 <= int(number) < len(chemical_symbols)
            ):
                raise ValueError(
                    f"MatsciCalculator(elements=...): {element!r} is not a chemical symbol or an "
                    "atomic number in 1..118"
                )
            known.add(int(number))
        return frozenset(known)

    @property
    def elements(self) -> list[str] | None:
        """Chemical symbols of the elements the model knows, or ``None`` if it cannot tell."""
        if self._known is None:
            return None
        return [chemical_symbols[z] for z in sorted(self._known)]

    def _check_structure(self, atoms: Atoms, index: int | None = None) -> None:
        where = "structure" if index is None else f"structure {index}"
        if not isinstance(atoms, Atoms):
            raise TypeError(f"MatsciCalculator: {where} is a {type(atoms).__name__}, not ase.Atoms")
        if len(atoms) == 0:
            raise ValueError(f"MatsciCalculator: {where} has no atoms")
        where = f"{where} {atoms.get_chemical_formula()}"
        if self._known is None:
            return
        unknown = sorted(set(atoms.numbers.tolist()) - self._known)
        if unknown:
            raise ValueError(
                f"MatsciCalculator: {where} has element "
                f"{[chemical_symbols[z] for z in unknown]} the model was not trained on; known "
                f"elements: {self.elements}"
            )

    # -- evaluation ------------------------------------------------------------------------------

    def _has_stress(self, atoms: Atoms) -> bool:
        return bool(self.task.compute_stress and atoms.pbc.all() and atoms.cell.rank == 3)

    def _to_data(self, atoms: Atoms) -> Data:
        """One structure in the calculator's dtype, with its neighbour graph."""
        data = Data()
        data[keys.POS] = torch.tensor(atoms.positions, dtype=self.dtype)
        data[keys.ATOMIC_NUMBERS] = torch.tensor(atoms.numbers, dtype=torch.long)
        data[keys.CELL] = torch.tensor(atoms.cell.array, dtype=self.dtype).reshape(1, 3, 3)
        data[keys.PBC] = torch.tensor(atoms.pbc, dtype=torch.bool).reshape(1, 3)
        data[keys.NATOMS] = torch.tensor([len(atoms)], dtype=torch.long)
        graph: Data = self.graph(data)
        return graph

    def _evaluate(self, structures: Sequence[Atoms]) -> list[dict[str, Any]]:
        """Energies, forces and (where defined) stresses of structures in one batch."""
        batch = Batch.from_data_list([self._to_data(atoms) for atoms in structures])
        energy, force, stress = self.task.energy_and_derivatives(
            batch.to(self.device), keep_graph=False
        )
        energies = energy.detach().cpu().double().numpy()  # [B]
        forces = force.detach().cpu().double().numpy()  # [N, 3]
        stresses = None if stress is None else stress.detach().cpu().double().numpy()  # [B, 3, 3]
        bounds = np.cumsum([0, *(len(atoms) for atoms in structures)])
        results = []
        for index, atoms in enumerate(structures):
            result: dict[str, Any] = {
                "energy": float(energies[index]),
                "free_energy": float(energies[index]),
                "forces": forces[bounds[index] : bounds[index + 1]].copy(),
            }
            if stresses is not None and self._has_stress(atoms):
                result["stress"] = full_3x3_to_voigt_6_stress(stresses[index])
            results.append(result)
        return results

    def calculate(
        self,
        atoms: Atoms | None = None,
        properties: Sequence[str] | None = None,
        system_changes: Sequence[str] = tuple(all_changes),
    ) -> None:
        """Compute energy, free energy, forces and, where defined, stress into ``results``.

        ASE calls this through ``atoms.get_forces()`` and friends; all properties come from one
        model evaluation.

        Parameters
        ----------
        atoms
            The structure (the last one seen when ``None``).
        properties
            The properties asked for (default ``["energy"]``).
        system_changes
            What changed since the last calculation (ASE's bookkeeping).

        Raises
        ------
        ase.calculators.calculator.PropertyNotImplementedError
            If ``stress`` is asked for and the task has no stress or the structure is not
            periodic in three directions.
        ValueError
            If the structure has elements the model does not know.
        """
        properties = ["energy"] if properties is None else list(properties)
        super().calculate(atoms, properties, system_changes)  # type: ignore[no-untyped-call]
        structure: Atoms | None = self.atoms
        if structure is None:
            raise ValueError("MatsciCalculator.calculate: no structure given, none seen before")
        self._check_structure(structure)
        if "stress" in properties and not self._has_stress(structure):
            raise PropertyNotImplementedError(self._no_stress_reason(structure))
        self.results = self._evaluate([structure])[0]

    def _no_stress_reason(self, atoms: Atoms) -> str:
        if not self.task.compute_stress:
            return (
                "MatsciCalculator: no stress; the model was trained without it "
                "(ForceRegressionTask(compute_stress=False))"
            )
        return (
            f"MatsciCalculator: no stress for structure {atoms.get_chemical_formula()} with "
            f"pbc={atoms.pbc.tolist()} and cell rank {atoms.cell.rank}; the stress needs a cell "
            "periodic in all three directions"
        )

    def calculate_many(
        self, structures: Sequence[Atoms], *, batch_size: int = 32
    ) -> list[dict[str, Any]]:
        """Energies, forces and stresses of many structures, ``batch_size`` at a time.

        One model evaluation per batch instead of one per structure, which is much faster per
        structure; the results equal those of one calculation each. The structures are not
        changed and their calculators are not touched.

        Parameters
        ----------
        structures
            The structures (any sizes, periodic or not, mixed).
        batch_size
            Structures per model evaluation.

        Returns
        -------
        list of dict
            One dict per structure, in order, with the keys ASE uses: ``"energy"`` and
            ``"free_energy"`` (float, eV), ``"forces"`` (``[n, 3]`` array, eV/Å) and, for a
            3D-periodic structure with a stress model, ``"stress"`` (Voigt 6-vector, eV/Å³).

        Raises
        ------
        TypeError
            If a structure is not an ``ase.Atoms``.
        ValueError
            If ``batch_size`` is not a positive int, or a structure is empty or has an element
            the model does not know.

        Examples
        --------
        >>> from ase.build import bulk, molecule
        >>> from matsci.encoders import SchNetEncoder
        >>> from matsci.tasks.physics import ForceRegressionTask
        >>> task = ForceRegressionTask(
        ...     encoder=SchNetEncoder(hidden_channels=8, num_filters=8, num_interactions=1,
        ...                           num_gaussians=8, cutoff=3.0),
        ...     reference_energies={1: -1.1, 8: -4.2, 29: -0.5},
        ... )
        >>> calc = MatsciCalculator(task)
        >>> results = calc.calculate_many([bulk("Cu") * (2, 2, 2), molecule("H2O")])
        >>> [result["forces"].shape for result in results]
        [(8, 3), (3, 3)]
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(
                f"MatsciCalculator.calculate_many(batch_size={batch_size!r}): expected a "
                "positive int"
            )
        structures = list(structures)
        for index, atoms in enumerate(structures):
            self._check_structure(atoms, index)
        results: list[dict[str, Any]] = []
        for start in range(0, len(structures), batch_size):
            results.extend(self._evaluate(structures[start : start + batch_size]))
        return results

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(cutoff={self.graph.cutoff}, "
            f"max_neighbors={self.graph.max_neighbors}, device={self.device}, "
            f"dtype={self.dtype}, elements={self.elements})"
        )
