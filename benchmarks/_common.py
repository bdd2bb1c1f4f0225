"""What the benchmarks share: data, encoders, quiet trainers, step clocks and table printing.

Not a public module: the scripts in this folder import it as ``_common`` (they are run as
``uv run python benchmarks/<name>.py``, which puts this folder on ``sys.path``).
"""

from __future__ import annotations

import datetime
import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor, nn
from torch_geometric.data import Batch, Data
from torch_geometric.utils import scatter

from matsci.contract import testing
from matsci.data import AseDbDataset
from matsci.data.examples import bundled_dataset_path
from matsci.encoders import SchNetEncoder
from matsci.transforms import PeriodicRadiusGraph, edge_vectors

CUTOFF = 5.0
"""Neighbour cutoff (Å) of every benchmark graph and encoder."""

# -- machine and environment ---------------------------------------------------------------------


def setup_threads(threads: int | None) -> int:
    """Fix torch's intra-op threads (default 1) and return the count.

    One thread by default: on a small machine shared with other work, a thread pool that
    spins while waiting for a descheduled member turns milliseconds into hundreds of them, and
    timings stop meaning anything. Give ``--threads`` to measure more.
    """
    count = threads if threads is not None else 1
    torch.set_num_threads(count)
    return count


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (or the platform's processor string)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_line(device: torch.device | str = "cpu") -> str:
    """Device, torch version, thread count, load and date: the header of every table."""
    device = torch.device(device)
    if device.type == "cuda":
        where = torch.cuda.get_device_name(device)
    else:
        where = f"{cpu_name()} ({os.cpu_count()} cores)"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"{where}; torch {torch.__version__}, {torch.get_num_threads()} threads; "
        f"load {load:.1f}; {datetime.date.today().isoformat()}"
    )


def synchronize(device: torch.device | str) -> None:
    """Wait for queued device work (CUDA), so wall-clock timings are complete."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def cuda_peak_bytes(step: Callable[[], Any], device: torch.device) -> int:
    """Peak CUDA memory allocated during one call of ``step``, above what was allocated before."""
    synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    step()
    synchronize(device)
    return int(torch.cuda.max_memory_allocated(device) - before)


# -- data ------------------------------------------------------------------------------------------


def emt_structures(
    count: int | None = None, keys: Sequence[str] = ("energy", "force", "stress")
) -> list[Data]:
    """The bundled EMT cells (8 to 32 atoms) with their periodic radius graphs, in memory."""
    dataset = AseDbDataset(
        bundled_dataset_path("emt"), keys=list(keys), transform=PeriodicRadiusGraph(cutoff=CUTOFF)
    )
    total = len(dataset) if count is None else min(count, len(dataset))
    structures = [dataset[i] for i in range(total)]
    for data in structures:
        # A second structure target for two-task benchmarks: the cell volume per atom (Å³).
        volume = torch.linalg.det(data.cell.reshape(3, 3)).abs()
        data.volume = (volume / data.natoms.to(volume.dtype)).reshape(1)
    return structures


def collate(structures: Sequence[Data], batch_size: int) -> list[Batch]:
    """Pre-collated batches (so data loading is not part of a step-time measurement)."""
    return [
        Batch.from_data_list(list(structures[start : start + batch_size]))
        for start in range(0, len(structures) - batch_size + 1, batch_size)
    ]


def cycle(batches: Sequence[Any], steps: int) -> list[Any]:
    """``steps`` batches, going round ``batches`` as often as needed."""
    return [batches[i % len(batches)] for i in range(steps)]


def to_device(batches: Sequence[Any], device: torch.device | str) -> list[Any]:
    """Every batch moved to ``device`` once, before timing."""
    return [batch.to(device) for batch in batches]


def supercell(data: Data, repeats: tuple[int, int, int]) -> Data:
    """A periodic supercell of an EMT structure with its radius graph (targets dropped)."""
    from ase import Atoms  # ASE is a dependency of matsci-data

    atoms = Atoms(
        numbers=data.atomic_numbers.numpy(),
        positions=data.pos.numpy(),
        cell=data.cell.reshape(3, 3).numpy(),
        pbc=True,
    ).repeat(repeats)
    big = Data(
        pos=torch.tensor(atoms.positions, dtype=torch.get_default_dtype()),
        atomic_numbers=torch.tensor(atoms.numbers, dtype=torch.long),
        natoms=torch.tensor([len(atoms)]),
        cell=torch.tensor(atoms.cell.array, dtype=torch.get_default_dtype()).unsqueeze(0),
        pbc=torch.ones(1, 3, dtype=torch.bool),
    )
    big = PeriodicRadiusGraph(cutoff=CUTOFF)(big)
    big.energy = torch.zeros(1)
    big.force = torch.zeros_like(big.pos)
    big.stress = torch.zeros(1, 3, 3)
    return big


# -- encoders --------------------------------------------------------------------------------------


def tiny_schnet() -> SchNetEncoder:
    """SchNet 8 wide with one interaction: the encoder costs little, the task layer shows."""
    return SchNetEncoder(hidden_channels=8, num_filters=8, num_interactions=1, num_gaussians=8,
                         cutoff=CUTOFF)  # fmt: skip


def realistic_schnet() -> SchNetEncoder:
    """SchNet 64 wide with three interactions and 32 Gaussians."""
    return SchNetEncoder(hidden_channels=64, num_filters=64, num_interactions=3,
                         num_gaussians=32, cutoff=CUTOFF)  # fmt: skip


class RadialEncoder(nn.Module):
    """The encoder of ``examples/emt_forces_quickstart.py``: element vectors, Gaussian distances."""

    def __init__(self, embedding_dim: int = 32, cutoff: float = 4.0) -> None:
        super().__init__()
        self.embedding_dim, self.cutoff = embedding_dim, cutoff
        self.register_buffer("centres", torch.linspace(0.5, cutoff, 8))
        self.elements = nn.Embedding(100, embedding_dim)
        self.radial = nn.Sequential(nn.Linear(8, embedding_dim), nn.Tanh())

    def forward(self, batch: Batch) -> Any:
        from matsci.tasks.core import Embeddings

        _, r = edge_vectors(
            batch.pos, batch.edge_index, batch.cell, batch.cell_offsets, batch.batch
        )
        envelope = 0.5 * (torch.cos(math.pi * r / self.cutoff) + 1.0)
        radial = self.radial(torch.exp(-4.0 * (r.unsqueeze(-1) - self.centres) ** 2))
        atoms = self.elements(batch.atomic_numbers)
        messages = radial * envelope.unsqueeze(-1) * atoms[batch.edge_index[1]]
        return Embeddings(point_embedding=atoms.index_add(0, batch.edge_index[0], messages))


# -- trainers and clocks ---------------------------------------------------------------------------


def quiet_trainer(max_steps: int, callbacks: list[pl.Callback], **kwargs: Any) -> pl.Trainer:
    """The tests' quiet trainer without validation, for ``max_steps`` steps.

    ``deterministic=None``: timings of torch's default kernels, not of the deterministic ones.
    """
    options: dict[str, Any] = {
        "max_steps": max_steps,
        "max_epochs": -1,
        "deterministic": None,
        "limit_val_batches": 0,
        "num_sanity_val_steps": 0,
        "callbacks": callbacks,
    }
    options.update(kwargs)
    return testing.quiet_trainer(**options)


class StepClock(pl.Callback):
    """Wall time of every training iteration: from one batch start to the next.

    The interval holds everything the loop does per step (the step, backward, optimizer,
    logging, hooks, fetching the next batch), the same span a hand-written loop's iteration
    covers. The last iteration is closed at ``on_train_end``.
    """

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = device
        self.times: list[float] = []
        self._last: float | None = None

    def _tick(self) -> None:
        synchronize(self.device)
        now = time.perf_counter()
        if self._last is not None:
            self.times.append(now - self._last)
        self._last = now

    def on_train_batch_start(self, *args: Any) -> None:
        self._tick()

    def on_train_end(self, *args: Any) -> None:
        self._tick()


class InterleavedBaseline(pl.Callback):
    """Run a hand-written step on each batch just before the Trainer's step, and time both.

    Interleaving the two at every step exposes them to the same load on a shared machine, so
    their ratio holds even when absolute times drift. ``baseline`` holds the hand-written
    steps' times; ``loop`` the time from the end of one hand-written step to the start of the
    next batch, i.e. everything the Trainer did for one step (its training step, backward,
    optimizer, hooks, logging, fetching the next batch).

    Parameters
    ----------
    step
        The hand-written step, called with the batch (after ``select``).
    select
        What the hand-written step receives from the Trainer's batch (default: the batch).
    device
        Device synchronized before each clock reading.
    clock
        Seconds as a float: ``time.perf_counter`` (wall time, the default) or
        ``time.thread_time`` (CPU time of this thread: with one torch thread on the CPU it
        leaves out the time other processes took from the core).
    """

    def __init__(
        self,
        step: Callable[[Any], Any],
        select: Callable[[Any], Any] | None = None,
        device: torch.device | str = "cpu",
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.step = step
        self.select = select or (lambda batch: batch)
        self.device = device
        self.clock = clock
        self.baseline: list[float] = []
        self.loop: list[float] = []
        self._last: float | None = None

    def on_train_batch_start(self, trainer: Any, module: Any, batch: Any, *args: Any) -> None:
        synchronize(self.device)
        start = self.clock()
        if self._last is not None:
            self.loop.append(start - self._last)
        with torch.enable_grad():
            self.step(self.select(batch))
        synchronize(self.device)
        self._last = self.clock()
        self.baseline.append(self._last - start)

    def on_train_end(self, *args: Any) -> None:
        synchronize(self.device)
        if self._last is not None:
            self.loop.append(self.clock() - self._last)


def time_loop(
    step: Callable[[Any], Any], batches: Sequence[Any], device: torch.device | str = "cpu"
) -> list[float]:
    """Wall time of each call ``step(batch)``, measured as a hand-written loop would run it."""
    times: list[float] = []
    synchronize(device)
    last = time.perf_counter()
    for batch in batches:
        step(batch)
        synchronize(device)
        now = time.perf_counter()
        times.append(now - last)
        last = now
    return times


def median_after(times: Sequence[float], warmup: int) -> float:
    """Median of ``times`` after the first ``warmup`` entries."""
    return statistics.median(times[warmup:])


# -- hand-written steps ----------------------------------------------------------------------------


def adamw(module: nn.Module, lr: float = 1e-3) -> torch.optim.Optimizer:
    """AdamW over a module's parameters (the tasks' default optimizer)."""
    return torch.optim.AdamW(module.parameters(), lr=lr)


def mse(prediction: Tensor, target: Tensor) -> Tensor:
    """Mean squared error."""
    return (prediction - target).square().mean()


def structure_energy(head: nn.Module, point: Tensor, batch: Batch) -> Tensor:
    """Sum of per-atom head outputs per structure, ``[B]``."""
    atom = head(point).squeeze(-1)
    return scatter(atom, batch.batch, dim=0, dim_size=batch.natoms.shape[0], reduce="sum")


class Batches:
    """A fixed sequence of batches as one iterable (Lightning reads a plain list as several)."""

    def __init__(self, batches: Sequence[Any]) -> None:
        self.batches = list(batches)

    def __iter__(self) -> Iterator[Any]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Print a fixed-width table with a title line."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    print(f"\n{title}")
    print("  ".join(str(cell).rjust(width) for cell, width in zip(header, widths, strict=True)))
    for row in rows:
        print("  ".join(str(cell).rjust(width) for cell, width in zip(row, widths, strict=True)))
