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
``ChooseSpec`` is ``sweep.choose``: the rule that picks a configuration from the front of these objectives.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import model_validator

from camu.schema import StrictModel

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


class ChooseSpec(StrictModel):
    """How a method's configuration is chosen from what its search tried (``orchestrator.pareto``), always a
    member of the Pareto front of ``sweep.objectives``. Written in a job as ``scalar``, ``knee``,
    ``{weights: {objective: w, ...}}`` or ``{constraint: {limits: {metric: max gap, ...}, minimise: objective}}``."""

    rule: Literal["scalar", "knee", "weights", "constraint"] = "scalar"
    weights: dict[ObjectiveName, float] | None = None
    limits: dict[str, float] | None = None
    minimise: ObjectiveName | None = None

    @model_validator(mode="before")
    @classmethod
    def _written_forms(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"rule": value}
        if isinstance(value, dict) and "rule" not in value and len(value) == 1:
            (key, body), = value.items()
            if key == "weights":
                return {"rule": "weights", "weights": body}
            if key == "constraint":
                return {"rule": "constraint", **body} if isinstance(body, dict) else \
                    {"rule": "constraint", "limits": body}
        return value

    @model_validator(mode="after")
    def _complete(self) -> ChooseSpec:
        if self.rule == "weights":
            if not self.weights:
                raise ValueError("weights: give at least one objective's weight, e.g. {weights: {forgetting: 1, "
                                 "utility: 1}}")
            bad = {k: w for k, w in self.weights.items() if not (math.isfinite(w) and w >= 0)}
            if bad or not any(self.weights.values()):
                raise ValueError(f"weights: every weight must be a finite number >= 0 and one must be > 0 (got "
                                 f"{self.weights})")
        if self.rule == "constraint":
            if not self.limits or self.minimise is None:
                raise ValueError("constraint: write {constraint: {limits: {ra: 1.0, ta: 1.0}, minimise: time}} (the "
                                 "largest allowed gap to the oracle per metric or objective, and the objective to "
                                 "minimise among the configurations within them)")
            known = set(GAP_METRICS) | set(OBJECTIVE_NAMES)
            unknown = sorted(set(self.limits) - known)
            if unknown:
                raise ValueError(f"constraint.limits: {unknown} are neither gap metrics nor objectives; choose from "
                                 f"{', '.join(GAP_METRICS + OBJECTIVE_NAMES)}")
            negative = sorted(k for k, v in self.limits.items() if not (math.isfinite(v) and v >= 0))
            if negative:
                raise ValueError(f"constraint.limits: {negative} must be finite numbers >= 0 (a largest gap)")
        if self.rule not in ("weights",) and self.weights is not None:
            raise ValueError("weights: only with {weights: {...}}")
        if self.rule != "constraint" and (self.limits is not None or self.minimise is not None):
            raise ValueError("limits and minimise: only with {constraint: {...}}")
        return self

    def describe(self) -> str:
        """The rule as a reader of the report sees it."""
        if self.rule == "weights":
            return "weights " + ", ".join(f"{k} x{w:g}" for k, w in (self.weights or {}).items())
        if self.rule == "constraint":
            limits = ", ".join(f"{k} <= {v:g}" for k, v in (self.limits or {}).items())
            return f"constraint: lowest {self.minimise} with {limits}"
        return {"scalar": "scalar: lowest objective", "knee": "knee of the front"}[self.rule]
