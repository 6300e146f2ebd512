"""Building and running Ray Train ``TorchTrainer``s (Train V2) for the job's stages."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import ray.train
from ray.train.torch import TorchTrainer

from orchestrator.spec import ResourcesSpec

# Train V2 workers hand each ray.train.report to the controller through a 1-slot queue that the
# controller drains every health-check interval (2 s by default): every report then costs up to 2 s.
# CaMU epochs on small data take well under that, so poll faster unless the user chose a value.
# The variable is propagated from the driver to the Train controller.
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")


def scaling_config(resources: ResourcesSpec) -> ray.train.ScalingConfig:
    """[1] Workers per run; num_workers 0 runs the loop in-process (Train local mode)."""
    per_worker: dict[str, float] = {"CPU": resources.cpus_per_worker}
    if resources.use_gpu:
        per_worker["GPU"] = resources.gpus_per_worker
    return ray.train.ScalingConfig(num_workers=resources.num_workers, use_gpu=resources.use_gpu,
                                   resources_per_worker=per_worker if resources.num_workers else None)


def make_trainer(loop: Callable[[dict[str, Any]], None], config: dict[str, Any], resources: ResourcesSpec,
                 name: str, storage_path: str, callbacks: list | None = None) -> TorchTrainer:
    """[2] A TorchTrainer whose (storage_path, name) is deterministic, so a restarted run resumes
    from its checkpoints; [3] worker failures retried by Train's FailureConfig."""
    return TorchTrainer(
        loop,
        train_loop_config=config,
        scaling_config=scaling_config(resources),
        run_config=ray.train.RunConfig(
            name=name,
            storage_path=storage_path,
            failure_config=ray.train.FailureConfig(max_failures=resources.worker_max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            callbacks=callbacks or [],
        ),
    )
