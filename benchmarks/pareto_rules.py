"""What each choice rule picks from the configurations a finished job tried, per scenario and method.

A job runs one rule (``sweep.choose``) and replicates its pick on every seed; the rules are pure functions of
what was tried on the selection seed, so every other rule's pick can be read off the same trials. For each
(scenario, method) this prints the Pareto front on the job's objectives, then the pick of ``scalar``, ``knee``,
``weights`` (equal weight on every gap objective, time at 1/10 point per second) and ``constraint`` (the fastest
configuration within 1 point of the oracle on RA, TA and, in class removal, retained-class TA), and where the
lowest scalar objective over everything tried (what the default, the scalar objective alone, would choose) sits: its Pareto rank.

    python benchmarks/pareto_rules.py mnist_pareto [--tracking-uri sqlite:///mlflow.db]
"""

from __future__ import annotations

import argparse
import math
import sys

from orchestrator.driver.choice import Tried, pick
from orchestrator.job.objectives import SCALAR, objective_keys
from orchestrator.job.spec import ChooseSpec
from orchestrator.record.run_identity import Tag
from orchestrator.record.summary import load_summary
from orchestrator.record.tracking import open_store
from orchestrator.tables import format_value, render_table

REFERENCES = ("original", "oracle", "retrain")


def rules(objectives: list[str], class_removal: bool) -> dict[str, ChooseSpec]:
    """The rules compared (those the job's objectives allow)."""
    out = {"scalar": ChooseSpec()}
    if len(objectives) >= 2:
        out["knee"] = ChooseSpec.model_validate("knee")
        out["weights"] = ChooseSpec.model_validate(
            {"weights": {o: (0.1 if o == "time" else 1.0) for o in objectives}})
    if "time" in objectives:
        limits = {"ra": 1.0, "ta": 1.0, **({"ta_retained": 1.0} if class_removal else {})}
        out["constraint"] = ChooseSpec.model_validate({"constraint": {"limits": limits, "minimise": "time"}})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("job", help="job name (newest run) or parent run id")
    parser.add_argument("--tracking-uri", default=None)
    args = parser.parse_args(argv)
    tracker = open_store(args.tracking_uri)
    run, table = load_summary(tracker, args.job)
    objectives = [o for o in run.data.tags.get(Tag.OBJECTIVES, "").split(",") if o]
    keys = objective_keys(objectives or None)
    names = objectives or [SCALAR]
    rows = table.to_pylist()
    for scenario in dict.fromkeys(r["scenario"] for r in rows):
        scoped = [r for r in rows if r["scenario"] == scenario]
        class_removal = any(isinstance(r["ta_forgotten"], float) and math.isfinite(r["ta_forgotten"]) for r in scoped)
        for method in dict.fromkeys(r["method"] for r in scoped):
            if method in REFERENCES:
                continue
            mine = [r for r in scoped if r["method"] == method]
            seed = mine[0]["seed"]
            first = {r["trial_id"]: r for r in mine if r["seed"] == seed}
            tried = [Tried(t, {k: v for k, v in r.items() if isinstance(v, float)} if r["status"] == "finished"
                           else {}) for t, r in first.items()]
            choice = pick(tried, ChooseSpec(), objectives or None)
            front = [t for t in first if choice.on_front(t)]
            print(f"\n== {scenario} / {method}: {len(first)} configurations tried on seed {seed}, "
                  f"{len(front)} on the front ({', '.join(names)})")
            cols = ["configuration", *names, SCALAR, "rank", "picked by"]
            picks: dict[str, list[str]] = {}
            for rule, spec in rules(objectives, class_removal).items():
                got = pick(tried, spec, objectives or None)
                label = rule + (" (no configuration within the limits)" if got.within_limits is False else "")
                picks.setdefault(got.trial_id or "-", []).append(label)
            finished = [t for t in tried if math.isfinite(t.metrics.get(SCALAR, math.nan))]
            lowest = min(finished, key=lambda t: t.metrics[SCALAR]).trial_id if finished else None
            table_rows = []
            for t in sorted(first, key=lambda t: (choice.ranks.get(t, 99), first[t].get(keys[0]) or math.inf)):
                r = first[t]
                if not choice.on_front(t) and t not in picks and t != lowest:
                    continue
                marks = picks.get(t, []) + (["lowest scalar overall"] if t == lowest else []) + \
                    (["job's choice"] if r["is_best"] else [])
                table_rows.append([t, *[format_value(r.get(k)) for k in keys], format_value(r.get(SCALAR)),
                                   str(choice.ranks.get(t, "-")), ", ".join(marks)])
            print(render_table(cols, table_rows))
            if lowest is not None:
                print(f"lowest scalar objective over everything tried: {lowest}, Pareto rank "
                      f"{choice.ranks.get(lowest)} ({'on' if choice.on_front(lowest) else 'off'} the front)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
