from pathlib import Path

import numpy as np
import pytest

from matsci.cli import confusion_plot, learning_curve_plot, parity_plot

PNG = b"\x89PNG\r\n\x1a\n"


def _is_png(path: Path) -> bool:
    return path.read_bytes()[:8] == PNG and path.stat().st_size > 5000


def test_parity_plot_returns_the_mae_and_writes_a_png(tmp_path: Path) -> None:
    reference = np.linspace(-1.0, 1.0, 30).reshape(10, 3)
    mae = parity_plot(reference + 0.1, reference, "force", tmp_path / "p.png")
    assert mae == pytest.approx(0.1)
    assert _is_png(tmp_path / "p.png")


def test_parity_plot_refuses_mismatched_sizes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="2 predictions for 3 references"):
        parity_plot(np.zeros(2), np.zeros(3), "energy", tmp_path / "p.png")


def test_confusion_plot_returns_the_accuracy(tmp_path: Path) -> None:
    accuracy = confusion_plot(
        np.array([14, 14, 225, 62]), np.array([14, 62, 225, 62]), "spacegroup", tmp_path / "c.png"
    )
    assert accuracy == pytest.approx(0.75)
    assert _is_png(tmp_path / "c.png")


def test_learning_curve_reads_lightning_csv_logs(tmp_path: Path) -> None:
    (tmp_path / "metrics.csv").write_text(
        "epoch,step,train/loss_step,train/loss_epoch,val/loss,val/force/loss,test/loss\n"
        "0,4,2.0,,,,\n0,9,1.0,,,,\n0,9,,,0.9,0.5,\n0,9,,1.5,,,\n1,14,0.5,,,,\n"
        "1,19,0.4,,,,\n1,19,,,0.6,0.3,\n1,19,,0.45,,,\n1,20,,,,,0.7\n"
    )
    assert learning_curve_plot(tmp_path / "metrics.csv", tmp_path / "curve.png")
    assert _is_png(tmp_path / "curve.png")


def test_learning_curve_needs_a_training_loss(tmp_path: Path) -> None:
    (tmp_path / "metrics.csv").write_text("epoch,step,test/loss\n0,0,0.7\n")
    assert not learning_curve_plot(tmp_path / "metrics.csv", tmp_path / "curve.png")
    assert not (tmp_path / "curve.png").exists()
