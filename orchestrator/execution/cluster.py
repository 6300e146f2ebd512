"""The Ray side of a job: attaching to (or starting) Ray, and checking that one run of the job fits the
cluster and that storage is shared where the cluster has several nodes, before any MLflow run exists."""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import ray
import torch

from orchestrator.job.spec import JobSpec, JobSpecError
from orchestrator.lifecycle import reinstall_after_ray_init
from orchestrator.progress import say


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
    """Where a job writes must suit what writes it: Ray Train/Tune checkpoints (``storage.path``) may go to
    object storage, but the model cache and the job folders (``storage.cache_dir``, and ``storage.path``
    when it is a folder) are read as files, so they are folders, which on a multi-node cluster every node
    must mount (``storage.shared: true``)."""
    from orchestrator.job.spec import storage_scheme

    storage = spec.storage
    errors = []
    if storage.cache_dir is not None and storage_scheme(storage.cache_dir) not in ("", "file"):
        errors.append(f"storage.cache_dir: {storage_scheme(storage.cache_dir)}:// is not a folder; the model cache and "
                      f"job folders are read as files: give a folder every node mounts (with storage.shared: true)")
    if storage.object_storage and storage.cache_dir is None:
        errors.append("storage.cache_dir: required when storage.path is object storage: the model cache and job "
                      "folders need a folder every node can read; set it (with storage.shared: true on a cluster)")
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if len(nodes) >= 2 and not storage.shared:
        where = f"the cluster has {len(nodes)} nodes"
        if not storage.object_storage:
            errors.append(f"storage.path: {storage.path or 'the default (a folder on the driver node)'} is node-local "
                          f"but {where}; use object storage (s3://..., gs://...) or a folder every node mounts (NFS) "
                          f"with storage.shared: true")
        if not any(e.startswith("storage.cache_dir") for e in errors):
            errors.append(f"storage.cache_dir: {storage.cache_dir or 'the default (a folder on the driver node)'} is "
                          f"node-local but {where}; give a folder every node mounts (NFS) and set storage.shared: true "
                          f"(object storage cannot hold the model cache and job folders)")
    if errors:
        raise JobSpecError("storage", errors)


