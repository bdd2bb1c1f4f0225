# mypy: disable-error-code="import-untyped"
"""A torch-sim model around a trained matsci force field: batched energies, forces, stresses."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Final

import torch
from torch import Tensor
from torch_geometric.data import Batch, Data
from torch_sim.models.interface import ModelInterface
from torch_sim.state import SimState
from torch_sim.typing import StateDict

from matsci.ase import check_model_dtype, load_force_field, neighbour_graph
from matsci.contract import keys
from matsci.tasks.physics import ForceRegressionTask, GradFreeForceRegression, KnownElements

__all__ = ["MatsciTorchSimModel"]

_NAME: Final = "MatsciTorchSimModel"


class MatsciTorchSimModel(ModelInterface):  # type: ignore[misc]  # torch-sim ships no types
    r"""A trained :class:`~matsci.tasks.physics.ForceRegressionTask` as a torch-sim model.

    A :class:`torch_sim.models.interface.ModelInterface`, so torch-sim's batched integrators
    (``nve``, ``nvt_langevin``, ``npt_langevin``, ...), optimizers (``fire``,
    ``gradient_descent``, ``frechet_cell_fire``, ...), runners (``ts.integrate``,
    ``ts.optimize``, ``ts.static``) and autobatchers run on the model. :meth:`forward`
    evaluates all systems of a :class:`~torch_sim.state.SimState` in one batched model call and
    returns

    - ``"energy"`` [S] (eV), the total energy of each of the S systems;
    - ``"forces"`` [N, 3] (eV/Å), :math:`-\partial E / \partial \mathbf{x}` of the N atoms;
    - ``"stress"`` [S, 3, 3] (eV/Å³, with ``compute_stress=True``),
      :math:`\sigma = V^{-1}\, \partial E / \partial \varepsilon`, positive under tension: the
      sign and units of torch-sim's own models (its metatomic and Lennard-Jones models) and of
      ASE, so ``model(state)["stress"][s]`` is the 3 x 3 form of
      :class:`~matsci.ase.MatsciCalculator`'s Voigt stress of system ``s``.

    The neighbour graph is built as in training, per system, by
    :class:`~matsci.transforms.PeriodicRadiusGraph` (on the CPU, like the calculator's), from
    torch-sim's state: its cell holds the lattice vectors as *columns* (``state.cell``), so the
    graph gets ``state.row_vector_cell``; ``state.pbc`` (one flag for all three directions in
    torch-sim 0.3) sets the periodicity. Positions need not be wrapped.

    Only energy models run: torch-sim's integrators and optimizers read the energy of every
    step, so a direct-force :class:`~matsci.tasks.physics.GradFreeForceRegression` (forces
    from a head, no energy) is refused with a ``TypeError``; run it with
    :class:`~matsci.ase.MatsciCalculator`, which gives its forces.

    The model refuses states with elements the model never saw, by the rule of
    :class:`~matsci.ase.MatsciCalculator`: unless ``elements`` says otherwise, the known elements
    are those with a nonzero per-element reference energy (all elements when none is nonzero).

    Parameters
    ----------
    task
        The trained task. It is moved to ``device`` and ``dtype`` and put in eval mode (in
        place, as :meth:`torch.nn.Module.to` does).
    cutoff
        Cutoff (Å) of the neighbour graph; by default the encoder's ``cutoff`` attribute. Use
        the training graph's cutoff.
    max_neighbors
        Neighbours kept per atom, as in training (``None``: all within the cutoff).
    device
        Where the model runs (``"cpu"``, ``"cuda"``, ...); ``None`` leaves the task where it is.
    dtype
        Floating-point type of the model; states must have the same (``torch.float64`` for
        tight comparisons). ``None`` keeps the task's.
    compute_stress
        Whether :meth:`forward` returns ``"stress"`` (needed by torch-sim's cell optimizers and
        NPT integrators; costs a strain derivative). The task must have been trained with
        ``compute_stress=True``.
    elements
        Chemical symbols or atomic numbers the model may be used on; by default the elements
        with a nonzero reference energy.

    Raises
    ------
    TypeError
        If ``task`` is not a ``ForceRegressionTask`` (a ``GradFreeForceRegression`` included).
    ValueError
        If no cutoff is given and the encoder has none, the graph settings are invalid,
        ``dtype`` is not a floating-point type, ``compute_stress=True`` for a task without
        stress, or ``elements`` holds an unknown element.

    Examples
    --------
    >>> import torch
    >>> import torch_sim as ts
    >>> from ase.build import bulk
    >>> from matsci.encoders import SchNetEncoder
    >>> from matsci.tasks.physics import ForceRegressionTask
    >>> task = ForceRegressionTask(
    ...     encoder=SchNetEncoder(hidden_channels=8, num_filters=8, num_interactions=1,
    ...                           num_gaussians=8, cutoff=3.0),
    ...     compute_stress=True, reference_energies={29: -0.5},
    ... )
    >>> model = MatsciTorchSimModel(task, dtype=torch.float64)
    >>> model
    MatsciTorchSimModel(cutoff=3.0, max_neighbors=None, device=cpu, dtype=torch.float64, ...)
    >>> structures = [bulk("Cu", "fcc", a=3.6) * (2, 2, 2), bulk("Cu", "fcc", a=3.7)]
    >>> state = ts.initialize_state(structures, model.device, model.dtype)
    >>> output = model(state)
    >>> output["energy"].shape, output["forces"].shape, output["stress"].shape
    (torch.Size([2]), torch.Size([9, 3]), torch.Size([2, 3, 3]))
    >>> gold = bulk("Au", "fcc", a=4.1)
    >>> model(ts.initialize_state([gold], model.device, model.dtype))
    Traceback (most recent call last):
    ...
    ValueError: MatsciTorchSimModel: system 0 has element ['Au'] the model was not trained ...
    """

    def __init__(
        self,
        task: ForceRegressionTask,
        *,
        cutoff: float | None = None,
        max_neighbors: int | None = None,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        compute_stress: bool = True,
        elements: Iterable[str | int] | None = None,
    ) -> None:
        super().__init__()
        if isinstance(task, GradFreeForceRegression):
            raise TypeError(
                f"{_NAME}(task=GradFreeForceRegression): a direct-force model has no energy, "
                "which torch-sim's integrators and optimizers read at every step; train a "
                "ForceRegressionTask, or run direct forces with matsci.ase.MatsciCalculator"
            )
        if not isinstance(task, ForceRegressionTask):
            raise TypeError(
                f"{_NAME}(task={type(task).__name__}): expected a ForceRegressionTask "
                "(energy, forces and stress)"
            )
        check_model_dtype(dtype, owner=_NAME)
        if compute_stress and not task.compute_stress:
            raise ValueError(
                f"{_NAME}(compute_stress=True): the task was trained without stress "
                "(ForceRegressionTask(compute_stress=False)); pass compute_stress=False"
            )
        self.graph = neighbour_graph(task, cutoff, max_neighbors, owner=_NAME)
        self.task = task.to(device=device, dtype=dtype).eval()
        self._known = KnownElements.of(task, elements, owner=_NAME)
        # The attributes torch-sim's ModelInterface reads through its properties.
        self._device = task.energy_scale.device
        self._dtype = task.energy_scale.dtype
        self._compute_stress = bool(compute_stress)
        self._compute_forces = True
        self._memory_scales_with = "n_atoms_x_density"  # a radial cutoff

    @property
    def elements(self) -> list[str] | None:
        """Chemical symbols of the elements the model knows, or ``None`` if it cannot tell."""
        return self._known.symbols

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
        compute_stress: bool = True,
        elements: Iterable[str | int] | None = None,
    ) -> MatsciTorchSimModel:
        """Load a trained force field from a Lightning checkpoint.

        The checkpoint, read once by :func:`~matsci.training.load_model`, holds a
        :class:`~matsci.tasks.physics.ForceRegressionTask`, or a
        :class:`~matsci.tasks.core.MultiTaskLitModule` from which ``task`` picks one. The
        neighbour graph is built as in training, by the rules of
        :meth:`matsci.ase.MatsciCalculator.from_checkpoint`: the ``cutoff`` and
        ``max_neighbors`` given here, else those the data module recorded in the checkpoint,
        else the encoder's ``cutoff`` with all neighbours.

        Parameters
        ----------
        path
            The checkpoint file.
        task
            For a multi-task checkpoint: the task, by name (``"<dataset>/<task>"``) or index.
        cutoff, max_neighbors, device, dtype, compute_stress, elements
            As for the constructor; ``device`` defaults to ``"cpu"``.

        Returns
        -------
        MatsciTorchSimModel
            The model, in eval mode on ``device``.

        Raises
        ------
        ValueError
            If the checkpoint cannot be read, holds no ``ForceRegressionTask`` (a direct-force
            ``GradFreeForceRegression`` included) or several tasks and ``task`` is not given,
            or as the constructor does.
        """
        force_task, graph = load_force_field(
            path,
            task=task,
            cutoff=cutoff,
            max_neighbors=max_neighbors,
            owner=f"{_NAME}.from_checkpoint",
        )
        if not isinstance(force_task, ForceRegressionTask):
            raise ValueError(
                f"{_NAME}.from_checkpoint(path={os.fspath(path)!r}): the task is a "
                f"{type(force_task).__name__}, not a ForceRegressionTask; torch-sim needs a "
                "model with an energy (and its forces and stress)"
            )
        return cls(
            force_task,
            cutoff=graph.cutoff,
            max_neighbors=graph.max_neighbors,
            device=device,
            dtype=dtype,
            compute_stress=compute_stress,
            elements=elements,
        )

    def forward(self, state: SimState | StateDict, **kwargs: object) -> dict[str, Tensor]:
        """Energies, forces and (with ``compute_stress``) stresses of every system of ``state``.

        One batched model evaluation for all S systems and N atoms; the state is not changed.

        Parameters
        ----------
        state
            A :class:`~torch_sim.state.SimState`, or a dict with its ``positions``, ``cell``,
            ``pbc``, ``atomic_numbers`` and ``system_idx``; in the model's dtype.
        **kwargs
            Accepted for torch-sim's interface; unused.

        Returns
        -------
        dict of str to Tensor
            ``"energy"`` [S] (eV), ``"forces"`` [N, 3] (eV/Å) and, with ``compute_stress``,
            ``"stress"`` [S, 3, 3] (eV/Å³, positive under tension), detached, on the model's
            device.

        Raises
        ------
        TypeError
            If the positions are not in the model's dtype.
        ValueError
            If a system has an element the model does not know, or the stress is computed for
            a non-periodic state.
        """
        if isinstance(state, dict):  # torch-sim's StateDict: masses play no part here
            state = SimState(**state, masses=torch.ones_like(state["positions"][:, 0]))
        if state.positions.dtype != self.dtype:
            raise TypeError(
                f"{_NAME}: the state's positions are {state.positions.dtype}, the model is "
                f"{self.dtype}; create the state with dtype=model.dtype"
            )
        if self.compute_stress and not bool(torch.as_tensor(state.pbc).all()):
            raise ValueError(
                f"{_NAME}: the stress needs a state periodic in all three directions, got "
                f"pbc={state.pbc}; create the model with compute_stress=False"
            )
        batch = self._batch(state).to(self.device)
        energy, forces, stress = self.task.energy_and_derivatives(batch, keep_graph=False)
        results = {"energy": energy.detach(), "forces": forces.detach()}  # [S], [N, 3]
        if self.compute_stress:
            assert stress is not None  # the task computes stress (checked in __init__)
            results["stress"] = stress.detach()  # [S, 3, 3]
        return results

    def _batch(self, state: SimState) -> Batch:
        """The state as a batch of the data contract, with each system's neighbour graph."""
        numbers = state.atomic_numbers.detach().cpu()  # [N]; the neighbour search is on the CPU
        system_idx = state.system_idx.detach().cpu()  # [N]
        self._check_elements(numbers, system_idx)
        counts = torch.bincount(system_idx, minlength=state.n_systems).tolist()
        positions = state.positions.detach().cpu().split(counts)
        cells = state.row_vector_cell.detach().cpu()  # [S, 3, 3], lattice vectors as rows
        pbc = torch.as_tensor(state.pbc, dtype=torch.bool).cpu().expand(3).reshape(1, 3)
        structures = []
        for index, count in enumerate(counts):
            data = Data()
            data[keys.POS] = positions[index]
            data[keys.ATOMIC_NUMBERS] = numbers[system_idx == index]
            data[keys.CELL] = cells[index].reshape(1, 3, 3)
            data[keys.PBC] = pbc
            data[keys.NATOMS] = torch.tensor([count], dtype=torch.long)
            structures.append(self.graph(data))
        return Batch.from_data_list(structures)

    def _check_elements(self, numbers: Tensor, system_idx: Tensor) -> None:
        if self._known.numbers is None:
            return
        unknown = sorted(set(torch.unique(numbers).tolist()) - self._known.numbers)
        if unknown:  # name the first system holding one
            system = int(system_idx[torch.isin(numbers, torch.tensor(unknown))][0])
            where = f"system {system}"
            self._known.check(numbers[system_idx == system].tolist(), owner=_NAME, where=where)

    def extra_repr(self) -> str:
        """The graph settings, device, dtype, stress and known elements."""
        return (
            f"cutoff={self.graph.cutoff}, max_neighbors={self.graph.max_neighbors}, "
            f"device={self.device}, dtype={self.dtype}, compute_stress={self.compute_stress}, "
            f"elements={self.elements}"
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"
