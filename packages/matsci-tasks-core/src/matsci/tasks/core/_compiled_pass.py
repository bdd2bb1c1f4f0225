"""The compiled view pass: encoder and task outputs, derivatives included, as one compiled graph.

A task that differentiates the energy (forces, stress) takes ``torch.autograd.grad`` with
``create_graph=True`` inside the forward pass, and the loss on those derivatives is then
backpropagated to the weights: a second derivative. AOTAutograd, which ``torch.compile`` uses for
training, cannot differentiate a backward pass, so compiling the step directly fails or falls back
to eager. As in NequIP, :class:`CompiledViewPass` first records the whole view pass (strain and
positions that require grad, the encoder, every task's ``compute_outputs`` with its
``autograd.grad``) as ordinary operators in ONE forward graph with
:func:`torch.fx.experimental.proxy_tensor.make_fx` (symbolic sizes: any number of atoms, edges and
structures), then compiles that graph with :func:`torch.compile`. The weights are inputs of the
graph (:func:`torch.func.functional_call`), so their gradients are a plain first-order backward
through the compiled graph, and the optimizer, DDP and weight averaging see the module's own
parameters.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, cast

import torch
from torch import Tensor, nn
from torch.fx.experimental.proxy_tensor import make_fx
from torch_geometric.data import Batch

from matsci.tasks.core._inputs import InputRequest, prepare_encoder_input
from matsci.tasks.core._task_entry import TaskEntry

__all__ = ["CompiledViewPass", "compile_backend"]

DEFAULT_BACKEND: Final = "inductor"
"""The :func:`torch.compile` backend of ``compile_training=True``."""

_MAX_GRAPHS: Final = 8
"""Graphs kept per view before a warning says that sizes keep specializing the trace."""


def compile_backend(owner: str, compile_training: bool | str) -> str | None:
    """The :func:`torch.compile` backend that ``compile_training`` asks for, or ``None`` (eager).

    Parameters
    ----------
    owner
        The class whose argument this is (for the error).
    compile_training
        ``False`` (eager), ``True`` (``"inductor"``) or a backend name such as ``"aot_eager"``.

    Returns
    -------
    str or None
        The backend name, or ``None`` when training stays eager.

    Raises
    ------
    ValueError
        If ``compile_training`` is an empty string or a name :func:`torch.compile` does not know.

    Examples
    --------
    >>> from matsci.tasks.core._compiled_pass import compile_backend
    >>> compile_backend("Task", True), compile_backend("Task", "aot_eager")
    ('inductor', 'aot_eager')
    >>> compile_backend("Task", False) is None
    True
    """
    if compile_training is False:
        return None
    if compile_training is True:
        return DEFAULT_BACKEND
    if not isinstance(compile_training, str):
        raise ValueError(
            f"{owner}(compile_training={compile_training!r}): expected True, False or the name "
            "of a torch.compile backend"
        )
    known = torch.compiler.list_backends(exclude_tags=())
    if compile_training not in known:
        raise ValueError(
            f"{owner}(compile_training={compile_training!r}): not a torch.compile backend; "
            f"known backends are {sorted(known)}"
        )
    return compile_training


class _ViewModule(nn.Module):
    """The view pass as a module, so that :func:`torch.func.functional_call` swaps its weights.

    Holds the engine's encoder and the tasks of one view (submodules shared with the engine,
    never registered in it); ``forward`` takes the batch's tensors by name and returns every
    task's outputs in a flat list, in the order of :attr:`spec`.
    """

    def __init__(
        self,
        encoder: nn.Module,
        entries: Sequence[TaskEntry],
        request: InputRequest,
        constants: Mapping[str, Any],
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.tasks = nn.ModuleList([entry.task for entry in entries])
        self.names = [entry.name for entry in entries]
        self.request = request
        self.constants = dict(constants)
        self.spec: list[tuple[str, str]] = []

    def forward(self, tensors: dict[str, Tensor]) -> list[Tensor]:
        # A fresh Batch: its number of structures is ptr's size (symbolic), not a stored int.
        batch = Batch(**tensors, **self.constants)
        encoder_input = prepare_encoder_input(
            batch, self.request, keep_graph=True, shared=len(self.tasks) > 1
        )
        embeddings = self.encoder(encoder_input.batch)
        flat: list[Tensor] = []
        self.spec = []
        for name, task in zip(self.names, self.tasks, strict=True):
            computed: Mapping[str, Tensor] = cast(Any, task).compute_outputs(
                embeddings, encoder_input
            )
            for key, value in computed.items():
                self.spec.append((name, key))
                flat.append(value)
        return flat


@dataclass
class _Graph:
    """One traced and compiled view pass, valid for the sizes its guards accept."""

    spec: list[tuple[str, str]]
    guards: str | None
    shape_env: Any
    compiled: Callable[..., list[Tensor]]

    def accepts(self, flat: Sequence[Tensor]) -> bool:
        """Whether the sizes of ``flat`` satisfy what tracing assumed about them."""
        if self.guards is None:
            return True
        return bool(self.shape_env.evaluate_guards_expression(self.guards, list(flat)))


class CompiledViewPass:
    """Training outputs of the tasks of one encoder view, computed by one compiled graph.

    The first call for a view traces the view pass (inputs prepared as
    :func:`~matsci.tasks.core.prepare_encoder_input` does, the encoder, each task's
    ``compute_outputs`` with its derivatives) with symbolic sizes into one graph of ATen
    operators, and compiles it with ``torch.compile(dynamic=True)``. Later calls reuse it for any
    number of atoms, edges and structures. Where tracing had to assume something about a size
    (a number of structures turned into a Python ``int``, a size of 0 or 1, two sizes that were
    equal), the graph records that assumption as a guard; a batch that breaks it is traced and
    compiled once more, and both graphs are kept. :attr:`num_graphs` counts them.

    Used by the engine while training when ``compile_training`` is set; evaluation and prediction
    stay eager. The object holds no weights: every call reads the modules' current parameters
    and buffers, so optimizer steps, ``load_state_dict`` and weight averaging act as in eager
    mode, and the module's ``state_dict`` is unchanged. Copying it (``copy.deepcopy`` of the
    module, as weight averaging does) gives an empty pass that traces again when used.

    Parameters
    ----------
    backend
        The :func:`torch.compile` backend: ``"inductor"`` (generated kernels) or, for example,
        ``"aot_eager"`` (AOTAutograd without code generation, for tests).
    owner
        The module's class name, for errors and warnings.

    Examples
    --------
    >>> from matsci.tasks.core import CompiledViewPass
    >>> CompiledViewPass("aot_eager", owner="ForceRegressionTask")
    CompiledViewPass(backend='aot_eager', num_graphs=0)
    """

    def __init__(self, backend: str, *, owner: str) -> None:
        self.backend = backend
        self.owner = owner
        self._graphs: dict[tuple[Any, ...], list[_Graph]] = {}
        self._warned = False

    @property
    def num_graphs(self) -> int:
        """How many graphs were traced and compiled so far (all views together)."""
        return sum(len(graphs) for graphs in self._graphs.values())

    def __repr__(self) -> str:
        return f"{type(self).__name__}(backend={self.backend!r}, num_graphs={self.num_graphs})"

    def __deepcopy__(self, memo: dict[int, Any]) -> CompiledViewPass:
        return CompiledViewPass(self.backend, owner=self.owner)

    def __getstate__(self) -> dict[str, Any]:
        return {"backend": self.backend, "owner": self.owner}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["backend"], owner=state["owner"])  # type: ignore[misc]

    def __call__(
        self,
        encoder: nn.Module,
        entries: Sequence[TaskEntry],
        request: InputRequest,
        batch: Batch,
    ) -> dict[str, dict[str, Tensor]]:
        """Every task's raw outputs for ``batch``, ``{task name: {key: output}}``.

        Parameters
        ----------
        encoder
            The engine's encoder.
        entries
            The tasks that read this view.
        request
            Their merged input request (it needs gradients).
        batch
            The dataset's batch (a :class:`~torch_geometric.data.Batch` from a data loader).

        Returns
        -------
        dict
            As :meth:`~matsci.tasks.core.TaskEngine.task_outputs`, with the graph kept for the
            loss's backward pass.

        Raises
        ------
        RuntimeError
            If the encoder or a task cannot be traced into one graph (for example Python
            control flow on tensor values, ``.item()``): the message names the encoder and
            PyTorch's reason, and advises ``compile_training=False``.
        """
        module = _ViewModule(encoder, entries, request, _constants(batch))
        named = _weight_slots(module)
        slots: dict[int, int] = {}
        weights: list[Tensor] = []
        for _, tensor in named:
            if id(tensor) not in slots:
                slots[id(tensor)] = len(weights)
                weights.append(tensor)
        names = [(name, slots[id(tensor)]) for name, tensor in named]
        tensors = {name: value for name, value in batch.items() if isinstance(value, Tensor)}
        flat = [*weights, *tensors.values()]
        key = (
            request,
            tuple(module.names),
            tuple(module.constants),
            tuple(names),
            tuple((t.dtype, t.device, t.requires_grad) for t in weights),
            tuple((name, t.dtype, t.device) for name, t in tensors.items()),
            tuple(m.training for m in module.modules()),
        )
        graphs = self._graphs.setdefault(key, [])
        graph = next((graph for graph in graphs if graph.accepts(flat)), None)
        if graph is None:
            graph = self._new_graph(module, names, weights, batch, flat)
            graphs.append(graph)
            if len(graphs) > _MAX_GRAPHS and not self._warned:
                self._warned = True
                warnings.warn(
                    f"{self.owner}(compile_training=...): the view pass of "
                    f"{type(encoder).__name__} was traced {len(graphs)} times; each batch "
                    "size that breaks an assumption of the trace (see CompiledViewPass) is "
                    "traced and compiled again",
                    stacklevel=3,
                )
        values = graph.compiled(*flat)
        outputs: dict[str, dict[str, Tensor]] = {name: {} for name in module.names}
        for (name, output_key), value in zip(graph.spec, values, strict=True):
            outputs[name][output_key] = value
        return outputs

    def _new_graph(
        self,
        module: _ViewModule,
        names: list[tuple[str, int]],
        weights: list[Tensor],
        batch: Batch,
        flat: list[Tensor],
    ) -> _Graph:
        """A graph for ``batch``, traced on a batch whose sizes coincide with nothing.

        Symbolic tracing gives equal sizes one symbol: traced on 3 structures, the number of
        structures would be tied to the 3 of the positions and the graph valid for 3 structures
        only. The trace therefore runs on the batch's structures repeated until the numbers of
        structures, atoms and edges differ from each other and from every weight's size; the
        graph is kept if its guards accept ``batch`` (else ``batch`` itself is traced).
        """
        tensor_names = [name for name, value in batch.items() if isinstance(value, Tensor)]
        example = _tracing_batch(batch, weights)
        if example is not None:
            example_flat = [*weights, *(example[name] for name in tensor_names)]
            graph = self._trace(module, names, len(weights), tensor_names, example_flat)
            if graph.accepts(flat):
                # torch.compile too gives equal sizes one symbol on its first call: make that
                # call on the example, so that no later batch size compiles again.
                graph.compiled(*example_flat)
                return graph
        return self._trace(module, names, len(weights), tensor_names, flat)

    def _trace(
        self,
        module: _ViewModule,
        names: list[tuple[str, int]],
        count: int,
        tensor_names: list[str],
        flat: list[Tensor],
    ) -> _Graph:
        """Trace the view pass with symbolic sizes into one graph and compile it."""

        def view_pass(*inputs: Tensor) -> list[Tensor]:
            # One name per (module, attribute): a module reached by two paths (the encoder is
            # also an attribute of each task) is swapped, and restored, once.
            state = {name: inputs[slot] for name, slot in names}
            tensors = dict(zip(tensor_names, inputs[count:], strict=True))
            result: list[Tensor] = torch.func.functional_call(
                module, state, (tensors,), tie_weights=False, strict=False
            )
            return result

        try:
            traced = make_fx(view_pass, tracing_mode="symbolic")(*flat)
        except Exception as error:
            raise RuntimeError(
                f"{self.owner}(compile_training=...): the encoder {type(module.encoder).__name__} "
                f"(with tasks {module.names}) cannot be traced into one graph with its "
                f"derivatives ({type(error).__name__}: {error}); train with "
                "compile_training=False"
            ) from error
        shape_env = getattr(traced, "shape_env", None)
        placeholders = [node.meta["val"] for node in traced.graph.nodes if node.op == "placeholder"]
        guards = (
            None
            if shape_env is None
            else shape_env.produce_guards_expression(placeholders, ignore_static=False)
        )
        compiled = torch.compile(traced, backend=self.backend, dynamic=True, fullgraph=True)
        return _Graph(list(module.spec), guards, shape_env, compiled)


def _tracing_batch(batch: Batch, weights: Sequence[Tensor]) -> Batch | None:
    """``batch``'s structures, some repeated, so that no size of the batch equals another.

    The numbers of structures ``B`` (and ``B + 1``, the size of ``ptr``), atoms ``N`` and edges
    ``E`` are made distinct from each other, from every weight's sizes and from the batch's
    fixed sizes (3, 9, ...), and at least 2; ``None`` when the batch cannot be split into its
    structures or no such repetition is found among the first few.
    """
    try:
        structures = batch.to_data_list()
    except (RuntimeError, ValueError, AttributeError, TypeError):
        return None
    fixed = {int(size) for tensor in weights for size in tensor.shape}
    fixed |= {int(size) for value in batch.values() if isinstance(value, Tensor)
              for size in value.shape[1:]}  # fmt: skip
    fixed |= {0, 1, 2, 3, 9}
    atoms = [int(data.num_nodes or 0) for data in structures]
    edges = [int(data.num_edges) for data in structures]
    count = len(structures)
    for extra in range(1, 4 * count + 16):
        chosen = [index % count for index in range(count + extra)]
        sizes = [len(chosen), len(chosen) + 1, sum(atoms[i] for i in chosen),
                 sum(edges[i] for i in chosen)]  # fmt: skip
        if len(set(sizes)) == len(sizes) and not set(sizes) & fixed:
            return Batch.from_data_list([structures[index] for index in chosen])
    return None


def _weight_slots(module: nn.Module) -> list[tuple[str, Tensor]]:
    """``(name, tensor)`` of every parameter and buffer attribute, each module visited once.

    A module reachable under several paths appears under its first path only (swapping its
    weights under two names would restore the wrong tensor); a tensor shared by two modules
    appears once per module, and both names later read the same graph input.
    """
    slots: list[tuple[str, Tensor]] = []
    for path, submodule in module.named_modules():
        prefix = f"{path}." if path else ""
        for name, tensor in submodule.named_parameters(recurse=False):
            slots.append((prefix + name, tensor))
        for name, tensor in submodule.named_buffers(recurse=False):
            slots.append((prefix + name, tensor))
    return slots


def _constants(batch: Batch) -> dict[str, Any]:
    """The batch's attributes that are not tensors (names, flags), passed to the trace as is."""
    return {name: value for name, value in batch.items() if not isinstance(value, Tensor)}
