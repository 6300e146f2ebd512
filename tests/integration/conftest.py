"""One real local Ray instance for the whole integration session (start-up costs seconds)."""

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def ray_cluster():
    import ray

    os.environ["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] = "0.2"
    ray.init(num_cpus=4, include_dashboard=False, object_store_memory=200 * 1024**2, log_to_driver=False)
    yield ray
    ray.shutdown()


@contextlib.contextmanager
def in_job_folder(work: Path) -> Iterator[Path]:
    """Run camu-orch commands in ``work`` as a new user would: no tracking URI or UI address inherited.
    The working directory and those variables are restored afterwards (MLflow sets MLFLOW_TRACKING_URI in
    the process when a job opens its store, which would send a later test's job to this one's store)."""
    keys = ("MLFLOW_TRACKING_URI", "CAMU_ORCH_UI_URL")
    saved_env = {k: os.environ.pop(k) for k in keys if k in os.environ}
    old = os.getcwd()
    os.chdir(work)
    try:
        yield work
    finally:
        os.chdir(old)
        for k in keys:
            os.environ.pop(k, None)
        os.environ.update(saved_env)
