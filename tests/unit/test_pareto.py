"""Pareto fronts, ranks and the choice rules (``orchestrator.pareto``, ``orchestrator.driver.choice``) on a
hand-made set of trials, each checked against an independent computation written here."""

from __future__ import annotations

import itertools
import math

import pytest

from orchestrator.driver.choice import Tried, pick
from orchestrator.job.objectives import ChooseSpec
from orchestrator.pareto import (
    choose_constraint,
    choose_knee,
    choose_scalar,
    choose_weights,
    dominance_between,
    pareto_front,
    pareto_ranks,
)

NAN = math.nan
# (forgetting gap, utility gap, seconds) of nine configurations; f and g tie on every value
TRIALS = {
    "a": (0.5, 9.0, 40.0),
    "b": (1.0, 4.0, 30.0),
    "c": (2.0, 2.0, 25.0),
    "d": (4.0, 1.0, 50.0),
    "e": (8.0, 0.5, 10.0),
    "f": (3.0, 3.0, 60.0),   # dominated by c
    "g": (3.0, 3.0, 60.0),   # ties f: neither dominates the other, both dominated by c
    "h": (NAN, 0.1, 5.0),    # did not finish: never on the front
    "i": (9.0, 9.0, 99.0),   # dominated by everything finished
}
NAMES = list(TRIALS)
POINTS = [TRIALS[n] for n in NAMES]


def brute_front(points: list[tuple[float, ...]]) -> set[int]:
    """The definition, literally: finite points for which no other point is <= everywhere and < somewhere."""
    out = set()
    for i, p in enumerate(points):
        if any(math.isnan(v) for v in p):
            continue
        beaten = False
        for j, q in enumerate(points):
            if j != i and not any(math.isnan(v) for v in q):
                le = all(qk <= pk for qk, pk in zip(q, p))
                lt = any(qk < pk for qk, pk in zip(q, p))
                beaten |= le and lt
        if not beaten:
            out.add(i)
    return out


def test_front_matches_the_definition_on_every_subset_of_objectives():
    for dims in ([0, 1], [0, 2], [1, 2], [0, 1, 2], [2]):
        pts = [tuple(p[d] for d in dims) for p in POINTS]
        assert set(pareto_front(pts)) == brute_front(pts), dims
    two = [p[:2] for p in POINTS]
    assert {NAMES[i] for i in pareto_front(two)} == {"a", "b", "c", "d", "e"}


def test_ranks_peel_fronts_off_one_after_another():
    pts = [p[:2] for p in POINTS]
    ranks = pareto_ranks(pts)
    left = set(range(len(pts))) - {NAMES.index("h")}
    expected: dict[int, int] = {}
    rank = 0
    while left:  # independent peeling with the brute-force front of what is left
        rank += 1
        sub = sorted(left)
        layer = {sub[k] for k in brute_front([pts[i] for i in sub])}
        expected.update({i: rank for i in layer})
        left -= layer
    expected[NAMES.index("h")] = rank + 1  # unfinished: after the last layer
    assert ranks == [expected[i] for i in range(len(pts))]
    assert ranks[NAMES.index("f")] == ranks[NAMES.index("g")] == 2 and ranks[NAMES.index("i")] == 3


def test_scalar_and_weights_pick_the_front_member_with_the_lowest_value():
    pts = [p[:2] for p in POINTS]
    scalar = [sum(p) / 2 for p in pts]
    assert NAMES[choose_scalar(pts, scalar)] == "c"  # (2 + 2) / 2 = 2 is the lowest mean gap
    for w in ((1.0, 0.0), (0.0, 1.0), (1.0, 3.0), (0.2, 1.0)):
        front = brute_front(pts)
        best = min(front, key=lambda i: w[0] * pts[i][0] + w[1] * pts[i][1])
        assert choose_weights(pts, w) == best, w
    assert NAMES[choose_weights(pts, (1.0, 0.0))] == "a" and NAMES[choose_weights(pts, (0.0, 1.0))] == "e"


def test_constraint_is_the_lowest_target_within_the_limits_and_the_closest_when_none_is():
    limited = [{"utility": p[1]} for p in POINTS]
    # fastest configuration within 4 points of utility gap: b (30 s), c (25 s), d (50 s), e (10 s) qualify
    index, within = choose_constraint(POINTS, 2, limited, {"utility": 4.0})
    assert (NAMES[index], within) == ("e", True)
    index, within = choose_constraint(POINTS, 2, limited, {"utility": 2.0})
    assert (NAMES[index], within) == ("e", True)
    index, within = choose_constraint(POINTS, 0, limited, {"utility": 2.0})
    assert (NAMES[index], within) == ("c", True)  # lowest forgetting gap among c, d, e
    index, within = choose_constraint(POINTS, 2, limited, {"utility": 0.1})
    assert (NAMES[index], within) == ("e", False)  # none within: e misses by 0.4, the least


def test_knee_is_the_front_point_farthest_below_the_line_between_the_ends():
    pts = [p[:2] for p in POINTS]
    front = sorted(brute_front(pts))
    xs = [pts[i][0] for i in front]
    ys = [pts[i][1] for i in front]
    nx = [(x - min(xs)) / (max(xs) - min(xs)) for x in xs]
    ny = [(y - min(ys)) / (max(ys) - min(ys)) for y in ys]
    # the ends: best on x (a, normalised (0, 1)) and best on y (e, (1, 0)): the line x + y = 1
    distance = [(1 - x - y) / math.sqrt(2) for x, y in zip(nx, ny)]
    assert choose_knee(pts) == front[max(range(len(front)), key=lambda k: distance[k])]
    assert NAMES[choose_knee(pts)] == "c"
    # a front of two: the one closer to the ideal point, each objective scaled by its range over all points:
    # (0, 1) -> (0, 0.444), (1, 0.2) -> (0.5, 0): distances 0.444 and 0.5
    assert choose_knee([(0.0, 1.0), (1.0, 0.2), (2.0, 2.0)]) == 0
    assert choose_knee([(0.0, 1.8), (1.0, 0.2), (2.0, 2.0)]) == 1  # (0, 0.889) vs (0.5, 0)


def test_pick_chooses_on_the_front_and_never_a_diverged_or_excluded_configuration():
    tried = [Tried(n, {"obj_forgetting": p[0], "obj_utility": p[1], "obj_time": p[2], "objective": p[0] + p[1],
                       "gap_ra": p[1]}) for n, p in TRIALS.items()]
    objectives = ["forgetting", "utility"]
    rules = {"scalar": "c", "knee": "c", "weights": "a", "constraint": "e"}
    specs = {"scalar": ChooseSpec(), "knee": ChooseSpec.model_validate("knee"),
             "weights": ChooseSpec.model_validate({"weights": {"forgetting": 1.0, "utility": 0.01}}),
             "constraint": ChooseSpec.model_validate({"constraint": {"limits": {"ra": 2.0}, "minimise": "utility"}})}
    for rule, spec in specs.items():
        choice = pick(tried, spec, objectives + (["time"] if rule == "weights" else []))
        assert choice.on_front(choice.trial_id), rule
        if rule != "weights":
            assert choice.trial_id == rules[rule], rule
    assert pick(tried, specs["weights"], objectives).trial_id == "a"
    # with c excluded (it failed on a replicate seed) the rule picks again from what is left
    again = pick(tried, ChooseSpec(), objectives, frozenset({"c"}))
    assert again.trial_id != "c" and again.on_front(again.trial_id) and again.ranks["c"] > 1
    # a diverged model is never on the front, whatever its scores
    broken = [*tried, Tried("z", {"obj_forgetting": 0.0, "obj_utility": 0.0, "objective": 0.0, "diverged": 1.0})]
    assert pick(broken, ChooseSpec(), objectives).trial_id == "c"
    # the scalar objective alone: the lowest, the preset included
    scalar = [Tried("preset", {"objective": 1.5}), Tried("t1", {"objective": 1.2}), Tried("t2", {})]
    choice = pick(scalar, ChooseSpec(), None)
    assert choice.trial_id == "t1" and choice.ranks == {"t1": 1, "preset": 2, "t2": 3}
    assert pick([Tried("t", {})], ChooseSpec(), None).trial_id is None


def test_dominance_between_methods_counts_each_method_s_share_of_the_combined_front():
    fronts = {"camu": [(1.0, 4.0), (2.0, 2.0)], "scrub": [(0.5, 9.0), (3.0, 3.0)], "ft": [(5.0, 5.0)]}
    combined = [(m, p) for m, pts in fronts.items() for p in pts]
    brute = brute_front([p for _, p in combined])
    expected = {m: sum(1 for k, (mm, _) in enumerate(combined) if mm == m and k in brute) for m in fronts}
    assert dominance_between(fronts) == expected == {"camu": 2, "scrub": 1, "ft": 0}


@pytest.mark.parametrize("perm", list(itertools.permutations(range(4)))[:6])
def test_front_does_not_depend_on_order(perm):
    pts = [POINTS[i][:2] for i in perm]
    assert {pts[i] for i in pareto_front(pts)} == {pts[i] for i in brute_front(pts)}


def test_nothing_finished_means_nothing_on_the_front():
    assert pareto_ranks([(NAN, 1.0), (NAN, 2.0)]) == [2, 2]
    assert pareto_front([(NAN, 1.0)]) == [] and pareto_ranks([]) == []
    choice = pick([Tried("t1", {}), Tried("t2", {"obj_time": 1.0})], ChooseSpec(), ["forgetting", "time"])
    assert choice.trial_id is None and not any(choice.on_front(t) for t in ("t1", "t2"))


def test_a_limit_on_a_metric_the_scenario_lacks_does_not_apply():
    # random removal: no retained-class TA on any configuration; the RA limit alone decides
    limited = [{"ra": 0.5, "ta_retained": NAN}, {"ra": 3.0, "ta_retained": NAN}]
    index, within = choose_constraint([(1.0, 9.0), (2.0, 1.0)], 1, limited, {"ra": 1.0, "ta_retained": 1.0})
    assert (index, within) == (0, True)


def test_the_knee_with_three_objectives_against_the_plane_through_the_extremes():
    import numpy as np

    pts = [(0.0, 10.0, 10.0), (10.0, 0.0, 10.0), (10.0, 10.0, 0.0), (4.0, 4.0, 4.0), (2.0, 6.0, 5.0), (9.0, 9.0, 9.0),
           (1.0, 8.0, 7.5)]
    front = sorted(brute_front(pts))
    values = np.array([pts[i] for i in front])
    norm = (values - values.min(0)) / (values.max(0) - values.min(0))
    ends = [int(np.argmin(norm[:, k])) for k in range(3)]
    # the plane through the three extreme members, w . x = 1, and each member's distance below it
    w = np.linalg.solve(norm[ends], np.ones(3))
    assert (w > 0).all()  # a plane that rises in every objective: its knee is defined
    distance = (1 - norm @ w) / np.linalg.norm(w)
    assert choose_knee(pts) == front[int(np.argmax(distance))] == 3


def test_a_front_whose_plane_falls_in_an_objective_takes_the_compromise():
    """The plane through the extremes of this front falls in the first objective: the member that did not
    forget at all (first objective 46) would be "farthest below" it. The knee is then the member nearest
    the ideal point instead, each objective scaled by its range over every point."""
    import numpy as np

    pts = [(5.46, 0.69, 6.71), (6.56, 6.10, 2.07), (6.81, 0.19, 8.73), (7.39, 0.76, 3.77), (7.78, 0.64, 5.32),
           (8.61, 0.45, 2.86), (46.14, 3.13, 2.55)]
    values = np.array(pts)
    scaled = (values - values.min(0)) / (values.max(0) - values.min(0))
    ends = [int(np.argmin(scaled[:, k])) for k in range(3)]
    assert not (np.linalg.solve(scaled[ends], np.ones(3)) > 0).all()
    assert choose_knee(pts) == int(np.argmin(np.linalg.norm(scaled, axis=1))) == 5


def test_a_pick_that_diverged_or_failed_on_a_replicate_seed_is_not_finished():
    from orchestrator.driver.choice import finished_everywhere

    assert finished_everywhere([{"objective": 1.0}, {"objective": 2.0, "diverged": 0.0}])
    assert not finished_everywhere([{"objective": 1.0}, {"objective": 2.0, "diverged": 1.0}])
    assert not finished_everywhere([{"objective": 1.0}, {}])
    assert not finished_everywhere([])
