"""A large sweep of a small method on this machine: does the record stay intact, and where does the
time go? Runs one job (in-process trials, concurrency 2 by default) into a fresh sqlite store, then
reads the record back and prints, side by side from the same run: the sweep's wall time, the trials'
mean time per part (unlearning, evaluation, MLflow logging, reporting, start), Tune's share (the sweep's
wall time, first trial start to last trial end, that no trial body covers, over the concurrent slots) and MLflow's share of the trials' time, and how long `camu-orch results`
takes to read the summary back.

    python benchmarks/sweep_scale.py --trials 200
    python benchmarks/sweep_scale.py --trials 50 --method camu --scheduler asha --budget 120
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import yaml

from orchestrator.record.identity import experiment_name


def job(trials: int, method: str, concurrency: int, scheduler: str, budget: float | None, epochs: int,
        num_train: int = 300) -> dict:
    space = {"lr": {"loguniform": [1.0e-4, 1.0]}} if method != "camu" else {"lr_out": {"loguniform": [1.0e-5, 1.0]}}
    params = {"epochs": epochs, "batch_size": 64}
    sweep = {"search": "random", "num_samples": trials, "max_concurrent_trials": concurrency, "scheduler": scheduler,
             "grace_period": 1, "reduction_factor": 3, **({"time_budget_s": budget} if budget else {})}
    return {"name": "scale", "dataset": {"name": "synthetic", "num_train": num_train, "num_test": max(100, num_train // 3),
                        "num_classes": 4},
            "model": {"name": "mnist_cnn"}, "original": {"recipe": {"epochs": 2, "batch_size": 64}},
            "scenarios": [{"name": "random10", "kind": "random", "fraction": 0.1}], "seeds": [0],
            "methods": [{"name": method, "params": params, "sweep": {"space": space}}], "sweep": sweep,
            "resources": {"num_workers": 0}, "tracking": {"experiment": "scale"}, "device": "cpu"}


def measure(spec: dict, work: Path) -> dict:
    """Run ``spec`` in ``work`` and read its record back; every number from this one run."""
    from typer.testing import CliRunner

    from orchestrator.cli import app

    (work / "job.yaml").write_text(yaml.safe_dump(spec))
    old = os.getcwd()
    os.chdir(work)
    # this run's own store, whatever MLFLOW_TRACKING_URI an earlier job in this process left set
    uri = f"sqlite:///{work / 'mlflow.db'}"
    try:
        start = time.perf_counter()
        submitted = CliRunner().invoke(app, ["submit", "job.yaml", "--set", f"tracking.uri={uri}"])
        wall = time.perf_counter() - start
        if submitted.exit_code != 0:
            raise SystemExit(submitted.output[-3000:])
        read_start = time.perf_counter()
        table = CliRunner().invoke(app, ["results", "scale", "--format", "json", "--tracking-uri", uri])
        read_seconds = time.perf_counter() - read_start
    finally:
        os.chdir(old)
    return {"wall": wall, "read_seconds": read_seconds, "rows": json.loads(table.stdout),
            "runs": _trial_runs(work / "mlflow.db"), "stored": stored_bytes(work)}


def stored_bytes(work: Path) -> dict[str, int]:
    """Bytes the job left on disk: MLflow artifacts, Ray Train/Tune storage (the job folders inside it
    counted apart) and the model cache."""
    from orchestrator.driver.retention import folder_bytes

    runs = work / "camu_runs"
    jobs = folder_bytes(runs / "scale")
    return {"mlflow_artifacts": folder_bytes(work / "mlartifacts"), "ray_storage": folder_bytes(runs) - jobs,
            "job_folders": jobs, "model_cache": folder_bytes(work / ".camu-cache")}


def _trial_runs(db: Path) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{db}")
    exp = client.get_experiment_by_name(experiment_name("scale", "owner"))
    runs, token = [], None
    while True:
        page = client.search_runs([exp.experiment_id], "tags.`camu.role` = 'trial'", max_results=1000, page_token=token)
        runs += list(page)
        token = page.token
        if not token:
            return runs


def report(found: dict, concurrency: int) -> dict:
    runs = [r for r in found["runs"] if not r.data.tags["camu.trial_id"].startswith("preset")]
    timed = [r.data.metrics for r in runs if "time.total" in r.data.metrics]
    trial_time = sum(m["time.total"] for m in timed)  # trial time summed over slots
    wall = (max(r.info.end_time for r in runs) - min(r.info.start_time for r in runs)) / 1000 if runs else 0.0
    parts = ("unlearn", "evaluation", "logging", "driver_logging", "epoch_reports", "data_load", "worker_start", "other")
    mean = {p: statistics.fmean(m.get(f"time.{p}", 0.0) for m in timed) for p in parts} if timed else {}
    statuses = [r.info.status for r in found["runs"]]
    mlflow = sum(m.get("time.logging", 0) + m.get("time.driver_logging", 0) for m in timed)
    sweep_wall = trial_time
    return {"trial_runs": len(runs), "running_left": statuses.count("RUNNING"), "finished": statuses.count("FINISHED"),
            "killed_or_failed": len(statuses) - statuses.count("FINISHED") - statuses.count("RUNNING"),
            "summary_rows": len(found["rows"]), "job_wall_s": round(found["wall"], 1), "sweep_wall_s": round(wall, 1),
            "results_read_s": round(found["read_seconds"], 2), "stored_bytes": found["stored"],
            "trial_mean_s": {k: round(v, 3) for k, v in mean.items()},
            "tune_share_of_sweep": round(max(0.0, 1 - trial_time / (wall * concurrency)), 3) if wall else None,
            "mlflow_share_of_trial_time": round(mlflow / sweep_wall, 3) if sweep_wall else None,
            "unlearning_share_of_trial_time": round(sum(m.get("time.unlearn", 0) for m in timed) / sweep_wall, 3)
            if sweep_wall else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--method", default="finetune")
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--scheduler", default="none", choices=["none", "asha"])
    ap.add_argument("--budget", type=float, default=None, help="sweep time budget in seconds")
    ap.add_argument("--epochs", type=int, default=1)
    args = ap.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    with tempfile.TemporaryDirectory() as tmp:
        found = measure(job(args.trials, args.method, args.concurrency, args.scheduler, args.budget, args.epochs), Path(tmp))
    print(json.dumps(report(found, args.concurrency), indent=2))


if __name__ == "__main__":
    main()
