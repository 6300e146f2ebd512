"""Evaluating models inside Ray: the full evaluation of one model against the oracle (``assess``: report and
selection parts, the per-example privacy scores, relearning), the cheap per-epoch accuracies early stopping
reads, and the evaluation tasks of the reference models and of the privacy shadows."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from camu import evaluate, forget_indices, load_split, retain_indices
from camu.data import ImageData
from camu.evaluation import EvalSets, predict_logits
from camu.metrics import accuracy
from camu.privacy import LiraFit, logit_confidence, per_example_privacy
from camu.relearn import relearn
from camu.weights import load_weights
from orchestrator.worker.loading import load_data, new_model, worker_device
from orchestrator.worker.objective import score
from orchestrator.worker.wire import WorkerConfig

QUICK_SAMPLE = 512  # retained and test samples (each) of the per-epoch objective, besides all of the selection D_f


def privacy_metrics(path: str, forget_logits: torch.Tensor, forget_labels: torch.Tensor) -> dict[str, float]:
    """The per-example membership scores of a model on D_f against the oracle (``camu.privacy``)."""
    with np.load(path, allow_pickle=False) as saved:
        fit = LiraFit(saved["mu_in"], saved["mu_out"], float(saved["sd_in"]), float(saved["sd_out"]))
        oracle_phi = saved["oracle_phi"]
    return per_example_privacy(fit, logit_confidence(forget_logits, forget_labels), oracle_phi)


def quick_metrics(model: torch.nn.Module, data: ImageData, sets: EvalSets, device: torch.device) -> dict[str, float]:
    """Cheap per-epoch accuracies on the selection part: all of its D_f, fixed samples of its D_r and
    test set (no MIA)."""
    g = torch.Generator().manual_seed(0)
    forget, retain, test = sets.forget["select"], sets.retain["select"], sets.test["select"]
    r = retain[torch.randperm(len(retain), generator=g)[:QUICK_SAMPLE]]
    t = test[torch.randperm(len(test), generator=g)[:QUICK_SAMPLE]]
    y_train, y_test = data.train.labels.cpu(), data.test.labels.cpu()
    return {"fa": accuracy(predict_logits(model, data.train, forget, device), y_train[forget]),
            "ra": accuracy(predict_logits(model, data.train, r, device), y_train[r]),
            "ta": accuracy(predict_logits(model, data.test, t, device), y_test[t])}


def assess(model: torch.nn.Module, data: ImageData, split: Any, device: torch.device, wcfg: WorkerConfig,
           members: torch.Tensor | None, oracle: dict[str, float] | None
           ) -> tuple[dict[str, float], Any, list[float], list[tuple[int, float]]]:
    """The full evaluation of one model: metrics on the report and selection parts, scores against the
    oracle (when given), relearning (when the job asks); returns (metrics, per-sample table, FA curve,
    relearning gap curve: (step, acc(D_r) - acc(D_f)), empty unless evaluation.relearn.gap_every_batches)."""
    ev = evaluate(model, data, split, device, seed=wcfg.seed, members=members,
                  selection_fraction=wcfg.evaluation.selection_fraction)
    metrics = dict(ev.metrics)
    if oracle is not None:
        metrics.update(score(metrics, oracle, wcfg.objective))
    if wcfg.privacy_path:
        forget = forget_indices(split)
        metrics.update(privacy_metrics(wcfg.privacy_path, ev.train_logits[forget], data.train.labels.cpu()[forget]))
    curve: list[float] = []
    gap: list[tuple[int, float]] = []
    if wcfg.evaluation.relearn is not None:
        forget, retain = forget_indices(split), retain_indices(split)
        original_fa = metrics["fa"] if oracle is None and math.isnan(wcfg.original_fa) else wcfg.original_fa
        found = relearn(model, data, forget, retain, original_fa, wcfg.evaluation.relearn, device, wcfg.seed)
        metrics["relearn_epochs"], curve, gap = float(found.relearn_epochs), found.fa_curve, found.gap_curve
    return metrics, ev.samples, curve, gap


def non_finite_parameters(model: torch.nn.Module) -> list[str]:
    """Names of the parameters holding a NaN or an infinity (a diverged run, e.g. unbounded gradient ascent)."""
    return [name for name, p in model.named_parameters() if not bool(torch.isfinite(p.detach()).all())]


def forget_phi(wcfg: WorkerConfig, weights: list[str]) -> np.ndarray:
    """Logit-scaled true-class confidences on D_f of several saved models (rows), loading the data once."""
    device = worker_device(wcfg, train_worker=False)
    data = load_data(wcfg, device)
    forget = forget_indices(load_split(wcfg.split_path))
    labels = data.train.labels.cpu()[forget]
    rows = [logit_confidence(predict_logits(load_weights(new_model(wcfg, data, 0), path), data.train,
                                            forget, device), labels) for path in weights]
    return np.stack(rows)


def evaluate_weights(wcfg: WorkerConfig, weights: dict[str, str]) -> dict[str, Any]:
    """Evaluate the reference models (name -> weights file; the original first, then the oracle) of one
    split in one Ray task, loading the data once; returns name -> {"metrics", "samples", "curve", "gap"}
    (the relearning FA curve and gap curve, empty when not asked for).
    The oracle is scored against itself; the original's FA is relearning's target."""
    device = worker_device(wcfg, train_worker=False)
    data = load_data(wcfg, device)
    split = load_split(wcfg.split_path)
    out: dict[str, Any] = {}
    for name, path in weights.items():
        model = load_weights(new_model(wcfg, data, 0), path)
        if name == "original":
            metrics, samples, curve, gap = assess(model, data, split, device, wcfg.model_copy(update={"evaluation":
                                             wcfg.evaluation.model_copy(update={"relearn": None})}), None, None)
            wcfg = wcfg.model_copy(update={"original_fa": metrics["fa"]})
        else:
            metrics, samples, curve, gap = assess(model, data, split, device, wcfg, None, None)
        out[name] = {"metrics": metrics, "samples": samples, "curve": curve, "gap": gap}
    return out
