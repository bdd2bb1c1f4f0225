import time
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.loggers import Logger
from torch import Tensor
from torch.utils.data import Dataset
from torch_geometric.data import Batch, Data
from torch_geometric.loader import DataLoader
from training_helpers import trainer
from typing_extensions import override

from matsci.training import AtomThroughputMonitor, Throughput, count_atoms_and_structures

FETCH_SECONDS = 0.01  # per structure, so 0.04 per batch of 4
STEP_SECONDS = 0.06
_THROUGHPUT = "throughput/atoms_per_s"


class FakeClock:
    """A clock that only moves when told to."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Structures(Dataset[Data]):
    """``count`` structures of ``atoms[i % len(atoms)]`` atoms; reading one advances the clock."""

    def __init__(self, count: int, atoms: list[int], tick: Any) -> None:
        self.count, self.atoms, self.tick = count, atoms, tick

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> Data:
        self.tick()
        n = self.atoms[index % len(self.atoms)]
        return Data(pos=torch.randn(n, 3), y=torch.randn(1))


class Model(pl.LightningModule):
    """A linear model whose step advances the clock (or sleeps)."""

    def __init__(self, tick: Any) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(3, 1)
        self.tick = tick

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        self.tick()
        return self.linear(batch.pos).square().mean()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


def _fit(monitor: AtomThroughputMonitor, data: Dataset[Data], model: Model, **kwargs: Any) -> None:
    trainer(callbacks=[monitor], **kwargs).fit(model, DataLoader(data, batch_size=4))


def test_fake_clock_gives_exact_rates_and_wait_fraction() -> None:
    clock = FakeClock()
    monitor = AtomThroughputMonitor(log_every_n_steps=5, clock=clock)
    data = Structures(40, [2, 3, 5, 6], lambda: clock.advance(FETCH_SECONDS))  # 16 atoms / 4
    _fit(monitor, data, Model(lambda: clock.advance(STEP_SECONDS)))
    total = monitor.total
    # Ten batches, each read once between steps, each step 0.06 s.
    assert total.steps == 10
    assert total.atoms == 160
    assert total.structures == 40
    assert total.wait_seconds == pytest.approx(10 * 4 * FETCH_SECONDS)
    assert total.step_seconds == pytest.approx(10 * STEP_SECONDS)
    assert total.atoms_per_second == pytest.approx(160 / 1.0)
    assert total.structures_per_second == pytest.approx(40 / 1.0)
    assert total.data_wait_fraction == pytest.approx(0.4)
    assert monitor.last == Throughput(5, 80, 20, pytest.approx(0.3), pytest.approx(0.2))


class _Recorder(Logger):
    """A logger that keeps what it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.logged: list[tuple[int | None, dict[str, float]]] = []

    @property
    @override
    def name(self) -> str:
        return "recorder"

    @property
    @override
    def version(self) -> int:
        return 0

    @override
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.logged.append((step, dict(metrics)))

    @override
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass


def test_logged_values_are_those_of_each_span() -> None:
    clock = FakeClock()
    monitor = AtomThroughputMonitor(log_every_n_steps=5, clock=clock)
    data = Structures(40, [2, 3, 5, 6], lambda: clock.advance(FETCH_SECONDS))
    steps = iter([STEP_SECONDS] * 5 + [0.16] * 5)  # the second span's steps are slower
    recorder = _Recorder()
    run = trainer(callbacks=[monitor], logger=recorder)
    run.fit(Model(lambda: clock.advance(next(steps))), DataLoader(data, batch_size=4))
    logged = [(step, values) for step, values in recorder.logged if _THROUGHPUT in values]
    assert [step for step, _ in logged] == [5, 10]
    # First span: 80 atoms, 20 structures, 0.3 s in steps, 0.2 s waiting.
    assert logged[0][1] == pytest.approx({"throughput/atoms_per_s": 160.0,
                                          "throughput/structures_per_s": 40.0,
                                          "throughput/data_wait_fraction": 0.4})  # fmt: skip
    # Second span: 80 atoms, 20 structures, 0.8 s in steps, 0.2 s waiting.
    assert logged[1][1] == pytest.approx({"throughput/atoms_per_s": 80.0,
                                          "throughput/structures_per_s": 20.0,
                                          "throughput/data_wait_fraction": 0.2})  # fmt: skip
    assert monitor.total.data_wait_fraction == pytest.approx(0.4 / 1.5)


def test_the_steps_after_the_last_log_are_logged_when_training_ends() -> None:
    clock = FakeClock()
    monitor = AtomThroughputMonitor(log_every_n_steps=4, clock=clock)
    data = Structures(24, [2], lambda: clock.advance(FETCH_SECONDS))  # 6 batches of 4
    recorder = _Recorder()
    run = trainer(callbacks=[monitor], logger=recorder)
    run.fit(Model(lambda: clock.advance(STEP_SECONDS)), DataLoader(data, batch_size=4))
    steps = [step for step, values in recorder.logged if _THROUGHPUT in values]
    assert steps == [4, 6]
    assert monitor.last == Throughput(2, 16, 8, pytest.approx(0.12), pytest.approx(0.08))


def test_nothing_is_logged_between_ends_when_the_trainer_logs_no_steps() -> None:
    clock = FakeClock()
    monitor = AtomThroughputMonitor(clock=clock)
    data = Structures(24, [2], lambda: clock.advance(FETCH_SECONDS))
    recorder = _Recorder()
    run = trainer(callbacks=[monitor], logger=recorder, log_every_n_steps=0)
    run.fit(Model(lambda: clock.advance(STEP_SECONDS)), DataLoader(data, batch_size=4))
    steps = [step for step, values in recorder.logged if _THROUGHPUT in values]
    assert steps == [6]  # only the whole run, when training ends
    assert monitor.last == monitor.total


def test_validation_time_is_not_counted_as_waiting() -> None:
    clock = FakeClock()
    monitor = AtomThroughputMonitor(log_every_n_steps=100, clock=clock)
    train = Structures(16, [4], lambda: clock.advance(FETCH_SECONDS))
    val = Structures(16, [4], lambda: clock.advance(1.0))  # slow validation reads

    class WithValidation(Model):
        def validation_step(self, batch: Batch, batch_idx: int) -> None:
            clock.advance(1.0)

    model = WithValidation(lambda: clock.advance(STEP_SECONDS))
    run = trainer(callbacks=[monitor], val_check_interval=2, num_sanity_val_steps=0)
    run.fit(model, DataLoader(train, batch_size=4), DataLoader(val, batch_size=4))
    assert monitor.total.wait_seconds == pytest.approx(16 * FETCH_SECONDS)
    assert monitor.total.step_seconds == pytest.approx(4 * STEP_SECONDS)


def test_real_sleeps_give_the_expected_wait_fraction() -> None:
    monitor = AtomThroughputMonitor(log_every_n_steps=50)
    data = Structures(32, [3], lambda: time.sleep(0.0125))  # 0.05 s per batch of 4
    _fit(monitor, data, Model(lambda: time.sleep(0.05)))
    # Equal sleeps on both sides; the step's own work and scheduling noise add a little.
    assert 0.35 < monitor.total.data_wait_fraction < 0.55
    assert monitor.total.atoms == 96


def test_counts_batches_and_dicts_of_batches_without_syncing() -> None:
    pair = Data(pos=torch.zeros(2, 3))
    triple = Data(pos=torch.zeros(3, 3))
    batch = Batch.from_data_list([pair, triple])
    assert count_atoms_and_structures(batch) == (5, 2)
    assert count_atoms_and_structures({"a": batch, "b": None, "c": batch}) == (10, 4)
    assert count_atoms_and_structures([batch, pair]) == (7, 3)


def test_custom_count_and_accumulation_log_once_per_optimizer_step() -> None:
    clock = FakeClock()
    monitor = AtomThroughputMonitor(log_every_n_steps=1, count=lambda b: (7, 1), clock=clock)
    data = Structures(32, [2], lambda: clock.advance(FETCH_SECONDS))
    _fit(monitor, data, Model(lambda: clock.advance(STEP_SECONDS)), accumulate_grad_batches=2)
    assert monitor.total.atoms == 8 * 7
    assert monitor.last is not None
    assert monitor.last.steps == 2


@pytest.mark.parametrize("value", [0, -1, 2.5, True])
def test_bad_log_every_n_steps_is_refused(value: Any) -> None:
    with pytest.raises(ValueError, match=r"AtomThroughputMonitor\(log_every_n_steps=.*int >= 1"):
        AtomThroughputMonitor(log_every_n_steps=value)
