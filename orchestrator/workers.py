"""Code that runs inside Ray: Train worker loops (original/oracle training, CaMU trials) and the
evaluation task. Only ``ray.train.*`` APIs here (Train V2); configs are plain dicts.

Rank 0 alone logs to MLflow and writes model files; every rank calls ``ray.train.report`` the same
number of times (it is a barrier).
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import ray
import ray.train
import ray.train.torch
import torch

from camu import METHODS, build_model, evaluate, forget_indices, load_dataset, load_split, retain_indices, run_method
from camu.data import ImageData
from camu.evaluation import predict_logits
from camu.methods import UnlearnContext
from camu.metrics import accuracy
from camu.runtime import Shard, resolve_device
from camu.training import TrainRecipe, train_classifier
from camu.weights import load_weights, read_checkpoint_state, save_weights
from orchestrator.selection import OBJECTIVE, objective
from orchestrator.tracking import Tracker
from orchestrator.trial import TrialConfig

QUICK_SAMPLE = 2000  # retained / test samples scored after every CaMU epoch


# ----------------------------------------------------------------------------- shared helpers
def _device(cfg: dict[str, Any]) -> torch.device:
    if cfg.get("device") == "cpu":
        return torch.device("cpu")
    try:
        return ray.train.torch.get_device()
    except Exception:  # noqa: BLE001 - outside a Train worker (evaluation task)
        return resolve_device("auto")


def load_data(cfg: dict[str, Any], device: torch.device) -> ImageData:
    """The job's dataset; in-memory splits are moved to the GPU once (GPU-resident data)."""
    data = load_dataset(cfg["dataset"]["name"], cfg["dataset"]["options"])
    return data.to(device) if device.type == "cuda" else data


def new_model(cfg: dict[str, Any], data: ImageData, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(cfg["model"]["name"], cfg["model"]["options"], data.in_channels, data.num_classes,
                       data.image_size)


def _rank() -> int:
    return ray.train.get_context().get_world_rank()


def _resume_state() -> dict[str, Any] | None:
    """The state of the last reported checkpoint (after a worker restart or a resumed job)."""
    ckpt = ray.train.get_checkpoint()
    if ckpt is None:
        return None
    with ckpt.as_directory() as folder:
        return read_checkpoint_state(Path(folder) / "state.pt")


CHECKPOINT_PREFIX = "camu-ckpt-"


def _report(metrics: dict[str, float], state: dict[str, Any] | None) -> None:
    """All ranks report; rank 0 attaches the checkpoint (only rank 0's metrics reach Tune). The checkpoint
    is written to a temporary folder that is gone once ``report`` has copied it to the run's storage."""
    if state is None or _rank() != 0:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory(prefix=f"{CHECKPOINT_PREFIX}{os.getpid()}-") as folder:
        torch.save(state, Path(folder) / "state.pt")
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))


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
def supervised_worker(cfg: dict[str, Any]) -> None:
    """Train the original (all samples) or the oracle (D_r of a split) with the job's recipe."""
    device = _device(cfg)
    data = load_data(cfg, device)
    recipe = TrainRecipe.model_validate(cfg["recipe"])
    indices = torch.arange(len(data.train)) if cfg["split_path"] is None else retain_indices(load_split(cfg["split_path"]))
    model = new_model(cfg, data, recipe.seed)
    tracker = Tracker(cfg["tracking_uri"]) if _rank() == 0 else None

    def on_epoch(epoch: int, metrics: dict[str, float], state: dict[str, Any]) -> None:
        if tracker is not None:
            tracker.log_metrics(cfg["run_id"], metrics, step=epoch)
        _report({"epoch": epoch, **metrics}, state)

    stats = train_classifier(model, data.train, indices, recipe, device, Shard.current(), on_epoch, _resume_state())
    if _rank() == 0:
        out = Path(cfg["out_dir"])
        save_weights(model, out / "weights.safetensors")
        (out / "train.json").write_text(json.dumps({"train_seconds": stats.seconds, "losses": stats.losses}))
        tracker.log_metrics(cfg["run_id"], {"train_seconds": stats.seconds})


# ----------------------------------------------------------------------------- unlearning trial
def _quick_metrics(model: torch.nn.Module, data: ImageData, forget: torch.Tensor, retain: torch.Tensor,
                   device: torch.device) -> dict[str, float]:
    """Cheap per-epoch accuracies: all of D_f, a fixed sample of D_r and of the test set."""
    g = torch.Generator().manual_seed(0)
    r = retain[torch.randperm(len(retain), generator=g)[:QUICK_SAMPLE]]
    t = torch.randperm(len(data.test), generator=g)[:QUICK_SAMPLE]
    y_train, y_test = data.train.labels.cpu(), data.test.labels.cpu()
    return {"fa": accuracy(predict_logits(model, data.train, forget, device), y_train[forget]),
            "ra": accuracy(predict_logits(model, data.train, r, device), y_train[r]),
            "ta": accuracy(predict_logits(model, data.test, t, device), y_test[t])}


def scaled_params(method: str, params: dict[str, Any], lr_scaling: str, world_size: int) -> dict[str, Any]:
    """Learning rates for the data-parallel group (the method's ``lr_fields``); the global batch stays."""
    if lr_scaling == "linear" and world_size > 1:
        return {**params, **{f: params[f] * world_size for f in METHODS.get(method).lr_fields if f in params}}
    return params


def run_trial_hook(cfg: TrialConfig) -> None:
    """Call ``function(cfg, argument)`` for ``worker.trial_hook = "module:function[:argument]"`` at the
    start of a trial (the fault-tolerance tests inject failures this way; jobs normally set none)."""
    if not cfg.worker.trial_hook:
        return
    module, _, rest = cfg.worker.trial_hook.partition(":")
    function, _, argument = rest.partition(":")
    getattr(importlib.import_module(module), function)(cfg, argument)


def unlearn_worker(raw: dict[str, Any]) -> None:
    """One unlearning trial of any registered method: unlearn, report per-epoch metrics, then (rank 0)
    evaluate against the oracle."""
    cfg = TrialConfig.model_validate(raw)
    for module in cfg.worker.plugins:  # the job's own methods register themselves in this process too
        importlib.import_module(module)
    run_trial_hook(cfg)
    remove_stale_checkpoint_folders()
    wcfg = cfg.worker
    device = _device(wcfg.model_dump())
    data = load_data(wcfg.model_dump(), device)
    split = load_split(wcfg.split_path)
    forget, retain = forget_indices(split), retain_indices(split)
    original = load_weights(new_model(wcfg.model_dump(), data, 0), wcfg.original_weights)
    initial = load_weights(new_model(wcfg.model_dump(), data, 0), wcfg.initial_weights) if wcfg.initial_weights else None
    shard = Shard.current()
    params = scaled_params(cfg.method, cfg.params, wcfg.lr_scaling, shard.world_size)
    tracker = Tracker(wcfg.tracking_uri) if shard.is_main else None
    oracle, obj = wcfg.oracle_metrics, wcfg.objective
    if tracker is not None:
        batch = params.get("batch_size")
        tracker.log_params(cfg.run_id, {"data_parallel.world_size": shard.world_size,
                                        "data_parallel.global_batch": batch,
                                        "data_parallel.per_worker_batch": batch // shard.world_size if batch else None,
                                        "data_parallel.lr_scaling": wcfg.lr_scaling,
                                        **{f"data_parallel.effective_{f}": params[f]
                                           for f in METHODS.get(cfg.method).lr_fields if f in params}})

    def on_epoch(epoch: int, metrics: dict[str, float], state: dict[str, Any], model: torch.nn.Module) -> None:
        quick = _quick_metrics(model, data, forget, retain, device) if shard.is_main else {}
        report = {**metrics, **{f"epoch_{k}": v for k, v in quick.items()}}
        if quick:
            _, report[OBJECTIVE] = objective(quick, oracle, obj.ra_max_drop, 1e9, obj.penalty, ("ra", "fa", "ta"))
            tracker.log_metrics(cfg.run_id, report, step=epoch)
        _report({"epoch": epoch, **report}, state)

    resume_state = _resume_state()
    if resume_state is not None and tracker is not None:
        # a worker-group restart (Train FailureConfig) or a resumed job continues from its last checkpoint
        tracker.set_tags(cfg.run_id, {"camu.restored_from_epoch": int(resume_state["epoch"])})
    ctx = UnlearnContext(original, data, forget, retain, device, seed=wcfg.seed, shard=shard, on_epoch=on_epoch,
                         resume_state=resume_state, initial=initial)
    result = run_method(cfg.method, params, ctx)
    final: dict[str, float] = {}
    if shard.is_main:
        evaluation = evaluate(result.model, data, split, device, seed=wcfg.seed)
        final = dict(evaluation.metrics)
        final["avg_gap"], final[OBJECTIVE] = objective(final, oracle, obj.ra_max_drop, obj.ta_retained_max_drop,
                                                       obj.penalty)
        final["unlearn_seconds"] = result.seconds
        final["rte"] = wcfg.oracle_seconds / result.seconds if result.seconds > 0 else float("nan")
        out = Path(cfg.out_dir)
        save_weights(result.model, out / "weights.safetensors")
        (out / "final.json").write_text(json.dumps({"final": 1.0, **final}))
        tracker.log_metrics(cfg.run_id, final, step=result.epochs)
        tracker.log_artifact(cfg.run_id, out / "weights.safetensors", "model")
        tracker.log_parquet(cfg.run_id, evaluation.samples, "eval/samples.parquet")
    ray.train.report({"epoch": result.epochs, "final": 1.0, **final})


# ----------------------------------------------------------------------------- evaluation task
def evaluate_weights(cfg: dict[str, Any], weights: dict[str, str], split_path: str, seed: int) -> dict[str, Any]:
    """Evaluate several saved models (name -> weights file) on one split in one Ray task, loading the data
    once; returns name -> {"metrics", "samples"}."""
    device = resolve_device("cpu" if cfg.get("device") == "cpu" else "auto")
    data = load_data(cfg, device)
    split = load_split(split_path)
    out = {}
    for name, path in weights.items():
        ev = evaluate(load_weights(new_model(cfg, data, 0), path), data, split, device, seed=seed)
        out[name] = {"metrics": ev.metrics, "samples": ev.samples}
    return out
