"""Every shipped job file validates (schema + registries; data too where it is available offline)."""

from pathlib import Path

import pytest

from orchestrator.validate import check_job

JOBS = sorted((Path(__file__).resolve().parents[2] / "jobs").rglob("*.yaml"))


def test_there_are_jobs():
    names = {p.name for p in JOBS}
    assert {"quickstart.yaml", "mnist_class.yaml", "mnist_random.yaml", "cifar10_class.yaml", "cifar10_random.yaml",
            "imagenet_subset.yaml"} <= names


@pytest.mark.parametrize("path", JOBS, ids=lambda p: p.name)
def test_job_validates(path):
    import yaml

    offline = yaml.safe_load(path.read_text())["dataset"]["name"] in {"digits", "synthetic"}
    job = check_job(path, check_data=offline, local=False)
    first = path.read_text().splitlines()[0]
    assert first.startswith("#"), "each job opens with a comment saying what it runs"
    assert f"camu-orch submit jobs/{path.name}" in path.read_text() or path.name == "quickstart.yaml"
    assert job.spec.name
