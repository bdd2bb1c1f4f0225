"""A LightningModule whose attribute bookkeeping around Lightning's hook calls is cheap."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from typing_extensions import override

_HOOK_NAME = "_current_fx_name"
"""The attribute Lightning sets before and after every hook call (a str or ``None``)."""


class LeanLightningModule(pl.LightningModule):
    """``pl.LightningModule`` with a cheap path for Lightning's per-hook attribute.

    Lightning records the running hook in ``module._current_fx_name`` before and after every
    hook, callback and strategy call: 44 assignments per training step. ``nn.Module`` routes
    each assignment through its parameter, buffer and submodule checks (about 2 µs); a string
    or ``None`` is none of those, so it is stored directly (about 0.2 µs). Every other
    assignment takes ``nn.Module``'s usual path. The base of every task and of
    :class:`MultiTaskLitModule`; not public.
    """

    @override
    def __setattr__(self, name: str, value: Any) -> None:
        if name == _HOOK_NAME and (value is None or type(value) is str):
            object.__setattr__(self, name, value)
            return
        super().__setattr__(name, value)
