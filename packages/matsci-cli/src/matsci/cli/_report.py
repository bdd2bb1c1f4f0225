"""The short table of test metrics, with units, that ``matsci fit`` and ``matsci test`` print."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

UNITS: Final[dict[str, str]] = {
    "energy": "eV",
    "force": "eV/Å",
    "stress": "eV/Å³",
    "denoise": "Å",
    "noisy_pos": "Å",
    "spacegroup": "",
}
"""Unit of each target key; metrics of keys not listed are shown without a unit."""

DIMENSIONLESS_METRICS: Final = frozenset(
    {
        "top1",
        "top5",
        "f1_macro",
        "accuracy",
        "auroc",
        "f1",
        "precision",
        "recall",
        "cosine_similarity",
    }
)
"""Metric names whose values carry no unit (fractions, cosines)."""


def metric_unit(name: str) -> str:
    """Unit of a logged metric such as ``"test/force/mae"`` or ``"test/energy/mae_per_atom"``.

    The key is the second-to-last part of the name and the metric the last;
    ``mae_per_atom`` adds ``/atom``, losses are in normalized units and shown without one.

    Parameters
    ----------
    name
        The metric's logged name.

    Returns
    -------
    str
        ``"eV/atom"``, ``"eV/Å"``, ... or ``""``.

    Examples
    --------
    >>> metric_unit("test/energy/mae_per_atom"), metric_unit("test/force/rmse")
    ('eV/atom', 'eV/Å')
    >>> metric_unit("test/spacegroup/top1"), metric_unit("test/loss")
    ('', '')
    """
    parts = name.split("/")
    if len(parts) < 3 or parts[-1] in DIMENSIONLESS_METRICS or parts[-1] == "loss":
        return ""
    unit = UNITS.get(parts[-2], "")
    if unit and parts[-1].endswith("per_atom"):
        return f"{unit}/atom"
    return unit


def metrics_table(
    metrics: Mapping[str, float],
    prefix: str = "test/",
    baselines: Mapping[str, float] | None = None,
) -> str:
    """Format the metrics whose names start with ``prefix`` as an aligned text table.

    Per-key losses (``test/force/loss``) are left out: they are in normalized units and
    repeat what the total ``test/loss`` says. With ``baselines`` (for example from
    :func:`matsci.training.baseline_metrics`) a ``baseline`` column shows the value of the
    obvious baseline for the same metric on the same split; a metric without one gets an empty
    cell.

    Parameters
    ----------
    metrics
        ``{name: value}``, for example what ``trainer.test`` returns.
    prefix
        Which metrics to show.
    baselines
        ``{name: value}`` of the baseline predictor, named like ``metrics``; ``None`` leaves
        the column out.

    Returns
    -------
    str
        One line per metric: name, value, (baseline,) unit.

    Examples
    --------
    >>> print(metrics_table({"test/force/mae": 0.0712, "test/loss": 0.25,
    ...                      "test/force/loss": 0.2}))
    metric           value  unit
    test/force/mae  0.0712  eV/Å
    test/loss        0.250
    >>> print(metrics_table({"test/energy/mae": 0.543, "test/loss": 0.41},
    ...                     baselines={"test/energy/mae": 1.27}))
    metric           value  baseline  unit
    test/energy/mae  0.543      1.27  eV
    test/loss        0.410
    """
    rows = [
        (
            name,
            _format(float(value)),
            "" if baselines is None or name not in baselines else _format(float(baselines[name])),
            metric_unit(name),
        )
        for name, value in sorted(metrics.items())
        if name.startswith(prefix) and not (name.endswith("/loss") and name.count("/") > 1)
    ]
    columns = [("metric", "<"), ("value", ">")]
    if baselines is not None:
        columns.append(("baseline", ">"))
    widths = [
        max([len(title), *(len(row[index]) for row in rows)])
        for index, (title, _) in enumerate(columns)
    ]
    lines = []
    for cells in [tuple(title for title, _ in columns), *(row[: len(columns)] for row in rows)]:
        aligned = [
            f"{cell:{align}{width}}"
            for cell, (_, align), width in zip(cells, columns, widths, strict=True)
        ]
        lines.append(aligned)
    units = ["unit", *(row[3] for row in rows)]
    return "\n".join(
        "  ".join([*aligned, unit]).rstrip() for aligned, unit in zip(lines, units, strict=True)
    )


def baseline_legend(kinds: Mapping[str, str]) -> str:
    """One line saying what the ``baseline`` column predicts for each key.

    Parameters
    ----------
    kinds
        ``{key: description}`` (multi-task keys with their ``<dataset>/<task>/`` prefix), for
        example from :func:`matsci.training.baseline_kind` and
        :data:`matsci.training.BASELINE_DESCRIPTIONS`.

    Returns
    -------
    str
        ``"baseline (same test split): energy: mean of the training targets; ..."``, or ``""``
        without keys.

    Examples
    --------
    >>> baseline_legend({"energy": "mean of the training targets", "force": "zero prediction"})
    'baseline (same test split): energy: mean of the training targets; force: zero prediction'
    """
    if not kinds:
        return ""
    parts = "; ".join(f"{key}: {description}" for key, description in kinds.items())
    return f"baseline (same test split): {parts}"


def _format(value: float) -> str:
    """Three significant digits, without switching to exponents for ordinary values."""
    if value == 0 or 1e-4 <= abs(value) < 1e5:
        return f"{value:#.3g}"
    return f"{value:.2e}"
