"""The Ray Tune sweep of CaMU for one (scenario, seed): search space, search algorithm, scheduler,
and the trial driver, which is a Tune function that builds and fits a TorchTrainer (Train V2)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from ray import tune
from ray.tune.integration.ray_train import TuneReportCallback

from orchestrator.launch import fit_trainer, make_trainer
from orchestrator.naming import train_run_name, trial_key, trial_run_name
from orchestrator.progress import say
from orchestrator.selection import OBJECTIVE
from orchestrator.spec import ResourcesSpec, SweepSpec
from orchestrator.tracking import Tracker
from orchestrator.workers import camu_worker

log = logging.getLogger(__name__)


def param_space(space: dict[str, Any]) -> dict[str, Any]:
    """YAML search space -> Tune domains. Bounds are inclusive for randint."""
    out: dict[str, Any] = {}
    for key, value in space.items():
        if not isinstance(value, dict):
            out[key] = value
            continue
        kind, arg = next(iter(value.items()))
        out[key] = {"uniform": lambda a: tune.uniform(*a), "loguniform": lambda a: tune.loguniform(*a),
                    "randint": lambda a: tune.randint(a[0], a[1] + 1), "choice": tune.choice,
                    "grid": tune.grid_search}[kind](arg)
    return out


def search_algorithm(sweep: SweepSpec) -> Any:
    """Random (seeded), grid (from grid_search dimensions) or Optuna TPE."""
    if sweep.search == "optuna":
        from optuna.samplers import TPESampler
        from ray.tune.search import ConcurrencyLimiter
        from ray.tune.search.optuna import OptunaSearch

        return ConcurrencyLimiter(OptunaSearch(sampler=TPESampler(seed=sweep.seed)),
                                  max_concurrent=sweep.max_concurrent_trials)
    from ray.tune.search import BasicVariantGenerator

    # an explicit generator must carry the concurrency limit itself (Tune ignores max_concurrent_trials then)
    return BasicVariantGenerator(random_state=sweep.seed, max_concurrent=sweep.max_concurrent_trials)


def scheduler(sweep: SweepSpec, max_epochs: int) -> Any:
    if sweep.scheduler == "asha":
        from ray.tune.schedulers import ASHAScheduler

        # every epoch is one report; the final evaluation adds one more
        return ASHAScheduler(time_attr="training_iteration", max_t=max_epochs + 1, grace_period=sweep.grace_period,
                             reduction_factor=sweep.reduction_factor)
    return None


def run_trial(static: dict[str, Any], params: dict[str, Any], trial_id: str, method: str,
              in_tune: bool) -> tuple[dict[str, float], str]:
    """Find or create the trial's MLflow run, then fit a TorchTrainer running ``camu_worker``.
    The run is found again by key when Tune restarts the trial (same trial id), never duplicated."""
    tracker = Tracker(static["tracking_uri"])
    scenario, seed = static["scenario"], static["seed"]
    run_id = tracker.find_or_create_run(
        static["experiment_id"], trial_run_name(scenario, seed, trial_id),
        tags={"camu.method": method, "camu.scenario": scenario, "camu.seed": str(seed), "ray.trial_id": trial_id,
              "camu.job": static["job"], "camu.role": "trial"},
        key=trial_key(static["scope_key"], trial_id), parent=static["scenario_run_id"])
    tracker.log_params(run_id, {f"camu.{k}": v for k, v in sorted(params.items())})
    config = {**static["worker"], "camu_params": params, "run_id": run_id,
              "out_dir": f"{static['out_root']}/{trial_id}"}
    finished = read_final_metrics(config["out_dir"])
    if finished:  # a resumed job: this trial completed before the interruption
        tracker.end(run_id, "FINISHED")
        return finished, run_id
    trainer = make_trainer(camu_worker, config, ResourcesSpec.model_validate(static["resources"]),
                           train_run_name(static["job"], f"{scenario}-s{seed}", f"{static['scope_key'][-8:]}-{trial_id}"),
                           static["storage_path"], callbacks=[TuneReportCallback()] if in_tune else None)
    try:
        fit_trainer(trainer, ResourcesSpec.model_validate(static["resources"]))
    except BaseException:
        tracker.set_tags(run_id, {"camu.status": "failed"})
        tracker.end(run_id, "FAILED")
        raise
    tracker.end(run_id, "FINISHED")
    return read_final_metrics(config["out_dir"]), run_id


def read_final_metrics(out_dir: str) -> dict[str, float]:
    """The trial's final evaluation, written by rank 0 (Train V2 keeps only checkpoint-attached metrics)."""
    path = Path(out_dir) / "final.json"
    return json.loads(path.read_text()) if path.exists() else {}


def trial_driver(config: dict[str, Any], static: dict[str, Any]) -> None:
    """[4] The Tune trainable: ray.tune APIs only here; ray.train APIs live in the workers."""
    trial_id = tune.get_context().get_trial_id()
    run_trial(static, {**static["base_params"], **config}, trial_id, "camu", in_tune=True)


class TrialProgress(tune.Callback):
    """Reports trials done / running / failed and the best objective so far; closes the MLflow runs of
    trials that Tune stopped early (their driver process is gone before it could)."""

    def __init__(self, static: dict[str, Any]) -> None:
        self.static = static
        self.best = float("inf")
        self._tracker: Tracker | None = None

    @property
    def tracker(self) -> Tracker:
        if self._tracker is None:
            self._tracker = Tracker(self.static["tracking_uri"])
        return self._tracker

    def __getstate__(self) -> dict[str, Any]:  # Tune pickles callbacks with its experiment state
        return {**self.__dict__, "_tracker": None}

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        if result.get("final") and OBJECTIVE in result:
            self.best = min(self.best, result[OBJECTIVE])

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._close(trial, "FINISHED")
        self._status(trials)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._close(trial, "FAILED")
        self._status(trials)

    def _close(self, trial: Any, status: str) -> None:
        run_id = self.tracker.find_run(self.static["experiment_id"], {"camu.key": trial_key(self.static["scope_key"], trial.trial_id)})
        if run_id and self.tracker.status(run_id) == "RUNNING":
            if not (trial.last_result or {}).get("final"):
                self.tracker.set_tags(run_id, {"camu.stopped_early": "true"})
            self.tracker.end(run_id, status)

    def _status(self, trials: list) -> None:
        done = sum(t.status == "TERMINATED" for t in trials)
        failed = sum(t.status == "ERROR" for t in trials)
        running = sum(t.status == "RUNNING" for t in trials)
        best = f"{self.best:.2f}" if self.best < float("inf") else "-"
        say(f"    trials: {done} done, {running} running, {failed} failed; best objective so far {best}")


def run_sweep(static: dict[str, Any], sweep: SweepSpec, max_epochs: int, tune_name: str) -> tune.ResultGrid:
    """[5] One Tuner per (scenario, seed); resumes an interrupted sweep at the same path."""
    trainable = tune.with_resources(tune.with_parameters(trial_driver, static=static), {"CPU": 0.01})
    path = f"{static['storage_path']}/{tune_name}"
    if tune.Tuner.can_restore(path):
        say(f"    resuming sweep from {path}")
        tuner = tune.Tuner.restore(path, trainable=trainable, resume_unfinished=True, resume_errored=True)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space=param_space(sweep.space),
            # concurrency is set on the search algorithm itself (Tune ignores max_concurrent_trials then)
            tune_config=tune.TuneConfig(metric=OBJECTIVE, mode="min", search_alg=search_algorithm(sweep),
                                        scheduler=scheduler(sweep, max_epochs), num_samples=sweep.num_samples),
            run_config=tune.RunConfig(name=tune_name, storage_path=static["storage_path"], verbose=0,
                                      failure_config=tune.FailureConfig(max_failures=sweep.max_failures),
                                      callbacks=[TrialProgress(static)]),
        )
    return tuner.fit()
