"""A run whose weights went NaN (unbounded gradient ascent at a published preset does this on full
Fashion-MNIST) is evaluated like any other, but marked: its FA of 100 is a broken model predicting one
class, not a model that forgot nothing."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pyarrow as pa
import torch

from camu import build_model
from orchestrator.worker import unlearning
from orchestrator.worker.evaluation import non_finite_parameters
from orchestrator.worker.reporting import Timings


class FakeTracker:
    def __init__(self) -> None:
        self.tags: dict[str, str] = {}
        self.metrics: dict[str, float] = {}

    def set_tags(self, run_id, tags):
        self.tags.update(tags)

    def log_metrics(self, run_id, metrics, step=None):
        self.metrics.update(metrics)

    def log_artifact(self, *a, **k):
        pass

    def log_parquet(self, *a, **k):
        pass


def _final(tmp_path, monkeypatch, model):
    monkeypatch.setattr(unlearning, "assess", lambda *a, **k: ({"ra": 0.0}, pa.table({"x": [1]}), [], []))
    cfg = SimpleNamespace(worker=SimpleNamespace(oracle_metrics={}, oracle_seconds=10.0), method="neggrad",
                          run_id="r", out_dir=str(tmp_path), log_weights=False)
    result = SimpleNamespace(model=model, members=None, seconds=2.0, epochs=1)
    tracker = FakeTracker()
    final = unlearning._final(cfg, tracker, result, None, None, torch.device("cpu"), Timings())
    return final, tracker, json.loads((tmp_path / "final.json").read_text())


def test_a_nan_model_is_marked_diverged(tmp_path, monkeypatch):
    model = build_model("mnist_cnn", {}, 1, 3, (8, 8))
    assert non_finite_parameters(model) == []
    final, tracker, written = _final(tmp_path, monkeypatch, model)
    assert final["diverged"] == 0.0 and "camu.diverged" not in tracker.tags
    with torch.no_grad():
        model.embed.weight[0, 0] = float("nan")
        model.head[1].bias[0] = float("inf")
    assert non_finite_parameters(model) == ["embed.weight", "head.1.bias"]
    final, tracker, written = _final(tmp_path, monkeypatch, model)
    assert final["diverged"] == 1.0 and written["diverged"] == 1.0 and tracker.metrics["diverged"] == 1.0
    assert tracker.tags["camu.diverged"] == "true"
