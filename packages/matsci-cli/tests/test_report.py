import pytest

from matsci.cli import baseline_legend, metric_unit, metrics_table


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


def test_baseline_column_sits_between_value_and_unit_with_empty_cells() -> None:
    table = metrics_table(
        {"test/energy/mae": 0.543, "test/energy/rmse": 0.834, "test/loss": 0.413},
        baselines={"test/energy/mae": 1.27, "test/energy/rmse": 1.59, "val/energy/mae": 9.0},
    )
    lines = table.splitlines()
    assert lines[0].split() == ["metric", "value", "baseline", "unit"]
    assert lines[1].split() == ["test/energy/mae", "0.543", "1.27", "eV"]
    assert lines[2].split() == ["test/energy/rmse", "0.834", "1.59", "eV"]
    assert lines[3].split() == ["test/loss", "0.413"]  # no baseline: an empty cell
    # Right-aligned columns: every value ends where its title ends.
    for title in ("value", "baseline"):
        end = lines[0].index(title) + len(title)
        assert all(line[:end].rstrip() == line[:end] for line in lines[:3])


def test_a_metric_without_a_baseline_keeps_the_unit_column_in_place() -> None:
    table = metrics_table(
        {"test/force/mae": 0.07, "test/force/cosine_similarity": 0.9},
        baselines={"test/force/mae": 0.65},
    )
    cosine, mae = table.splitlines()[1:]
    assert cosine.split() == ["test/force/cosine_similarity", "0.900"]
    assert mae.endswith("0.650  eV/Å")


def test_baseline_legend_names_each_key() -> None:
    legend = baseline_legend({"bulk/ScalarRegressionTask/gap": "mean of the training targets"})
    assert legend == (
        "baseline (same test split): bulk/ScalarRegressionTask/gap: mean of the training targets"
    )
    assert baseline_legend({}) == ""
