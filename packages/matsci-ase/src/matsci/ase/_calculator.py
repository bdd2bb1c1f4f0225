# mypy: untyped-calls-exclude=ase
"""An ASE calculator around a trained force model: energy, forces and stress, or direct forces."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes
from ase.stress import full_3x3_to_voigt_6_stress
from torch_geometric.data import Batch, Data

from matsci.ase._checkpoint import ForceTask, check_model_dtype, load_force_field, neighbour_graph
from matsci.ase._program_calculator import _refuse_energy
from matsci.contract import keys
from matsci.tasks.physics import ForceRegressionTask, GradFreeForceRegression, KnownElements

__all__ = ["MatsciCalculator"]


class MatsciCalculator(Calculator):
    r"""ASE calculator of a trained force model: energy, forces and stress, or direct forces.

    With a :class:`~matsci.tasks.physics.ForceRegressionTask` (conservative forces) it gives
    ``energy`` and ``free_energy`` (the same number, eV), ``forces`` (eV/Å, the negative
    gradient of the energy) and ``stress`` (eV/Å³, ASE's Voigt order xx, yy, zz, yz, xz, xy and
    sign: :math:`\sigma = V^{-1}\, \partial E / \partial \varepsilon`, positive under tension),
    so ASE's molecular dynamics, optimizers (``BFGS``, ``FIRE``) and cell filters
    (``FrechetCellFilter``, ``ExpCellFilter``) run on the model. Every evaluation builds the
    neighbour graph with :class:`~matsci.transforms.PeriodicRadiusGraph`, as in training, and
    runs the task in eval mode without keeping an autograd graph.

    With a :class:`~matsci.tasks.physics.GradFreeForceRegression` (forces predicted directly by
    a head) it gives ``forces`` only (:attr:`conservative` is ``False``): such a model has no
    energy, and its forces are not the gradient of one. Asking for ``energy``,
    ``free_energy`` or ``stress`` (``atoms.get_potential_energy()``,
    ``atoms.get_total_energy()``, ``atoms.get_stress()``) raises
    :class:`~ase.calculators.calculator.PropertyNotImplementedError` saying so, while
    ``atoms.get_forces()`` and ASE's molecular dynamics (``VelocityVerlet``, ``Langevin``) work.
    NVE dynamics with direct forces does not conserve energy (:doc:`/ase` shows the drift).
    ASE's optimizers log the energy at every step, so relaxing with direct forces needs an
    optimizer whose ``log`` does not read it (see :doc:`/ase`).

    Periodic crystals, slabs (mixed ``pbc``) and molecules (no cell) are supported. The stress
    needs a task trained with ``compute_stress=True`` and a structure periodic in all three
    directions; otherwise asking for it raises
    :class:`~ase.calculators.calculator.PropertyNotImplementedError`. Energy and forces of
    other structures still work.

    The calculator refuses structures with elements the model never saw. Unless ``elements``
    says otherwise, the known elements of an energy model are those with a nonzero per-element
    reference energy:
    :meth:`~matsci.tasks.physics.ForceRegressionTask.fit_normalizers` fits one for every
    element of the training data (a fitted value of exactly 0 eV does not happen in practice)
    and leaves the others at 0. When every reference energy is 0 (references never fitted nor
    given), and for a direct-force model (which has no reference energies), the calculator
    cannot tell and accepts every element.

    Use :meth:`from_checkpoint` to load a trained model; :meth:`calculate_many` evaluates many
    structures in batches, much faster per structure than one call each.

    Parameters
    ----------
    task
        The trained task: a ``ForceRegressionTask`` or a ``GradFreeForceRegression``. It is
        moved to ``device`` and ``dtype`` and put in eval mode.
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
        If ``task`` is neither a ``ForceRegressionTask`` nor a ``GradFreeForceRegression``.
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

    A direct-force model gives forces and refuses the energy:

    >>> from matsci.tasks.physics import GradFreeForceRegression
    >>> direct = GradFreeForceRegression(
    ...     encoder=SchNetEncoder(hidden_channels=8, num_filters=8, num_interactions=1,
    ...                           num_gaussians=8, cutoff=3.0),
    ... )
    >>> atoms = bulk("Cu", "fcc", a=3.6) * (2, 2, 2)
    >>> atoms.calc = MatsciCalculator(direct, elements=["Cu"])
    >>> atoms.calc.conservative, atoms.calc.implemented_properties
    (False, ['forces'])
    >>> atoms.get_forces().shape
    (8, 3)
    >>> atoms.get_potential_energy()
    Traceback (most recent call last):
    ...
    ase.calculators.calculator.PropertyNotImplementedError: MatsciCalculator: no energy; ...
    """

    implemented_properties: list[str] = ["energy", "free_energy", "forces", "stress"]  # noqa: RUF012

    def __init__(
        self,
        task: ForceRegressionTask | GradFreeForceRegression,
        *,
        cutoff: float | None = None,
        max_neighbors: int | None = None,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        elements: Iterable[str | int] | None = None,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        if not isinstance(task, ForceRegressionTask | GradFreeForceRegression):
            raise TypeError(
                f"MatsciCalculator(task={type(task).__name__}): expected a ForceRegressionTask "
                "(energy, forces, stress) or a GradFreeForceRegression (direct forces)"
            )
        check_model_dtype(dtype, owner="MatsciCalculator")
        self.graph = neighbour_graph(task, cutoff, max_neighbors, owner="MatsciCalculator")
        self.task: ForceTask = task.to(device=device, dtype=dtype).eval()
        self.device, self.dtype = _device_and_dtype(self.task)
        if not self.conservative:
            # Declared per instance: ASE tools read it to see what the calculator can give.
            self.implemented_properties = ["forces"]
        self._known = KnownElements.of(task, elements, owner="MatsciCalculator")

    @property
    def conservative(self) -> bool:
        """Whether the model has an energy whose negative gradient is the forces.

        ``True`` for a ``ForceRegressionTask``; ``False`` for a ``GradFreeForceRegression``,
        which gives forces only.
        """
        return isinstance(self.task, ForceRegressionTask)

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
        :class:`~matsci.tasks.physics.ForceRegressionTask` or a
        :class:`~matsci.tasks.physics.GradFreeForceRegression` (direct forces only), or a
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
            energy (every element for a direct-force model).

        Returns
        -------
        MatsciCalculator
            The calculator.

        Raises
        ------
        FileNotFoundError
            If ``path`` does not exist.
        ValueError
            If the file is not a matsci checkpoint, holds no force task (neither a
            ``ForceRegressionTask`` nor a ``GradFreeForceRegression``), is a multi-task
            checkpoint without ``task`` (the message lists the tasks) or ``task`` names none of
            its tasks, names no cutoff anywhere, or ``max_neighbors`` is given without
            ``cutoff``.
        """
        force_task, graph = load_force_field(
            path,
            task=task,
            cutoff=cutoff,
            max_neighbors=max_neighbors,
            owner="MatsciCalculator.from_checkpoint",
        )
        return cls(
            force_task,
            cutoff=graph.cutoff,
            max_neighbors=graph.max_neighbors,
            device=device,
            dtype=dtype,
            elements=elements,
        )

    # -- known elements -------------------------------------------------------------------------

    @property
    def elements(self) -> list[str] | None:
        """Chemical symbols of the elements the model knows, or ``None`` if it cannot tell."""
        return self._known.symbols

    def _check_structure(self, atoms: Atoms, index: int | None = None) -> None:
        where = "structure" if index is None else f"structure {index}"
        if not isinstance(atoms, Atoms):
            raise TypeError(f"MatsciCalculator: {where} is a {type(atoms).__name__}, not ase.Atoms")
        if len(atoms) == 0:
            raise ValueError(f"MatsciCalculator: {where} has no atoms")
        where = f"{where} {atoms.get_chemical_formula()}"
        self._known.check(atoms.numbers.tolist(), owner="MatsciCalculator", where=where)

    # -- evaluation ------------------------------------------------------------------------------

    def _has_stress(self, atoms: Atoms) -> bool:
        return bool(
            isinstance(self.task, ForceRegressionTask)
            and self.task.compute_stress
            and atoms.pbc.all()
            and atoms.cell.rank == 3
        )

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
        """Energies, forces and (where defined) stresses of structures in one batch.

        A direct-force model gives forces only.
        """
        batch = Batch.from_data_list([self._to_data(atoms) for atoms in structures])
        batch = batch.to(self.device)
        energies = stresses = None
        if isinstance(self.task, ForceRegressionTask):
            energy, force, stress = self.task.energy_and_derivatives(batch, keep_graph=False)
            energies = energy.detach().cpu().double().numpy()  # [B]
            if stress is not None:
                stresses = stress.detach().cpu().double().numpy()  # [B, 3, 3]
        else:
            force = self.task.predict(batch)[keys.FORCE]
        forces = force.detach().cpu().double().numpy()  # [N, 3]
        bounds = np.cumsum([0, *(len(atoms) for atoms in structures)])
        results = []
        for index, atoms in enumerate(structures):
            result: dict[str, Any] = {"forces": forces[bounds[index] : bounds[index + 1]].copy()}
            if energies is not None:
                result["energy"] = result["free_energy"] = float(energies[index])
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
        model evaluation. A direct-force model computes forces only.

        Parameters
        ----------
        atoms
            The structure (the last one seen when ``None``).
        properties
            The properties asked for (default ``["energy"]``, ``["forces"]`` for a
            direct-force model).
        system_changes
            What changed since the last calculation (ASE's bookkeeping).

        Raises
        ------
        ase.calculators.calculator.PropertyNotImplementedError
            If ``stress`` is asked for and the task has no stress or the structure is not
            periodic in three directions, or ``energy``, ``free_energy`` or ``stress`` is asked
            of a direct-force model.
        ValueError
            If the structure has elements the model does not know.
        """
        if properties is None:
            properties = ["energy"] if self.conservative else ["forces"]
        properties = list(properties)
        _refuse_energy(
            properties,
            conservative=self.conservative,
            owner="MatsciCalculator",
            reason=self._no_energy_reason(),
        )
        super().calculate(atoms, properties, system_changes)  # type: ignore[no-untyped-call]
        structure: Atoms | None = self.atoms
        if structure is None:
            raise ValueError("MatsciCalculator.calculate: no structure given, none seen before")
        self._check_structure(structure)
        if "stress" in properties and not self._has_stress(structure):
            raise PropertyNotImplementedError(self._no_stress_reason(structure))
        self.results = self._evaluate([structure])[0]

    def get_property(
        self, name: str, atoms: Atoms | None = None, allow_calculation: bool = True
    ) -> Any:
        """One property of ``atoms`` (ASE's entry point); see :meth:`calculate`.

        Parameters
        ----------
        name
            ``"energy"``, ``"free_energy"``, ``"forces"`` or ``"stress"``.
        atoms
            The structure (the last one seen when ``None``).
        allow_calculation
            Whether to compute the property if it is not cached (else ``None`` is returned).

        Returns
        -------
        Any
            The property (a float or an array).

        Raises
        ------
        ase.calculators.calculator.PropertyNotImplementedError
            If the model cannot give it: the energy or stress of a direct-force model (the
            message says why), the stress of a model without one, or an unknown property.
        """
        _refuse_energy(
            [name],
            conservative=self.conservative,
            owner="MatsciCalculator",
            reason=self._no_energy_reason(),
        )
        return super().get_property(name, atoms, allow_calculation)  # type: ignore[no-untyped-call]

    def _no_energy_reason(self) -> str:
        return (
            f"the model is a {type(self.task).__name__}, a direct-force model, which predicts "
            "forces with a head and has no energy (its forces are not the gradient of one, so "
            "there is no energy or stress to give and NVE dynamics with it does not conserve "
            "energy). Only 'forces' are available; train a ForceRegressionTask for energy and "
            "stress"
        )

    def _no_stress_reason(self, atoms: Atoms) -> str:
        if not (isinstance(self.task, ForceRegressionTask) and self.task.compute_stress):
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
        structure; the results equal those of one calculation each (forces only, for a
        direct-force model). The structures are not
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
            3D-periodic structure with a stress model, ``"stress"`` (Voigt 6-vector, eV/Å³);
            for a direct-force model, ``"forces"`` only.

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


def _device_and_dtype(task: ForceTask) -> tuple[torch.device, torch.dtype]:
    """Where the task's weights are and their floating-point type."""
    weight = task.energy_scale if isinstance(task, ForceRegressionTask) else next(task.parameters())
    return weight.device, weight.dtype
