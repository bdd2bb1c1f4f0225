"""Direct forces and denoising rotate with the structure on both shipped encoders.

The measurement of the issue that asked for it: a random rotation of a rattled 32-atom copper
cell. Before the edge readout, SchNet with a dense head gave F(Rx) - R F(x) as large as the
forces themselves.
"""

import pytest
import torch
from ase.build import bulk
from torch import Tensor, nn
from torch_geometric.data import Batch, Data

from matsci.contract.testing import assert_equivariant
from matsci.data import atoms_to_data
from matsci.encoders import EquivariantEncoder, SchNetEncoder
from matsci.heads import EdgeVectorReadout
from matsci.tasks.physics import GradFreeForceRegression, NodeDenoisingTask
from matsci.transforms import NoisyPositions, PeriodicRadiusGraph

CUTOFF = 4.0
ENCODERS = {
    "schnet": lambda: SchNetEncoder(hidden_channels=16, num_filters=16, num_interactions=2,
                                    num_gaussians=16, cutoff=CUTOFF),
    "equivariant": lambda: EquivariantEncoder(num_channels=8, lmax=1, num_layers=2,
                                              cutoff=CUTOFF),
}  # fmt: skip
TASKS = {"force": GradFreeForceRegression, "denoise": NodeDenoisingTask}


def _copper_cell() -> Data:
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)
    atoms.rattle(0.05, seed=0)
    data = PeriodicRadiusGraph(cutoff=CUTOFF)(atoms_to_data(atoms))
    data = NoisyPositions(scale=0.1, generator=torch.Generator().manual_seed(0))(data)
    return data


@pytest.mark.parametrize("encoder", sorted(ENCODERS))
@pytest.mark.parametrize("key", sorted(TASKS))
def test_predicted_vectors_rotate_with_the_structure(encoder: str, key: str) -> None:
    torch.manual_seed(0)
    task = TASKS[key](encoder=ENCODERS[encoder]())
    if encoder == "schnet":
        assert isinstance(task.output_heads[key], EdgeVectorReadout)
    task.eval()

    def predict(data: Data) -> Tensor:
        return task.predict(Batch.from_data_list([data]))[key]

    prediction = predict(_copper_cell())
    assert prediction.abs().max() > 1e-3  # a real vector field, not zeros
    inputs = {"pos": "vector", "cell": "vector", "noisy_pos": "vector"}
    assert_equivariant(predict, _copper_cell(), "vector", inputs=inputs, floor=1e-5)


def test_the_dense_head_on_schnet_does_not_rotate() -> None:
    """What the warning is about: the error is of the size of the forces themselves."""
    torch.manual_seed(0)
    with pytest.warns(UserWarning, match="cannot predict a vector"):
        task = GradFreeForceRegression(encoder=ENCODERS["schnet"](), vector_head="dense")
    head: nn.Module = task.output_heads["force"]
    assert not isinstance(head, EdgeVectorReadout)
    inputs = {"pos": "vector", "cell": "vector", "noisy_pos": "vector"}
    with pytest.raises(AssertionError):
        assert_equivariant(
            lambda data: task.predict(Batch.from_data_list([data]))["force"],
            _copper_cell(), "vector", inputs=inputs,
        )  # fmt: skip
