"""The shared encoder of a multi-task module, stored once in its ``state_dict``.

Every task of a :class:`~matsci.tasks.core.MultiTaskLitModule` holds the shared encoder as its
own submodule (the same object), so ``task.to()``, ``task.state_dict()`` and
:meth:`~matsci.tasks.core.MultiTaskLitModule.extract_task` see it. PyTorch's ``state_dict``
walks submodules without noticing sharing, so the module's dictionary would name the encoder's
tensors once under ``encoder.`` and again under ``tasks.<task>.encoder.`` for every task. Two
public module hooks keep one copy: the ``state_dict`` post-hook drops the tasks' copies, and
the ``load_state_dict`` pre-hook puts them back from ``encoder.`` before loading, so strict
loading still finds every key (and checkpoints written with the copies still load).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

__all__ = ["store_shared_encoder_once"]


def store_shared_encoder_once(module: nn.Module, task_paths: Sequence[str]) -> None:
    """Make ``module.state_dict()`` hold the encoder at ``encoder.`` only.

    Parameters
    ----------
    module
        A module with an ``encoder`` submodule that the submodules at ``task_paths`` share.
    task_paths
        Dotted paths of the tasks inside ``module`` (``"tasks.bulk/ScalarRegressionTask"``);
        each has the shared encoder as its ``encoder``.
    """
    copies = tuple(f"{path}.encoder." for path in task_paths)
    # Both registration methods are public but untyped in PyTorch.
    module.register_state_dict_post_hook(_DropCopies(copies))  # type: ignore[no-untyped-call]
    module.register_load_state_dict_pre_hook(_RestoreCopies(copies))  # type: ignore[no-untyped-call]


# Hooks are callable objects, not closures, so that the module still pickles (and PyTorch can
# mark them as registered through its public API, which a bound method would not allow).
class _DropCopies:
    def __init__(self, copies: tuple[str, ...]) -> None:
        self.copies = copies

    def __call__(
        self, module: nn.Module, state_dict: dict[str, Any], prefix: str, local_metadata: Any
    ) -> None:
        copies = tuple(f"{prefix}{copy}" for copy in self.copies)
        for key in [key for key in state_dict if key.startswith(copies)]:
            del state_dict[key]


class _RestoreCopies:
    def __init__(self, copies: tuple[str, ...]) -> None:
        self.copies = copies

    def __call__(
        self,
        module: nn.Module,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: Any,
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        shared = f"{prefix}encoder."
        for key in [key for key in state_dict if key.startswith(shared)]:
            for copy in self.copies:
                state_dict.setdefault(f"{prefix}{copy}{key[len(shared) :]}", state_dict[key])
