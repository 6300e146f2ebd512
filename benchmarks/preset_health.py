"""Does any method collapse the model at its published preset? Every registered method at its model
family's preset (the family ``validate`` names for the job's model), class and random removal, on one
dataset, in-process (camu only): RA / FA / TA of the unlearned model next to the original's, and a flag
where RA falls more than ``--max-ra-drop`` points below the original's.

    python benchmarks/preset_health.py --dataset mnist --root ../shared/data/mnist10k --test-size 0.2
    python benchmarks/mnist_as_imagefolder.py --src ../shared/data/mnist10k --out /tmp/mnist_png
    python benchmarks/preset_health.py --dataset imagefolder --root /tmp/mnist_png --image-size 28

Prints one JSON row per (scenario, method) and a table; exits 1 when a method collapses (so it can gate a
change of presets). Unrolling SGD runs on the Adam original with ``accept_non_sgd_original`` (as the
CaMU paper's row); retrain is the oracle itself, so it is left out.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time

import torch

from camu import (
    TrainRecipe,
    build_model,
    forget_indices,
    load_dataset,
    make_split,
    retain_indices,
    train_classifier,
)
from camu.evaluation import predict_logits
from camu.loop import run_method
from camu.methods import METHODS, Setting, UnlearnContext, check_applicable
from camu.metrics import accuracy
from camu.models import model_family
from camu.runtime import resolve_device

SCENARIOS = {"class0": ("classes", {"classes": [0]}), "random10": ("random", {"fraction": 0.1})}


def accuracies(model: torch.nn.Module, data, forget: torch.Tensor, retain: torch.Tensor,
               device: torch.device) -> dict[str, float]:
    """RA, FA (training sets) and TA (test set), in %."""
    def acc(source, indices: torch.Tensor) -> float:
        return accuracy(predict_logits(model, source, indices, device), source.labels.cpu()[indices])

    return {"ra": acc(data.train, retain), "fa": acc(data.train, forget), "ta": acc(data.test, torch.arange(len(data.test)))}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--root", default=None)
    ap.add_argument("--test-size", type=float, default=None)
    ap.add_argument("--image-size", type=int, default=None, help="imagefolder: model input side")
    ap.add_argument("--model", default="mnist_cnn")
    ap.add_argument("--methods", default=None, help="comma-separated (default: every registered method)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-ra-drop", type=float, default=5.0)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    options = {k: v for k, v in {"root": args.root, "test_size": args.test_size,
                                 "image_size": args.image_size}.items() if v is not None}
    if args.dataset == "imagefolder":
        options.setdefault("num_workers", 0)
    device = resolve_device("auto")
    data = load_dataset(args.dataset, options).to(device)
    recipe = TrainRecipe(seed=args.seed)
    torch.manual_seed(recipe.seed)
    initial = build_model(args.model, {}, data.in_channels, data.num_classes, data.image_size)
    original = copy.deepcopy(initial)
    start = time.perf_counter()
    train_classifier(original, data.train, torch.arange(len(data.train)), recipe, device)
    family = model_family(args.model)
    print(json.dumps({"dataset": args.dataset, "train": len(data.train), "family": family,
                      "original_train_seconds": round(time.perf_counter() - start, 1)}), flush=True)
    names = args.methods.split(",") if args.methods else [n for n in METHODS.names() if n != "retrain"]
    rows, collapsed = [], []
    for scenario, (kind, opts) in SCENARIOS.items():
        split = make_split(kind, opts, data.train.labels.cpu(), data.class_names, args.seed)
        forget, retain = forget_indices(split), retain_indices(split)
        before = accuracies(original, data, forget, retain, device)
        rows.append({"scenario": scenario, "method": "original", **before})
        print(json.dumps(rows[-1]), flush=True)
        for name in names:
            if check_applicable(name, kind, has_initial=True):
                continue
            method = METHODS.get(name)()
            at = Setting(family, args.dataset, kind, recipe.model_dump())
            preset = method.preset_names(at)[0]
            params = method.preset(preset, at)
            if name == "unrolling_sgd":
                params["accept_non_sgd_original"] = True
            ctx = UnlearnContext(original, data, forget, retain, device, seed=args.seed, initial=initial)
            result = run_method(name, params, ctx)
            after = accuracies(result.model, data, forget, retain, device)
            drop = before["ra"] - after["ra"]
            row = {"scenario": scenario, "method": name, "preset": preset, **after, "ra_drop": drop,
                   "seconds": result.seconds, "collapsed": drop > args.max_ra_drop}
            rows.append(row)
            print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
            if row["collapsed"]:
                collapsed.append(f"{name} on {scenario} (RA {after['ra']:.1f} vs {before['ra']:.1f})")
    print(f"\n{'scenario':<10} {'method':<20} {'RA':>6} {'FA':>6} {'TA':>6} {'RA drop':>8} {'s':>7}")
    for r in rows:
        print(f"{r['scenario']:<10} {r['method']:<20} {r['ra']:6.1f} {r['fa']:6.1f} {r['ta']:6.1f} "
              f"{r.get('ra_drop', 0.0):8.1f} {r.get('seconds', 0.0):7.1f}" + ("  COLLAPSED" if r.get("collapsed") else ""))
    if collapsed:
        print(f"\nRA more than {args.max_ra_drop} points below the original's: " + "; ".join(collapsed))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
