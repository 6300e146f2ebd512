"""Building and running Ray Train ``TorchTrainer``s (Train V2) for the job's stages."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import ray
import ray.train
from ray.train.torch import TorchTrainer

from orchestrator.errors import ResourceUnavailableError
from orchestrator.job.spec import ResourcesSpec
from orchestrator.worker.wire import Wire

W = TypeVar("W", bound=Wire)

# Train V2 workers hand each ray.train.report to the controller through a 1-slot queue that the
# controller drains every health-check interval (2 s by default): every report then costs up to 2 s.
# CaMU epochs on small data take well under that, so poll faster unless the user chose a value.
# The variable is propagated from the driver to the Train controller.
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
# Ctrl-C (and SIGTERM, see lifecycle) must stop the job; Tune's own SIGINT handler would instead end the
# sweep quietly and let the job carry on with the next stage.
os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")


def scaling_config(resources: ResourcesSpec) -> ray.train.ScalingConfig:
    """Workers per run; num_workers 0 runs the loop in-process (Train local mode)."""
    per_worker: dict[str, float] = {"CPU": resources.cpus_per_worker}
    if resources.use_gpu:
        per_worker["GPU"] = resources.gpus_per_worker
    return ray.train.ScalingConfig(num_workers=resources.num_workers, use_gpu=resources.use_gpu,
                                   resources_per_worker=per_worker if resources.num_workers else None)


def make_trainer(loop: Callable[[dict[str, W]], None], config: W, resources: ResourcesSpec,
                 name: str, storage_path: str, callbacks: list | None = None) -> TorchTrainer:
    """A TorchTrainer running ``loop`` with the typed ``config`` (its ``train_loop_config["config"]``: the model
    itself, pickled by Ray, never a dict to re-parse). Its (storage_path, name) is deterministic, so a
    restarted run resumes from its checkpoints; worker failures are retried by Train's FailureConfig; a
    worker group that cannot start (resources held elsewhere) is retried ``start_attempts`` times, then the
    run fails."""
    return TorchTrainer(
        loop,
        train_loop_config={"config": config},
        scaling_config=scaling_config(resources),
        run_config=ray.train.RunConfig(
            name=name,
            storage_path=storage_path,
            failure_config=ray.train.FailureConfig(max_failures=resources.worker_max_failures,
                                                   controller_failure_limit=resources.start_attempts - 1),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            callbacks=callbacks or [],
        ),
    )


def fit_trainer(trainer: TorchTrainer, resources: ResourcesSpec) -> ray.train.Result:
    """``trainer.fit()``, releasing everything the run held when it ends.

    Called from the main thread, Train V2 installs a SIGINT handler that holds a reference to the run's
    controller actor until the next run replaces it: the finished controller then stays alive with its
    workers' placement group reserved, and a later stage cannot start. So the main thread runs ``fit`` in
    a helper thread (no handler is installed there; Ctrl-C still interrupts the main thread) and the
    controller is released as soon as the run ends. A worker group that never got its resources becomes
    a ``ResourceUnavailableError`` that says what was asked and what the cluster has free.
    """
    if threading.current_thread() is not threading.main_thread():
        return _fit(trainer, resources)
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["result"] = _fit(trainer, resources)
        except BaseException as err:  # noqa: BLE001 - handed to the main thread below
            outcome["error"] = err

    thread = threading.Thread(target=target, name=f"fit-{trainer.run_config.name}", daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(0.2)
    # the driver runs one stage at a time: the next starts once this run's workers are given back
    from orchestrator.execution.placement import wait_until_released

    wait_until_released()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def _fit(trainer: TorchTrainer, resources: ResourcesSpec) -> ray.train.Result:
    try:
        return trainer.fit()
    except ray.train.ControllerError as err:
        if type(err.controller_failure).__name__ != "WorkerGroupStartupTimeoutError":
            raise
        workers = max(resources.num_workers, 1)
        free = ray.available_resources()
        raise ResourceUnavailableError(
            f"run {trainer.run_config.name}: could not start {workers} worker(s) x {resources.cpus_per_worker:g} CPU"
            + (f" + {resources.gpus_per_worker:g} GPU" if resources.use_gpu else "")
            + f" after {resources.start_attempts} attempt(s); the cluster has {free.get('CPU', 0):g} CPU and "
            f"{free.get('GPU', 0):g} GPU free of {ray.cluster_resources().get('CPU', 0):g} CPU / "
            f"{ray.cluster_resources().get('GPU', 0):g} GPU. Lower resources.num_workers or "
            f"sweep.max_concurrent_trials, wait for other jobs, or raise "
            f"resources.start_attempts{_holders()}") from None


def _holders() -> str:
    """This job's live placement groups, for the error above (empty when they cannot be read)."""
    from orchestrator.execution.placement import held_placement_groups

    try:
        held = held_placement_groups()
    except Exception:  # noqa: BLE001 - a diagnostic only
        return ""
    return ("; this job holds: " + "; ".join(held)) if held else ""
