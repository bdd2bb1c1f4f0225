"""Checks that tests of models on atoms share: symmetries, derivatives, batching, compilation.

A public submodule for the tests of every matsci package and of users' own encoders, heads and
tasks (it is not imported by ``import matsci.contract``). Each ``assert_*`` function raises an
``AssertionError`` that names the output, the transformation and the error when the property
does not hold, and a ``ValueError`` when it is called wrongly.

The model under test is any callable. It takes what the check hands it (a ``Data``/``Batch``
or a tensor) and returns a ``Tensor``, a mapping of names to tensors (``None`` values are
left out) or :class:`~matsci.contract.Embeddings`.

Tolerances depend on the dtype (:data:`TOLERANCES`): the largest absolute error may be
``tolerance(dtype) * factor * max(max|expected|, floor)``. Pass ``rtol``/``atol`` instead to
bound each element by ``atol + rtol * |expected|``, as :func:`torch.testing.assert_close`
does.
"""

from matsci.contract.testing._batching import assert_batch_matches_single
from matsci.contract.testing._compare import TOLERANCES, assert_close_relative, tolerance
from matsci.contract.testing._compile import assert_compile_matches_eager
from matsci.contract.testing._euclidean import (
    Representation,
    assert_equivariant,
    assert_translation_invariant,
    random_rotation,
)
from matsci.contract.testing._finite_differences import (
    assert_forces_are_energy_gradient,
    assert_stress_is_strain_derivative,
)
from matsci.contract.testing._permutation import assert_permutation_equivariant
from matsci.contract.testing._trainer import quiet_trainer

__all__ = [
    "TOLERANCES",
    "Representation",
    "assert_batch_matches_single",
    "assert_close_relative",
    "assert_compile_matches_eager",
    "assert_equivariant",
    "assert_forces_are_energy_gradient",
    "assert_permutation_equivariant",
    "assert_stress_is_strain_derivative",
    "assert_translation_invariant",
    "quiet_trainer",
    "random_rotation",
    "tolerance",
]
