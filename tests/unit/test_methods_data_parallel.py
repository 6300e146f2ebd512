"""Data parallel equals one worker: every method (the paper's CNN has no BatchNorm) run by 2 real gloo
processes at the same global batch ends with the weights of a single-process run. One spawn runs every
method, so the test costs one process start-up."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from camu import build_model, forget_indices, make_split, retain_indices
from camu.data import load_dataset
from camu.loop import run_method
from camu.methods import METHODS, UnlearnContext
from camu.methods.base import Setting
from camu.runtime import Shard

CPU = torch.device("cpu")
# fp32 sums reduced in another order across 2 ranks: differences at the level of float rounding, grown
# by a few dozen optimizer steps; a wrong gradient scale or data share would be off by orders more.
ATOL = 2e-5


def _setup():
    data = load_dataset("synthetic", {"num_train": 160, "num_test": 40, "num_classes": 4, "image_size": 8, "seed": 3})
    torch.manual_seed(0)
    initial = build_model("mnist_cnn", {}, 1, 4, (8, 8))
    torch.manual_seed(1)
    original = build_model("mnist_cnn", {}, 1, 4, (8, 8))
    split = make_split("classes", {"classes": [1]}, data.train.labels, data.class_names, 0)
    return data, initial, original, forget_indices(split), retain_indices(split)


def _params(name: str) -> dict:
    method = METHODS.get(name)()
    params = method.preset(method.preset_names(Setting("mnist", "synthetic", "classes"))[0], Setting("mnist", "synthetic", "classes"))
    fast = {"epochs": 2, "batch_size": 32, "forget_batch_size": 16}
    return {**params, **{k: v for k, v in fast.items() if k in params}}


def _run_all(shard: Shard) -> dict[str, dict[str, torch.Tensor]]:
    data, initial, original, forget, retain = _setup()
    out = {}
    for name in [n for n in METHODS.names() if METHODS.get(n).__module__.startswith("camu.")]:
        ctx = UnlearnContext(original, data, forget, retain, CPU, seed=2, shard=shard, initial=initial)
        out[name] = {k: v.detach().clone() for k, v in run_method(name, _params(name), ctx).model.state_dict().items()}
    # the RL schedule of 100+ classes: D_f (random labels) and D_r in one shuffled pass
    ctx = UnlearnContext(original, data, forget, retain, CPU, seed=2, shard=shard, initial=initial)
    mixed = {**_params("random_label"), "schedule": "mixed"}
    out["random_label/mixed"] = {k: v.detach().clone() for k, v in run_method("random_label", mixed, ctx).model.state_dict().items()}
    return out


def _worker(rank: int, world: int, port: int, path: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    states = _run_all(Shard.current())
    if rank == 0:
        torch.save(states, path)
    dist.barrier()
    os._exit(0)  # gloo's teardown can abort at interpreter exit after all work is done


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_workers_match_one_for_every_method(tmp_path):
    single = _run_all(Shard())
    path = str(tmp_path / "dp.pt")
    mp.start_processes(_worker, args=(2, _free_port(), path), nprocs=2, start_method="spawn")
    parallel = torch.load(path, weights_only=True)
    assert set(parallel) == set(single)
    for name, state in single.items():
        worst = max(float((value - parallel[name][key]).abs().max()) for key, value in state.items())
        assert worst <= ATOL, f"{name}: 2 workers differ from 1 by {worst:.2e}"


@pytest.mark.parametrize("name", ["finetune", "neggrad_plus"])
def test_a_wrong_share_would_be_caught(name, monkeypatch):
    """The comparison above can fail: one rank's share alone (no gradient averaging) gives other weights."""
    import camu.methods.run

    monkeypatch.setattr(camu.methods.run, "sync_gradients", lambda params, shard: None)
    monkeypatch.setattr(camu.methods.run.dist, "all_reduce", lambda tensor: None)
    data, _initial, original, forget, retain = _setup()
    full = run_method(name, _params(name), UnlearnContext(original, data, forget, retain, CPU, seed=2))
    half = run_method(name, _params(name), UnlearnContext(original, data, forget, retain, CPU, seed=2,
                                                           shard=Shard(0, 2)))
    worst = max(float((a - b).abs().max()) for a, b in zip(full.model.state_dict().values(),
                                                           half.model.state_dict().values()))
    assert worst > 10 * ATOL
