"""The named objectives a sweep may search and choose on (``sweep.objectives``), each minimised, and what each
one measures. Gaps are to the retrain oracle on the selection part (never the reported part), in percentage
points (the official MIA, a fraction, counts x100 as in the scalar objective):

- ``forgetting``: the mean gap on FA and the official MIA (did D_f leave the model, as the oracle's did);
- ``utility``: the mean gap on RA, TA and, in class removal, the retained classes' TA (what the model
  still does well, against a model that never saw D_f);
- ``privacy``: the per-example attack's distance from chance, |LiRA AUC - 0.5| x 100 on D_f (0: the
  attacker cannot tell the model's D_f scores from the oracle's); only where ``evaluation.privacy`` runs.
  The attack is fitted and scored on all of D_f (``camu.privacy``), so this one objective reads D_f's report
  part too: a choice that weighs it has seen those samples' scores (the reported LiRA AUC is not independent
  of it, unlike every other reported metric);
- ``time``: the unlearning seconds.

The scalar ``objective`` (average gap with floors) is the default and what early stopping reads.
"""

from __future__ import annotations

from typing import Literal

ObjectiveName = Literal["forgetting", "utility", "privacy", "time"]
OBJECTIVE_NAMES: tuple[str, ...] = ("forgetting", "utility", "privacy", "time")
OBJECTIVE_GAPS: dict[str, tuple[str, ...]] = {"forgetting": ("fa", "mia_official"),
                                              "utility": ("ra", "ta", "ta_retained")}
GAP_METRICS: tuple[str, ...] = ("ra", "fa", "ta", "ta_retained", "mia_official")
"""Metrics whose gap to the oracle (selection part) is recorded per run as ``gap_<metric>``: what a
``constraint`` rule's limits may name besides the objectives."""
SCALAR = "objective"  # the scalar objective's metric name (and Tune's metric)
UNITS = {"forgetting": "points", "utility": "points", "privacy": "AUC points", "time": "s"}


def objective_keys(objectives: list[str] | tuple[str, ...] | None) -> list[str]:
    """The metrics a front is drawn on and a multi-objective search minimises: ``obj_<name>`` per named
    objective, or the scalar objective alone."""
    return [objective_metric(n) for n in objectives] if objectives else [SCALAR]


def objective_metric(name: str) -> str:
    """The metric a run records for objective ``name`` (``obj_forgetting``, ...)."""
    return f"obj_{name}"


def gap_metric(name: str) -> str:
    """The metric a run records for its selection-part gap to the oracle on ``name`` (``gap_ra``, ...)."""
    return f"gap_{name}"
