import torch
from torch import nn

from matsci.tasks.core import ScalarRegressionTask
from matsci.tasks.core._lean_module import LeanLightningModule


class _Module(LeanLightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(2, 1)


def test_hook_name_is_stored_directly_and_everything_else_as_usual() -> None:
    module = _Module()
    module._current_fx_name = "training_step"
    assert module.__dict__["_current_fx_name"] == "training_step"
    assert module._current_fx_name == "training_step"
    module._current_fx_name = None
    assert module._current_fx_name is None
    # Submodules, parameters and buffers still register.
    module.extra = nn.Linear(1, 1)
    module.scale = nn.Parameter(torch.ones(1))
    module.register_buffer("offset", torch.zeros(1))
    module.offset = torch.ones(1)
    assert set(dict(module.named_children())) == {"layer", "extra"}
    assert "scale" in dict(module.named_parameters())
    assert module.state_dict()["offset"].tolist() == [1.0]


def test_tasks_use_it() -> None:
    assert issubclass(ScalarRegressionTask, LeanLightningModule)
