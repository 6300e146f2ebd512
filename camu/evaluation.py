"""Evaluate a model on a forgetting split: the numbers of the evaluation protocol and a per-sample table.

One pass over the training split and one over the test split give every metric, so a model is
never run twice on the same data during evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F
from torch import nn

from camu.data.datasets import ImageData
from camu.data.sources import Source
from camu.metrics import accuracy, loss_mia_auc, official_mia, sorted_softmax
from camu.runtime import autocast, eval_mode, global_batches, place_input, place_model
from camu.scenarios import forget_indices, forgotten_classes, retain_indices

SAMPLE_SCHEMA = pa.schema([("index", pa.int64()), ("split", pa.string()), ("label", pa.int64()),
                           ("prediction", pa.int64()), ("loss", pa.float32()), ("max_prob", pa.float32())])
MIA_NONMEMBER_TRAIN = 4000  # test samples the official attack trains on (at most half the test set)


@dataclass
class Evaluation:
    """Scalar metrics (percentages, mia_auc in [0, 1]) and per-sample outputs."""

    metrics: dict[str, float]
    samples: pa.Table

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


def evaluate(model: nn.Module, data: ImageData, split: pa.Table, device: torch.device, seed: int = 0,
             batch_size: int = 1024) -> Evaluation:
    """RA, FA, TA, TA on retained / forgotten classes, official MIA, loss-MIA AUC, and per-sample rows."""
    n_train = len(data.train)
    train_idx = torch.arange(n_train)
    test_idx = torch.arange(len(data.test))
    train_logits = predict_logits(model, data.train, train_idx, device, batch_size)
    test_logits = predict_logits(model, data.test, test_idx, device, batch_size)
    y_train, y_test = data.train.labels.cpu(), data.test.labels.cpu()
    forget, retain = forget_indices(split), retain_indices(split)

    gone = forgotten_classes(split)
    gone_mask = torch.isin(y_test, torch.tensor(gone, dtype=torch.long))
    metrics = {
        "ra": accuracy(train_logits[retain], y_train[retain]),
        "fa": accuracy(train_logits[forget], y_train[forget]),
        "ta": accuracy(test_logits, y_test),
        "ta_retained": accuracy(test_logits[~gone_mask], y_test[~gone_mask]),
        "ta_forgotten": accuracy(test_logits[gone_mask], y_test[gone_mask]),
    }
    train_loss = F.cross_entropy(train_logits, y_train, reduction="none")
    test_loss = F.cross_entropy(test_logits, y_test, reduction="none")
    metrics.update(_mia(train_logits, test_logits, forget, retain, seed))
    metrics["mia_auc"] = loss_mia_auc(train_loss[forget].numpy(), test_loss.numpy())
    return Evaluation(metrics, _sample_table(train_logits, test_logits, y_train, y_test, train_loss, test_loss, split))


def _mia(train_logits: torch.Tensor, test_logits: torch.Tensor, forget: torch.Tensor, retain: torch.Tensor,
         seed: int) -> dict[str, float]:
    """The official attack with its data drawn deterministically from ``seed``: |D_f| remaining
    samples as members, up to 4,000 (at most half) test samples as non-members, the rest held out."""
    g = torch.Generator().manual_seed(seed)
    members = retain[torch.randperm(len(retain), generator=g)[: len(forget)]]
    order = torch.randperm(len(test_logits), generator=g)
    n_train = min(MIA_NONMEMBER_TRAIN, len(order) // 2)
    acc, member_rate = official_mia(sorted_softmax(train_logits[members]), sorted_softmax(test_logits[order[:n_train]]),
                                    sorted_softmax(train_logits[forget]), sorted_softmax(test_logits[order[n_train:]]),
                                    seed)
    return {"mia_official": acc, "mia_forget_member_rate": member_rate}


def _sample_table(train_logits: torch.Tensor, test_logits: torch.Tensor, y_train: torch.Tensor, y_test: torch.Tensor,
                  train_loss: torch.Tensor, test_loss: torch.Tensor, split: pa.Table) -> pa.Table:
    roles = np.asarray(split.column("role").to_pylist(), dtype=object)
    logits = torch.cat([train_logits, test_logits])
    probs = torch.softmax(logits, dim=1)
    return pa.table({
        "index": np.concatenate([np.arange(len(y_train)), np.arange(len(y_test))]).astype(np.int64),
        "split": np.concatenate([roles, np.full(len(y_test), "test", dtype=object)]),
        "label": torch.cat([y_train, y_test]).numpy(),
        "prediction": logits.argmax(dim=1).numpy(),
        "loss": torch.cat([train_loss, test_loss]).numpy().astype(np.float32),
        "max_prob": probs.max(dim=1).values.numpy().astype(np.float32),
    }, schema=SAMPLE_SCHEMA)
