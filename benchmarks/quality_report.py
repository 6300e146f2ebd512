"""Original vs retrain oracle vs CaMU (official configuration) on one dataset, in-process (camu only).

Prints, for each model, every metric of ``camu.evaluation`` (RA, FA, TA, TA on retained / forgotten
classes, ``mia_official`` as a fraction, ``mia_efficacy`` in %, loss-MIA AUC; plain keys on the report
part, ``sel_*`` on the selection part), with CaMU's unlearning time and the oracle's retraining time.
``--noise-scale`` overrides the preset's counterfactual noise (pixel units), e.g. 0.3081 to rebuild the
counterfactual of releases that added U[0,1) after MNIST normalisation.

    python benchmarks/quality_report.py --dataset mnist --root ../shared/data/mnist10k --test-size 0.2
    python benchmarks/quality_report.py --dataset digits --seed 1 --selection-fraction 0
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from camu import (
    TrainRecipe,
    build_model,
    evaluate,
    forget_indices,
    load_dataset,
    make_split,
    official_params,
    retain_indices,
    train_classifier,
)
from camu.loop import run_method
from camu.methods import UnlearnContext
from camu.models import model_family
from camu.runtime import resolve_device

SCENARIOS = {"class0": ("classes", {"classes": [0]}), "random10": ("random", {"fraction": 0.1})}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--root", default=None)
    ap.add_argument("--test-size", type=float, default=None)
    ap.add_argument("--model", default="mnist_cnn")
    ap.add_argument("--epochs", type=int, default=20, help="original/oracle recipe epochs (official: 20)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--selection-fraction", type=float, default=0.5, help="0: every metric on the full sets")
    ap.add_argument("--noise-scale", type=float, default=None, help="override the preset's noise (pixel units)")
    args = ap.parse_args()
    options = {k: v for k, v in {"root": args.root, "test_size": args.test_size}.items() if v is not None}
    device = resolve_device(args.device)
    data = load_dataset(args.dataset, options).to(device)
    recipe = TrainRecipe(epochs=args.epochs, seed=args.seed)

    def train(indices: torch.Tensor) -> tuple[torch.nn.Module, float]:
        torch.manual_seed(recipe.seed)
        model = build_model(args.model, {}, data.in_channels, data.num_classes, data.image_size)
        start = time.perf_counter()
        train_classifier(model, data.train, indices, recipe, device)
        return model, time.perf_counter() - start

    original, original_s = train(torch.arange(len(data.train)))
    print(json.dumps({"dataset": args.dataset, "train": len(data.train), "test": len(data.test),
                      "original_train_seconds": round(original_s, 1)}))
    for name, (kind, opts) in SCENARIOS.items():
        split = make_split(kind, opts, data.train.labels.cpu(), data.class_names, args.seed)
        forget, retain = forget_indices(split), retain_indices(split)
        oracle, oracle_s = train(retain)
        ctx = UnlearnContext(original, data, forget, retain, device, seed=args.seed)
        params = official_params(args.dataset, kind, model_family(args.model))
        if args.noise_scale is not None:
            params = params.model_copy(update={"noise_scale": args.noise_scale})
        result = run_method("camu", params, ctx)
        for label, model in (("original", original), ("oracle", oracle), ("camu-official", result.model)):
            members = result.members if label == "camu-official" else None
            m = evaluate(model, data, split, device, seed=args.seed, members=members,
                         selection_fraction=args.selection_fraction).metrics
            row = {"scenario": name, "model": label, **{k: round(v, 2) for k, v in m.items()}}
            if label == "camu-official":
                row.update(unlearn_seconds=round(result.seconds, 2), rte=round(oracle_s / result.seconds, 1))
            if label == "oracle":
                row.update(retrain_seconds=round(oracle_s, 1))
            print(json.dumps(row))


if __name__ == "__main__":
    main()
