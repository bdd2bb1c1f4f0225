import numpy as np
import pytest
from physics_helpers import SmoothEncoder

from matsci.tasks.physics import ForceRegressionTask, GradFreeForceRegression, KnownElements


def test_a_force_field_knows_the_elements_with_a_reference_energy() -> None:
    task = ForceRegressionTask(
        encoder_class=SmoothEncoder, reference_energies={29: -3.5, 79: -3.8, 47: 0.0}
    )
    known = KnownElements.of(task, owner="test")
    assert known.numbers == frozenset({29, 79})  # a reference energy of exactly 0 is unfitted
    assert known.symbols == ["Cu", "Au"]
    known.check([29, 79, 29], owner="test", where="structure 0")
    with pytest.raises(ValueError, match=r"test: structure 1 has element \['Si', 'Ag'\] the "):
        known.check([29, 47, 14], owner="test", where="structure 1")


def test_models_that_cannot_tell_accept_every_element() -> None:
    untrained = ForceRegressionTask(encoder_class=SmoothEncoder)
    direct = GradFreeForceRegression(encoder_class=SmoothEncoder)
    for model in (untrained, direct):
        known = KnownElements.of(model, owner="test")
        assert known.numbers is None
        assert known.symbols is None
        known.check([1, 118], owner="test", where="structure 0")


def test_given_elements_override_and_are_checked() -> None:
    task = ForceRegressionTask(encoder_class=SmoothEncoder, reference_energies={29: -3.5})
    known = KnownElements.of(task, ["Si", np.int64(8)], owner="MatsciCalculator")
    assert known.numbers == frozenset({14, 8})
    for bad in ("Xx", 0, 119, True, 2.0):
        with pytest.raises(ValueError, match=r"MatsciCalculator\(elements=...\): .* is not a "):
            KnownElements.of(task, [bad], owner="MatsciCalculator")  # type: ignore[list-item]
