"""The vector tasks rotate their predictions with the structure on invariant encoders too."""

import warnings
from pathlib import Path

import pytest
import torch
from physics_helpers import SmoothEncoder, random_crystal
from torch import Tensor
from torch_geometric.data import Batch, Data

from matsci.contract.testing import assert_equivariant, quiet_trainer
from matsci.heads import EdgeVectorReadout
from matsci.tasks.physics import GradFreeForceRegression, NodeDenoisingTask, NotEquivariantWarning
from matsci.transforms import NoisyPositions

VECTOR_TASKS = [(GradFreeForceRegression, "force"), (NodeDenoisingTask, "denoise")]


def _structure(seed: int = 3) -> Data:
    data = random_crystal(seed, n_atoms=6, dtype=torch.float64)
    return NoisyPositions(scale=0.1, generator=torch.Generator().manual_seed(seed))(data)


def _task(task_class: type, **kwargs: object) -> GradFreeForceRegression | NodeDenoisingTask:
    torch.manual_seed(0)
    task = task_class(encoder_class=SmoothEncoder, encoder_kwargs={"embedding_dim": 8}, **kwargs)
    return task.double()  # type: ignore[no-any-return]


def _predict(task: GradFreeForceRegression | NodeDenoisingTask, key: str):
    def model(data: Data) -> Tensor:
        return task.predict(Batch.from_data_list([data]))[key]

    return model


@pytest.mark.parametrize(("task_class", "key"), VECTOR_TASKS)
def test_invariant_encoders_get_an_equivariant_edge_readout(task_class: type, key: str) -> None:
    task = _task(task_class)
    assert isinstance(task.output_heads[key], EdgeVectorReadout)
    assert task.output_heads[key].cutoff == task.encoder.cutoff
    # Positions, noisy positions and cell rotate together; the prediction must rotate too.
    inputs = {"pos": "vector", "cell": "vector", "noisy_pos": "vector"}
    assert_equivariant(_predict(task, key), _structure(), "vector", inputs=inputs, floor=1e-6)


@pytest.mark.parametrize(("task_class", "key"), VECTOR_TASKS)
def test_a_dense_head_warns_and_fails_the_rotation_check(task_class: type, key: str) -> None:
    with pytest.warns(NotEquivariantWarning, match="cannot predict a vector"):
        task = _task(task_class, vector_head="dense")
    inputs = {"pos": "vector", "cell": "vector", "noisy_pos": "vector"}
    # What the warning says: rotating the structure does not rotate the dense head's output.
    with pytest.raises(AssertionError):
        assert_equivariant(_predict(task, key), _structure(), "vector", inputs=inputs)


def test_the_auto_head_warns_about_nothing() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", NotEquivariantWarning)
        _task(GradFreeForceRegression)


def test_the_cutoff_comes_from_output_kwargs_first() -> None:
    task = _task(GradFreeForceRegression, output_kwargs={"cutoff": 2.5, "hidden_dim": 8})
    head = task.output_heads["force"]
    assert isinstance(head, EdgeVectorReadout)
    assert head.cutoff == 2.5


def test_an_encoder_without_cutoff_asks_for_one() -> None:
    class NoCutoff(torch.nn.Module):
        embedding_dim = 4

    with pytest.raises(ValueError, match=r"output_kwargs=\{'cutoff': \.\.\.\}"):
        GradFreeForceRegression(encoder=NoCutoff())


def test_a_batch_without_edges_says_what_to_add() -> None:
    task = _task(GradFreeForceRegression)
    data = _structure()

    class KeepsEdges(SmoothEncoder):
        def forward(self, batch: Batch):  # type: ignore[no-untyped-def]
            embeddings = super().forward(batch)
            del batch.edge_index
            return embeddings

    task.encoder = KeepsEdges(embedding_dim=8).double()
    with pytest.raises(ValueError, match=r"add matsci\.transforms\.PeriodicRadiusGraph"):
        task.predict(Batch.from_data_list([data]))


def test_unknown_vector_head_is_refused() -> None:
    with pytest.raises(ValueError, match=r"vector_head='edges'.*\['auto', 'edge', 'dense'\]"):
        GradFreeForceRegression(encoder_class=SmoothEncoder, vector_head="edges")  # type: ignore[arg-type]


def test_denoising_reads_the_edges_of_the_noisy_structure() -> None:
    task = _task(NodeDenoisingTask)
    data = _structure()
    batch = Batch.from_data_list([data])
    predicted = task.predict(batch)["denoise"]
    # The same prediction with the noisy positions given as the clean ones: only noisy_pos
    # matters (the readout's edge vectors come from the positions the encoder saw).
    swapped = data.clone()
    swapped.pos = data.noisy_pos.clone()
    torch.testing.assert_close(task.predict(Batch.from_data_list([swapped]))["denoise"], predicted)


def test_the_choice_survives_a_checkpoint(tmp_path: Path) -> None:
    with pytest.warns(NotEquivariantWarning):
        task = GradFreeForceRegression(encoder_class=SmoothEncoder, vector_head="dense")
    trainer = quiet_trainer(max_steps=0)
    trainer.strategy.connect(task)
    path = tmp_path / "dense.ckpt"
    trainer.save_checkpoint(path)
    with pytest.warns(NotEquivariantWarning):
        loaded = GradFreeForceRegression.load_from_checkpoint(path)
    assert loaded.vector_head == "dense"
    assert not isinstance(loaded.output_heads["force"], EdgeVectorReadout)
