"""Data parallel equals one worker with BatchNorm too: a small ResNet fine-tuned by 2 gloo processes at
the same global batch matches one process when BatchNorm is synchronised over the group, and does not
when each rank normalises its own half of the batch."""

from __future__ import annotations

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from camu import build_model, forget_indices, make_split, retain_indices
from camu.data import load_dataset
from camu.loop import run_method
from camu.methods import UnlearnContext
from camu.runtime import Shard, SyncBatchNorm, sync_batch_norm

CPU = torch.device("cpu")
PARAMS = {"epochs": 1, "batch_size": 32, "lr": 0.05}
# float32 sums over ranks in another order: differences at rounding level, grown over 4 steps of SGD
# through a ResNet; without synchronised statistics the difference is orders of magnitude larger.
ATOL = 1e-4


def _run(shard: Shard, sync: bool) -> dict[str, torch.Tensor]:
    data = load_dataset("synthetic", {"num_train": 160, "num_test": 40, "num_classes": 4, "image_size": 8, "seed": 3})
    torch.manual_seed(0)
    model = build_model("resnet18", {"stem": "cifar"}, 1, 4, (8, 8))
    split = make_split("classes", {"classes": [1]}, data.train.labels, data.class_names, 0)
    ctx = UnlearnContext(model, data, forget_indices(split), retain_indices(split), CPU, seed=1, shard=shard,
                         sync_batchnorm=sync)
    return {k: v.detach().clone() for k, v in run_method("finetune", PARAMS, ctx).model.state_dict().items()}


def _worker(rank: int, port: int, path: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.set_num_threads(1)
    states = {sync: _run(Shard.current(), sync) for sync in (True, False)}
    if rank == 0:
        torch.save(states, path)
    dist.barrier()
    os._exit(0)


def _worst(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def test_sync_batchnorm_makes_two_workers_equal_one(tmp_path):
    single = _run(Shard(), True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    path = str(tmp_path / "bn.pt")
    mp.start_processes(_worker, args=(port, path), nprocs=2, start_method="spawn")
    parallel = torch.load(path, weights_only=True)
    assert _worst(single, parallel[True]) <= ATOL
    assert _worst(single, parallel[False]) > 50 * ATOL  # unsynchronised statistics: another model


def test_sync_batchnorm_is_plain_batchnorm_in_one_process():
    torch.manual_seed(0)
    plain = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4))
    synced = sync_batch_norm(torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4)))
    synced.load_state_dict(plain.state_dict())
    assert isinstance(synced[1], SyncBatchNorm) and set(synced.state_dict()) == set(plain.state_dict())
    x = torch.randn(6, 1, 5, 5)
    assert torch.allclose(plain(x), synced(x), atol=1e-6)
    assert torch.allclose(plain[1].running_var, synced[1].running_var)
