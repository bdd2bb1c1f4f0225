"""The elements a trained model may be asked about, and the refusal of the others."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from numbers import Integral
from typing import Any

import torch
from ase.data import atomic_numbers, chemical_symbols

from matsci.tasks.physics._force_regression import ForceRegressionTask


@dataclass(frozen=True)
class KnownElements:
    """The atomic numbers a model was trained on; ``None`` when the model cannot tell.

    A :class:`ForceRegressionTask` knows the elements with a nonzero per-element reference
    energy: ``fit_normalizers`` fits one for every element of the training data and leaves the
    others at exactly 0. A model whose reference energies are all 0, and a direct-force model,
    cannot tell, and every element is accepted. The calculator, torch-sim model, LAMMPS fix,
    metatomic export and ``matsci predict`` all refuse the same elements with the same message.

    Parameters
    ----------
    numbers
        The known atomic numbers, or ``None`` to accept every element.

    Examples
    --------
    >>> from matsci.tasks.physics import KnownElements
    >>> known = KnownElements(frozenset({29, 79}))
    >>> known.symbols
    ['Cu', 'Au']
    >>> known.check([29, 14, 29], owner="MatsciCalculator", where="structure Cu2Si")
    Traceback (most recent call last):
    ...
    ValueError: MatsciCalculator: structure Cu2Si has element ['Si'] the model was not trained on; known elements: ['Cu', 'Au']
    """  # noqa: E501

    numbers: frozenset[int] | None

    @classmethod
    def of(
        cls, model: Any, elements: Iterable[str | int] | None = None, *, owner: str
    ) -> KnownElements:
        """The known elements of a model: ``elements`` when given, else its trained ones.

        Parameters
        ----------
        model
            A trained task; only a :class:`ForceRegressionTask` can tell its elements.
        elements
            Chemical symbols or atomic numbers that override what the model tells.
        owner
            Who asks, for the message (``"MatsciCalculator"``).

        Returns
        -------
        KnownElements
            The known set, or one that accepts every element.

        Raises
        ------
        ValueError
            If an entry of ``elements`` is neither a chemical symbol nor an atomic number in
            1..118.
        """
        if elements is None:
            if not isinstance(model, ForceRegressionTask):
                return cls(None)  # a direct-force model has no reference energies to tell by
            nonzero = torch.nonzero(model.reference_energies).reshape(-1).tolist()
            return cls(frozenset(int(z) for z in nonzero) or None)
        known = set()
        for element in elements:
            # Any integer kind (numpy's too), but not a bool.
            number: object = atomic_numbers.get(element) if isinstance(element, str) else element
            if (
                isinstance(number, bool)
                or not isinstance(number, Integral)
                or not 1 <= int(number) < len(chemical_symbols)
            ):
                raise ValueError(
                    f"{owner}(elements=...): {element!r} is not a chemical symbol or an atomic "
                    "number in 1..118"
                )
            known.add(int(number))
        return cls(frozenset(known))

    @property
    def symbols(self) -> list[str] | None:
        """Chemical symbols of the known elements in order of atomic number, or ``None``."""
        if self.numbers is None:
            return None
        return [chemical_symbols[z] for z in sorted(self.numbers)]

    def check(self, numbers: Iterable[int], *, owner: str, where: str) -> None:
        """Refuse atomic numbers outside the known set.

        Parameters
        ----------
        numbers
            The atomic numbers of one structure (repeats allowed).
        owner
            Who refuses, the start of the message.
        where
            Which structure, such as ``"structure 3 Cu2Si"``.

        Raises
        ------
        ValueError
            Naming the unknown elements and the known ones.
        """
        if self.numbers is None:
            return
        unknown = sorted({int(z) for z in numbers} - self.numbers)
        if unknown:
            raise ValueError(
                f"{owner}: {where} has element {[chemical_symbols[z] for z in unknown]} the "
                f"model was not trained on; known elements: {self.symbols}"
            )
