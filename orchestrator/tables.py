"""Numbers and tables as every command prints them: the mean and sample standard deviation over seeds, a
value with 3 decimals below 1 and 2 above, ``mean +- std`` with the mean's decimals, and fixed-width text
tables. One implementation, so that ``results``, ``results --check`` and the driver's log agree."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

MISSING = "-"


def mean_and_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1) of ``values``; NaN std below two values, NaN mean for none."""
    if not values:
        return math.nan, math.nan
    mean = math.fsum(values) / len(values)
    if len(values) < 2:
        return mean, math.nan
    return mean, math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1))


def decimals(value: float) -> int:
    """3 decimals below 1 in magnitude (fractions, MIA accuracies), 2 otherwise (percentages, seconds)."""
    return 3 if abs(value) < 1 else 2


def format_value(value: Any) -> str:
    """A cell: floats with ``decimals`` (NaN as ``-``), booleans as ``*`` or nothing, anything else as text."""
    if isinstance(value, bool):
        return "*" if value else ""
    if isinstance(value, float):
        return MISSING if math.isnan(value) else f"{value:.{decimals(value)}f}"
    return str(value)


def format_mean_std(mean: float | None, std: float | None, same_decimals: bool = True) -> str:
    """``mean +- std``: the std with the mean's decimals (``results --check``, the driver's log) or with its own
    (``same_decimals=False``: ``results --by method``); the mean alone when there is no spread (one seed)."""
    if mean is None or math.isnan(mean):
        return MISSING
    if std is None or math.isnan(std):
        return format_value(float(mean))
    if not same_decimals:
        return f"{format_value(float(mean))} +- {format_value(float(std))}"
    digits = decimals(mean)
    return f"{mean:.{digits}f} +- {std:.{digits}f}"


def render_table(columns: Sequence[str], rows: Sequence[Sequence[str]], pad_last: bool = True) -> str:
    """Fixed-width text: columns two spaces apart, each as wide as its widest cell; the last column left
    unpadded when ``pad_last`` is false (a long free-text column)."""
    padded = len(columns) if pad_last else len(columns) - 1
    widths = [max([len(columns[i])] + [len(r[i]) for r in rows]) for i in range(padded)]

    def line(values: Sequence[str]) -> str:
        cells = [v.ljust(w) for v, w in zip(values[:padded], widths)] + list(values[padded:])
        return "  ".join(cells)

    return "\n".join([line(columns)] + [line(r) for r in rows])
