"""storage.path may be object storage (Ray Train/Tune write it through pyarrow.fs); the model cache and the job
folders (splits, trial outputs, final.json, weights) are read as files, so they need a folder: an object-store
URI there used to become a local folder named 's3:'."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from orchestrator.job.spec import JobSpecError, parse_job
from orchestrator.job.validate import check_job

BASE = {"name": "store", "dataset": {"name": "digits"}, "model": {"name": "mnist_cnn"},
        "scenarios": [{"name": "r", "kind": "random", "fraction": 0.1}], "device": "cpu"}


def spec(**storage):
    return parse_job({**BASE, "storage": storage})


def problems(**storage) -> str:
    with pytest.raises(JobSpecError) as err:
        spec(**storage)
    return "\n".join(err.value.errors)


def test_object_storage_path_needs_an_explicit_cache_folder():
    found = problems(path="s3://bucket/runs")
    assert found.startswith("storage.cache_dir: required when storage.path is object storage"), found
    assert "set storage.cache_dir" in found
    ok = spec(path="s3://bucket/runs", cache_dir="/mnt/shared/cache")
    assert ok.storage.object_storage
    runs, cache, jobs = ok.storage.locations("/work")
    assert (runs, cache, jobs) == ("s3://bucket/runs", "/mnt/shared/cache", Path("/mnt/shared/cache"))


@pytest.mark.parametrize("uri", ["s3://bucket/cache", "gs://bucket/cache", "https://host/cache"])
def test_cache_dir_is_never_a_uri(uri):
    found = problems(path="/mnt/shared/runs", cache_dir=uri)
    assert found.startswith("storage.cache_dir: ") and "is not a folder" in found, found


@pytest.mark.parametrize("uri", ["ftp://host/runs", "http://host/runs", "memory://x"])
def test_unknown_scheme_for_ray_storage_is_refused(uri):
    found = problems(path=uri, cache_dir="/tmp/c")
    assert found.startswith("storage.path: scheme ") and "s3://" in found, found


def test_bucketless_object_storage_is_refused():
    assert problems(path="s3://", cache_dir="/tmp/c").startswith("storage.path: s3:// needs a bucket")


def test_file_uris_and_relative_paths_become_absolute_folders(tmp_path):
    s = spec(path=f"file://{tmp_path}/runs%20a", cache_dir=f"file://localhost{tmp_path}/cache")
    assert s.storage.path == f"{tmp_path}/runs a" and s.storage.cache_dir == f"{tmp_path}/cache"
    assert not s.storage.object_storage
    runs, cache, jobs = spec(path="rel/runs").storage.locations(tmp_path)
    assert runs == str(tmp_path.resolve() / "rel" / "runs") and jobs == tmp_path.resolve() / "rel" / "runs"
    assert cache == str(tmp_path.resolve() / ".camu-cache")  # the default, under the job's folder
    assert problems(path="file://otherhost/runs").startswith("storage.path: file://otherhost/runs names another host")


def test_validate_reports_storage_problems_with_the_field(tmp_path):
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump({**BASE, "storage": {"path": "s3://bucket/runs"}}))
    with pytest.raises(JobSpecError) as err:
        check_job(job, check_data=False)
    assert any(e.startswith("storage.cache_dir: required") for e in err.value.errors), err.value.errors
    job.write_text(yaml.safe_dump({**BASE, "storage": {"path": "s3://bucket/runs", "cache_dir": str(tmp_path / "c")}}))
    assert check_job(job, check_data=False).spec.storage.object_storage


def test_cluster_check_never_takes_a_uri_for_a_shared_cache(monkeypatch):
    import ray

    from orchestrator.execution.cluster import check_storage

    monkeypatch.setattr(ray, "nodes", lambda: [{"Alive": True}, {"Alive": True}])
    local = spec(path="/mnt/a", cache_dir="/mnt/b")
    with pytest.raises(JobSpecError) as err:
        check_storage(local)
    assert [e.split(":")[0] for e in err.value.errors] == ["storage.path", "storage.cache_dir"]
    # object storage for Ray is shared, but the cache folder beside it must still be a shared mount
    s3 = spec(path="s3://bucket/runs", cache_dir="/mnt/b")
    with pytest.raises(JobSpecError) as err:
        check_storage(s3)
    assert [e.split(":")[0] for e in err.value.errors] == ["storage.cache_dir"]
    check_storage(s3.model_copy(update={"storage": s3.storage.model_copy(update={"shared": True})}))
    # a spec built without validation (model_copy) with a URI cache is still refused
    bad = local.model_copy(update={"storage": local.storage.model_copy(update={"cache_dir": "s3://b/c",
                                                                              "shared": True})})
    with pytest.raises(JobSpecError, match=r"storage.cache_dir: s3:// is not a folder"):
        check_storage(bad)
    monkeypatch.setattr(ray, "nodes", lambda: [{"Alive": True}])
    check_storage(local)  # one node: local folders are fine
