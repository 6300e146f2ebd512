"""orchestrator.tables: the one mean/std and table renderer every command prints with."""

from __future__ import annotations

import math
import statistics

from orchestrator.tables import format_mean_std, format_value, mean_and_std, render_table


def test_mean_and_sample_std_against_the_statistics_module():
    values = [97.16, 96.9, 97.41, 97.02, 97.3]
    mean, std = mean_and_std(values)
    assert math.isclose(mean, statistics.fmean(values)) and math.isclose(std, statistics.stdev(values))
    assert mean_and_std([3.0])[0] == 3.0 and math.isnan(mean_and_std([3.0])[1])  # no spread claimed for one seed
    assert all(math.isnan(v) for v in mean_and_std([]))


def test_numbers_print_with_the_means_decimals_or_their_own():
    assert format_mean_std(97.1634, 0.1912) == "97.16 +- 0.19"
    assert format_mean_std(0.2541, 0.0031) == "0.254 +- 0.003"
    assert format_mean_std(98.5, 0.4, same_decimals=False) == "98.50 +- 0.400"  # results --by method
    assert format_mean_std(0.5, 1.2, same_decimals=False) == "0.500 +- 1.20"
    assert format_mean_std(0.2541, math.nan) == "0.254"
    assert format_mean_std(math.inf, math.nan) == "inf"
    assert format_mean_std(math.nan, 1.0) == "-" and format_mean_std(None, None) == "-"
    assert [format_value(v) for v in (0.5, 12.0, math.nan, True, False, 3, "x")] == \
        ["0.500", "12.00", "-", "*", "", "3", "x"]


def test_tables_are_fixed_width_and_may_leave_the_last_column_unpadded():
    text = render_table(["a", "bb"], [["123", "x"], ["4", "yyy"]])
    assert text.splitlines() == ["a    bb ", "123  x  ", "4    yyy"]
    text = render_table(["a", "source"], [["123", "a long note"], ["4", "n"]], pad_last=False)
    assert text.splitlines() == ["a    source", "123  a long note", "4    n"]
