"""Two-process DDP training on CPU (gloo, spawn): heads stay identical without unused parameters.

The test runs this file as a script in a fresh interpreter. Under pytest the module gets a dotted
name that a spawned worker cannot import, so a callback defined here could not be sent to the
workers; run as ``__main__``, multiprocessing's spawn re-imports the file in every worker and the
callback resolves there. The script's folder (this tests folder) is ``sys.path[0]`` and spawn
hands ``sys.path`` to the workers, so they import ``tasks_core_helpers.TinyEncoder`` too.
"""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.strategies import DDPStrategy
from tasks_core_helpers import TinyEncoder, loader, make_structures
from torch_geometric.data import Batch
from typing_extensions import override

from matsci.tasks.core import ScalarRegressionTask

TASK_KEYS = ["energy", "properties"]
MAX_STEPS = 6


def test_ddp_spawn_two_ranks_train_identical_heads(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, __file__, str(tmp_path)],
        cwd=Path(__file__).parent,
        env=_script_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, (
        f"DDP run failed:\n{result.stdout[-4000:]}\n{result.stderr[-8000:]}"
    )

    ranks = [torch.load(tmp_path / f"rank{rank}.pt", weights_only=True) for rank in (0, 1)]
    for rank, record in enumerate(ranks):
        assert record["rank"] == rank
        assert record["world_size"] == 2
        assert record["global_step"] == MAX_STEPS
        # Every head takes part in every step, so DDP runs without searching for unused ones.
        assert record["strategy_find_unused_parameters"] is False
        assert record["ddp_find_unused_parameters"] is False
        # The worker unpickled the encoder from the helpers module found through sys.path.
        assert record["encoder_module"] == "tasks_core_helpers"
        # Heads are built eagerly, in the user's order, on every rank.
        assert record["task_keys"] == TASK_KEYS
        assert record["head_keys"] == TASK_KEYS
        assert list(dict.fromkeys(name.split(".")[0] for name in record["head_state"])) == (
            TASK_KEYS
        )
        assert any(
            not torch.equal(record["head_state"][name], record["initial_head_state"][name])
            for name in record["head_state"]
        ), "training did not change the heads"

    # The ranks trained on different batches (DistributedSampler) yet hold identical weights.
    assert not torch.equal(ranks[0]["first_batch_energy"], ranks[1]["first_batch_energy"])
    for part in ("head_state", "encoder_state"):
        state0, state1 = ranks[0][part], ranks[1][part]
        assert list(state0) == list(state1)
        for name in state0:
            assert torch.equal(state0[name], state1[name]), f"{part}: {name} differs"


def _script_env(tmp_path: Path) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # Without compiled bytecode (bytecode writing off and none installed), the script and each
    # worker compile lightning and its dependencies from source, about 12 s apiece on a slow
    # machine. Let the script write bytecode to a private cache that the workers then read.
    installed = Path(importlib.util.cache_from_source(pl.__file__)).exists()
    if sys.dont_write_bytecode and not installed:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(tmp_path / "pycache")
    return env


# -- the script the test runs (spawned workers re-import it as ``__mp_main__``) ----------------


class _RecordHeads(pl.Callback):
    """Writes each rank's head weights, key order and DDP settings to ``<out>/rank{r}.pt``."""

    def __init__(self, out: str) -> None:
        self.out = out
        self.record: dict[str, object] = {}

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        torch.set_num_threads(1)  # two ranks share two cores

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.record["initial_head_state"] = _head_state(pl_module)
        self.record["ddp_find_unused_parameters"] = trainer.strategy.model.find_unused_parameters

    @override
    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Batch, batch_idx: int
    ) -> None:
        self.record.setdefault("first_batch_energy", batch.energy.detach().clone())

    @override
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        strategy = trainer.strategy
        assert isinstance(strategy, DDPStrategy)
        self.record.update(
            rank=trainer.global_rank,
            world_size=trainer.world_size,
            global_step=trainer.global_step,
            strategy_find_unused_parameters=strategy._ddp_kwargs.get(
                "find_unused_parameters", False
            ),
            encoder_module=type(pl_module.encoder).__module__,
            task_keys=list(pl_module.task_keys),
            head_keys=list(pl_module.output_heads.keys()),
            head_state=_head_state(pl_module),
            encoder_state={
                name: value.detach().clone()
                for name, value in pl_module.encoder.state_dict().items()
            },
        )
        torch.save(self.record, Path(self.out) / f"rank{trainer.global_rank}.pt")


def _head_state(module: pl.LightningModule) -> dict[str, torch.Tensor]:
    heads = module.output_heads.state_dict()
    return {name: value.detach().clone() for name, value in heads.items()}


def _main(out: str) -> None:
    torch.manual_seed(0)
    task = ScalarRegressionTask(
        encoder_class=TinyEncoder,
        encoder_kwargs={"embedding_dim": 16},
        task_keys=TASK_KEYS,
        output_dims={"properties": 2},
        output_kwargs={"hidden_dim": 32},
        lr=5e-3,
    )
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=2,
        strategy=DDPStrategy(process_group_backend="gloo", start_method="spawn"),
        max_steps=MAX_STEPS,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[_RecordHeads(out)],
    )
    trainer.fit(task, loader(make_structures(128, 0), batch_size=16, shuffle=True))


if __name__ == "__main__":
    _main(sys.argv[1])
