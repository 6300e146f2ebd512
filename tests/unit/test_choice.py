"""The choice between a method's preset and its best sweep candidate (``orchestrator.driver.choice``)."""

from __future__ import annotations

import math

from orchestrator.driver.choice import best_candidate, choose, mean_objective

INF, NAN = math.inf, math.nan


def test_the_best_candidate_is_the_lowest_finite_objective_that_is_not_the_preset():
    candidates = [(0.5, "preset", {}), (1.2, "a", {"lr": 1}), (0.9, "b", {"lr": 2}), (NAN, "c", {}), (INF, "d", {})]
    assert best_candidate(candidates) == (0.9, "b", {"lr": 2})
    assert best_candidate([(0.9, "x", {}), (0.9, "y", {})])[1] == "x"  # the first of equals
    assert best_candidate([(0.1, "preset", {}), (NAN, "a", {})]) is None
    assert best_candidate([]) is None


def test_the_mean_objective_is_infinite_when_a_seed_has_none():
    assert mean_objective([1.0, 2.0, 4.5]) == (1.0 + 2.0 + 4.5) / 3
    assert mean_objective([1.0, NAN]) == INF
    assert mean_objective([1.0, INF]) == INF
    assert mean_objective([]) == INF


def test_the_candidate_is_chosen_only_when_its_mean_is_lower():
    assert choose([2.0, 2.0, 2.0], "t7", [1.0, 1.5, 3.0]) == "t7"          # 1.83 < 2
    assert choose([2.0, 2.0, 2.0], "t7", [1.0, 1.5, 3.6]) == "preset"      # 2.03 > 2
    assert choose([2.0, 2.0], "t7", [2.0, 2.0]) == "preset"                # a tie keeps the preset
    assert choose([2.0, 2.0], "t7", [0.1, NAN]) == "preset"                # a failed seed never wins
    assert choose([NAN, 2.0], "t7", [5.0, 5.0]) == "t7"                    # nor does a preset that failed one
    assert choose([2.0], None, []) == "preset"
