"""channels_last against the default (contiguous) memory format, side by side in one run, for the three
things every job does on its devices: supervised training (original, oracle, shadows), a CaMU unlearning
run, and the evaluation pass over every sample. Same model, data, seeds and machine; reports seconds and
the ratio contiguous / channels_last (above 1: channels_last is faster).

    python -m benchmarks.memory_format                                   # paper's CNN, MNIST-size synthetic data
    python -m benchmarks.memory_format --model resnet18 --channels 3 --image-size 32 --num-train 4000
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import torch

import camu.runtime
from camu import build_model, forget_indices, make_split, retain_indices
from camu.data import load_dataset
from camu.evaluation import predict_logits
from camu.loop import run_method
from camu.methods import UnlearnContext
from camu.methods.camu import official_params
from camu.runtime import resolve_device
from camu.training import TrainRecipe, train_classifier


def measure(args: argparse.Namespace, channels_last: bool) -> dict[str, float]:
    camu.runtime.CHANNELS_LAST = channels_last
    device = resolve_device(args.device)
    data = load_dataset("synthetic", {"num_train": args.num_train, "num_test": args.num_train // 4, "num_classes": 10,
                                      "channels": args.channels, "image_size": args.image_size, "seed": 0}).to(device)
    torch.manual_seed(0)
    model = build_model(args.model, {}, args.channels, 10, data.image_size)
    out: dict[str, float] = {}
    start = time.perf_counter()
    train_classifier(model, data.train, torch.arange(len(data.train)), TrainRecipe(epochs=1, batch_size=32), device)
    out["train_epoch_s"] = time.perf_counter() - start
    split = make_split("random", {"fraction": 0.1}, data.train.labels.cpu(), data.class_names, 0)
    ctx = UnlearnContext(copy.deepcopy(model), data, forget_indices(split), retain_indices(split), device, seed=0)
    result = run_method("camu", official_params("mnist", "random").model_dump() | {"epochs": 2}, ctx)
    out["camu_unlearn_s"] = result.seconds
    start = time.perf_counter()
    predict_logits(model, data.train, torch.arange(len(data.train)), device)
    predict_logits(model, data.test, torch.arange(len(data.test)), device)
    out["evaluation_pass_s"] = time.perf_counter() - start
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="mnist_cnn")
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--image-size", type=int, default=28)
    parser.add_argument("--num-train", type=int, default=8000)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    measure(args, True)  # warm-up: allocator, oneDNN/cuDNN kernel selection
    contiguous, channels_last = measure(args, False), measure(args, True)
    report = {k: {"contiguous": round(contiguous[k], 3), "channels_last": round(channels_last[k], 3),
                  "ratio": round(contiguous[k] / channels_last[k], 2)} for k in contiguous}
    print(json.dumps({"model": args.model, "device": str(resolve_device(args.device)),
                      "threads": torch.get_num_threads(), **report}, indent=2))


if __name__ == "__main__":
    main()
