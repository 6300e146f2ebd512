"""The command line: help, registries, validate (good and bad files) and bad submits that must not
start anything or create an MLflow run."""

import os

import yaml
from typer.testing import CliRunner

from orchestrator.cli import app

runner = CliRunner()
GOOD = {"name": "c", "dataset": {"name": "digits"}, "model": {"name": "mnist_cnn"},
        "scenarios": [{"name": "r", "kind": "random", "fraction": 0.1}]}


def test_version_and_ls():
    assert runner.invoke(app, ["version"]).stdout.startswith("camu-orch ")
    for what, name in [("datasets", "digits"), ("models", "resnet50"), ("scenarios", "proportions"),
                       ("methods", "camu")]:
        out = runner.invoke(app, ["ls", what])
        assert out.exit_code == 0 and name in out.stdout
    assert runner.invoke(app, ["ls", "gizmos"]).exit_code != 0


def test_validate_good_and_bad(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(GOOD))
    out = runner.invoke(app, ["validate", str(good)])
    assert out.exit_code == 0 and "ok" in out.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**GOOD, "modle": {}, "dataset": {"name": "imagenet"}}))
    out = runner.invoke(app, ["validate", str(bad)])
    assert out.exit_code == 2
    assert "modle: unknown key" in out.output and "dataset.name: unknown dataset 'imagenet'" in out.output


def test_validate_with_overrides(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(GOOD))
    out = runner.invoke(app, ["validate", str(good), "--set", "scenarios=[{name: c, kind: classes, classes: [42]}]"])
    assert out.exit_code == 2 and "class 42 is not in the dataset" in out.output
    out = runner.invoke(app, ["validate", str(good), "--set", "sweep.num_samples=3"])
    assert out.exit_code == 0 and "3 sweep trial(s)" in out.stdout
    assert runner.invoke(app, ["validate", str(good), "--set", "oops"]).exit_code == 2


def test_bad_submit_starts_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    import ray

    ray_was_up = ray.is_initialized()  # the integration tests' shared cluster may be up already
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**GOOD, "scenarios": [{"name": "c", "kind": "classes", "classes": [11]}]}))
    out = runner.invoke(app, ["submit", str(bad)])
    assert out.exit_code == 2 and "class 11" in out.output
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "camu_runs").exists()
    assert ray.is_initialized() == ray_was_up


def test_results_of_unknown_job(tmp_path):
    out = runner.invoke(app, ["results", "nope", "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"])
    assert out.exit_code == 2 and "no MLflow store at" in out.output
    assert not os.path.exists(tmp_path / "m.db")  # a read-only command never creates a store
    from orchestrator.record.tracking import Tracker

    Tracker(f"sqlite:///{tmp_path / 'm.db'}").experiment("e")
    out = runner.invoke(app, ["results", "nope", "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"])
    assert out.exit_code == 2 and "no job run named 'nope'" in out.output


def test_unreachable_mlflow_fails_before_anything_starts(tmp_path, monkeypatch):
    import time

    import ray

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    ray_was_up = ray.is_initialized()
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(GOOD))
    start = time.perf_counter()
    out = runner.invoke(app, ["submit", str(good)])
    assert out.exit_code == 2 and "tracking.uri: cannot reach MLflow at http://127.0.0.1:9" in out.output
    assert time.perf_counter() - start < 30
    assert ray.is_initialized() == ray_was_up and not (tmp_path / "camu_runs").exists()
