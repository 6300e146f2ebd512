"""What starting a trial costs: the floors of Ray Tune and Ray Train with empty loops, beside a real job's
trials, in one run on the same machine.

Floors (empty loops, nothing imported or loaded):

- Tune in-process: a function trial in its Tune trial's own process (reused from trial to trial), from Tune's
  ``on_trial_start`` to the function's first line: what a single-worker trial pays now;
- Tune + Train: a Tune trial that fits a bare ``TorchTrainer`` with ``W`` workers, from ``on_trial_start`` to
  the Train loop's first line, and the trial's whole length: what a trial with ``W`` workers pays;
- bare Train: ``TorchTrainer.fit()`` alone, from the call to the loop's first line, and in all.

Then, with ``--job``, the job is run (``camu-orch run``; ``--set`` passed on) and its trials' own ``time.*``
metrics are printed beside the floors: ``time.to_unlearn`` (the trial's first line to its unlearning: MLflow
run, data, weights), ``time.worker_start`` (a Train run's launch to its loop's first line) and
``time.data_load``.

    python benchmarks/trial_start.py --workers 1 2 --trials 4
    python benchmarks/trial_start.py --job /tmp/sweep.yaml --set resources.num_workers=2 --workers 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def _first_line_tune(config: dict[str, Any]) -> None:
    from ray import tune

    tune.report({"first_line": time.time()})


def _empty_loop(config: dict[str, Any]) -> None:
    """Writes when it started (Train V2 keeps no metrics reported without a checkpoint)."""
    import ray.train

    first_line = time.time()
    if ray.train.get_context().get_world_rank() == 0:
        Path(config["clock"]).write_text(repr(first_line))


def _fit_empty(workers: int, cpus: float, storage: str, name: str) -> float:
    """Fit a bare TorchTrainer running ``_empty_loop``; returns the time of the loop's first line."""
    import ray.train
    from ray.train.torch import TorchTrainer

    clock = Path(storage) / f"{name}.clock"
    TorchTrainer(_empty_loop, train_loop_config={"clock": str(clock)},
                 scaling_config=ray.train.ScalingConfig(num_workers=workers, resources_per_worker={"CPU": cpus}),
                 run_config=ray.train.RunConfig(name=name, storage_path=storage)).fit()
    return float(clock.read_text())


def _tune_fits_trainer(config: dict[str, Any]) -> None:
    from ray import tune

    first_line = _fit_empty(config["workers"], config["cpus"], config["storage"],
                            f"floor-{tune.get_context().get_trial_id()}")
    tune.report({"first_line": first_line})


def tune_floor(trainable: Any, trials: int, resources: dict[str, float], reuse: bool, storage: str,
               config: dict[str, Any] | None = None) -> list[tuple[float, float]]:
    """(Tune's trial start to the first line, the trial's whole length) for ``trials`` sequential trials."""
    from ray import tune

    starts: dict[str, float] = {}
    ends: dict[str, float] = {}

    class Clock(tune.Callback):
        def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            starts[trial.trial_id] = time.time()

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            ends[trial.trial_id] = time.time()

    tuner = tune.Tuner(
        tune.with_resources(trainable, resources),
        param_space={**(config or {}), "i": tune.grid_search(list(range(trials)))},
        tune_config=tune.TuneConfig(max_concurrent_trials=1, reuse_actors=reuse),
        run_config=tune.RunConfig(storage_path=storage, verbose=0, callbacks=[Clock()]))
    grid = tuner.fit()
    out = []
    for res in sorted(grid, key=lambda r: starts[r.metrics["trial_id"]]):
        tid = res.metrics["trial_id"]
        out.append((res.metrics["first_line"] - starts[tid], ends[tid] - starts[tid]))
    return out


def train_floor(workers: int, cpus: float, storage: str, runs: int) -> list[tuple[float, float]]:
    """(fit() to the loop's first line, fit() in all) of bare TorchTrainers with ``workers`` workers."""
    out = []
    for i in range(runs):
        start = time.time()
        first_line = _fit_empty(workers, cpus, storage, f"bare-{workers}-{i}-{time.time_ns()}")
        out.append((first_line - start, time.time() - start))
    return out


def fmt(pairs: list[tuple[float, float]]) -> str:
    first, later = pairs[0], pairs[1:]
    text = f"first trial {first[0]:.2f} s to its first line ({first[1]:.2f} s in all)"
    if later:
        text += (f"; later ones {statistics.fmean(p[0] for p in later):.2f} s "
                 f"({statistics.fmean(p[1] for p in later):.2f} s in all), n={len(later)}")
    return text


def job_trials(job: Path, sets: list[str], workdir: Path) -> list[dict[str, float]]:
    """Run the job in ``workdir`` and return its sweep trials' metrics."""
    from mlflow.tracking import MlflowClient

    args = [str(Path(sys.executable).parent / "camu-orch"), "run", str(job)] + [a for s in sets for a in ("--set", s)]
    env = {**os.environ, "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled")}
    env.pop("MLFLOW_TRACKING_URI", None)
    subprocess.run(args, cwd=workdir, env=env, check=True, stdout=subprocess.DEVNULL)
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()],
                              "tags.`camu.role` = 'trial'", max_results=5000)
    trials = [r for r in runs if not r.data.tags.get("camu.trial_id", "").startswith("preset")
              and "time.total" in r.data.metrics]
    return [r.data.metrics for r in sorted(trials, key=lambda r: r.info.start_time)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="Train workers of the floors")
    parser.add_argument("--cpus-per-worker", type=float, default=1.0)
    parser.add_argument("--trials", type=int, default=4, help="sequential trials per Tune floor")
    parser.add_argument("--job", type=Path, help="a job file whose sweep trials are printed beside the floors")
    parser.add_argument("--set", dest="sets", action="append", default=[], help="override for --job (repeatable)")
    args = parser.parse_args()
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    storage = tempfile.mkdtemp(prefix="trial-start-")
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    try:
        cpus = args.cpus_per_worker
        print(f"Ray {ray.__version__}, {os.cpu_count()} CPUs; times from Tune's on_trial_start (Tune floors) or "
              f"fit() (bare Train) to the loop's first line")
        in_process = tune_floor(_first_line_tune, args.trials, {"CPU": cpus}, True, storage)
        print(f"Tune in-process, reused ({cpus:g} CPU): {fmt(in_process)}")
        for w in args.workers:
            pairs = tune_floor(_tune_fits_trainer, args.trials, {"CPU": 0, "memory": 64 * 2**20}, False, storage,
                               {"workers": w, "cpus": cpus, "storage": storage})
            print(f"Tune + Train, {w} worker(s) x {cpus:g} CPU: {fmt(pairs)}")
            bare = train_floor(w, cpus, storage, max(2, args.trials // 2))
            print(f"bare Train, {w} worker(s) x {cpus:g} CPU: {fmt(bare)}")
    finally:
        ray.shutdown()
    if args.job is not None:
        work = Path(tempfile.mkdtemp(prefix="trial-start-job-"))
        trials = job_trials(args.job.resolve(), args.sets, work)
        keys = ["time.to_unlearn", "time.worker_start", "time.data_load", "time.unlearn", "time.total"]
        print(f"\njob {args.job.name} ({' '.join(args.sets) or 'as written'}): {len(trials)} sweep trials, mean "
              f"(first / later) seconds")
        for key in keys:
            values = [t.get(key, float("nan")) for t in trials]
            if values:
                later = statistics.fmean(values[1:]) if len(values) > 1 else float("nan")
                print(f"  {key:18} {statistics.fmean(values):7.2f}   ({values[0]:.2f} / {later:.2f})")
        print(f"  job folder: {work}")


if __name__ == "__main__":
    main()
