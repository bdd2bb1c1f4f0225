"""The plots users look at first: parity of predictions and references, and learning curves.

Figures are drawn with Matplotlib's object API (``Figure``, saved through the Agg canvas), never
through ``pyplot``: no display is needed and no global backend is changed.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from numpy.typing import NDArray

from matsci.cli._report import UNITS
from matsci.tasks.core import BinaryClassificationTask, CrystalSymmetryClassificationTask

_MAX_POINTS = 20_000
"""Points drawn per parity plot (a random subset beyond that; the MAE uses all)."""


def parity_plot(
    predicted: NDArray[np.floating[Any]],
    reference: NDArray[np.floating[Any]],
    key: str,
    path: str | Path,
    *,
    unit: str | None = None,
    title: str | None = None,
) -> float:
    r"""Draw predicted against reference values, with the MAE in the legend, into a PNG.

    Parameters
    ----------
    predicted
        Predictions, any shape (flattened; force components count one by one).
    reference
        References of the same shape.
    key
        The target's name (axis labels).
    path
        The PNG file to write.
    unit
        The target's unit; by default from :data:`~matsci.cli.UNITS`.
    title
        Plot title; by default the key.

    Returns
    -------
    float
        The mean absolute error.

    Raises
    ------
    ValueError
        If the shapes differ or there is nothing to plot.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> path = Path(tempfile.mkdtemp()) / "parity.png"
    >>> parity_plot(np.array([1.0, 2.0]), np.array([1.5, 2.0]), "energy", path)
    0.25
    >>> path.read_bytes()[:4]
    b'\x89PNG'
    """
    x = np.asarray(reference, dtype=np.float64).reshape(-1)
    y = np.asarray(predicted, dtype=np.float64).reshape(-1)
    if x.shape != y.shape or x.size == 0:
        raise ValueError(
            f"parity_plot({key!r}): {y.size} predictions for {x.size} references; expected "
            "the same, non-zero number"
        )
    mae = float(np.abs(y - x).mean())
    if x.size > _MAX_POINTS:
        chosen = np.random.default_rng(0).choice(x.size, _MAX_POINTS, replace=False)
        x, y = x[chosen], y[chosen]
    unit = UNITS.get(key, "") if unit is None else unit
    suffix = f" ({unit})" if unit else ""
    low, high = float(min(x.min(), y.min())), float(max(x.max(), y.max()))
    pad = 0.03 * (high - low or 1.0)
    figure = Figure(figsize=(4.5, 4.5), dpi=120)  # no pyplot: no global state, no display
    axes = figure.subplots()
    axes.plot([low - pad, high + pad], [low - pad, high + pad], color="0.6", lw=1, zorder=0)
    axes.scatter(x, y, s=6, alpha=0.5, lw=0, label=f"MAE = {mae:.3g}{' ' + unit if unit else ''}")
    axes.set_xlim(low - pad, high + pad)
    axes.set_ylim(low - pad, high + pad)
    axes.set_aspect("equal")
    axes.set_xlabel(f"reference {key}{suffix}")
    axes.set_ylabel(f"predicted {key}{suffix}")
    axes.set_title(title or key)
    axes.legend(loc="upper left", frameon=False)
    figure.tight_layout()
    figure.savefig(path)
    return mae


def confusion_plot(
    predicted: NDArray[np.integer[Any]],
    reference: NDArray[np.integer[Any]],
    key: str,
    path: str | Path,
    *,
    title: str | None = None,
) -> float:
    """Draw the confusion matrix of class labels, with the accuracy in the title, into a PNG.

    The classification counterpart of :func:`parity_plot`; only labels that occur are shown.

    Parameters
    ----------
    predicted
        Predicted labels.
    reference
        True labels, same shape.
    key
        The target's name.
    path
        The PNG file to write.
    title
        Plot title; by default the key.

    Returns
    -------
    float
        The accuracy.

    Raises
    ------
    ValueError
        If the shapes differ or there is nothing to plot.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> path = Path(tempfile.mkdtemp()) / "confusion.png"
    >>> confusion_plot(np.array([225, 14, 14]), np.array([225, 14, 62]), "spacegroup", path)
    0.6666666666666666
    """
    y = np.asarray(predicted).reshape(-1).astype(np.int64)
    x = np.asarray(reference).reshape(-1).astype(np.int64)
    if x.shape != y.shape or x.size == 0:
        raise ValueError(
            f"confusion_plot({key!r}): {y.size} predictions for {x.size} references; expected "
            "the same, non-zero number"
        )
    labels = np.unique(np.concatenate([x, y]))
    index = {int(label): i for i, label in enumerate(labels)}
    counts = np.zeros((len(labels), len(labels)), dtype=np.int64)
    for true, guess in zip(x.tolist(), y.tolist(), strict=True):
        counts[index[true], index[guess]] += 1
    accuracy = float((x == y).mean())
    size = min(3.0 + 0.35 * len(labels), 12.0)
    figure = Figure(figsize=(size, size), dpi=120)  # no pyplot: no global state, no display
    axes = figure.subplots()
    axes.imshow(counts, cmap="Blues")
    ticks = range(len(labels))
    axes.set_xticks(ticks, [str(label) for label in labels], rotation=90)
    axes.set_yticks(ticks, [str(label) for label in labels])
    if len(labels) <= 30:
        for i in range(len(labels)):
            for j in range(len(labels)):
                if counts[i, j]:
                    axes.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=7)
    axes.set_xlabel(f"predicted {key}")
    axes.set_ylabel(f"reference {key}")
    axes.set_title(f"{title or key}: accuracy = {accuracy:.3f}")
    figure.tight_layout()
    figure.savefig(path)
    return accuracy


def learning_curve_plot(metrics_csv: str | Path, path: str | Path) -> bool:
    r"""Plot training and validation losses against the step from a ``CSVLogger`` file.

    Reads ``train/loss_step`` (or ``train/loss``), ``train/loss_epoch`` and ``val/loss`` (and,
    for multi-task runs, every ``val/.../loss``) from the logger's ``metrics.csv``.

    Parameters
    ----------
    metrics_csv
        The ``metrics.csv`` of a run.
    path
        The PNG file to write.

    Returns
    -------
    bool
        Whether a plot was written (``False`` when the file holds no training loss).

    Examples
    --------
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "metrics.csv").write_text(
    ...     "epoch,step,train/loss_step,val/loss\n0,9,1.0,\n0,9,,0.8\n1,19,0.5,\n1,19,,0.6\n")
    >>> learning_curve_plot(folder / "metrics.csv", folder / "curve.png")
    True
    """
    series = _read_losses(Path(metrics_csv))
    train = {name: points for name, points in series.items() if name.startswith("train/")}
    if not any(train.values()):
        return False
    figure = Figure(figsize=(6, 4), dpi=120)  # no pyplot: no global state, no display
    axes = figure.subplots()
    for name, points in series.items():
        if not points:
            continue
        steps, values = zip(*points, strict=True)
        style = "-" if name.endswith("_step") or name.startswith("train/") else "o-"
        axes.plot(steps, values, style, lw=1, ms=3, label=name.removesuffix("_step"))
    axes.set_xlabel("step")
    axes.set_ylabel("loss (normalized units)")
    positive = all(value > 0 for points in series.values() for _, value in points)
    if positive:
        axes.set_yscale("log")
    axes.legend(frameon=False, fontsize=8)
    axes.set_title("learning curve")
    figure.tight_layout()
    figure.savefig(path)
    return True


def _read_losses(metrics_csv: Path) -> dict[str, list[tuple[int, float]]]:
    """``{column: [(step, value), ...]}`` for the total-loss columns of a metrics file."""
    with metrics_csv.open(newline="") as file:
        rows = list(csv.DictReader(file))
    columns = [name for name in (rows[0] if rows else {}) if _is_total_loss(name)]
    series: dict[str, list[tuple[int, float]]] = {name: [] for name in columns}
    for row in rows:
        step = row.get("step") or ""
        for name in columns:
            value = row.get(name) or ""
            if step and value and math.isfinite(float(value)):
                series[name].append((int(float(step)), float(value)))
    return series


def _is_total_loss(name: str) -> bool:
    """``train/loss_step``, ``train/loss_epoch``, ``val/loss`` and multi-task ``val/x/loss``."""
    stage = name.split("/", 1)[0]
    if stage not in ("train", "val"):
        return False
    base = name.removesuffix("_step").removesuffix("_epoch")
    return base == f"{stage}/loss"


def write_parity_plots(
    model: torch.nn.Module, batches: Iterable[Any], folder: str | Path, *, prefix: str = ""
) -> list[Path]:
    """Write one parity plot per target key of a task (a confusion matrix for class labels).

    Regression keys compare what the task's metrics compare (``to_physical`` against
    ``get_target``: physical units, energies per atom for force tasks), so the MAE in the
    legend is the logged test MAE. Classification tasks compare predicted and true labels.
    Missing (NaN) references are left out.

    Parameters
    ----------
    model
        A task (:class:`~matsci.tasks.core.BaseTaskModule`) in eval mode.
    batches
        Batches with targets, on the model's device (the test split, typically).
    folder
        Where the PNG files go: ``parity_<key>.png`` or ``confusion_<key>.png``.
    prefix
        Put before each file name and title (for multi-task runs, the dataset and task).

    Returns
    -------
    list of Path
        The files written.
    """
    task_keys: list[str] = list(model.task_keys)  # type: ignore[arg-type]
    classification = isinstance(model, CrystalSymmetryClassificationTask | BinaryClassificationTask)
    predicted: dict[str, list[NDArray[Any]]] = {key: [] for key in task_keys}
    reference: dict[str, list[NDArray[Any]]] = {key: [] for key in task_keys}
    for batch in batches:
        if classification:
            labels = model.predict(batch)  # type: ignore[operator]
        else:
            outputs: Mapping[str, torch.Tensor] = model(batch)
        for key in task_keys:
            if classification:
                guess = labels[key]
                guess = (guess > 0.5).long() if guess.is_floating_point() else guess
                target = batch[key].reshape(-1).long()
            else:
                guess = model.to_physical(key, outputs[key].detach(), batch)  # type: ignore[operator]
                target = model.get_target(batch, key)  # type: ignore[operator]
                present = ~torch.isnan(target)
                guess, target = guess[present], target[present]
            predicted[key].append(guess.detach().cpu().double().numpy().reshape(-1))
            reference[key].append(target.detach().cpu().double().numpy().reshape(-1))
    written: list[Path] = []
    for key in task_keys:
        if not predicted[key]:
            continue
        guesses, truths = np.concatenate(predicted[key]), np.concatenate(reference[key])
        if truths.size == 0:
            continue
        name = f"{prefix}{key}".replace("/", "_")
        title = f"{prefix}{key}" if prefix else None
        if classification:
            path = Path(folder) / f"confusion_{name}.png"
            confusion_plot(guesses, truths, key, path, title=title)
        else:
            path = Path(folder) / f"parity_{name}.png"
            unit = _plot_unit(model, key)
            parity_plot(guesses, truths, key, path, unit=unit, title=title)
        written.append(path)
    return written


def _plot_unit(model: torch.nn.Module, key: str) -> str:
    """The unit of what the metrics compare: force tasks compare energies per atom."""
    unit = UNITS.get(key, "")
    if key == "energy" and getattr(model, "per_atom_energy_loss", False):
        return f"{unit}/atom"
    return unit
