"""No entry point that reads weights ever runs pickled code: a local file, the model cache, a Train
checkpoint, a run artifact (runs:/) and a registered model (models:/), each tried with a payload that
would create a marker file if it were ever unpickled, against a real local MLflow store."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from mlflow.exceptions import MlflowException
from torch import nn

from camu.models import build_model
from camu.weights import UnsafeWeightsError, load_weights, read_checkpoint_state, save_weights
from orchestrator.driver.original import load_original_weights
from orchestrator.record.tracking import Tracker


class Payload:
    """Unpickling this runs a shell command that creates ``marker``."""

    marker = ""

    def __reduce__(self):
        return (os.system, (f"touch {Payload.marker}",))


class EvilModule(nn.Module):
    """A module whose pickle runs the payload: what a hostile `mlflow.pytorch.log_model` would store."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(2, 2)

    def __reduce__(self):
        return (os.system, (f"touch {Payload.marker}",))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


@pytest.fixture()
def marker(tmp_path):
    Payload.marker = str(tmp_path / "PWNED")
    yield Path(Payload.marker)
    assert not Path(Payload.marker).exists(), "pickled code ran"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    tracker = Tracker(f"sqlite:///{tmp_path_factory.mktemp('store') / 'mlflow.db'}")
    experiment = tracker.experiment("evil")
    return tracker, experiment


def _model() -> nn.Module:
    return build_model("mnist_cnn", {}, 1, 10, (8, 8))


def test_mlflow_pickle_loading_is_switched_off():
    import orchestrator  # noqa: F401 - importing the package sets it for this process and its workers

    assert os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] == "false"


def test_local_file(marker, tmp_path, store):
    torch.save({"weight": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(UnsafeWeightsError, match="refused to load"):
        load_original_weights(store[0], str(tmp_path / "evil.pt"), _model(), tmp_path / "scratch")


def test_cache_entry_replaced_by_a_pickle(marker, tmp_path):
    cached = tmp_path / "cache" / "key" / "weights.safetensors"
    cached.parent.mkdir(parents=True)
    torch.save({"weight": Payload()}, cached)  # a pickle where the cache keeps safetensors
    with pytest.raises(UnsafeWeightsError):
        load_weights(_model(), cached)


def test_train_checkpoint(marker, tmp_path):
    torch.save({"model": {"w": Payload()}, "epoch": 3}, tmp_path / "state.pt")
    with pytest.raises(UnsafeWeightsError, match="refused to load the checkpoint"):
        read_checkpoint_state(tmp_path / "state.pt")
    torch.save({"model": _model().state_dict(), "epoch": 3}, tmp_path / "ok.pt")
    assert read_checkpoint_state(tmp_path / "ok.pt")["epoch"] == 3


def test_runs_uri(marker, tmp_path, store):
    tracker, experiment = store
    run = tracker.find_or_create_run(experiment, "r", {}, key="r")
    torch.save({"weight": Payload()}, tmp_path / "weights.pt")
    tracker.log_artifact(run, tmp_path / "weights.pt", "model")
    with pytest.raises(UnsafeWeightsError, match="refused to load"):
        load_original_weights(tracker, f"runs:/{run}/model/weights.pt", _model(), tmp_path / "scratch")
    with pytest.raises(UnsafeWeightsError):  # the folder form picks the same file
        load_original_weights(tracker, f"runs:/{run}/model", _model(), tmp_path / "scratch")


def test_runs_uri_with_honest_weights_loads_them(tmp_path, store):
    tracker, experiment = store
    run = tracker.find_or_create_run(experiment, "r", {}, key="honest")
    original = _model()
    tracker.log_artifact(run, save_weights(original, tmp_path / "weights.safetensors"), "model")
    loaded = load_original_weights(tracker, f"runs:/{run}/model", _model(), tmp_path / "scratch")
    assert all(torch.equal(a, b) for a, b in zip(original.state_dict().values(), loaded.state_dict().values()))


@pytest.mark.integration  # logs and registers real MLflow models (torch.export: seconds each)
def test_models_uri_of_a_pickled_model_is_refused(marker, tmp_path, store, monkeypatch):
    monkeypatch.chdir(tmp_path)  # MLflow writes a logged model's files under ./mlruns of the working folder
    import mlflow
    import mlflow.pytorch

    tracker, experiment = store
    run = tracker.find_or_create_run(experiment, "r", {}, key="evil-model")
    mlflow.set_tracking_uri(tracker.uri)
    mlflow.set_registry_uri(tracker.uri)
    mlflow.pytorch.log_model(EvilModule(), name="model", run_id=run, serialization_format="pickle",
                             registered_model_name="evil")
    assert not marker.exists()  # saving pickles; only loading would run the payload
    with pytest.raises(LookupError, match="never loads a pickled model"):
        load_original_weights(tracker, "models:/evil/1", _model(), tmp_path / "scratch")
    with pytest.raises(LookupError):
        load_original_weights(tracker, "models:/evil/latest", _model(), tmp_path / "scratch")
    with pytest.raises(MlflowException, match="MLFLOW_ALLOW_PICKLE_DESERIALIZATION"):
        mlflow.pytorch.load_model("models:/evil/1")


@pytest.mark.integration  # logs and registers real MLflow models (torch.export: seconds each)
def test_models_uri_with_a_disguised_state_dict_is_refused(marker, tmp_path, store, monkeypatch):
    monkeypatch.chdir(tmp_path)  # MLflow writes a logged model's files under ./mlruns of the working folder
    import mlflow
    import mlflow.pytorch

    tracker, experiment = store
    run = tracker.find_or_create_run(experiment, "r", {}, key="disguised")
    torch.save({"weight": Payload()}, tmp_path / "weights.pt")
    mlflow.set_tracking_uri(tracker.uri)
    mlflow.set_registry_uri(tracker.uri)
    mlflow.pytorch.log_model(nn.Linear(2, 2), name="model", run_id=run, serialization_format="pt2",
                             input_example=torch.zeros(1, 2).numpy(), registered_model_name="disguised",
                             extra_files=[str(tmp_path / "weights.pt")])
    with pytest.raises(UnsafeWeightsError, match="refused to load"):
        load_original_weights(tracker, "models:/disguised/1", _model(), tmp_path / "scratch")


@pytest.mark.integration  # logs and registers real MLflow models (torch.export: seconds each)
def test_models_uri_registered_by_camu_orch_loads_its_weights(tmp_path, store):
    from orchestrator.record.served_model import LogitsOnly

    tracker, experiment = store
    run = tracker.find_or_create_run(experiment, "r", {}, key="good-model")
    original = _model().eval()
    weights = save_weights(original, tmp_path / "weights.safetensors")
    _, version = tracker.log_and_register_model(run, LogitsOnly(original), torch.zeros(2, 1, 8, 8).numpy(),
                                                  weights, "camu-good", {"camu.scenario": "s"})
    for ref in (f"models:/camu-good/{version}", "models:/camu-good@candidate", "models:/camu-good/latest"):
        loaded = load_original_weights(tracker, ref, _model(), tmp_path / "scratch")
        assert all(torch.equal(a, b) for a, b in zip(original.state_dict().values(), loaded.state_dict().values()))
