"""The Ray side of a job: attaching to (or starting) Ray, and checking that one run of the job fits the
cluster and that storage is shared where the cluster has several nodes, before any MLflow run exists."""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import ray
import torch

from orchestrator.lifecycle import reinstall_after_ray_init
from orchestrator.progress import say
from orchestrator.spec import JobSpec, JobSpecError


def ensure_ray(spec: JobSpec, address: str | None = None) -> None:
    """Attach to a cluster (``address``, or the Ray job's own), else start a local instance sized for
    one run of the job (logical CPUs may exceed a small machine's cores)."""
    if ray.is_initialized():
        return
    if address or os.environ.get("RAY_ADDRESS"):
        ray.init(address=address or None)
        reinstall_after_ray_init()
        return
    need = spec.resources.cpus_per_worker * max(spec.resources.num_workers, 1) * spec.sweep.max_concurrent_trials + 1
    ray.init(num_cpus=max(os.cpu_count() or 1, math.ceil(need)), num_gpus=torch.cuda.device_count(),
             include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    reinstall_after_ray_init()
    logs = Path(ray._private.worker.global_worker.node.get_session_dir_path()) / "logs"
    say(f"    local Ray started ({ray.cluster_resources().get('CPU', 0):g} CPUs); worker logs: {logs}")


def check_cluster_resources(spec: JobSpec) -> None:
    """Refuse (before any MLflow run exists) a job whose single run cannot be placed on the cluster."""
    total = ray.cluster_resources()
    workers = max(spec.resources.num_workers, 1)
    errors = []
    for res, per in (("CPU", spec.resources.cpus_per_worker), ("GPU", spec.resources.gpus_per_worker)):
        if per and total.get(res, 0) < per * workers:
            errors.append(f"resources: one run needs {per * workers:g} {res} ({workers} workers x {per:g}) but the "
                          f"cluster has {total.get(res, 0):g}; lower num_workers or {res.lower()}s_per_worker")
    if errors:
        raise JobSpecError("resources", errors)


def check_storage(spec: JobSpec) -> None:
    """On a multi-node cluster, checkpoints and cached models must live where every node can read them."""
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if len(nodes) < 2 or spec.storage.shared:
        return
    errors = []
    for name, value in (("storage.path", spec.storage.path), ("storage.cache_dir", spec.storage.cache_dir)):
        if not value or "://" not in value:
            errors.append(f"{name}: {value or 'the default (a folder on the driver node)'} is node-local but the cluster "
                          f"has {len(nodes)} nodes; use shared storage (s3://..., an NFS path with storage.shared: true)")
    if errors:
        raise JobSpecError("storage", errors)


