"""Where a job's trial time went: the ``time.*`` metrics every trial run logs (worker start, data load,
unlearning, per-epoch reports and their parts, final evaluation, MLflow logging, driver logging, the
rest), averaged per method, with the share of trial time spent outside unlearning, overall and for
trials that unlearn for at least ``--long`` seconds.

    python benchmarks/trial_breakdown.py mnist_compare --tracking-uri sqlite:///mlflow.db
"""

from __future__ import annotations

import argparse
import statistics

from mlflow.tracking import MlflowClient

PARTS = ["worker_start", "data_load", "unlearn", "epoch_reports", "evaluation", "logging", "driver_logging", "other"]
EPOCH_PARTS = ["quick_metrics", "logging", "checkpoint", "report"]


def outside_share(trials: list[dict[str, float]]) -> float:
    """Percent of the trials' total wall time not spent unlearning."""
    return 100 * (1 - sum(t["time.unlearn"] for t in trials) / sum(t["time.total"] for t in trials))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("job", help="the job's name")
    parser.add_argument("--tracking-uri", default="sqlite:///mlflow.db")
    parser.add_argument("--long", type=float, default=60.0, help="seconds of unlearning that make a trial long")
    args = parser.parse_args()
    client = MlflowClient(args.tracking_uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments, f"tags.`camu.role` = 'trial' and tags.`camu.job` = '{args.job}'",
                              max_results=50000)
    by: dict[str, list[dict[str, float]]] = {}
    for run in runs:
        if "time.total" in run.data.metrics and "time.unlearn" in run.data.metrics:
            by.setdefault(run.data.tags["camu.method"], []).append(run.data.metrics)
    if not by:
        raise SystemExit(f"no finished trial of job {args.job!r} with time.* metrics in {args.tracking_uri}")
    head = " ".join(f"{p:>9.9}" for p in PARTS + [f"ep.{p}" for p in EPOCH_PARTS])
    print(f"mean seconds per trial\n{'method':14} {'n':>3} {'total':>7} {head} {'outside%':>8}")
    for method, trials in sorted(by.items()):
        mean = {p: statistics.fmean(t.get(f"time.{p}", 0.0) for t in trials) for p in PARTS}
        ep = {p: statistics.fmean(t.get(f"time.epoch_reports.{p}", 0.0) for t in trials) for p in EPOCH_PARTS}
        total = statistics.fmean(t["time.total"] for t in trials)
        cells = " ".join(f"{v:9.2f}" for v in list(mean.values()) + list(ep.values()))
        print(f"{method:14} {len(trials):3} {total:7.1f} {cells} {outside_share(trials):8.1f}")
    every = [t for trials in by.values() for t in trials]
    long = [t for t in every if t["time.unlearn"] >= args.long]
    print(f"all {len(every)} trials: {outside_share(every):.1f}% of trial time outside unlearning")
    if long:
        print(f"{len(long)} trials with >= {args.long:g} s of unlearning: {outside_share(long):.1f}% outside unlearning")


if __name__ == "__main__":
    main()
