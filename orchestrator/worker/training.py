"""The Train worker loop of supervised training with the job's recipe: the original (every sample), a retrain
oracle (D_r of a split) or a privacy shadow (the samples of an index file). Rank 0 logs to MLflow and writes
the weights and ``train.json`` into the run's output folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from camu import load_split, retain_indices
from camu.runtime import Shard
from camu.training import train_classifier
from camu.weights import save_weights
from orchestrator.record.tracking import Tracker
from orchestrator.worker.loading import load_data, new_model, worker_device
from orchestrator.worker.reporting import TRAIN, CheckpointClock
from orchestrator.worker.wire import TrainingConfig


def training_indices(cfg: TrainingConfig, n: int) -> torch.Tensor:
    """What a supervised run trains on: all samples (original), D_r (oracle) or an index file (shadow)."""
    if cfg.indices_path:
        return torch.from_numpy(np.load(cfg.indices_path, allow_pickle=False).astype(np.int64))
    return torch.arange(n) if cfg.split_path is None else retain_indices(load_split(cfg.split_path))


def supervised_worker(loop_config: dict[str, TrainingConfig]) -> None:
    """Train the original, an oracle or a shadow model (``loop_config["config"]``) with the job's recipe."""
    cfg = loop_config["config"]
    device = worker_device(cfg)
    data = load_data(cfg, device)
    indices = training_indices(cfg, len(data.train))
    model = new_model(cfg, data, cfg.recipe.seed)
    tracker = Tracker(cfg.tracking_uri) if TRAIN.rank() == 0 else None
    clock = CheckpointClock(cfg.checkpoint_interval_s)

    def on_epoch(epoch: int, metrics: dict[str, float], state: dict[str, Any]) -> None:
        if tracker is not None:
            tracker.log_metrics(cfg.run_id, metrics, step=epoch)
        TRAIN.report({"epoch": epoch, **metrics}, state if clock.due() else None)

    stats = train_classifier(model, data.train, indices, cfg.recipe, device, Shard.current(), on_epoch,
                             TRAIN.resume_state(), sync_batchnorm=cfg.sync_batchnorm)
    if tracker is not None:
        out = Path(cfg.out_dir)
        save_weights(model, out / "weights.safetensors")
        (out / "train.json").write_text(json.dumps({"train_seconds": stats.seconds, "losses": stats.losses}))
        tracker.log_metrics(cfg.run_id, {"train_seconds": stats.seconds})
