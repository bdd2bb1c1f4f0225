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


def metrics_table(metrics: Mapping[str, float], prefix: str = "test/") -> str:
    """Format the metrics whose names start with ``prefix`` as an aligned text table.

    Per-key losses (``test/force/loss``) are left out: they are in normalized units and
    repeat what the total ``test/loss`` says.

    Parameters
    ----------
    metrics
        ``{name: value}``, for example what ``trainer.test`` returns.
    prefix
        Which metrics to show.

    Returns
    -------
    str
        One line per metric: name, value, unit.

    Examples
    --------
    >>> print(metrics_table({"test/force/mae": 0.0712, "test/loss": 0.25,
    ...                      "test/force/loss": 0.2}))
    metric           value  unit
    test/force/mae  0.0712  eV/Å
    test/loss        0.250
    """
    rows = [
        (name, _format(float(value)), metric_unit(name))
        for name, value in sorted(metrics.items())
        if name.startswith(prefix) and not (name.endswith("/loss") and name.count("/") > 1)
    ]
    width = max([len("metric"), *(len(name) for name, _, _ in rows)])
    value_width = max([len("value"), *(len(value) for _, value, _ in rows)])
    lines = [f"{'metric':<{width}}  {'value':>{value_width}}  unit"]
    lines += [
        f"{name:<{width}}  {value:>{value_width}}  {unit}".rstrip() for name, value, unit in rows
    ]
    return "\n".join(lines)


def _format(value: float) -> str:
    """Three significant digits, without switching to exponents for ordinary values."""
    if value == 0 or 1e-4 <= abs(value) < 1e5:
        return f"{value:#.3g}"
    return f"{value:.2e}"
