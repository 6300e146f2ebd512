"""Evaluate a model on a forgetting split: the numbers of the evaluation protocol and a per-sample table.

Selection is not reporting. D_f, D_r and the test set are each split once per (split, seed) into a
selection part and a report part (``evaluation_sets``, ``selection_fraction`` of each for selection):
every metric is computed on both, the sweep chooses configurations on the selection numbers
(``sel_*``), and the summary reports the report numbers. A fraction of 0 selects on the reported data
(the optimistic protocol of most papers; recorded as such).

The MIAs (``camu.metrics``):
- ``mia_official``: XGBoost on sorted softmax, trained on D_s (the remaining samples the unlearning run
  used; by default the |D_f| samples CaMU's official pool would draw; a seeded random subset as large as
  the non-member set, as the official loader's first ~4,000 rows) vs the first test samples of the
  part (up to 4,000, at most half), scored on D_f plus up to |D_f| further test samples; a fraction.
- ``mia_efficacy``: SVC on the true-class confidence, trained on the first |test| remaining samples vs
  the test samples, applied to D_f; percent predicted non-member.
- ``mia_auc``: AUC of -loss, D_f vs test.

One pass over the training split and one over the test split give every metric, so a model is never
run twice on the same data during evaluation.

A diverged model (NaN or infinite outputs, e.g. gradient ascent at too high a learning rate) is a
result, not an error: its non-finite output rows are scored as uniform predictions (no information),
and ``nonfinite_outputs`` says which share of samples that was.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F
from torch import nn

from camu.counterfactual import draw_pool
from camu.data.datasets import ImageData
from camu.data.sources import Source
from camu.metrics import accuracy, efficacy_mia, loss_mia_auc, official_mia, sorted_softmax
from camu.runtime import autocast, eval_mode, global_batches, place_input, place_model
from camu.scenarios import forget_indices, forgotten_classes, retain_indices

SAMPLE_SCHEMA = pa.schema([("index", pa.int64()), ("split", pa.string()), ("set", pa.string()), ("label", pa.int64()),
                           ("prediction", pa.int64()), ("loss", pa.float32()), ("max_prob", pa.float32()),
                           ("true_prob", pa.float32())])
MIA_NONMEMBER_TRAIN = 4000  # test samples the official attack trains on (at most half of the part)
SELECTION_TAG = 7919        # the generator of the selection / report split


@dataclass(frozen=True)
class EvalSets:
    """Positions of D_f, D_r (training split) and test samples in each part: ``select`` and ``report``."""

    forget: dict[str, torch.Tensor]
    retain: dict[str, torch.Tensor]
    test: dict[str, torch.Tensor]


def _halves(indices: torch.Tensor, fraction: float, g: torch.Generator) -> dict[str, torch.Tensor]:
    if fraction <= 0:
        return {"select": indices, "report": indices}
    order = indices[torch.randperm(len(indices), generator=g)]
    k = round(len(indices) * fraction)
    return {"select": torch.sort(order[:k]).values, "report": torch.sort(order[k:]).values}


def evaluation_sets(forget: torch.Tensor, retain: torch.Tensor, n_test: int, seed: int,
                    selection_fraction: float) -> EvalSets:
    """The selection / report parts: a seeded random ``selection_fraction`` of D_f, of D_r and of the test
    set for selection, the rest for reporting (the same for every model of a (split, seed))."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + SELECTION_TAG)
    return EvalSets(_halves(forget, selection_fraction, g), _halves(retain, selection_fraction, g),
                    _halves(torch.arange(n_test), selection_fraction, g))


def default_members(forget: torch.Tensor, retain: torch.Tensor, seed: int) -> torch.Tensor:
    """D_s for models whose run did not draw one (the original, the oracle, methods other than CaMU):
    |D_f| remaining samples, the very draw CaMU's official pool makes for this seed."""
    g = torch.Generator().manual_seed((seed * 1_000_003 + 1 * 10_007 + 0) % (2**63))
    return draw_pool(retain, len(forget), g)


@dataclass
class Evaluation:
    """Scalar metrics (see the module docstring for units; ``sel_*`` on the selection part) and
    per-sample outputs."""

    metrics: dict[str, float]
    samples: pa.Table
    train_logits: torch.Tensor | None = None  # kept for further per-sample scores (per-example privacy)

    def write_samples(self, path: str) -> None:
        pq.write_table(self.samples, path)


@torch.no_grad()
def predict_logits(model: nn.Module, source: Source, indices: torch.Tensor, device: torch.device,
                   batch_size: int = 1024) -> torch.Tensor:
    """Logits of ``model`` on ``source[indices]`` in eval mode, float32 on the CPU."""
    model = place_model(model, device)
    batches = global_batches(len(indices), batch_size, torch.Generator(), shuffle=False)
    outputs = []
    with eval_mode(model):
        for x, _ in source.batches([indices[b] for b in batches], device):
            with autocast(device):
                logits, _ = model(place_input(x, device))
            outputs.append(logits.float().cpu())
    return torch.cat(outputs) if outputs else torch.empty(0)


def finite_rows(logits: torch.Tensor) -> tuple[torch.Tensor, int]:
    """``logits`` with every row holding a NaN or an infinity replaced by zeros (a uniform prediction),
    and how many rows that was."""
    bad = ~torch.isfinite(logits).all(dim=1)
    if not bad.any():
        return logits, 0
    logits = logits.clone()
    logits[bad] = 0.0
    return logits, int(bad.sum())


def _part_metrics(train_logits: torch.Tensor, test_logits: torch.Tensor, y_train: torch.Tensor, y_test: torch.Tensor,
                  forget: torch.Tensor, retain: torch.Tensor, test: torch.Tensor, members: torch.Tensor,
                  gone: list[int], seed: int) -> dict[str, float]:
    gone_mask = torch.isin(y_test[test], torch.tensor(gone, dtype=torch.long))
    t_logits, t_labels = test_logits[test], y_test[test]
    metrics = {"ra": accuracy(train_logits[retain], y_train[retain]),
               "fa": accuracy(train_logits[forget], y_train[forget]),
               "ta": accuracy(t_logits, t_labels),
               "ta_retained": accuracy(t_logits[~gone_mask], t_labels[~gone_mask]),
               "ta_forgotten": accuracy(t_logits[gone_mask], t_labels[gone_mask])}
    n_train = min(MIA_NONMEMBER_TRAIN, len(test) // 2)
    scored = test[n_train: n_train + len(forget)]
    # the official attack trains on as many members as non-members: the first ~4,000 rows of its shuffled
    # D_s loader against the first ~4,000 test samples (train.py, train_attack_model); all of D_s against
    # 4,000 would tilt the attack towards "member" (measured beside the official code: 0.187 vs its 0.270
    # on Fashion-MNIST class removal)
    order = torch.randperm(len(members), generator=torch.Generator().manual_seed(seed))
    members = members[order[:n_train]]
    acc, member_rate = official_mia(sorted_softmax(train_logits[members]), sorted_softmax(test_logits[test[:n_train]]),
                                    sorted_softmax(train_logits[forget]), sorted_softmax(test_logits[scored]), seed)
    metrics["mia_official"], metrics["mia_forget_member_rate"] = acc, 100.0 * member_rate

    def confidence(logits: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
        return torch.softmax(logits, dim=1).gather(1, labels[:, None])[:, 0].numpy()

    shadow = torch.sort(retain).values[: len(test)]  # SalUn: the first |test| remaining samples
    metrics["mia_efficacy"] = efficacy_mia(confidence(train_logits[shadow], y_train[shadow]),
                                           confidence(t_logits, t_labels),
                                           confidence(train_logits[forget], y_train[forget]))
    train_loss = F.cross_entropy(train_logits[forget], y_train[forget], reduction="none")
    test_loss = F.cross_entropy(t_logits, t_labels, reduction="none")
    metrics["mia_auc"] = loss_mia_auc(train_loss.numpy(), test_loss.numpy())
    return metrics


def evaluate(model: nn.Module, data: ImageData, split: pa.Table, device: torch.device, seed: int = 0,
             members: torch.Tensor | None = None, selection_fraction: float = 0.5,
             batch_size: int = 1024) -> Evaluation:
    """RA, FA, TA, TA on retained / forgotten classes and the three MIAs, on the report part (plain
    keys) and the selection part (``sel_`` keys), and one per-sample row for every training and test sample.
    ``members``: D_s of the unlearning run (default: ``default_members``)."""
    train_logits, bad_train = finite_rows(predict_logits(model, data.train, torch.arange(len(data.train)), device,
                                                         batch_size))
    test_logits, bad_test = finite_rows(predict_logits(model, data.test, torch.arange(len(data.test)), device,
                                                       batch_size))
    y_train, y_test = data.train.labels.cpu(), data.test.labels.cpu()
    forget, retain = forget_indices(split), retain_indices(split)
    members = default_members(forget, retain, seed) if members is None else members.cpu()
    sets = evaluation_sets(forget, retain, len(y_test), seed, selection_fraction)
    gone = forgotten_classes(split)
    metrics: dict[str, float] = {}
    for part, prefix in (("report", ""), ("select", "sel_")):
        found = _part_metrics(train_logits, test_logits, y_train, y_test, sets.forget[part], sets.retain[part],
                              sets.test[part], members, gone, seed)
        metrics.update({prefix + k: v for k, v in found.items()})
    metrics["selection_fraction"] = selection_fraction
    metrics["nonfinite_outputs"] = (bad_train + bad_test) / (len(train_logits) + len(test_logits))
    return Evaluation(metrics, _sample_table(train_logits, test_logits, y_train, y_test, split, sets), train_logits)


def _sample_table(train_logits: torch.Tensor, test_logits: torch.Tensor, y_train: torch.Tensor, y_test: torch.Tensor,
                  split: pa.Table, sets: EvalSets) -> pa.Table:
    roles = np.asarray(split.column("role").to_pylist(), dtype=object)
    part_train = np.full(len(y_train), "report", dtype=object)
    part_test = np.full(len(y_test), "report", dtype=object)
    if not torch.equal(sets.test["select"], sets.test["report"]):
        part_train[torch.cat([sets.forget["select"], sets.retain["select"]]).numpy()] = "select"
        part_test[sets.test["select"].numpy()] = "select"
    logits = torch.cat([train_logits, test_logits])
    labels = torch.cat([y_train, y_test])
    probs = torch.softmax(logits, dim=1)
    return pa.table({
        "index": np.concatenate([np.arange(len(y_train)), np.arange(len(y_test))]).astype(np.int64),
        "split": np.concatenate([roles, np.full(len(y_test), "test", dtype=object)]),
        "set": np.concatenate([part_train, part_test]),
        "label": labels.numpy(),
        "prediction": logits.argmax(dim=1).numpy(),
        "loss": F.cross_entropy(logits, labels, reduction="none").numpy().astype(np.float32),
        "max_prob": probs.max(dim=1).values.numpy().astype(np.float32),
        "true_prob": probs.gather(1, labels[:, None])[:, 0].numpy().astype(np.float32),
    }, schema=SAMPLE_SCHEMA)
