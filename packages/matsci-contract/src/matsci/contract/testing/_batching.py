"""Batch check: the outputs of a batch are those of its structures, one at a time."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch_geometric.data import Batch, Data

from matsci.contract.testing._compare import _as_dict, _floor, _Model, assert_close_relative

__all__ = ["assert_batch_matches_single"]


def assert_batch_matches_single(
    model: _Model,
    structures: Sequence[Data],
    *,
    factor: float = 1.0,
    floor: float | Mapping[str, float] = 1e-3,
    rtol: float | None = None,
    atol: float | None = None,
) -> None:
    """Assert the outputs of a batch are those of its structures, one at a time, concatenated.

    ``model(Batch.from_data_list(structures))`` must equal the concatenation (along the first
    dimension) of ``model(Batch.from_data_list([s]))`` over ``structures``: per structure
    [B, ...], per atom [N, ...] and per edge [E, ...] outputs alike. Each structure's part is
    compared on its own (the tolerance is relative to that structure's values). Structures of
    different sizes catch more mistakes (a wrong offset, a mixed-up structure).

    Parameters
    ----------
    model
        Takes a ``Batch`` and returns the outputs to check.
    structures
        Two or more structures; not modified.
    factor, floor, rtol, atol
        The tolerance, as in :func:`assert_equivariant`.

    Raises
    ------
    AssertionError
        When the batched outputs differ.
    ValueError
        For fewer than two structures.
    """
    if len(structures) < 2:
        raise ValueError(f"assert_batch_matches_single: {len(structures)} structure(s); "
                         "expected two or more")  # fmt: skip
    together = _as_dict(model(Batch.from_data_list(list(structures))))
    offsets = dict.fromkeys(together, 0)
    for index, data in enumerate(structures):
        alone = _as_dict(model(Batch.from_data_list([data])))
        if alone.keys() != together.keys():
            raise AssertionError(f"outputs of structure {index} alone: {sorted(alone)} != "
                                 f"{sorted(together)} of the batch")  # fmt: skip
        for name, expected in alone.items():
            start, offsets[name] = offsets[name], offsets[name] + len(expected)
            assert_close_relative(together[name][start : offsets[name]], expected,
                                  what=f"{name} of structure {index} in the batch vs. alone",
                                  factor=factor, floor=_floor(floor, name), rtol=rtol,
                                  atol=atol)  # fmt: skip
    for name, value in together.items():
        if len(value) != offsets[name]:
            raise AssertionError(f"{name} of the batch: {len(value)} rows; the structures alone "
                                 f"give {offsets[name]}")  # fmt: skip
