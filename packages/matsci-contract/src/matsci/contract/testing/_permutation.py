"""Permutation check: reordering the atoms (and the edges) reorders per-atom outputs only."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final, Literal

import torch
from torch import Tensor
from torch_geometric.data import Data

from matsci.contract import keys
from matsci.contract.testing._compare import _as_dict, _compare, _Model

__all__ = ["assert_permutation_equivariant"]

_NODE_KEYS: Final = (keys.POS, keys.ATOMIC_NUMBERS, keys.FORCE, keys.NOISY_POS, keys.DENOISE)


def _permutation(data: Data, seed: int) -> Tensor:
    """A random order of the atoms [N], within each structure of a batch, not the identity."""
    count = int(data.num_nodes)
    generator = torch.Generator().manual_seed(seed)
    structure = data.get(keys.BATCH)
    group = torch.zeros(count, dtype=torch.float64) if structure is None else structure.cpu()
    for _ in range(100):
        noise = torch.rand(count, generator=generator, dtype=torch.float64)
        order = torch.argsort(2.0 * group.double() + noise)  # grouped, random within groups
        if not torch.equal(order, torch.arange(count)):
            return order
    raise ValueError("assert_permutation_equivariant: no structure has two atoms to swap")


def assert_permutation_equivariant(
    model: _Model,
    data: Data,
    outputs: Literal["node", "invariant"] | Mapping[str, Literal["node", "invariant"]],
    *,
    node_keys: Sequence[str] | None = None,
    edge_keys: Sequence[str] | None = None,
    seed: int = 0,
    factor: float = 1.0,
    floor: float | Mapping[str, float] = 1e-3,
    rtol: float | None = None,
    atol: float | None = None,
) -> None:
    """Assert that reordering the atoms (and the edges) reorders per-atom outputs only.

    The atoms are put in a random order ``order`` (within each structure of a batch): atom
    ``k`` of the permuted input is atom ``order[k]`` of ``data``. ``edge_index`` is renumbered
    to match, and the edges are shuffled too. A ``"node"`` output must become
    ``output[order]``; an ``"invariant"`` one (energy, stress, system embeddings) must stay.

    Parameters
    ----------
    model
        Takes a copy of ``data`` and returns the outputs to check.
    data
        A structure or a ``Batch`` with at least two atoms in a structure; not modified.
    outputs
        ``"node"`` or ``"invariant"`` for every output, or one per output name.
    node_keys
        The per-atom attributes [N, ...] to reorder; by default those of ``pos``,
        ``atomic_numbers``, ``force``, ``noisy_pos`` and ``denoise`` that are present.
    edge_keys
        The per-edge attributes [E, ...] to shuffle with the edges; by default
        ``cell_offsets`` when present.
    seed
        Picks the permutations.
    factor, floor, rtol, atol
        The tolerance, as in :func:`assert_equivariant`.

    Raises
    ------
    AssertionError
        When an output is not permuted (or changed) as stated.
    ValueError
        For an unknown kind of output, or a structure too small to permute.
    """
    if node_keys is None:
        node_keys = [name for name in _NODE_KEYS if data.get(name) is not None]
    if edge_keys is None:
        edge_keys = [name for name in (keys.CELL_OFFSETS,) if data.get(name) is not None]
    order = _permutation(data, seed).to(data.pos.device)
    reference = _as_dict(model(data.clone()))
    kinds = outputs if isinstance(outputs, Mapping) else dict.fromkeys(reference, outputs)
    for name in reference:
        if kinds.get(name) not in ("node", "invariant"):
            raise ValueError(f"assert_permutation_equivariant: output {name!r} is "
                             f"{kinds.get(name)!r}; expected 'node' or 'invariant'")  # fmt: skip
    permuted = data.clone()
    for name in node_keys:
        permuted[name] = data[name][order]
    edge_index = data.get(keys.EDGE_INDEX)
    if edge_index is not None:
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(len(order), device=order.device)
        generator = torch.Generator().manual_seed(seed + 1)
        shuffle = torch.randperm(edge_index.shape[1], generator=generator).to(order.device)
        permuted[keys.EDGE_INDEX] = inverse[edge_index][:, shuffle]
        for name in edge_keys:
            permuted[name] = data[name][shuffle]
    expected = {name: value[order] if kinds[name] == "node" else value
                for name, value in reference.items()}  # fmt: skip
    _compare(_as_dict(model(permuted)), expected, "after permuting the atoms", factor=factor,
             floor=floor, rtol=rtol, atol=atol)  # fmt: skip
