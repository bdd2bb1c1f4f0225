from matsci.contract import DatasetStatistics


def test_dataclass_defaults() -> None:
    stats = DatasetStatistics(num_structures=1, num_atoms=2)
    assert stats.mean == stats.std == stats.count == {}
    assert stats.missing_elements == []
    assert stats.reference_energies is None
