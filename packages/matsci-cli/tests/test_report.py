import pytest

from matsci.cli import metric_unit, metrics_table


@pytest.mark.parametrize(
    ("name", "unit"),
    [
        ("test/energy/mae_per_atom", "eV/atom"),
        ("test/energy/mae", "eV"),
        ("test/force/mae", "eV/Å"),
        ("test/force/cosine_similarity", ""),
        ("test/stress/rmse", "eV/Å³"),
        ("test/denoise/mae", "Å"),
        ("test/spacegroup/top1", ""),
        ("test/loss", ""),
        ("test/band_gap/mae", ""),
        ("test/emt/force/force/mae", "eV/Å"),
    ],
)
def test_metric_unit(name: str, unit: str) -> None:
    assert metric_unit(name) == unit


def test_metrics_table_aligns_values_and_drops_per_key_losses() -> None:
    table = metrics_table(
        {"test/force/mae": 0.0712, "test/loss": 0.25, "test/force/loss": 0.2, "val/loss": 1.0}
    )
    lines = table.splitlines()
    assert lines[0].split() == ["metric", "value", "unit"]
    assert lines[1].split() == ["test/force/mae", "0.0712", "eV/Å"]
    assert lines[2].split() == ["test/loss", "0.250"]
    assert len(lines) == 3
    assert len({line.index(line.split()[1]) + len(line.split()[1]) for line in lines}) == 1


def test_metrics_table_uses_exponents_for_tiny_values() -> None:
    assert "1.00e-06" in metrics_table({"test/stress/mae": 1e-6})
