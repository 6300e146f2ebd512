"""The shared model cache: entries are published atomically under a per-key lock, carry the sha256 of their
weights, and are verified before use; a tampered, torn or symlinked entry is trained again, never used."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import time
from pathlib import Path

import pytest
import torch

from orchestrator.driver.cache import CacheEntryError, entry, fetch_or_build, file_digest

KEY = "k" * 20


def _build_with(payload: bytes, calls: list[Path]):
    def build(staging: Path) -> dict:
        calls.append(staging)
        (staging / "weights.safetensors").write_bytes(payload)
        return {"run_id": "r", "train_seconds": 1.0}
    return build


def _corrupt_folders(cache: Path) -> list[Path]:
    return sorted(cache.glob(f"{KEY}.corrupt-*"))


def test_entry_is_published_with_its_digest_and_reused(tmp_path):
    calls: list[Path] = []
    item, meta, built = fetch_or_build(tmp_path, KEY, _build_with(b"weights-1", calls))
    assert built and len(calls) == 1 and not calls[0].exists()  # the staging folder is gone
    assert item.weights.read_bytes() == b"weights-1"
    assert (meta["sha256"], meta["size"]) == file_digest(item.weights) and meta["run_id"] == "r"
    assert json.loads(item.meta_path.read_text()) == meta
    again, meta2, built2 = fetch_or_build(tmp_path, KEY, _build_with(b"other", calls))
    assert not built2 and len(calls) == 1 and meta2 == meta and again.weights.read_bytes() == b"weights-1"
    # nothing but the entry and its lock file in the cache folder
    assert sorted(p.name for p in tmp_path.iterdir()) == [KEY, f"{KEY}.lock"]


@pytest.mark.parametrize("damage", ["flip-byte", "truncate", "torn-meta", "meta-without-digest", "weights-gone"])
def test_a_damaged_entry_is_moved_aside_and_rebuilt(tmp_path, damage, caplog):
    calls: list[Path] = []
    item, _, _ = fetch_or_build(tmp_path, KEY, _build_with(b"original weights", calls))
    if damage == "flip-byte":
        data = bytearray(item.weights.read_bytes())
        data[3] ^= 0x01
        item.weights.write_bytes(bytes(data))
    elif damage == "truncate":
        item.weights.write_bytes(item.weights.read_bytes()[:5])
    elif damage == "torn-meta":
        item.meta_path.write_text(item.meta_path.read_text()[:15])
    elif damage == "meta-without-digest":
        item.meta_path.write_text(json.dumps({"run_id": "r", "train_seconds": 1.0}))
    else:
        item.weights.unlink()
    with caplog.at_level(logging.WARNING, logger="orchestrator.driver.cache"):
        item, meta, built = fetch_or_build(tmp_path, KEY, _build_with(b"retrained weights", calls))
    assert built and len(calls) == 2
    assert item.weights.read_bytes() == b"retrained weights" and meta["sha256"] == file_digest(item.weights)[0]
    assert len(_corrupt_folders(tmp_path)) == 1
    assert str(tmp_path / KEY) in caplog.text and "not used" in caplog.text


def test_a_symlinked_weights_file_is_refused_even_with_a_matching_digest(tmp_path):
    calls: list[Path] = []
    item, _, _ = fetch_or_build(tmp_path, KEY, _build_with(b"trusted", calls))
    elsewhere = tmp_path.parent / f"{tmp_path.name}-elsewhere.safetensors"
    elsewhere.write_bytes(b"trusted")  # same bytes: only the link gives it away
    item.weights.unlink()
    item.weights.symlink_to(elsewhere)
    with pytest.raises(CacheEntryError, match="weights.safetensors is a symlink"):
        item.verified_meta()
    item, _, built = fetch_or_build(tmp_path, KEY, _build_with(b"rebuilt", calls))
    assert built and not item.weights.is_symlink() and item.weights.read_bytes() == b"rebuilt"
    assert elsewhere.read_bytes() == b"trusted"  # the link's target is left alone


def test_a_symlinked_entry_folder_is_refused(tmp_path):
    cache, outside = tmp_path / "cache", tmp_path / "outside"
    calls: list[Path] = []
    planted, _, _ = fetch_or_build(outside, KEY, _build_with(b"planted", calls))
    cache.mkdir()
    (cache / KEY).symlink_to(planted.folder, target_is_directory=True)
    item, _, built = fetch_or_build(cache, KEY, _build_with(b"own", calls))
    assert built and item.weights.read_bytes() == b"own" and not (cache / KEY).is_symlink()
    assert planted.weights.read_bytes() == b"planted"


def test_an_interrupted_build_leaves_nothing_usable(tmp_path):
    def dies(staging: Path) -> dict:
        (staging / "weights.safetensors").write_bytes(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fetch_or_build(tmp_path, KEY, dies)
    assert entry(tmp_path, KEY).verified_meta() is None
    assert not list(tmp_path.glob(f"{KEY}.tmp-*"))
    (tmp_path / f"{KEY}.tmp-left-by-a-killed-job").mkdir()  # a job killed mid-training (no finally ran)
    calls: list[Path] = []
    item, _, built = fetch_or_build(tmp_path, KEY, _build_with(b"whole", calls))
    assert built and item.weights.read_bytes() == b"whole" and not list(tmp_path.glob(f"{KEY}.tmp-*"))


def _publish_concurrently(cache: str, key: str, barrier, results, marker_dir: str) -> None:
    from orchestrator.driver.cache import fetch_or_build

    def build(staging: Path) -> dict:
        (Path(marker_dir) / f"built-{os.getpid()}").touch()
        time.sleep(1.0)  # training: the other process asks for the same key meanwhile
        (staging / "weights.safetensors").write_bytes(f"weights of {os.getpid()}".encode())
        return {"run_id": f"run-{os.getpid()}", "train_seconds": 1.0}

    barrier.wait()
    _, meta, built = fetch_or_build(cache, key, build)
    results.put((os.getpid(), built, meta))


def test_two_jobs_publishing_one_key_train_it_once(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    markers = tmp_path / "markers"
    markers.mkdir()
    procs = [ctx.Process(target=_publish_concurrently, args=(str(tmp_path / "cache"), KEY, barrier, results,
                                                              str(markers))) for _ in range(2)]
    for p in procs:
        p.start()
    got = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert len(list(markers.iterdir())) == 1, "the second job waited for the first, then reused its model"
    assert sorted(built for _, built, _ in got) == [False, True]
    metas = [meta for _, _, meta in got]
    assert metas[0] == metas[1]
    item = entry(tmp_path / "cache", KEY)
    assert item.verified_meta() == metas[0]
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [KEY, f"{KEY}.lock"]


# ----------------------------------------------------------------------------- through train_stage
@pytest.fixture()
def job_ctx(tmp_path, monkeypatch):
    """A JobRun on a real sqlite store whose Train runs are replaced by a fake that writes weights."""
    from camu.weights import save_weights
    from orchestrator.driver import reference_models as stages
    from orchestrator.driver.context import JobRun
    from orchestrator.job.spec import parse_job
    from orchestrator.record.tracking import Tracker

    spec = parse_job({"name": "cache", "dataset": {"name": "digits"}, "model": {"name": "mnist_cnn"},
                      "original": {"recipe": {"epochs": 1}},
                      "scenarios": [{"name": "r", "kind": "random", "fraction": 0.1}], "device": "cpu"})
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = tracker.experiment("cache")
    parent = tracker.find_or_create_run(exp, "job", {}, key="job")
    trainings: list[dict] = []

    def fake_fit(config, resources):
        trainings.append(config)
        out = Path(config.out_dir)
        save_weights(_linear(len(trainings)), out / "weights.safetensors")  # each training its own weights
        (out / "train.json").write_text(json.dumps({"train_seconds": 2.5, "losses": []}))

    monkeypatch.setattr(stages, "make_trainer", lambda loop, config, *a, **k: config)
    monkeypatch.setattr(stages, "fit_trainer", fake_fit)
    ctx = JobRun(spec, None, tracker, tracker.uri, exp, "cache", parent, str(tmp_path / "runs"),
                        str(tmp_path / "cache"), tmp_path / "job", [parent])
    return ctx, trainings


def _linear(value: float) -> torch.nn.Module:
    layer = torch.nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        layer.weight.fill_(float(value))
    return layer


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _oracle(ctx):
    from orchestrator.driver.reference_models import train_stage

    return train_stage(ctx, "oracle", None, torch.arange(50), "oracle")


def test_train_stage_retrains_an_oracle_whose_weights_changed_on_disk(job_ctx, caplog):
    from camu.weights import read_state_dict
    from orchestrator.record.run_identity import Tag

    ctx, trainings = job_ctx
    first = _oracle(ctx)
    assert len(trainings) == 1 and "tmp-" in Path(trainings[0].out_dir).name  # trained in a staging folder
    weights = Path(first.weights)
    meta = json.loads((weights.parent / "meta.json").read_text())
    assert meta["sha256"] == file_digest(weights)[0] and meta["run_id"] == first.run_id
    assert ctx.tracker.run(first.run_id).data.tags[Tag.WEIGHTS_SHA256] == meta["sha256"]
    assert _oracle(ctx).weights == first.weights and len(trainings) == 1  # reused

    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01  # one byte of a cached oracle
    weights.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="orchestrator.driver.cache"):
        again = _oracle(ctx)
    assert len(trainings) == 2, "the tampered oracle was trained again"
    assert str(weights.parent) in caplog.text
    meta = json.loads((weights.parent / "meta.json").read_text())
    assert meta["sha256"] == file_digest(again.weights)[0]
    assert torch.equal(read_state_dict(again.weights)["weight"], torch.full((2, 2), 2.0))  # the new training's
    assert ctx.tracker.run(again.run_id).data.tags[Tag.WEIGHTS_SHA256] == meta["sha256"]


def test_train_stage_refuses_weights_and_meta_swapped_together(job_ctx):
    """Whoever can write the cache can rewrite meta.json too; the digest MLflow recorded still catches it."""
    from camu.weights import read_state_dict, save_weights

    ctx, trainings = job_ctx
    first = _oracle(ctx)
    folder = Path(first.weights).parent
    save_weights(_linear(99.0), folder / "weights.safetensors")
    meta = json.loads((folder / "meta.json").read_text())
    meta["sha256"], meta["size"] = file_digest(folder / "weights.safetensors")
    (folder / "meta.json").write_text(json.dumps(meta))
    again = _oracle(ctx)
    assert len(trainings) == 2
    assert not torch.equal(read_state_dict(again.weights)["weight"], torch.full((2, 2), 99.0))


def test_a_loaded_original_is_keyed_by_its_content_and_pinned_for_a_resume(job_ctx, tmp_path, digits):
    """original.uri may name different weights over time (models:/X@alias, a rewritten file): each content
    gets its own cache entry, and a resumed job keeps the weights it started with."""
    import dataclasses

    from camu.weights import read_state_dict, save_weights
    from orchestrator.driver.reference_models import load_original
    from orchestrator.job.validate import CheckedJob
    from orchestrator.worker.loading import new_model
    from orchestrator.worker.wire import DataConfig, Named

    ctx, _ = job_ctx
    source = tmp_path / "original.safetensors"
    spec = ctx.spec.model_copy(update={"original": ctx.spec.original.model_copy(update={"uri": str(source)})})
    checked = CheckedJob(spec, "job.yaml", {}, digits)
    cfg = DataConfig(dataset=Named(name="digits"), model=Named(name="mnist_cnn"))
    first_job = dataclasses.replace(ctx, spec=spec, checked=checked)
    save_weights(new_model(cfg, digits, 1), source)
    first = load_original(first_job)
    first_state = read_state_dict(first.weights)

    save_weights(new_model(cfg, digits, 2), source)  # the reference moves
    other_parent = ctx.tracker.find_or_create_run(ctx.experiment_id, "job2", {}, key="job2")
    second = load_original(dataclasses.replace(first_job, parent=other_parent))
    assert second.weights != first.weights and second.run_id != first.run_id
    assert _same(first_state, read_state_dict(first.weights))

    resumed = load_original(first_job)  # the first job, resumed after the move: the weights it started with
    assert resumed.weights == first.weights and resumed.run_id == first.run_id

    import shutil
    shutil.rmtree(Path(first.weights).parent)
    with pytest.raises(LookupError, match="original.uri: .* now names other weights"):
        load_original(first_job)


def test_the_originals_initialisation_beside_it_is_rebuilt_when_tampered(job_ctx, digits):
    import dataclasses

    from camu.weights import read_state_dict
    from orchestrator.driver.reference_models import train_stage
    from orchestrator.job.validate import CheckedJob
    from orchestrator.worker.loading import new_model
    from orchestrator.worker.wire import DataConfig, Named

    ctx, trainings = job_ctx
    ctx = dataclasses.replace(ctx, checked=CheckedJob(ctx.spec, "job.yaml", {}, digits))
    first = train_stage(ctx, "original", None, torch.arange(len(digits.train)), "original")
    expected = new_model(DataConfig(dataset=Named(name="digits"), model=Named(name="mnist_cnn")), digits, ctx.spec.original.recipe.seed)
    initial = Path(first.initial)
    assert _same(expected.state_dict(), read_state_dict(initial))
    initial.write_bytes(initial.read_bytes()[:-8] + b"\x00" * 8)
    again = train_stage(ctx, "original", None, torch.arange(len(digits.train)), "original")
    assert len(trainings) == 1 and again.initial == first.initial
    assert _same(expected.state_dict(), read_state_dict(initial))
