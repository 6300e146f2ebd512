"""Between stages the driver waits until finished Train runs gave their placement groups back: an
orphaned group (its creating actor died, as a stopped trial's controller does) is removed, and a group
whose creator still lives is reported, not waited on forever. Real Ray (the session's local cluster)."""

from __future__ import annotations

import time

import pytest

pytestmark = pytest.mark.integration


def _creator(ray):
    @ray.remote(num_cpus=0)
    class Creator:
        """Stands in for a Train run's controller: an actor that reserves workers' CPUs."""

        def reserve(self, cpus: float) -> str:
            from ray.util.placement_group import placement_group

            self.pg = placement_group([{"CPU": cpus}])
            ray.get(self.pg.ready(), timeout=30)
            return self.pg.id.hex()

    return Creator


def test_orphaned_group_is_released_and_a_live_one_is_reported(ray_cluster):
    from orchestrator.execution.placement import wait_until_released

    ray = ray_cluster
    creator = _creator(ray).remote()
    ray.get(creator.reserve.remote(1.0))
    before = ray.available_resources().get("CPU", 0)

    ray.kill(creator)  # the creator dies; its group would stay reserved until the job ends
    start = time.monotonic()
    assert wait_until_released(timeout_s=30, interval_s=0.2) == []  # released as an orphan, not by force
    assert time.monotonic() - start < 30
    _cpus_back(ray, before + 1.0)


def test_a_group_whose_creator_lingers_is_removed_after_the_timeout(ray_cluster):
    from orchestrator.execution.placement import wait_until_released

    ray = ray_cluster
    creator = _creator(ray).remote()
    pg_id = ray.get(creator.reserve.remote(1.0))
    before = ray.available_resources().get("CPU", 0)
    start = time.monotonic()
    assert wait_until_released(timeout_s=1.0, interval_s=0.2) == [pg_id]  # the creator lives: removed by force
    assert time.monotonic() - start >= 1.0
    _cpus_back(ray, before + 1.0)
    ray.kill(creator)


def _cpus_back(ray, expected: float) -> None:
    deadline = time.time() + 10
    while time.time() < deadline and ray.available_resources().get("CPU", 0) < expected:
        time.sleep(0.2)
    assert ray.available_resources().get("CPU", 0) == pytest.approx(expected)


def test_a_trial_may_use_every_cpu_of_the_cluster(ray_cluster, tmp_path, monkeypatch):
    """The driver of a Train-run trial reserves no CPU: a trial whose two workers ask for all of the cluster's
    CPUs starts (a driver holding 0.01 CPU left it 0.01 short, and the sweep timed out on free resources)."""
    import json

    import yaml
    from typer.testing import CliRunner

    from orchestrator.cli import app

    cpus = int(ray_cluster.cluster_resources()["CPU"])
    job = {"name": "allcpus", "dataset": {"name": "digits"}, "model": {"name": "mnist_cnn"},
           "original": {"recipe": {"epochs": 1, "batch_size": 64}},
           "scenarios": [{"name": "class3", "kind": "classes", "classes": [3]}], "seeds": [0],
           "methods": [{"name": "finetune", "params": {"epochs": 1}, "sweep": {"space": {"lr": {"grid": [0.01]}}}}],
           "sweep": {"search": "grid", "num_samples": 1},
           "resources": {"num_workers": 2, "cpus_per_worker": cpus // 2, "start_attempts": 1},
           "tracking": {"experiment": "allcpus", "uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}, "device": "cpu"}
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "20")
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job))
    result = CliRunner().invoke(app, ["submit", "job.yaml"])
    assert result.exit_code == 0, result.output[-3000:]
    rows = json.loads(CliRunner().invoke(app, ["results", "allcpus", "--format", "json", "--tracking-uri",
                                               f"sqlite:///{tmp_path / 'mlflow.db'}"]).stdout)
    trials = [r for r in rows if r["method"] == "finetune" and not r["trial_id"].startswith("preset")]
    assert [r["status"] for r in trials] == ["finished"]
