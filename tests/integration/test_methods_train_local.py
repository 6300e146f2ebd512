"""Every registered method runs one epoch through the orchestrator's Train worker (``unlearn_worker``)
in Ray Train local mode on digits: it reports the epoch (per-epoch metrics in MLflow), and ends with a
full evaluation against the oracle."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from camu import METHODS, TrainRecipe, build_model, load_dataset, make_split, save_split, train_classifier
from camu.methods.base import Setting
from camu.weights import save_weights
from orchestrator.execution.trainer import make_trainer
from orchestrator.job.spec import ObjectiveSpec, ResourcesSpec
from orchestrator.record.tracking import Tracker
from orchestrator.worker.unlearning import unlearn_worker
from orchestrator.worker.wire import Named, TrialConfig, WorkerConfig

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("local")
    data = load_dataset("digits")
    torch.manual_seed(0)
    initial = build_model("mnist_cnn", {}, 1, 10, data.image_size)
    original = copy.deepcopy(initial)
    train_classifier(original, data.train, torch.arange(len(data.train)), TrainRecipe(epochs=2, batch_size=64),
                     torch.device("cpu"))
    split = make_split("classes", {"classes": [3]}, data.train.labels, data.class_names, 0)
    tracker = Tracker(f"sqlite:///{tmp / 'mlflow.db'}")
    worker = WorkerConfig(dataset=Named(name="digits"), model=Named(name="mnist_cnn"), device="cpu",
                          split_path=str(save_split(split, tmp / "split.parquet")),
                          original_weights=str(save_weights(original, tmp / "original.safetensors")),
                          initial_weights=str(save_weights(initial, tmp / "initial.safetensors")), seed=0,
                          scenario_kind="classes", oracle_metrics={"ra": 99.0, "fa": 0.0, "ta": 88.0,
                                                                   "ta_retained": 98.0, "mia_official": 40.0},
                          oracle_seconds=5.0, objective=ObjectiveSpec(), tracking_uri=tracker.uri)
    return tmp, tracker, tracker.experiment("local"), worker


@pytest.mark.parametrize("name", METHODS.names())
def test_one_epoch_in_train_local_mode(name, shared):
    tmp, tracker, experiment, worker = shared
    method = METHODS.get(name)()
    params = method.preset(method.preset_names(Setting("mnist", "digits", "classes"))[0], Setting("mnist", "digits", "classes"))
    params = method.Params.model_validate({**params, **({"epochs": 1} if "epochs" in params else {})})
    run_id = tracker.find_or_create_run(experiment, name, {}, key=name)
    config = TrialConfig(worker=worker, method=name, params=params, run_id=run_id, out_dir=str(tmp / name))
    make_trainer(unlearn_worker, config, ResourcesSpec(num_workers=0), f"local-{name}",
                 str(tmp / "storage")).fit()
    final = json.loads((tmp / name / "final.json").read_text())
    assert {"ra", "fa", "ta", "mia_official", "avg_gap", "objective", "unlearn_seconds"} <= set(final)
    assert 0 <= final["ra"] <= 100 and final["unlearn_seconds"] > 0
    parts = {f"time.{p}" for p in ("worker_start", "data_load", "unlearn", "epoch_reports", "evaluation", "logging")}
    assert parts <= set(final) and final["time.unlearn"] == final["unlearn_seconds"]
    assert all(final[p] >= 0 for p in parts)
    # the epoch report's own parts; one short epoch is far below the 30 s checkpoint interval: no checkpoint
    sub = {k: v for k, v in final.items() if k.startswith("time.epoch_reports.")}
    assert {"time.epoch_reports.quick_metrics", "time.epoch_reports.logging", "time.epoch_reports.report"} == set(sub)
    assert sum(sub.values()) <= final["time.epoch_reports"] + 1e-6
    assert not list((tmp / "storage").glob(f"local-{name}/**/checkpoint_*"))
    history = tracker.client.get_metric_history(run_id, "epoch_fa")
    assert [m.step for m in history] == [0]  # the one epoch was reported
    assert tracker.client.get_run(run_id).data.params["data_parallel.world_size"] == "1"
