"""Two nodes on one machine: ``torchrun --nnodes 2`` on the loopback address, one process each.

The same script trains twice, in two DDP layouts of two processes (gloo on the CPU):

- **two nodes**: two ``torchrun --nnodes 2 --nproc-per-node 1 --node-rank {0,1}`` launchers,
  started together, that meet at ``--master-addr 127.0.0.1`` (torchrun's static rendezvous on
  a free port) as a cluster's nodes would; the script builds ``Trainer(num_nodes=2,
  devices=1)`` and Lightning's ``TorchElasticEnvironment`` reads the node rank from
  ``GROUP_RANK``;
- **one node**: one ``torchrun --nnodes 1 --nproc-per-node 2`` launcher and ``Trainer(num_nodes=1,
  devices=2)``, the run of ``test_ddp.py``.

The script reads ``num_nodes`` and ``devices`` from torchrun's ``GROUP_WORLD_SIZE`` and
``LOCAL_WORLD_SIZE``, trains a small task on 30 structures of the bundled EMT database (each
process opens the database itself), 15 per rank in batches of 4, for two epochs (8 steps), and
validates on 9 structures split 5 + 4 by :class:`~matsci.data.UnpaddedDistributedSampler`.

The final weights of the two layouts are compared **bit for bit**, not to a tolerance. A
rank's shard depends only on its global rank and the world size (both the same in the two
layouts); each process computes its gradients alone, on one thread, from the same weights
(DDP broadcasts rank 0's at the start); and with two ranks every all-reduced gradient is one
floating-point addition, which IEEE 754 makes commutative, so the order in which gloo sums
the two contributions cannot change a bit. A difference would mean that the node layout
changed what a rank reads or how gradients are reduced.
"""

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

HERE = Path(__file__).parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "packages" / "matsci-tasks-core" / "tests"))

from tasks_core_helpers import TinyEncoder  # noqa: E402

from matsci.data import AseDbDataset, ResumableDataLoader, UnpaddedDistributedSampler  # noqa: E402
from matsci.data.examples import bundled_dataset_path  # noqa: E402
from matsci.tasks.core import ScalarRegressionTask  # noqa: E402

TRAIN, VAL = range(30), range(30, 39)
MAX_STEPS = 8  # two epochs of 4 batches (15 structures per rank, batches of 4)
TIMEOUT = 400


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _torchrun(out: Path, nnodes: int, nproc: int, node_rank: int, port: int) -> list[str]:
    return [
        sys.executable, "-m", "torch.distributed.run", f"--nnodes={nnodes}",
        f"--nproc-per-node={nproc}", f"--node-rank={node_rank}", "--master-addr=127.0.0.1",
        f"--master-port={port}", __file__, str(out),
    ]  # fmt: skip


def _launch(commands: list[list[str]]) -> None:
    """Start every launcher at once (the nodes of one job) and wait for all of them."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    running = [
        subprocess.Popen(
            command, cwd=HERE, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        for command in commands
    ]
    logs = []
    for process in running:
        try:
            log, _ = process.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            for other in running:
                other.kill()
            log, _ = process.communicate()
        logs.append((process.returncode, log))
    failed = [f"exit {code}:\n{log[-6000:]}" for code, log in logs if code != 0]
    assert not failed, "torchrun failed:\n" + "\n".join(failed)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    """Per layout, what each global rank recorded (ordered by global rank)."""
    results = {}
    for layout, nnodes, nproc in (("two-nodes", 2, 1), ("one-node", 1, 2)):
        out = tmp_path_factory.mktemp(layout)
        port = _free_port()
        _launch([_torchrun(out, nnodes, nproc, node, port) for node in range(nnodes)])
        results[layout] = [torch.load(out / f"rank{rank}.pt", weights_only=True) for rank in (0, 1)]
    return results


@pytest.mark.slow
def test_each_layout_ran_as_launched(runs: dict[str, list[dict[str, Any]]]) -> None:
    # (global rank, local rank, node rank, world size, num_nodes) as Lightning saw them.
    expected = {
        "two-nodes": [(0, 0, 0, 2, 2), (1, 0, 1, 2, 2)],
        "one-node": [(0, 0, 0, 2, 1), (1, 1, 0, 2, 1)],
    }
    for layout, ranks in runs.items():
        assert [record["layout"] for record in ranks] == expected[layout], layout


@pytest.mark.slow
def test_two_nodes_train_the_same_weights_as_one_node(
    runs: dict[str, list[dict[str, Any]]],
) -> None:
    nodes, single = runs["two-nodes"], runs["one-node"]
    # Both ranks of a layout hold the same weights after every step, and the layouts agree.
    for ranks in (nodes, single):
        assert [step for step, _ in ranks[0]["hashes"]] == list(range(1, MAX_STEPS + 1))
        assert ranks[0]["hashes"] == ranks[1]["hashes"]
    assert nodes[0]["hashes"] == single[0]["hashes"]
    assert len({digest for _, digest in nodes[0]["hashes"]}) == MAX_STEPS  # every step moved
    final, reference = nodes[0]["state_dict"], single[0]["state_dict"]
    assert final.keys() == reference.keys()
    for name, value in final.items():
        assert torch.equal(value, reference[name]), name
        assert torch.equal(value, nodes[1]["state_dict"][name]), name
    initial = nodes[0]["initial"]
    assert any(not torch.equal(value, initial[name]) for name, value in final.items())
    # The validation metrics Lightning reduced over the two nodes are those of one node.
    assert nodes[0]["metrics"] == nodes[1]["metrics"] == single[0]["metrics"]
    assert {"val/energy/mae", "val/energy/rmse", "val/loss"} <= set(nodes[0]["metrics"])


@pytest.mark.slow
def test_each_node_reads_its_share_once(runs: dict[str, list[dict[str, Any]]]) -> None:
    for layout, ranks in runs.items():
        first = [set(record["train_ids"][0]) for record in ranks]
        second = [set(record["train_ids"][1]) for record in ranks]
        # Lightning's sampler: 15 structures a rank, disjoint, 30 together, reshuffled per epoch.
        for epoch in (first, second):
            assert [len(ids) for ids in epoch] == [15, 15], layout
            assert epoch[0] | epoch[1] == {index + 1 for index in TRAIN}, layout  # ASE ids
            assert not epoch[0] & epoch[1], layout
        assert first != second, layout
        seen = sorted(ranks[0]["val_ids"] + ranks[1]["val_ids"])
        assert seen == [index + 1 for index in VAL], layout
        assert [len(record["val_ids"]) for record in ranks] == [5, 4], layout
    nodes, single = runs["two-nodes"], runs["one-node"]
    for rank in (0, 1):
        assert nodes[rank]["train_ids"] == single[rank]["train_ids"]


# -- the script: each torchrun process runs this ------------------------------------------------


def _main(out: Path) -> None:
    import hashlib

    import lightning.pytorch as pl
    from lightning.pytorch.strategies import DDPStrategy
    from torch.utils.data import Subset
    from typing_extensions import override

    class Record(pl.Callback):
        """Per step: a hash of the weights; per epoch: the structures this rank trained on."""

        def __init__(self) -> None:
            self.hashes: list[tuple[int, str]] = []
            self.train_ids: list[list[int]] = []
            self.val_ids: list[int] = []

        @override
        def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            self.train_ids.append([])

        @override
        def on_train_batch_start(
            self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
        ) -> None:
            self.train_ids[-1] += batch.structure_id.tolist()

        @override
        def on_train_batch_end(
            self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
            batch_idx: int,
        ) -> None:  # fmt: skip
            flat = torch.cat([p.detach().reshape(-1) for p in pl_module.parameters()])
            digest = hashlib.sha256(flat.double().numpy().tobytes()).hexdigest()
            self.hashes.append((trainer.global_step, digest))

        @override
        def on_validation_batch_start(
            self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int,
            dataloader_idx: int = 0,
        ) -> None:  # fmt: skip
            if trainer.current_epoch == trainer.max_epochs - 1:  # the last validation
                self.val_ids += batch.structure_id.tolist()

    torch.set_num_threads(1)
    pl.seed_everything(0, workers=True, verbose=False)
    # Every process opens the database itself (read-only), as on separate nodes.
    data = AseDbDataset(bundled_dataset_path("emt"), keys=["energy"])
    train, val = Subset(data, TRAIN), Subset(data, VAL)
    module = ScalarRegressionTask(
        encoder_class=TinyEncoder, encoder_kwargs={"embedding_dim": 16, "num_elements": 80},
        task_keys=["energy"], output_kwargs={"hidden_dim": 16}, lr=5e-3,
    )  # fmt: skip
    initial = {name: value.detach().clone() for name, value in module.state_dict().items()}
    record = Record()
    trainer = pl.Trainer(
        accelerator="cpu", num_nodes=int(os.environ["GROUP_WORLD_SIZE"]),
        devices=int(os.environ["LOCAL_WORLD_SIZE"]),
        strategy=DDPStrategy(process_group_backend="gloo"), max_epochs=2, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        num_sanity_val_steps=0, callbacks=[record],
    )  # fmt: skip
    trainer.fit(
        module,
        ResumableDataLoader(train, batch_size=4, shuffle=True),
        ResumableDataLoader(val, batch_size=4, sampler=UnpaddedDistributedSampler(val)),
    )
    # DDP broadcast rank 0's initial weights: compare with those.
    initial = trainer.strategy.broadcast(initial, src=0)
    metrics = {
        name: float(value)
        for name, value in trainer.callback_metrics.items()
        if name.startswith("val/")
    }
    layout = (trainer.global_rank, trainer.local_rank, trainer.node_rank)
    layout += (trainer.world_size, trainer.num_nodes)
    torch.save(
        {
            "layout": layout,
            "hashes": record.hashes,
            "train_ids": record.train_ids,
            "val_ids": record.val_ids,
            "metrics": metrics,
            "initial": initial,
            "state_dict": {k: v.detach().clone() for k, v in module.state_dict().items()},
        },
        out / f"rank{trainer.global_rank}.pt",
    )


if __name__ == "__main__":
    _main(Path(sys.argv[1]))
