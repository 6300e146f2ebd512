"""Code that runs inside Ray: Train worker loops (original/oracle training, CaMU trials) and the
evaluation task. Only ``ray.train.*`` APIs here (Train V2); configs are plain dicts.

Rank 0 alone logs to MLflow and writes model files; every rank calls ``ray.train.report`` the same
number of times (it is a barrier).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import json
import math
import time
from collections.abc import Callable, Iterator
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import ray
import ray.train
import ray.train.torch
import torch

from camu import METHODS, build_model, evaluate, forget_indices, load_dataset, load_split, retain_indices, run_method
from camu.data import ImageData
from camu.evaluation import EvalSets, evaluation_sets, predict_logits
from camu.methods import UnlearnContext
from camu.metrics import accuracy
from camu.runtime import Shard, resolve_device, set_precision
from camu.training import TrainRecipe, train_classifier
from camu.weights import load_weights, read_checkpoint_state, save_weights
from camu.privacy import LiraFit, logit_confidence, per_example_privacy
from camu.relearn import relearn
from orchestrator.finals import FINAL_FILE, write_final
from orchestrator.secrets import install_redacting_filter
from orchestrator.progress import PROGRESS
from orchestrator.selection import OBJECTIVE, objective, score
from orchestrator.tracking import Tracker
from orchestrator.trial import TrialConfig, WorkerConfig

install_redacting_filter()  # every Ray worker process (Train workers, Tune trial drivers, evaluation tasks) imports this

QUICK_SAMPLE = 512  # retained and test samples (each) of the per-epoch objective, besides all of the selection D_f
QUICK_SHARE = 0.05  # the per-epoch objective may take at most this share of a trial's unlearning time


class QuickBudget:
    """Whether an epoch computes the per-epoch objective afresh: always the first time, then while the time
    spent on it stays within ``share`` of the unlearning time so far. Methods with epochs far shorter than
    an evaluation (CaMU's 2-s epochs on MNIST) would otherwise spend a fifth of a trial on it; in between,
    Tune sees the last value, so ASHA decides on an objective at most a few short epochs old."""

    def __init__(self, share: float) -> None:
        self.share, self.spent, self.cost = share, 0.0, None

    def due(self, unlearn_seconds: float) -> bool:
        return self.cost is None or self.spent + self.cost <= self.share * unlearn_seconds

    def charge(self, seconds: float) -> None:
        self.spent, self.cost = self.spent + seconds, seconds


# ----------------------------------------------------------------------------- shared helpers
def _device(cfg: dict[str, Any]) -> torch.device:
    """The worker's device; also sets this process's GPU precision from the config."""
    set_precision(cfg.get("precision", "bf16"))
    if cfg.get("device") == "cpu":
        return torch.device("cpu")
    try:
        return ray.train.torch.get_device()
    except Exception:  # noqa: BLE001 - outside a Train worker (evaluation task)
        return resolve_device("auto")


_LOADED: dict[str, ImageData] = {}  # this process's last dataset: reused trial processes load it once


def load_data(cfg: dict[str, Any], device: torch.device) -> ImageData:
    """The job's dataset; in-memory splits are moved to the GPU once (GPU-resident data). A process that
    runs trial after trial (Tune reuses in-process trial drivers) keeps the last dataset it loaded."""
    key = json.dumps([cfg["dataset"], str(device)], sort_keys=True, default=str)
    if key not in _LOADED:
        data = load_dataset(cfg["dataset"]["name"], cfg["dataset"]["options"])
        _LOADED.clear()
        _LOADED[key] = data.to(device) if device.type == "cuda" else data
    return _LOADED[key]


def new_model(cfg: dict[str, Any], data: ImageData, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(cfg["model"]["name"], cfg["model"]["options"], data.in_channels, data.num_classes,
                       data.image_size)


class Channel:
    """Where a loop reports and finds its checkpoints: Ray Train (``ray.train.*``: a Train worker, or Train
    local mode outside Tune) or, for an in-process trial inside a Tune trial (``resources.num_workers: 0``),
    Ray Tune itself (Train V2 refuses its own API there)."""

    def __init__(self, via_tune: bool = False) -> None:
        self.via_tune = via_tune
        self.api = ray.tune if via_tune else ray.train

    def rank(self) -> int:
        return 0 if self.via_tune else ray.train.get_context().get_world_rank()

    def resume_state(self) -> dict[str, Any] | None:
        """The state of the last reported checkpoint (after a worker restart or a resumed job)."""
        ckpt = self.api.get_checkpoint()
        if ckpt is None:
            return None
        with ckpt.as_directory() as folder:
            return read_checkpoint_state(Path(folder) / "state.pt")

    def report(self, metrics: dict[str, float], state: dict[str, Any] | None) -> None:
        """All ranks report; rank 0 attaches the checkpoint (only rank 0's metrics reach Tune). The
        checkpoint is written to a temporary folder that is gone once ``report`` has copied it away."""
        if "epoch" in metrics and "final" not in metrics:
            PROGRESS.epoch(int(metrics["epoch"]) + 1)  # shown live when this is the driver (Train local mode)
        if state is None or self.rank() != 0:
            self.api.report(metrics)
            return
        with tempfile.TemporaryDirectory(prefix=f"{CHECKPOINT_PREFIX}{os.getpid()}-") as folder:
            torch.save(state, Path(folder) / "state.pt")
            self.api.report(metrics, checkpoint=self.api.Checkpoint.from_directory(folder))


TRAIN = Channel()
CHECKPOINT_PREFIX = "camu-ckpt-"


class CheckpointClock:
    """Says when an epoch report should carry a checkpoint: once ``interval_s`` seconds have passed since
    the last one (or since training began); every epoch when the interval is 0. Writing and handing a
    checkpoint to Ray each epoch cost more than short epochs themselves."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self.last = time.monotonic()

    def due(self) -> bool:
        now = time.monotonic()
        if self.interval_s <= 0 or now - self.last >= self.interval_s:
            self.last = now
            return True
        return False


def remove_stale_checkpoint_folders() -> int:
    """Remove this node's temporary checkpoint folders left by processes that were killed mid-report
    (Tune stopping a trial kills its workers; their ``finally`` never runs). Returns how many."""
    removed = 0
    for folder in Path(tempfile.gettempdir()).glob(f"{CHECKPOINT_PREFIX}*-*"):
        pid = folder.name[len(CHECKPOINT_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
            removed += 1
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ----------------------------------------------------------------------------- original / oracle
def privacy_metrics(path: str, forget_logits: torch.Tensor, forget_labels: torch.Tensor) -> dict[str, float]:
    """The per-example membership scores of a model on D_f against the oracle (``camu.privacy``)."""
    with np.load(path, allow_pickle=False) as saved:
        fit = LiraFit(saved["mu_in"], saved["mu_out"], float(saved["sd_in"]), float(saved["sd_out"]))
        oracle_phi = saved["oracle_phi"]
    return per_example_privacy(fit, logit_confidence(forget_logits, forget_labels), oracle_phi)


def training_indices(cfg: dict[str, Any], n: int) -> torch.Tensor:
    """What a supervised run trains on: all samples (original), D_r (oracle) or an index file (shadow)."""
    if cfg.get("indices_path"):
        return torch.from_numpy(np.load(cfg["indices_path"], allow_pickle=False).astype(np.int64))
    return torch.arange(n) if cfg["split_path"] is None else retain_indices(load_split(cfg["split_path"]))


def _local_device(wcfg: WorkerConfig) -> torch.device:
    """The device of a process outside Train's worker group (a Tune trial, an evaluation task); also sets
    this process's GPU precision."""
    set_precision(wcfg.precision)
    return resolve_device("cpu" if wcfg.device == "cpu" else "auto")


def supervised_worker(cfg: dict[str, Any]) -> None:
    """Train the original (all samples), an oracle (D_r of a split) or a shadow model with the job's recipe."""
    device = _device(cfg)
    data = load_data(cfg, device)
    recipe = TrainRecipe.model_validate(cfg["recipe"])
    indices = training_indices(cfg, len(data.train))
    model = new_model(cfg, data, recipe.seed)
    tracker = Tracker(cfg["tracking_uri"]) if TRAIN.rank() == 0 else None
    clock = CheckpointClock(cfg.get("checkpoint_interval_s", 0.0))

    def on_epoch(epoch: int, metrics: dict[str, float], state: dict[str, Any]) -> None:
        if tracker is not None:
            tracker.log_metrics(cfg["run_id"], metrics, step=epoch)
        TRAIN.report({"epoch": epoch, **metrics}, state if clock.due() else None)

    stats = train_classifier(model, data.train, indices, recipe, device, Shard.current(), on_epoch, TRAIN.resume_state(),
                             sync_batchnorm=cfg.get("sync_batchnorm", True))
    if TRAIN.rank() == 0:
        out = Path(cfg["out_dir"])
        save_weights(model, out / "weights.safetensors")
        (out / "train.json").write_text(json.dumps({"train_seconds": stats.seconds, "losses": stats.losses}))
        tracker.log_metrics(cfg["run_id"], {"train_seconds": stats.seconds})


# ----------------------------------------------------------------------------- unlearning trial
def _quick_metrics(model: torch.nn.Module, data: ImageData, sets: EvalSets, device: torch.device) -> dict[str, float]:
    """Cheap per-epoch accuracies on the selection part: all of its D_f, fixed samples of its D_r and
    test set (no MIA)."""
    g = torch.Generator().manual_seed(0)
    forget, retain, test = sets.forget["select"], sets.retain["select"], sets.test["select"]
    r = retain[torch.randperm(len(retain), generator=g)[:QUICK_SAMPLE]]
    t = test[torch.randperm(len(test), generator=g)[:QUICK_SAMPLE]]
    y_train, y_test = data.train.labels.cpu(), data.test.labels.cpu()
    return {"fa": accuracy(predict_logits(model, data.train, forget, device), y_train[forget]),
            "ra": accuracy(predict_logits(model, data.train, r, device), y_train[r]),
            "ta": accuracy(predict_logits(model, data.test, t, device), y_test[t])}


def assess(model: torch.nn.Module, data: ImageData, split: Any, device: torch.device, wcfg: WorkerConfig,
           members: torch.Tensor | None, oracle: dict[str, float] | None
           ) -> tuple[dict[str, float], Any, list[float], list[tuple[int, float]]]:
    """The full evaluation of one model: metrics on the report and selection parts, scores against the
    oracle (when given), relearning (when the job asks); returns (metrics, per-sample table, FA curve,
    relearning gap curve: (step, acc(D_r) - acc(D_f)), empty unless evaluation.relearn.gap_every_batches)."""
    ev = evaluate(model, data, split, device, seed=wcfg.seed, members=members,
                  selection_fraction=wcfg.evaluation.selection_fraction)
    metrics = dict(ev.metrics)
    if oracle is not None:
        metrics.update(score(metrics, oracle, wcfg.objective))
    if wcfg.privacy_path:
        forget = forget_indices(split)
        metrics.update(privacy_metrics(wcfg.privacy_path, ev.train_logits[forget], data.train.labels.cpu()[forget]))
    curve: list[float] = []
    gap: list[tuple[int, float]] = []
    if wcfg.evaluation.relearn is not None:
        forget, retain = forget_indices(split), retain_indices(split)
        original_fa = metrics["fa"] if oracle is None and math.isnan(wcfg.original_fa) else wcfg.original_fa
        found = relearn(model, data, forget, retain, original_fa, wcfg.evaluation.relearn, device, wcfg.seed)
        metrics["relearn_epochs"], curve, gap = float(found.relearn_epochs), found.fa_curve, found.gap_curve
    return metrics, ev.samples, curve, gap


def scaled_params(method: str, params: dict[str, Any], lr_scaling: str, world_size: int) -> dict[str, Any]:
    """Learning rates for the data-parallel group (the method's ``lr_fields``); the global batch stays."""
    if lr_scaling == "linear" and world_size > 1:
        return {**params, **{f: params[f] * world_size for f in METHODS.get(method).lr_fields if f in params}}
    return params


class Timings:
    """Seconds per part of a trial, logged as ``time.*`` metrics of its run (where the time goes)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, part: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[part] = self.seconds.get(part, 0.0) + time.perf_counter() - start

    def metrics(self) -> dict[str, float]:
        return {f"time.{k}": v for k, v in self.seconds.items()}


# Called with the TrialConfig at the start of every trial, after the job's plugins are imported: a plugin
# may append to it (the fault-tolerance tests inject failures this way). Nothing from the environment or
# the record can add to it; only code the job's author listed under ``plugins:``.
TRIAL_START_HOOKS: list[Callable[[TrialConfig], None]] = []


def unlearn_worker(raw: dict[str, Any]) -> None:
    """One unlearning trial of any registered method: unlearn, report per-epoch metrics, then (rank 0)
    evaluate against the oracle. Where the time went is logged as ``time.*`` metrics (worker start,
    data load, unlearning, per-epoch reporting, final evaluation, MLflow logging)."""
    cfg = TrialConfig.model_validate(raw)
    timings = Timings()
    timings.seconds["worker_start"] = max(0.0, time.time() - cfg.launched_at) if cfg.launched_at else 0.0
    channel = Channel(via_tune=cfg.report_to == "tune")
    for module in cfg.worker.plugins:  # the job's own methods register themselves in this process too
        importlib.import_module(module)
    for hook in TRIAL_START_HOOKS:
        hook(cfg)
    remove_stale_checkpoint_folders()
    wcfg = cfg.worker
    device = _device(wcfg.model_dump()) if not channel.via_tune else _local_device(wcfg)
    with timings("data_load"):
        data = load_data(wcfg.model_dump(), device)
        split = load_split(wcfg.split_path)
        forget, retain = forget_indices(split), retain_indices(split)
        original = load_weights(new_model(wcfg.model_dump(), data, 0), wcfg.original_weights)
        initial = (load_weights(new_model(wcfg.model_dump(), data, 0), wcfg.initial_weights)
                   if wcfg.initial_weights else None)
    shard = Shard.current()
    params = scaled_params(cfg.method, cfg.params, wcfg.lr_scaling, shard.world_size)
    tracker = Tracker.shared(wcfg.tracking_uri) if shard.is_main else None
    if tracker is not None:
        with timings("logging"):
            tracker.log_params(cfg.run_id, {**_data_parallel_params(cfg.method, params, wcfg, shard),
                                            "data.augmented": data.augmented,
                                            "precision": wcfg.precision if device.type == "cuda" else "fp32"})
    sets = evaluation_sets(forget, retain, len(data.test), wcfg.seed, wcfg.evaluation.selection_fraction)
    oracle, obj = wcfg.oracle_metrics, wcfg.objective
    sel_oracle = {k[4:]: v for k, v in oracle.items() if k.startswith("sel_")} or oracle

    clock = CheckpointClock(wcfg.checkpoint_interval_s)

    budget, last_objective = QuickBudget(QUICK_SHARE), [float("nan")]

    def on_epoch(epoch: int, metrics: dict[str, float], state: dict[str, Any], model: torch.nn.Module) -> None:
        report = dict(metrics)
        if shard.is_main and budget.due(state.get("unlearn_seconds", 0.0)):
            start = time.perf_counter()
            with timings("epoch_reports.quick_metrics"):
                quick = _quick_metrics(model, data, sets, device)
            budget.charge(time.perf_counter() - start)
            report.update({f"epoch_{k}": v for k, v in quick.items()})
            # the cheap objective early stopping reads: selection part, no MIA
            _, last_objective[0] = objective(quick, sel_oracle, obj.ra_max_drop, 1e9, obj.penalty, ("ra", "fa", "ta"))
        if shard.is_main:
            report[OBJECTIVE] = last_objective[0]
            with timings("epoch_reports.logging"):
                tracker.log_metrics(cfg.run_id, report, step=epoch)
        due = clock.due()  # only rank 0 attaches the state (Channel.report)
        with timings("epoch_reports.checkpoint" if due else "epoch_reports.report"):
            channel.report({"epoch": epoch, **report}, state if due else None)

    resume_state = channel.resume_state()
    if resume_state is not None and tracker is not None:
        # a worker-group restart (Train FailureConfig) or a resumed job continues from its last checkpoint
        tracker.set_tags(cfg.run_id, {"camu.restored_from_epoch": int(resume_state["epoch"])})
    ctx = UnlearnContext(original, data, forget, retain, device, seed=wcfg.seed, shard=shard, on_epoch=on_epoch,
                         resume_state=resume_state, initial=initial, sync_batchnorm=wcfg.sync_batchnorm)
    result = run_method(cfg.method, params, ctx)
    timings.seconds.update(unlearn=result.seconds, epoch_reports=result.report_seconds)
    final = _final(cfg, tracker, result, data, split, device, timings) if shard.is_main else {}
    channel.report({"epoch": result.epochs, "final": 1.0, **final}, None)


def _data_parallel_params(method: str, params: dict[str, Any], wcfg: WorkerConfig, shard: Shard) -> dict[str, Any]:
    batch = params.get("batch_size")
    return {"data_parallel.world_size": shard.world_size, "data_parallel.global_batch": batch,
            "data_parallel.per_worker_batch": batch // shard.world_size if batch else None,
            "data_parallel.lr_scaling": wcfg.lr_scaling, "data_parallel.sync_batchnorm": wcfg.sync_batchnorm,
            **{f"data_parallel.effective_{f}": params[f] for f in METHODS.get(method).lr_fields if f in params}}


def non_finite_parameters(model: torch.nn.Module) -> list[str]:
    """Names of the parameters holding a NaN or an infinity (a diverged run, e.g. unbounded gradient ascent)."""
    return [name for name, p in model.named_parameters() if not bool(torch.isfinite(p.detach()).all())]


def _final(cfg: TrialConfig, tracker: Tracker, result: Any, data: ImageData, split: Any, device: torch.device,
           timings: Timings) -> dict[str, float]:
    """Rank 0 after unlearning: the full evaluation against the oracle, weights, metrics and tables. A model
    whose weights went non-finite is still evaluated (it predicts one class), but marked: metric
    ``diverged`` = 1 and tag ``camu.diverged``, so that its FA of 0 or 100 is not read as forgetting."""
    wcfg = cfg.worker
    broken = non_finite_parameters(result.model)
    if broken:
        logging.getLogger(__name__).warning(
            "%s diverged: %d parameter tensor(s) hold NaN or inf (%s); its metrics are those of a broken model",
            cfg.method, len(broken), ", ".join(broken[:3]))
        tracker.set_tags(cfg.run_id, {"camu.diverged": "true"})
    with timings("evaluation"):
        final, samples, curve, gap = assess(result.model, data, split, device, wcfg, result.members, wcfg.oracle_metrics)
    final["diverged"] = float(bool(broken))
    final["unlearn_seconds"] = result.seconds
    final["rte"] = wcfg.oracle_seconds / result.seconds if result.seconds > 0 else float("nan")
    out = Path(cfg.out_dir)
    staged = save_weights(result.model, out / f".weights-{os.getpid()}.safetensors.tmp")
    os.replace(staged, out / "weights.safetensors")  # a re-run trial never leaves a torn weights file
    with timings("logging"):
        for step, fa in enumerate(curve):
            tracker.log_metrics(cfg.run_id, {"relearn_fa": fa}, step=step)
        for step, value in gap:  # step: optimizer steps (batches) of relearning
            tracker.log_metrics(cfg.run_id, {"relearn_gap": value}, step=step)
        if cfg.log_weights:  # else kept in out_dir until the choice (orchestrator.retention)
            tracker.log_artifact(cfg.run_id, out / "weights.safetensors", "model")
        tracker.log_parquet(cfg.run_id, samples, "eval/samples.parquet")
    final.update(timings.metrics())
    tracker.log_metrics(cfg.run_id, final, step=result.epochs)
    # last, atomically: final.json marks the trial finished only once everything above is logged
    write_final(out / FINAL_FILE, final)
    return final


# ----------------------------------------------------------------------------- evaluation tasks
def forget_phi(raw: dict[str, Any], weights: list[str]) -> np.ndarray:
    """Logit-scaled true-class confidences on D_f of several saved models (rows), loading the data once."""
    wcfg = WorkerConfig.model_validate(raw)
    device = _local_device(wcfg)
    data = load_data(wcfg.model_dump(), device)
    forget = forget_indices(load_split(wcfg.split_path))
    labels = data.train.labels.cpu()[forget]
    rows = [logit_confidence(predict_logits(load_weights(new_model(wcfg.model_dump(), data, 0), path), data.train,
                                            forget, device), labels) for path in weights]
    return np.stack(rows)



def evaluate_weights(raw: dict[str, Any], weights: dict[str, str]) -> dict[str, Any]:
    """Evaluate the reference models (name -> weights file; the original first, then the oracle) of one
    split in one Ray task, loading the data once; returns name -> {"metrics", "samples", "curve", "gap"}
    (the relearning FA curve and gap curve, empty when not asked for).
    The oracle is scored against itself; the original's FA is relearning's target."""
    wcfg = WorkerConfig.model_validate(raw)
    device = _local_device(wcfg)
    data = load_data(wcfg.model_dump(), device)
    split = load_split(wcfg.split_path)
    out: dict[str, Any] = {}
    for name, path in weights.items():
        model = load_weights(new_model(wcfg.model_dump(), data, 0), path)
        if name == "original":
            metrics, samples, curve, gap = assess(model, data, split, device, wcfg.model_copy(update={"evaluation":
                                             wcfg.evaluation.model_copy(update={"relearn": None})}), None, None)
            wcfg = wcfg.model_copy(update={"original_fa": metrics["fa"]})
        else:
            metrics, samples, curve, gap = assess(model, data, split, device, wcfg, None, None)
        out[name] = {"metrics": metrics, "samples": samples, "curve": curve, "gap": gap}
    return out
