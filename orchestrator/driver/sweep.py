"""Running unlearning trials: one run of a method with given parameters (``run_trial``, used for presets
and replicates in the driver and for every Tune trial), and the Ray Tune sweep of one (scenario,
method, seed), whose trial driver is a Tune function: a trial with one worker (or Train's local mode) runs
in that function's own process, reused from trial to trial and holding the worker's CPUs and GPU; a trial
with several workers builds and fits a TorchTrainer (Train V2).
The search is seeded with what is known: the method's evaluated presets are given to Optuna as
evaluated points, so the sweep learns from them and its best is never worse than they are.

A resumed job never restores Tune's pickled experiment state (``Tuner.restore`` unpickles whatever the
storage holds, and shared storage may hold someone else's file). Each sweep is rebuilt from the job
spec and the MLflow record instead (``recorded_trials``): random and grid searches replay their seeded
sequence, and a sampled configuration that an earlier attempt recorded takes that trial's id back, so a
finished trial answers from its ``final.json`` and an unfinished one continues from its last checkpoint
(Train's, or the one an in-process trial keeps in its own folder); Optuna is told the finished trials,
reruns the unfinished ones first, and samples the rest of the budget."""

from __future__ import annotations

import json
import logging
import math
import time
import uuid
from pathlib import Path
from typing import Any, NamedTuple

from ray import tune
from ray.tune.integration.ray_train import TuneReportCallback

from camu.methods import MethodParams
from orchestrator.driver.retention import remove_folder
from orchestrator.execution.placement import wait_until_released
from orchestrator.execution.trainer import fit_trainer, make_trainer
from orchestrator.job.objectives import objective_keys
from orchestrator.job.presets import with_values
from orchestrator.job.space import SearchSpace
from orchestrator.job.spec import ResourcesSpec, SweepSpec
from orchestrator.progress import PROGRESS, say
from orchestrator.record.run_identity import (
    Tag,
    content_hash,
    sweep_id,
    train_run_name,
    trial_folder,
    trial_key,
    trial_run_name,
)
from orchestrator.record.tracking import Tracker
from orchestrator.worker.finals import FINAL_FILE, read_final
from orchestrator.worker.objective import OBJECTIVE, with_objective_values
from orchestrator.worker.reporting import REPORT_STEP, RESUME_FILE
from orchestrator.worker.unlearning import unlearn_worker
from orchestrator.worker.wire import RecordedTrial, SweepContext, TrialConfig

log = logging.getLogger(__name__)


def tune_space(space: SearchSpace) -> dict[str, Any]:
    """The search space as Tune's param_space (the one conversion). Bounds are inclusive for randint."""
    out: dict[str, Any] = {}
    for key, dim in space.dimensions.items():
        values = list(dim.values)
        if dim.kind == "constant":
            out[key] = values[0]
        elif dim.kind == "uniform":
            out[key] = tune.uniform(*values)
        elif dim.kind == "loguniform":
            out[key] = tune.loguniform(*values)
        elif dim.kind == "randint":
            out[key] = tune.randint(int(values[0]), int(values[1]) + 1)
        elif dim.kind == "choice":
            out[key] = tune.choice(values)
        else:
            out[key] = tune.grid_search(values)
    return out


def search_algorithm(sweep: SweepSpec, space: SearchSpace,
                     evaluated: list[tuple[MethodParams, dict[str, float]]]) -> Any:
    """Optuna TPE (seeded, told the presets' results), random (seeded) or grid. With ``sweep.objectives``
    Optuna searches those (all at once when several: ``MultiObjectiveOptunaSearch``), else the scalar one."""
    if sweep.search == "optuna":
        from optuna.samplers import TPESampler
        from ray.tune.search import ConcurrencyLimiter
        from ray.tune.search.optuna import OptunaSearch

        named = bool(sweep.objectives)
        keys = objective_keys(sweep.objectives) if named else [OBJECTIVE]
        known = []
        for p, metrics in evaluated:
            values, point = [float(metrics.get(k, math.nan)) for k in keys], p.model_dump()
            if space.contains(point) and all(math.isfinite(v) for v in values) and metrics.get("diverged") != 1.0:
                known.append(({k: point[k] for k in space.searched}, values if named else values[0]))
        # TPE in both cases: it models good and bad regions from the first trials on (multi-objective TPE
        # splits them by non-dominated rank), where NSGA-II needs whole generations (50 trials by default)
        # before it does better than random sampling; sweeps here are tens of trials
        sampler = TPESampler(seed=sweep.seed)
        warm = {"points_to_evaluate": [p for p, _ in known] or None, "evaluated_rewards": [o for _, o in known] or None}
        searcher = (MultiObjectiveOptunaSearch(sampler=sampler, metric=keys, mode=["min"] * len(keys), **warm)
                    if named else OptunaSearch(sampler=sampler, **warm))
        return ConcurrencyLimiter(searcher, max_concurrent=sweep.max_concurrent_trials)
    from ray.tune.search import BasicVariantGenerator

    # an explicit generator carries the concurrency limit itself (Tune ignores max_concurrent_trials then)
    return BasicVariantGenerator(random_state=sweep.seed, max_concurrent=sweep.max_concurrent_trials)


def _multi_objective_search() -> type:
    """``OptunaSearch`` for several metrics at once (built on first use: Optuna is imported lazily)."""
    from optuna.trial import TrialState, create_trial
    from ray.tune.search.optuna import OptunaSearch

    class _Search(OptunaSearch):
        """Searches its own list of metrics (``objectives``) while Tune sees the scalar one: Tune hands every
        searcher the scalar metric and checks that each result holds the searcher's ``metric``, and the
        per-epoch reports hold only the scalar objective (the one early stopping reads); the objectives come
        with the final report. Warm-start points are told with a value per objective, and a trial that ended
        without every objective (stopped early, failed) is recorded as pruned or failed, never as a value."""

        @property
        def metric(self) -> str:
            return OBJECTIVE

        @property
        def mode(self) -> str:
            return "min"

        @property
        def objectives(self) -> list[str]:
            return list(self._metric)

        def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
            return super().set_search_properties(None, None, config, **spec)

        def add_evaluated_point(self, parameters: dict, value: Any, error: bool = False, pruned: bool = False,
                                intermediate_values: list[float] | None = None) -> None:
            self._ot_study.add_trial(create_trial(state=TrialState.COMPLETE, values=[float(v) for v in value],
                                                  params=parameters, distributions=self._space))

        def on_trial_result(self, trial_id: str, result: dict) -> None:
            """Optuna keeps no intermediate values for several objectives."""

        def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
            if trial_id in self._completed_trials:
                return
            values = [(result or {}).get(m) for m in self.objectives]
            broken = (result or {}).get("diverged") == 1.0  # a broken model's scores are no result
            if not broken and all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
                self._ot_study.tell(self._ot_trials[trial_id], [float(v) for v in values])
            else:
                self._ot_study.tell(self._ot_trials[trial_id], None,
                                    state=TrialState.FAIL if error or broken else TrialState.PRUNED)
            self._completed_trials.add(trial_id)

    return _Search


def MultiObjectiveOptunaSearch(**kwargs: Any) -> Any:
    """An Optuna search over several metrics, all minimised (see ``_multi_objective_search``)."""
    return _multi_objective_search()(**kwargs)


def scheduler(sweep: SweepSpec, max_epochs: int) -> Any:
    """ASHA over epoch reports, or None. A method whose trials end at or before the grace period (unrolling
    SGD's single epoch) gets none: ASHA's only rung would fall after its unlearning, where stopping saves
    nothing but the final evaluation and loses the trial."""
    if sweep.scheduler == "asha" and max_epochs > sweep.grace_period:
        from ray.tune.schedulers import ASHAScheduler

        # every epoch is one report; the final evaluation adds one more
        return ASHAScheduler(time_attr=REPORT_STEP, max_t=max_epochs + 1, grace_period=sweep.grace_period,
                             reduction_factor=sweep.reduction_factor)
    return None




def config_hash(config: dict[str, Any]) -> str:
    """The identity of a sampled configuration (its JSON, keys sorted)."""
    return content_hash(json.loads(json.dumps(config, default=str)), length=16)


def run_trial(ctx: SweepContext, params: MethodParams, trial_id: str, in_tune: bool,
              seed: int | None = None, sampled: dict[str, Any] | None = None) -> tuple[dict[str, float], str]:
    """Find or create the trial's MLflow run, then run ``unlearn_worker`` (a TorchTrainer, or in this
    process for an in-process trial inside Tune). The run is found again by key when Tune restarts the
    trial (same trial id), never duplicated. ``seed``: run on another seed's split (replicates);
    ``sampled``: the configuration a sweep sampled (recorded so that a resumed sweep can replay it). Inside
    Tune a trial with at most one worker runs here, in the trial's own process (``in_trial_process``)."""
    started = time.time()
    seed = ctx.seed if seed is None else seed
    tracker = Tracker.shared(ctx.tracking_uri)
    sweep_tags = {Tag.SWEEP: sweep_id(ctx.scope_key, ctx.seed),
                  Tag.CONFIG: json.dumps(sampled, sort_keys=True, default=str)[:7000]} \
        if sampled is not None else {}
    run_id = tracker.find_or_create_run(
        ctx.experiment_id, trial_run_name(ctx.scenario, ctx.method, seed, trial_id),
        tags={Tag.METHOD: ctx.method, Tag.SCENARIO: ctx.scenario, Tag.SEED: str(seed), "ray.trial_id": trial_id,
              Tag.JOB: ctx.job, Tag.ROLE: "trial", Tag.TRIAL_ID: trial_id, **sweep_tags, **ctx.run_tags},
        key=trial_key(ctx.scope_key, trial_id, seed), parent=ctx.scenario_run_id)
    try:
        return _run_opened(ctx, params, trial_id, in_tune, seed, sampled, tracker, run_id, started)
    except BaseException:  # whatever ends the trial early, its reopened run never stays RUNNING
        if tracker.status(run_id) == "RUNNING":  # (one Tune stopped was closed as stopped: see _execute)
            tracker.end(run_id, "FAILED")
        raise


def _run_opened(ctx: SweepContext, params: MethodParams, trial_id: str, in_tune: bool, seed: int,
                sampled: dict[str, Any] | None, tracker: Tracker, run_id: str,
                started: float) -> tuple[dict[str, float], str]:
    tracker.log_params(run_id, {f"{ctx.method}.{k}": v for k, v in sorted(params.model_dump().items())})
    out_dir = trial_out_dir(ctx, trial_id, seed)
    finished = read_final_metrics(out_dir)
    if finished:  # a resumed job: this trial completed before the interruption
        tracker.end(run_id, "FINISHED")
        return finished, run_id
    driver_logging = time.time() - started
    train_name = train_run_name(ctx.job, f"{ctx.scenario}-{ctx.method}-s{seed}", f"{ctx.scope_key[-8:]}-{trial_id}")
    keep = sampled is None or ctx.keep_all_weights  # presets and replicates always; sweep trials when asked
    stopped: SystemExit | None = None
    try:
        _execute(ctx, TrialConfig(worker=ctx.worker, method=ctx.method, params=params, run_id=run_id,
                                  out_dir=out_dir,
                                  report_to="tune" if in_tune and in_trial_process(ctx.resources) else "train",
                                  launched_at=time.time(), started_at=started, log_weights=keep),
                 train_name, in_tune, tracker)
    except SystemExit as err:  # Tune ended the in-process trial at its final report: finished (see _in_trial_process)
        if not read_final_metrics(out_dir):
            raise  # stopped early or failed: its run was closed as such
        stopped = err
    final = read_final_metrics(out_dir)
    if final:  # the whole trial as the driver saw it; "other" is what none of the worker's parts covers
        remove_folder(ctx.storage_path, train_name)  # finished: its checkpoints will never be read again
        total = time.time() - started
        parts = sum(v for k, v in final.items()
                    if k.startswith("time.") and k.count(".") == 1 and k != "time.to_unlearn") + driver_logging
        tracker.log_metrics(run_id, {"time.total": total, "time.driver_logging": driver_logging,
                                     "time.other": max(0.0, total - parts)})
    tracker.end(run_id, "FINISHED")
    if stopped is not None:
        raise stopped  # Tune's own way of ending the trial's thread: it must reach Tune
    return final, run_id


def _execute(ctx: SweepContext, config: TrialConfig, train_name: str, in_tune: bool, tracker: Tracker) -> None:
    """The run itself: in this process (an in-process trial inside Tune) or as a TorchTrainer."""
    try:
        if config.report_to == "tune":  # Tune's own session: no Train run inside
            _in_trial_process(config, tracker)
        else:
            trainer = make_trainer(unlearn_worker, config, ctx.resources, train_name, ctx.storage_path,
                                   callbacks=[TuneReportCallback()] if in_tune else None)
            fit_trainer(trainer, ctx.resources)
    except BaseException as err:
        if not (isinstance(err, SystemExit) and config.report_to == "tune"):  # Tune stopping an in-process trial
            tracker.set_tags(config.run_id, {Tag.STATUS: "failed"})  # is no failure (see _in_trial_process)
            tracker.end(config.run_id, "FAILED")
        raise


def _in_trial_process(config: TrialConfig, tracker: Tracker) -> None:
    """``unlearn_worker`` in this process. Tune ends a trial it stops by raising ``SystemExit`` in the report
    that told it so, and that exception must reach Tune (a trial function that returns after it leaves Tune's
    search waiting for a trial that never ends): after the final report (the scheduler's last rung) the trial
    is finished, and ``_run_opened`` does its bookkeeping before raising it again; before it, early stopping
    (or the end of the sweep) stopped it, and its run is closed as stopped, as ``TrialProgress`` closes a
    stopped Train-run trial's, its checkpoint removed."""
    import torch

    try:
        unlearn_worker({"config": config})
    except SystemExit:
        if read_final_metrics(config.out_dir):
            raise
        (Path(config.out_dir) / RESUME_FILE).unlink(missing_ok=True)  # a stopped trial is never continued
        tracker.set_tags(config.run_id, {Tag.STOPPED_EARLY: "true"})
        tracker.end(config.run_id, "FINISHED")
        raise
    finally:
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.empty_cache()  # the next trial of this reused process starts with the GPU's memory free


def read_final_metrics(out_dir: str) -> dict[str, float]:
    """The trial's final evaluation, written last and atomically by rank 0 (Train V2 keeps only
    checkpoint-attached metrics); a missing or unreadable file means "not finished"."""
    return read_final(Path(out_dir) / FINAL_FILE)


def trial_out_dir(ctx: SweepContext, trial_id: str, seed: int | None = None) -> str:
    """The trial's folder (``run_identity.trial_folder``) on ``seed`` (default: the sweep's seed)."""
    return str(trial_folder(ctx.out_root, ctx.method, ctx.seed if seed is None else seed, trial_id))


def trial_driver(config: dict[str, Any], ctx: SweepContext) -> None:
    """The Tune trainable (pipeline stage 4): ray.tune APIs only here; ray.train APIs live in the workers. A
    configuration
    an earlier attempt of the job recorded takes that trial's id back: finished, it answers from its
    record; stopped early, it stays stopped; unfinished, it continues from its last checkpoint."""
    tune_id = tune.get_context().get_trial_id()
    recorded = replayed(ctx, tune_id, config)
    if recorded is not None and recorded.status in ("stopped", "finished"):
        # nothing to report: a finished trial's result is read from its final.json after the sweep, and
        # reporting it now would put final objectives in ASHA's first rung beside new trials' first epochs
        return
    trial_id = recorded.trial_id if recorded is not None else tune_id
    run_trial(ctx, with_values(ctx.base_params, config), trial_id, in_tune=True, sampled=config)


def ordinal(tune_trial_id: str) -> str:
    """The position of a trial in its search's sequence (Tune ids end in ``_%05d``): the same position
    in a replayed seeded sequence names the same trial, even when two trials share a configuration."""
    return tune_trial_id.rsplit("_", 1)[-1]


def replayed(ctx: SweepContext, tune_trial_id: str, config: dict[str, Any]) -> RecordedTrial | None:
    """The recorded trial a replayed Tune trial stands for: same position in the sequence and same
    configuration (a sequence that changed replays nothing)."""
    found = ctx.recorded.get(ordinal(tune_trial_id))
    return found if found is not None and config_hash(found.sampled) == config_hash(config) else None


def recorded_trials(ctx: SweepContext, tracker: Tracker) -> dict[str, RecordedTrial]:
    """The trials an earlier attempt of this sweep recorded in MLflow, by position in the search's
    sequence (``ordinal``): finished (its final.json is there), stopped (early stopping ended it) or
    unfinished (interrupted, failed)."""
    found: dict[str, RecordedTrial] = {}
    for run in tracker.search_all(ctx.experiment_id, f"tags.`{Tag.SWEEP}` = '{sweep_id(ctx.scope_key, ctx.seed)}'"):
        tags = run.data.tags
        try:
            config = json.loads(tags.get(Tag.CONFIG, ""))
        except ValueError:
            continue  # a truncated config cannot be replayed: that trial is sampled anew
        trial_id = tags.get(Tag.TRIAL_ID, "")
        final = read_final_metrics(trial_out_dir(ctx, trial_id)) if trial_id else {}
        status = "finished" if final.get("final") else \
            "stopped" if tags.get(Tag.STOPPED_EARLY) == "true" and run.info.status != "RUNNING" else "unfinished"
        found[ordinal(trial_id)] = RecordedTrial(trial_id=trial_id, status=status, sampled=config,
                                                   objective=float(final.get(OBJECTIVE, math.nan)))
    return found


class TrialProgress(tune.Callback):
    """Reports trials done / running / stopped / failed and the best objective so far; closes the MLflow
    runs of trials that Tune stopped early (their driver process is gone before it could)."""

    # class-level defaults: a sweep resumed by a newer camu-orch unpickles the callback an older one saved
    best: float = float("inf")
    total: int = 0
    _tracker: Tracker | None = None

    def __init__(self, ctx: SweepContext, best: float = float("inf"), total: int = 0) -> None:
        self.ctx = ctx
        self.best = best
        self.total = total
        self._tracker: Tracker | None = None

    @property
    def tracker(self) -> Tracker:
        if self._tracker is None:
            self._tracker = Tracker(self.ctx.tracking_uri)
        return self._tracker

    def __getstate__(self) -> dict[str, Any]:  # Tune pickles callbacks with its experiment state
        return {**self.__dict__, "_tracker": None}

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        if result.get("final") and OBJECTIVE in result:
            self.best = min(self.best, result[OBJECTIVE])

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._close(trial, "FINISHED", stopped=True)
        self._status(trials, ended=(trial, "TERMINATED"))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._close(trial, "FAILED")
        self._status(trials, ended=(trial, "ERROR"))

    def _close(self, trial: Any, status: str, stopped: bool = False) -> None:
        again = replayed(self.ctx, trial.trial_id, trial.config or {})
        trial_id = again.trial_id if again is not None else trial.trial_id
        key = trial_key(self.ctx.scope_key, trial_id, self.ctx.seed)
        run_id = self.tracker.find_run(self.ctx.experiment_id, {Tag.KEY: key})
        if run_id and self.tracker.status(run_id) == "RUNNING":
            if stopped and not (trial.last_result or {}).get("final"):  # never an errored trial: that one is retried
                self.tracker.set_tags(run_id, {Tag.STOPPED_EARLY: "true"})
            self.tracker.end(run_id, status)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._status(trials, quiet=True, ended=(trial, "RUNNING"))

    def _status(self, trials: list, quiet: bool = False, ended: tuple[Any, str] | None = None) -> None:
        """Counts by status; ``ended``: (the trial a callback reports on, its new status: Tune sets it after)."""
        status = {id(t): t.status for t in trials}
        if ended is not None:
            status[id(ended[0])] = ended[1]
        stopped = sum(status[id(t)] == "TERMINATED" and not (t.last_result or {}).get("final") for t in trials)
        done = sum(status[id(t)] == "TERMINATED" for t in trials) - stopped
        failed = sum(status[id(t)] == "ERROR" for t in trials)
        running = sum(status[id(t)] == "RUNNING" for t in trials)
        PROGRESS.sweep(done, running, stopped, failed, max(self.total, len(trials)), self.best, quiet=quiet)


DRIVER_MEMORY = 64 * 2**20  # bytes of Ray's "memory" resource a trial driver reserves


def in_trial_process(resources: ResourcesSpec) -> bool:
    """Whether a sweep trial runs in its Tune trial's own process rather than as a Ray Train run: with one
    worker nothing is distributed, and a Train run would cost a controller, a worker group and a fresh
    interpreter per trial (7-10 s from ``fit()`` to the loop's first line on a 2-core node) where a reused
    trial process has its imports, its dataset and its model code loaded already."""
    return resources.num_workers <= 1


def trial_driver_resources(resources: ResourcesSpec) -> dict[str, float]:
    """What a trial's driver actor reserves. A single-worker trial computes in the driver itself, which
    therefore holds what the worker would have: its CPUs and GPU (a fraction with ``trials_per_gpu``; Ray
    then sets the process's visible GPU). Train local mode (num_workers 0) keeps a CPU share, as it always
    has, and the GPU share asked for; a trial that reserves no GPU computes on the CPU. A trial that starts
    a Train run reserves no CPU: its workers may ask for a whole node's CPUs, and a driver holding even 0.01
    CPU there leaves that node short (two drivers on a two-node cluster of 2-CPU nodes starved every 2-CPU
    worker group); a token of Ray's memory resource, which every node has and no worker asks for, lets Tune
    schedule the driver."""
    if resources.num_workers > 1:
        return {"CPU": 0, "memory": DRIVER_MEMORY}
    held = {"CPU": resources.cpus_per_worker if resources.num_workers == 1 else 0.01}
    # a process given no GPU computes on the CPU (worker.loading.worker_device), whatever its node has
    return {**held, "GPU": resources.gpus_per_worker} if resources.use_gpu else held


def trial_retries(sweep: SweepSpec, resources: ResourcesSpec) -> int:
    """Tune's retries of a failed trial. A Train run retries its crashed workers itself
    (``resources.worker_max_failures``) before the trial fails and Tune retries it (``sweep.max_failures``);
    an in-process trial has only Tune's retries, so it gets both budgets there (-1: unlimited). Each retry
    continues from the trial's last checkpoint."""
    if not in_trial_process(resources) or resources.num_workers == 0:
        return sweep.max_failures
    if resources.worker_max_failures < 0:
        return -1
    return sweep.max_failures + resources.worker_max_failures


class SweepTrial(NamedTuple):
    """One trial of a sweep as the comparison needs it."""

    trial_id: str
    config: dict[str, Any]  # what the search sampled
    metrics: dict[str, Any]  # its final metrics ({} when it did not finish)
    failed: bool


def run_sweep(ctx: SweepContext, sweep: SweepSpec, space: SearchSpace, max_epochs: int, tune_name: str,
              evaluated: list[tuple[MethodParams, dict[str, float]]], tracker: Tracker) -> list[SweepTrial]:
    """One Tuner per (scenario, method, seed), rebuilt from the spec and the MLflow record when the
    job is resumed (see the module docstring); returns every trial of the sweep."""
    PROGRESS.start_task(f"{ctx.method} sweep on seed {ctx.seed}")
    recorded = recorded_trials(ctx, tracker)
    done_tag = Tag.sweep_done(ctx.scope_key, ctx.seed)
    if tracker.run(ctx.scenario_run_id).data.tags.get(done_tag) == "true":
        # completed before the interruption: its trials as recorded, nothing rerun (failed ones stay failed)
        say(f"    {ctx.method} sweep on seed {ctx.seed}: completed before, {len(recorded)} trial(s) from the record")
        return [SweepTrial(r.trial_id, r.sampled, read_final_metrics(trial_out_dir(ctx, r.trial_id)),
                           r.status == "unfinished") for r in recorded.values()]
    if recorded:
        counts = {s: sum(r.status == s for r in recorded.values()) for s in ("finished", "stopped", "unfinished")}
        say(f"    resuming the sweep from the MLflow record: {counts['finished']} finished, {counts['stopped']} "
            f"stopped, {counts['unfinished']} unfinished trial(s)")
    done: list[SweepTrial] = []
    num_samples = sweep.num_samples
    if recorded and sweep.search == "optuna":  # TPE's proposals depend on timing: tell it the record instead
        done, evaluated = _replay_for_optuna(ctx, recorded, evaluated)
        num_samples = max(0, sweep.num_samples - len(recorded))
        recorded = {}
    if num_samples == 0:
        tracker.set_tags(ctx.scenario_run_id, {done_tag: "true"})
        return done
    ctx = ctx.model_copy(update={"recorded": recorded})
    tuner_name = f"{tune_name}-{uuid.uuid4().hex[:8]}"  # a fresh folder per attempt: written, never read back
    trainable = tune.with_resources(tune.with_parameters(trial_driver, ctx=ctx), trial_driver_resources(ctx.resources))
    best_known = min((o for o in (float(m.get(OBJECTIVE, math.nan)) for _, m in evaluated) if math.isfinite(o)),
                     default=float("inf"))
    tuner = tune.Tuner(
        trainable,
        param_space=tune_space(space),
        # concurrency is set on the search algorithm itself (Tune ignores max_concurrent_trials then)
        tune_config=tune.TuneConfig(metric=OBJECTIVE, mode="min", search_alg=search_algorithm(sweep, space, evaluated),
                                    scheduler=scheduler(sweep, max_epochs), num_samples=num_samples,
                                    time_budget_s=sweep.time_budget_s,
                                    # in-process trials: one trial-driver process serves trial after
                                    # trial (no interpreter start and imports per trial, seconds for
                                    # trials of seconds; its dataset stays loaded). Never for Train runs: a
                                    # reused driver keeps the finished run's controller, and with it the
                                    # workers' placement group.
                                    reuse_actors=in_trial_process(ctx.resources)),
        run_config=tune.RunConfig(name=tuner_name, storage_path=ctx.storage_path,
                                  verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=trial_retries(sweep, ctx.resources)),
                                  callbacks=[TrialProgress(ctx, best_known, num_samples)]),
    )
    try:
        grid = tuner.fit()
    finally:
        remove_folder(ctx.storage_path, tuner_name)  # never read back (see the module docstring)
    trials = [_sweep_trial(ctx, res, recorded) for res in grid]
    tracker.set_tags(ctx.scenario_run_id, {done_tag: "true"})
    # the sweep is over: no trial of it will continue, so the checkpoints in-process trials that failed every
    # retry kept in their folders go (a resumed job answers this sweep from the record)
    for left in Path(trial_out_dir(ctx, "-")).parent.glob(f"*/{RESUME_FILE}"):
        left.unlink(missing_ok=True)
    if not in_trial_process(ctx.resources):  # in-process trials hold no placement group
        removed = wait_until_released()
        if removed:
            say(f"    released {len(removed)} worker reservation(s) that stopped trials still held 20 s after the "
                f"sweep")
    return done + trials


def _sweep_trial(ctx: SweepContext, res: Any, recorded: dict[str, RecordedTrial]) -> SweepTrial:
    config = dict(res.config or {})
    tune_id = (res.metrics or {}).get("trial_id") or _tune_id_from_path(res.path)
    again = replayed(ctx, tune_id, config)
    trial_id = again.trial_id if again is not None else tune_id
    metrics = res.metrics if (res.metrics or {}).get("final") else read_final_metrics(trial_out_dir(ctx, trial_id))
    return SweepTrial(trial_id, config, metrics or {}, res.error is not None)


def _tune_id_from_path(path: str) -> str:
    """A trial's Tune id (``<5-8 hex>_<5 digits>``) from its folder name ``<trainable>_<id>_<tag>_<date>``: the
    id of a trial that reported nothing (a replayed finished or stopped one)."""
    import re

    found = re.search(r"_([0-9a-f]{5,8}_\d{5})(?:_|$)", Path(path).name)
    return found.group(1) if found else Path(path).name


def _replay_for_optuna(ctx: SweepContext, recorded: dict[str, RecordedTrial],
                       evaluated: list[tuple[MethodParams, dict[str, float]]]
                       ) -> tuple[list[SweepTrial], list[tuple[MethodParams, dict[str, float]]]]:
    """Optuna's side of a resumed sweep: unfinished trials rerun first (each continues from its Train
    checkpoint under its own id), then every finished one is told to the search like the presets."""
    done, told = [], list(evaluated)
    for trial in recorded.values():
        if trial.status == "unfinished":
            PROGRESS.start_task(f"{ctx.method} {trial.trial_id} (resumed) on seed {ctx.seed}",
                                getattr(ctx.base_params, "epochs", None))
            try:
                final, _ = run_trial(ctx, with_values(ctx.base_params, trial.sampled), trial.trial_id,
                                     in_tune=False, sampled=trial.sampled)
            except Exception as err:  # noqa: BLE001 - a failed trial is recorded as failed, as in Tune
                say(f"    {trial.trial_id} failed again: {type(err).__name__}: {str(err)[:200]}")
                done.append(SweepTrial(trial.trial_id, trial.sampled, {}, True))
                continue
        else:
            final = read_final_metrics(trial_out_dir(ctx, trial.trial_id))
        done.append(SweepTrial(trial.trial_id, trial.sampled, final, False))
        if final.get("final"):
            told.append((with_values(ctx.base_params, trial.sampled),
                         with_objective_values(final, ctx.worker.oracle_metrics)))
    return done, told
