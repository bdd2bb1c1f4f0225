import matsci.contract as package


def test_public_names_resolve_to_documented_objects() -> None:
    for name in package.__all__:
        assert getattr(package, name) is not None, name
    assert package.keys.POS == "pos"
    assert package.NUM_ELEMENTS == package.keys.MAX_ATOMIC_NUMBER + 1
