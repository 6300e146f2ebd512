"""The driver's preparation of an image folder (``orchestrator.driver.prepare``): Ray tasks decode the shards
into the job's cache, and what they write is what a local build writes, byte for byte, read by a trial as
the decode path's inputs; a second preparation finds it ready. Real Ray (the session's local cluster)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from camu import load_dataset
from camu.data.datasets import splits_to_prepare
from camu.data.prepared import PreparedSource, prepare
from tests.unit.test_prepared_cache import options, tree

pytestmark = pytest.mark.integration


def test_ray_tasks_prepare_what_a_local_build_prepares(ray_cluster, tmp_path):
    from orchestrator.driver.prepare import ray_shards

    root = tree(tmp_path / "tree", per_class=9)
    seen: list[tuple[int, int]] = []
    cache, splits = splits_to_prepare("imagefolder", options(root, "paper", tmp_path / "by-ray"))
    train = splits[0]
    folder, report = prepare(cache, train.files, train.options, train.decode, train.side,
                             builder=ray_shards(lambda done, total, _s: seen.append((done, total))), shard_images=4)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert [s["count"] for s in manifest["shards"]] == [4, 4, 4, 4, 2]  # 18 images, one task per shard
    assert report.images == 18 and seen[-1] == (18, 18) and len(seen) == 5
    again, rebuilt = prepare(cache, train.files, train.options, train.decode, train.side, builder=ray_shards())
    assert again == folder and rebuilt is None  # ready: nothing decoded twice

    local_cache, local_splits = splits_to_prepare("imagefolder", options(root, "paper", tmp_path / "local"))
    local, _ = prepare(local_cache, local_splits[0].files, local_splits[0].options, local_splits[0].decode,
                       local_splits[0].side, workers=0)
    assert local.name == folder.name  # the same content key
    by_ray = np.concatenate([np.load(folder / s["file"]) for s in manifest["shards"]])
    by_hand = np.concatenate([np.load(local / s["file"]) for s in json.loads((local / "manifest.json").read_text())
                              ["shards"]])
    assert np.array_equal(by_ray, by_hand) and np.array_equal(np.load(folder / "labels.npy"),
                                                              np.load(local / "labels.npy"))

    lazy = load_dataset("imagefolder", options(root, "paper"))
    read = load_dataset("imagefolder", options(root, "paper", tmp_path / "by-ray"))
    assert isinstance(read.train, PreparedSource)
    idx = torch.arange(len(lazy.train))
    assert torch.equal(read.train.fetch(idx, torch.device("cpu")), lazy.train.fetch(idx, torch.device("cpu")))


def test_shards_give_every_cpu_two_tasks_within_bounds():
    from camu.data.prepared import SHARD_IMAGES
    from orchestrator.driver.prepare import MIN_SHARD_IMAGES, shard_size

    assert shard_size(13_000, 2) == SHARD_IMAGES          # few CPUs: full shards
    assert shard_size(13_000, 16) == 407                  # 32 tasks: two per CPU
    assert shard_size(13_000, 64) == MIN_SHARD_IMAGES     # not below the size a task's start is worth
    assert shard_size(100, 64) == MIN_SHARD_IMAGES
