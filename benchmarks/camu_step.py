"""Throughput of camu's CaMU against a faithful official-style loop, side by side in one run.

Official style (as in the reference code): batch 32, fp32, torch DataLoaders over a prebuilt
counterfactual dataset and over D_s, frozen-model targets recomputed at every step, separate
forward passes. camu: GPU-resident data, bf16 autocast + channels_last on CUDA, targets computed
once, batched forwards where the math allows. Same model, data, hyperparameters and machine.

    python benchmarks/camu_step.py                          # CPU here, CUDA where available
    python benchmarks/camu_step.py --model resnet18 --image-size 32 --channels 3 --num-forget 4096
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import torch
from torch.utils.data import DataLoader, TensorDataset

from camu import CamuParams, build_model
from camu.data import load_dataset
from camu.loop import run_method
from camu.losses import cross_entropy, kl_sum
from camu.methods import UnlearnContext
from camu.runtime import resolve_device


def official_style(original, data, forget, retain, params: CamuParams, device, seed: int) -> float:
    """The reference loop; returns its wall time in seconds."""
    g = torch.Generator().manual_seed(seed)
    x_all, y_all = data.train.images.cpu(), data.train.labels.cpu()
    pool = retain[torch.randperm(len(retain), generator=g)[: len(forget)]]
    partner = pool[torch.randperm(len(pool), generator=g)]
    x_cf = x_all[partner] + torch.rand(x_all[partner].shape, generator=g)
    y_cf = y_all[partner].clone()
    clash = y_cf == y_all[forget]
    y_cf[clash] = (y_all[forget][clash] + 1) % data.num_classes
    cf_loader = DataLoader(TensorDataset(x_all[forget], y_all[forget], x_cf, y_cf), batch_size=params.batch_size,
                           shuffle=True)
    keep_loader = DataLoader(TensorDataset(x_all[pool], y_all[pool]), batch_size=params.batch_size, shuffle=True)
    f0 = copy.deepcopy(original).to(device).eval()
    f = copy.deepcopy(original).to(device).train()
    opt1 = torch.optim.Adam(f.parameters(), lr=params.lr_rep, weight_decay=params.weight_decay)
    opt2 = torch.optim.Adam(f.parameters(), lr=params.lr_out, weight_decay=params.weight_decay)
    _sync(device)
    start = time.perf_counter()
    for _ in range(params.epochs):
        for (x_f, _, xc, yc), (x_s, y_s) in zip(cf_loader, keep_loader):
            x_f, xc, yc, x_s, y_s = (t.to(device) for t in (x_f, xc, yc, x_s, y_s))
            with torch.no_grad():
                t_s, t_cf = torch.softmax(f0(x_s)[1], 1), torch.softmax(f0(xc)[1], 1)
            loss = params.w_rep_keep * kl_sum(t_s, f(x_s)[1]) + params.w_rep_forget * kl_sum(t_cf, f(x_f)[1])
            opt1.zero_grad()
            loss.backward()
            opt1.step()
            loss = params.w_out_keep * cross_entropy(f(x_s)[0], y_s) + params.w_out_forget * cross_entropy(f(x_f)[0], yc)
            opt2.zero_grad()
            loss.backward()
            opt2.step()
    _sync(device)
    return time.perf_counter() - start


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="mnist_cnn")
    ap.add_argument("--image-size", type=int, default=28)
    ap.add_argument("--channels", type=int, default=1)
    ap.add_argument("--num-forget", type=int, default=2048)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32, help="batch of both loops (official: 32)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--repeats", type=int, default=2, help="best of N runs each, alternating")
    args = ap.parse_args()
    device = resolve_device(args.device)
    data = load_dataset("synthetic", {"num_train": 4 * args.num_forget, "num_test": 64, "num_classes": 10,
                                      "channels": args.channels, "image_size": args.image_size})
    forget, retain = torch.arange(args.num_forget), torch.arange(args.num_forget, 4 * args.num_forget)
    torch.manual_seed(0)
    original = build_model(args.model, {}, args.channels, 10, (args.image_size, args.image_size))
    params = CamuParams(epochs=args.epochs, batch_size=args.batch_size)
    resident = data.to(device)
    ours, theirs = [], []
    for rep in range(args.repeats):
        theirs.append(official_style(original, data, forget, retain, params, device, rep))
        ctx = UnlearnContext(original, resident, forget, retain, device, seed=rep)
        ours.append(run_method("camu", params, ctx).seconds)
    samples = args.num_forget * args.epochs
    report = {"device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
              "model": args.model, "num_forget": args.num_forget, "epochs": args.epochs, "batch_size": args.batch_size,
              "official_style_samples_per_s": round(samples / min(theirs), 1),
              "camu_samples_per_s": round(samples / min(ours), 1),
              "speedup": round(min(theirs) / min(ours), 2)}
    print(json.dumps(report))


if __name__ == "__main__":
    main()
