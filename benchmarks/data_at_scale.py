"""Data at scale: ASE-LMDB shards and extxyz of 10^4 to 10^6 small structures.

For each size N (``--sizes``) the script writes N small periodic structures (2 to 8 atoms of
H, C, N, O in a 6 Å cube; energy and forces as calculator results, a second energy
``ref_energy`` in the row's ``data``) twice: as a folder of ASE-LMDB shards of
``--shard-size`` rows with fairchem's ``metadata.npz`` (atoms per row), the layout of
fairchem's dataset folders, and as one extxyz file. The data is kept in ``--data-dir`` and
reused by later runs. Then, every measurement in a process of its own, forked from the script
once it has imported torch, Lightning, ASE and matsci but before it opened any data:

1. **Start-up**: seconds from nothing to a dataset that knows its length and the atoms of
   every structure (what a batch sampler by atom budget needs), and the memory it holds
   (growth of the process's anonymous memory) and sends to each loader worker (its pickled
   size). :func:`~matsci.data.open_dataset` on the shard folder; on the same shards without
   ``metadata.npz`` (one pass over the rows, cached beside the shards: first and second
   open); on the extxyz file (byte-offset index built and cached: first and second open).
   Baseline: ``ase.db.connect`` of every shard and ``len``.
2. **Reads**: structures per second of one process reading in random order, which is what one
   loader worker delivers: ``dataset[i]`` (a ``Data`` with energy and forces), also with the
   periodic radius graph (cutoff 4 Å) that training adds. Baselines: a plain loop of
   ``db.get(id=...)`` + ``row.toatoms()`` (energy and forces read) over the shards, and of
   ``ase.io.read(path, index=i)`` on the extxyz file (``--io-reads`` calls: each one scans
   the file from its start).
3. **Training**: a training-like process (``ForceRegressionTask`` on the small radial encoder
   of ``examples/emt_forces_quickstart.py``, batches of ``--batch-size``, radius graph built
   in the loader, shuffled :class:`~matsci.data.ResumableDataLoader`) for ``--steps`` steps
   with 0, 2 and 4 loader workers (``--workers``): structures per second, the data-wait
   fraction (time between steps over wall time, after ``WARMUP`` steps), the time to the
   first batch, and peak memory: the main process's peak resident set (``VmHWM``, with
   torch and Lightning loaded; shared libraries count as far as the process touched them)
   and peak anonymous memory (sampled every step; it leaves out the file pages that LMDB
   maps into the reader's memory, which the kernel may drop), and the memory that the
   largest loader worker wrote itself (``Private_Dirty`` of its ``smaps``: not the pages
   it shares with the main process since the fork, nor file pages), its largest value
   sampled every 10 steps. None of these should grow with N.

Run: ``uv run python benchmarks/data_at_scale.py [--quick] [--sizes 10000 100000]``.
Linux only (memory is read from ``/proc``).
"""

from __future__ import annotations

import argparse
import glob
import importlib
import json
import multiprocessing
import os
import pickle
import shutil
import tempfile
import time
import traceback
from collections.abc import Iterator
from multiprocessing import Pool
from pathlib import Path
from typing import Any

import numpy as np
from _common import machine_line, print_table, setup_threads

HERE = Path(__file__).resolve()
ELEMENTS = np.array([1, 6, 7, 8])
SYMBOLS = {1: "H", 6: "C", 7: "N", 8: "O"}
BOX = 6.0
CUTOFF = 4.0
KEYS = ["energy", "force"]
WARMUP = 10
FORMAT_VERSION = 1


# -- the synthetic data ---------------------------------------------------------------------------


def chunk(seed: int, index: int, size: int) -> Iterator[tuple[np.ndarray, ...]]:
    """Structures ``index * size`` to ``(index + 1) * size``: numbers, positions, energy, forces,
    reference energy; the same for both formats (seeded by chunk)."""
    rng = np.random.default_rng([seed, index])
    for _ in range(size):
        n = int(rng.integers(2, 9))
        numbers = rng.choice(ELEMENTS, n)
        positions = np.round(rng.random((n, 3)) * BOX, 6)
        energy = np.round(rng.normal(-3.0 * n, 1.0), 6)
        forces = np.round(rng.normal(0.0, 0.5, (n, 3)), 6)
        yield numbers, positions, energy, forces, np.round(energy + rng.normal(), 6)


def write_shard(job: tuple[str, int, int, int]) -> np.ndarray:
    """One ASE-LMDB shard through ``ase.db`` (ase-db-backends); returns its atom counts."""
    import ase.db
    from ase.db.row import AtomsRow

    path, seed, index, size = job
    counts = []
    db = ase.db.connect(path)
    with db:  # one LMDB transaction for the shard
        for k, (numbers, positions, energy, forces, reference) in enumerate(
            chunk(seed, index, size)
        ):
            # The row as ase.db.row.atoms2dict builds it from Atoms with a SinglePointCalculator
            # (built directly: atoms2dict's consistency checks cost 2 ms a row).
            row = AtomsRow({
                "numbers": numbers, "positions": positions, "cell": np.eye(3) * BOX,
                "pbc": np.ones(3, dtype=bool), "calculator": "unknown",
                "calculator_parameters": {}, "energy": float(energy), "forces": forces,
                "unique_id": f"{seed:x}-{index:x}-{k:x}", "ctime": 0.0, "user": "benchmark",
            })  # fmt: skip
            db.write(row, data={"ref_energy": float(reference)})
            counts.append(len(numbers))
    return np.array(counts, dtype=np.int64)


def write_extxyz_chunk(job: tuple[str, int, int, int]) -> None:
    path, seed, index, size = job
    lattice = f'Lattice="{BOX} 0.0 0.0 0.0 {BOX} 0.0 0.0 0.0 {BOX}"'
    with open(path, "w", encoding="ascii") as file:
        for numbers, positions, energy, forces, reference in chunk(seed, index, size):
            file.write(
                f"{len(numbers)}\n{lattice} Properties=species:S:1:pos:R:3:forces:R:3 "
                f'energy={energy:.6f} ref_energy={reference:.6f} pbc="T T T"\n'
            )
            for z, p, f in zip(numbers, positions, forces, strict=True):
                file.write(
                    f"{SYMBOLS[int(z)]} {p[0]:.6f} {p[1]:.6f} {p[2]:.6f} "
                    f"{f[0]:.6f} {f[1]:.6f} {f[2]:.6f}\n"
                )


def ensure_data(root: Path, size: int, shard_size: int, seed: int, jobs: int) -> dict[str, Any]:
    """The data of size ``size`` under ``root`` (written unless a complete copy is there)."""
    folder = root / f"n{size}-shard{shard_size}-seed{seed}-v{FORMAT_VERSION}"
    marker = folder / "complete.json"
    if marker.is_file():
        return json.loads(marker.read_text())
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "shards").mkdir(parents=True)
    chunks = [(index, min(shard_size, size - index * shard_size))
              for index in range(-(-size // shard_size))]  # fmt: skip
    info: dict[str, Any] = {"size": size, "shards": len(chunks)}
    start = time.perf_counter()
    shard_jobs = [(str(folder / "shards" / f"data.{index:04d}.aselmdb"), seed, index, count)
                  for index, count in chunks]  # fmt: skip
    with Pool(jobs) as pool:
        counts = pool.map(write_shard, shard_jobs)
    np.savez(folder / "shards" / "metadata.npz", natoms=np.concatenate(counts))
    info["aselmdb_write_s"] = time.perf_counter() - start
    # The same shards without metadata.npz (a folder of links): atom counts need a pass.
    (folder / "bare").mkdir()
    for path, *_ in shard_jobs:
        os.symlink(path, folder / "bare" / Path(path).name)
    start = time.perf_counter()
    parts = [(str(folder / f"part{index:04d}.extxyz"), seed, index, count)
             for index, count in chunks]  # fmt: skip
    with Pool(jobs) as pool:
        pool.map(write_extxyz_chunk, parts)
    with open(folder / "data.extxyz", "wb") as out:
        for path, *_ in parts:
            with open(path, "rb") as part:
                shutil.copyfileobj(part, out)
            os.remove(path)
    info["extxyz_write_s"] = time.perf_counter() - start
    info["aselmdb_mb"] = sum(os.path.getsize(p) for p, *_ in shard_jobs) / 2**20
    info["extxyz_mb"] = os.path.getsize(folder / "data.extxyz") / 2**20
    info["folder"] = str(folder)
    marker.write_text(json.dumps(info))
    return info


def clear_caches(folder: Path) -> None:
    """Remove the index caches matsci wrote beside the data (for a first-open timing)."""
    for pattern in ("shards/*.matsci-*.npz", "*.matsci-*.npz"):
        for path in glob.glob(str(folder / pattern)):
            os.remove(path)


# -- measurements, each run in a fresh process ----------------------------------------------------


def proc_status(pid: int | str = "self") -> dict[str, float]:
    """Memory lines of ``/proc/<pid>/status`` in MiB (VmHWM, VmRSS, RssAnon, RssFile)."""
    values = {}
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                name, _, rest = line.partition(":")
                if name in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
                    values[name] = int(rest.split()[0]) / 1024
    except OSError:
        pass
    return values


def private_memory(pid: int) -> float:
    """Memory that process ``pid`` wrote and shares with no other (``Private_Dirty``), MiB.

    Clean pages are left out: they are file pages (LMDB maps its files into memory, so pages
    read count as the reader's) or pages still shared since the fork, which the kernel can
    drop or which the main process already counts.
    """
    total = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as rollup:
            for line in rollup:
                if line.startswith("Private_Dirty:"):
                    total += int(line.split()[1])
    except OSError:
        pass
    return total / 1024


def children() -> list[int]:
    pids: list[int] = []
    for path in glob.glob(f"/proc/{os.getpid()}/task/*/children"):
        with open(path, encoding="ascii") as file:
            pids += [int(pid) for pid in file.read().split()]
    return pids


def open_matsci(path: str, graph: bool = False) -> Any:
    from matsci.data._sources import open_dataset  # exported as matsci.data.open_dataset
    from matsci.transforms import PeriodicRadiusGraph

    transform = PeriodicRadiusGraph(cutoff=CUTOFF) if graph else None
    return open_dataset(path, keys=KEYS, transform=transform)


def shard_paths(folder: str) -> list[str]:
    return sorted(glob.glob(os.path.join(folder, "shards", "*.aselmdb")))


def child_startup(method: str, folder: str) -> dict[str, Any]:
    import ase.db

    before = proc_status()["RssAnon"]
    start = time.perf_counter()
    if method == "ase.db.connect":
        dbs = [ase.db.connect(path, readonly=True) for path in shard_paths(folder)]
        length = sum(len(db) for db in dbs)
        seconds = time.perf_counter() - start
        pickled = float("nan")
    else:
        where = {"shards": "shards", "bare": "bare", "extxyz": "data.extxyz"}[method.split()[0]]
        dataset = open_matsci(os.path.join(folder, where))
        length = len(dataset)
        counts = dataset.atom_counts()
        seconds = time.perf_counter() - start
        assert len(counts) == length
        pickled = len(pickle.dumps(dataset)) / 2**20
    return {"seconds": seconds, "length": length, "pickled_mb": pickled,
            "memory_mb": proc_status()["RssAnon"] - before}  # fmt: skip


def child_reads(method: str, folder: str, reads: int, limit: float) -> dict[str, Any]:
    size = json.loads(Path(folder, "complete.json").read_text())["size"]
    order = np.random.default_rng(1).permutation(size)[:reads]
    if method == "ase.db get":
        import ase.db

        paths = shard_paths(folder)
        dbs = [ase.db.connect(path, readonly=True) for path in paths]
        bounds = np.cumsum([0] + [len(db) for db in dbs])

        def read(i: int) -> Any:
            shard = int(np.searchsorted(bounds, i, side="right")) - 1
            atoms = dbs[shard].get(id=int(i - bounds[shard]) + 1).toatoms()
            return atoms.get_potential_energy(), atoms.get_forces()

    elif method == "ase.io.read":
        import ase.io

        path = os.path.join(folder, "data.extxyz")

        def read(i: int) -> Any:
            atoms = ase.io.read(path, index=int(i))
            return atoms.get_potential_energy(), atoms.get_forces()  # type: ignore[union-attr]

    else:
        kind, *rest = method.split()
        dataset = open_matsci(
            os.path.join(folder, "shards" if kind == "shards" else "data.extxyz"),
            graph="graph" in rest,
        )
        dataset.atom_counts()

        def read(i: int) -> Any:
            return dataset[int(i)]

    read(int(order[0]))  # open files, warm caches
    count, start = 0, time.perf_counter()
    for i in order:
        read(int(i))
        count += 1
        if time.perf_counter() - start > limit:
            break
    return {"rate": count / (time.perf_counter() - start), "count": count}


def child_train(kind: str, folder: str, workers: int, steps: int, batch_size: int) -> dict:
    import lightning.pytorch as pl
    import torch
    from _common import RadialEncoder, quiet_trainer

    from matsci.data import ResumableDataLoader
    from matsci.tasks.physics import ForceRegressionTask

    torch.set_num_threads(1)
    torch.manual_seed(0)
    dataset = open_matsci(
        os.path.join(folder, "shards" if kind == "aselmdb" else "data.extxyz"), graph=True
    )
    loader = ResumableDataLoader(dataset, batch_size=batch_size, shuffle=True,
                                 num_workers=workers, persistent_workers=workers > 0)  # fmt: skip
    task = ForceRegressionTask(encoder_class=RadialEncoder, lr=3e-3)

    class Clock(pl.Callback):
        """Step and wait times, and memory of this process and its workers."""

        def __init__(self) -> None:
            self.starts: list[float] = []
            self.ends: list[float] = []
            self.structures = 0
            self.peak_anon = 0.0
            self.worker_private = 0.0
            self.fit_start = 0.0

        def on_train_start(self, *args: Any) -> None:
            self.fit_start = time.perf_counter()

        def on_train_batch_start(self, trainer: Any, module: Any, batch: Any, i: int) -> None:
            self.starts.append(time.perf_counter())
            if len(self.starts) > WARMUP:
                self.structures += int(batch.num_graphs)

        def on_train_batch_end(self, *args: Any) -> None:
            self.ends.append(time.perf_counter())
            self.peak_anon = max(self.peak_anon, proc_status()["RssAnon"])
            if len(self.ends) % 10 == 0 or len(self.ends) == steps:
                for pid in children():
                    self.worker_private = max(self.worker_private, private_memory(pid))

    clock = Clock()
    quiet_trainer(steps, [clock], accelerator="cpu").fit(task, train_dataloaders=loader)
    starts, ends = np.array(clock.starts), np.array(clock.ends)
    waits = starts[WARMUP + 1 :] - ends[WARMUP:-1]
    total = ends[-1] - ends[WARMUP]
    status = proc_status()
    return {
        "structures_per_s": clock.structures / (ends[-1] - starts[WARMUP]),
        "wait_fraction": float(waits.sum() / total),
        "first_batch_s": clock.starts[0] - clock.fit_start,
        "hwm_mb": status["VmHWM"],
        "peak_anon_mb": clock.peak_anon,
        "worker_private_mb": clock.worker_private,
    }


def _answer(send: Any, function: Any, arguments: tuple[Any, ...]) -> None:
    try:
        send.send((True, function(*arguments)))
    except BaseException:  # report any failure to the parent
        send.send((False, traceback.format_exc()))


def fresh(function: Any, *arguments: Any) -> dict[str, Any]:
    """``function(*arguments)`` in a forked process: modules imported, no dataset opened yet."""
    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)
    process = context.Process(target=_answer, args=(send, function, arguments))
    process.start()
    send.close()
    try:
        ok, answer = receive.recv()
    except EOFError:
        ok, answer = False, f"the process died (exit code {process.join() or process.exitcode})"
    process.join()
    if not ok:
        raise RuntimeError(f"{function.__name__}{arguments} failed:\n{answer}")
    return dict(answer)


def preload() -> None:
    """Import what the measurements use, once, before any process is forked."""
    for module in ("ase.db", "ase.io", "lightning.pytorch", "matsci.data", "matsci.tasks.physics",
                   "matsci.transforms", "ase_db_backends.aselmdb"):  # fmt: skip
        importlib.import_module(module)
    setup_threads(1)


# -- the report -----------------------------------------------------------------------------------


STARTUP = [
    ("ase.db.connect", "ase.db.connect every shard, len (baseline)"),
    ("shards", "open_dataset(folder), metadata.npz"),
    ("bare first", "same shards, no metadata.npz, first open"),
    ("bare again", "same shards, no metadata.npz, cached"),
    ("extxyz first", "open_dataset(extxyz), first open"),
    ("extxyz again", "open_dataset(extxyz), cached index"),
]
READS = [
    ("ase.db get", "ase.db get + toatoms, shards (baseline)"),
    ("shards", "matsci dataset[i], shards"),
    ("shards graph", "matsci dataset[i] + radius graph, shards"),
    ("ase.io.read", "ase.io.read(index=i), extxyz (baseline)"),
    ("extxyz", "matsci dataset[i], extxyz"),
    ("extxyz graph", "matsci dataset[i] + radius graph, extxyz"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--shard-size", type=int, default=20_000)
    parser.add_argument("--data-dir", type=Path,
                        default=Path(tempfile.gettempdir()) / "matsci-data-at-scale")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                        help="processes writing the data")  # fmt: skip
    parser.add_argument("--reads", type=int, default=20_000)
    parser.add_argument("--io-reads", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=10.0, help="time limit per read loop")
    parser.add_argument("--rounds", type=int, default=2, help="read loops per reader (best)")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2, 4])
    parser.add_argument("--skip", nargs="*", default=[], choices=["startup", "reads", "train"])
    parser.add_argument("--quick", action="store_true", help="sizes 2000 and 10000, 40 steps")
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.steps, args.reads, args.io_reads = [2000, 10_000], 40, 4000, 5
        args.rounds, args.seconds = 1, 5.0
        args.shard_size = min(args.shard_size, 4000)
    # The children see a cache folder of their own: no index from elsewhere is found.
    os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="matsci-bench-cache-")
    preload()
    print(machine_line())
    data = {size: ensure_data(args.data_dir, size, args.shard_size, args.seed, args.jobs)
            for size in args.sizes}  # fmt: skip
    print_table(
        f"the data: 2 to 8 atoms per structure (5 on average), shards of {args.shard_size} rows",
        ["structures", "shards", "ASE-LMDB MiB", "write s", "extxyz MiB", "write s"],
        [[f"{size:,}", info["shards"], f"{info['aselmdb_mb']:.0f}",
          f"{info['aselmdb_write_s']:.0f}", f"{info['extxyz_mb']:.0f}",
          f"{info['extxyz_write_s']:.0f}"] for size, info in data.items()],
    )  # fmt: skip
    if "startup" not in args.skip:
        rows = []
        for size, info in data.items():
            clear_caches(Path(info["folder"]))
            for method, name in STARTUP:
                answer = fresh(child_startup, method, info["folder"])
                assert answer["length"] == size, (method, answer)
                rows.append([f"{size:,}", name, f"{answer['seconds']:.3f}",
                             f"{answer['memory_mb']:.2f}",
                             f"{answer['pickled_mb']:.2f}"])  # fmt: skip
        print_table(
            "start-up: length and atoms of every structure known (a process each)",
            ["structures", "method", "seconds", "memory MiB", "pickled MiB"],
            rows,
        )
    if "reads" not in args.skip:
        rows = []
        for size, info in data.items():
            baseline: dict[str, float] = {}
            for method, name in READS:
                reads = args.io_reads if method == "ase.io.read" else args.reads
                answer = max(
                    (fresh(child_reads, method, info["folder"], reads, args.seconds)
                     for _ in range(args.rounds)),
                    key=lambda answer: answer["rate"],
                )  # fmt: skip
                family = "shards" if method.startswith(("ase.db", "shards")) else "extxyz"
                baseline.setdefault(family, answer["rate"])
                ratio = answer["rate"] / baseline[family]
                rows.append([f"{size:,}", name, f"{answer['rate']:,.0f}", f"{ratio:.2f}",
                             answer["count"]])  # fmt: skip
        print_table(
            f"reads of one process in random order (= one loader worker), best of {args.rounds}",
            ["structures", "reader", "structures/s", "/ baseline", "reads"],
            rows,
        )
    if "train" not in args.skip:
        rows = []
        for size, info in data.items():
            for kind in ("aselmdb", "extxyz"):
                for workers in args.workers:
                    answer = fresh(child_train, kind, info["folder"], workers, args.steps,
                                   args.batch_size)  # fmt: skip
                    rows.append([f"{size:,}", kind, workers,
                                 f"{answer['structures_per_s']:,.0f}",
                                 f"{100 * answer['wait_fraction']:.1f}%",
                                 f"{answer['first_batch_s']:.2f}", f"{answer['hwm_mb']:.0f}",
                                 f"{answer['peak_anon_mb']:.0f}",
                                 f"{answer['worker_private_mb']:.0f}"])  # fmt: skip
        print_table(
            f"training-like process: radial encoder, forces, batches of {args.batch_size}, "
            f"{args.steps} steps (the first {WARMUP} not timed)",
            ["structures", "format", "workers", "structures/s", "data wait", "first batch s",
             "peak RSS MiB", "peak anon MiB", "worker dirty MiB"],
            rows,
        )  # fmt: skip


if __name__ == "__main__":
    main()
