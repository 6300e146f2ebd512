"""Data-parallel correctness through Ray Train: a CaMU trial (``unlearn_worker``) in Train local mode
(num_workers=0), on 1 worker and on 2 gloo DDP workers at the same global batch gives the same
unlearned model."""

from __future__ import annotations

import json

import pytest
import torch

from camu import (
    TrainRecipe,
    build_model,
    load_dataset,
    make_split,
    official_params,
    save_split,
    train_classifier,
)
from camu.weights import read_state_dict, save_weights
from orchestrator.execution.trainer import make_trainer
from orchestrator.job.spec import ObjectiveSpec, ResourcesSpec
from orchestrator.record.tracking import Tracker
from orchestrator.worker.unlearning import unlearn_worker
from orchestrator.worker.wire import Named, TrialConfig, WorkerConfig

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def trial_config(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dp")
    data = load_dataset("digits")
    split = make_split("classes", {"classes": [3]}, data.train.labels, data.class_names, 0)
    torch.manual_seed(0)
    original = build_model("mnist_cnn", {}, 1, 10, data.image_size)
    train_classifier(original, data.train, torch.arange(len(data.train)), TrainRecipe(epochs=3, batch_size=64),
                     torch.device("cpu"))
    tracker = Tracker(f"sqlite:///{tmp / 'mlflow.db'}")
    exp = tracker.experiment("dp")
    oracle = {"ra": 100.0, "fa": 0.0, "ta": 88.0, "ta_retained": 98.0, "mia_official": 40.0}
    worker = WorkerConfig(dataset=Named(name="digits"), model=Named(name="mnist_cnn"), device="cpu",
                          split_path=str(save_split(split, tmp / "split.parquet")),
                          original_weights=str(save_weights(original, tmp / "orig.safetensors")), seed=0,
                          scenario_kind="classes", oracle_metrics=oracle, oracle_seconds=1.0, objective=ObjectiveSpec(),
                          tracking_uri=tracker.uri)
    return {"worker": worker, "params": official_params("digits", "classes"), "tmp": tmp,
            "tracker": tracker, "exp": exp}


def _fit(cfg: dict, workers: int) -> tuple[dict, dict]:
    tracker = cfg["tracker"]
    run_id = tracker.find_or_create_run(cfg["exp"], f"w{workers}", {}, key=f"w{workers}")
    out = f"{cfg['tmp']}/w{workers}"
    config = TrialConfig(worker=cfg["worker"], method="camu", params=cfg["params"], run_id=run_id, out_dir=out)
    make_trainer(unlearn_worker, config, ResourcesSpec(num_workers=workers, worker_max_failures=0),
                 f"dp-{workers}", f"{cfg['tmp']}/storage").fit()
    return json.loads(open(f"{out}/final.json").read()), read_state_dict(f"{out}/weights.safetensors")


def test_local_mode_one_and_two_workers_agree(trial_config, ray_cluster):
    results = {n: _fit(trial_config, n) for n in (0, 1, 2)}
    (m0, w0), (m1, w1), (m2, w2) = results[0], results[1], results[2]
    for name in w0:
        assert torch.allclose(w0[name], w1[name], atol=1e-6), name   # Train local mode == 1 worker
        assert torch.allclose(w1[name], w2[name], atol=2e-5), name   # 2 gloo ranks == 1 rank at global batch 32
    for key in ("ra", "fa", "ta", "ta_retained"):
        assert m0[key] == pytest.approx(m1[key], abs=1e-6), key
        assert abs(m1[key] - m2[key]) <= 1.0, key
    assert m2["fa"] < 20 and m2["ra"] > 80  # it did unlearn
    runs = trial_config["tracker"].client.search_runs([trial_config["exp"]], "")
    params = {r.info.run_name: r.data.params for r in runs}
    assert params["w2"]["data_parallel.world_size"] == "2" and params["w2"]["data_parallel.per_worker_batch"] == "16"
    assert params["w1"]["data_parallel.world_size"] == "1"
