"""What every worker process loads the same way: its device (and GPU precision), the job's dataset (kept for the
next trial of a reused process) and the job's model architecture."""

from __future__ import annotations

import contextlib
import json

import ray.train.torch
import torch

from camu import DATASETS, build_model, load_dataset
from camu.data import ImageData
from camu.runtime import resolve_device, set_precision
from orchestrator.worker.wire import DataConfig


def worker_device(cfg: DataConfig, train_worker: bool = True) -> torch.device:
    """This process's device (Train's device inside a Train worker; elsewhere, a Tune trial or an evaluation
    task, the GPU Ray gave the process, or the CPU when it was given none), with the job's GPU precision set
    for the process."""
    set_precision(cfg.precision)
    if cfg.device == "cpu":
        return torch.device("cpu")
    if train_worker:
        with contextlib.suppress(Exception):  # outside a Train worker group after all
            return ray.train.torch.get_device()
    if not _holds_a_gpu():
        return torch.device("cpu")
    return resolve_device("auto")


def _holds_a_gpu() -> bool:
    """False in a Ray task or actor that reserved no GPU: Ray leaves such a process every GPU of its node
    visible, and computing there would take a GPU another run reserved. True elsewhere (a driver, a script)."""
    import ray

    if not ray.is_initialized() or ray.get_runtime_context().worker.mode != ray.WORKER_MODE:
        return True
    return bool(ray.get_gpu_ids())


_LOADED: dict[str, ImageData] = {}  # this process's last dataset: reused trial processes load it once


def load_data(cfg: DataConfig, device: torch.device) -> ImageData:
    """The job's dataset; in-memory splits are moved to the GPU once (GPU-resident data). A process that
    runs trial after trial (Tune reuses in-process trial drivers) keeps the last dataset it loaded."""
    key = json.dumps([cfg.dataset.model_dump(), cfg.prepared_dir, str(device)], sort_keys=True, default=str)
    if key not in _LOADED:
        data = load_dataset(cfg.dataset.name, dataset_options(cfg))
        _LOADED.clear()
        _LOADED[key] = data.to(device) if device.type == "cuda" else data
    return _LOADED[key]


def dataset_options(cfg: DataConfig) -> dict:
    """The dataset's options, with the job's decoded-once cache for a dataset that takes one (``cache_dir``,
    an image folder) unless the job file names its own."""
    options = dict(cfg.dataset.options)
    if cfg.prepared_dir and "cache_dir" in DATASETS.get(cfg.dataset.name).options.model_fields:
        options.setdefault("cache_dir", cfg.prepared_dir)
    return options


def new_model(cfg: DataConfig, data: ImageData, seed: int) -> torch.nn.Module:
    """The job's model for ``data``, its initial weights drawn with ``seed``."""
    torch.manual_seed(seed)
    return build_model(cfg.model.name, cfg.model.options, data.in_channels, data.num_classes, data.image_size)
