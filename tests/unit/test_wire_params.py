"""A method's parameters cross the Ray boundary as its own typed ``Params`` model: built once by the driver,
pickled as that class (Ray uses cloudpickle), refused as a dict, and a sampled configuration becomes typed
in one place (``presets.with_values``), which refuses values the method does not accept."""

from __future__ import annotations

import cloudpickle
import pytest
from pydantic import ValidationError

from camu.methods import METHODS, CamuParams
from orchestrator.job.presets import base_params, setting, with_values
from orchestrator.job.spec import MethodSpec, ObjectiveSpec, ResourcesSpec
from orchestrator.worker.wire import Named, SweepContext, TrialConfig, WorkerConfig

WORKER = WorkerConfig(dataset=Named(name="digits"), model=Named(name="mnist_cnn"), split_path="s.parquet",
                      original_weights="o.safetensors", seed=0, scenario_kind="classes", oracle_metrics={},
                      oracle_seconds=1.0, objective=ObjectiveSpec(), tracking_uri="sqlite:///x.db")
AT = setting("mnist_cnn", "digits", "classes")


def test_a_trial_carries_the_method_s_own_params_through_a_pickle():
    params = base_params(MethodSpec(name="camu", params={"epochs": 3}), AT)
    assert type(params) is METHODS.get("camu").Params and params.epochs == 3
    config = TrialConfig(worker=WORKER, method="camu", params=params, run_id="r", out_dir="o")
    back = cloudpickle.loads(cloudpickle.dumps(config))
    assert type(back.params) is CamuParams and back.params == params
    assert back.model_dump()["params"]["lr_rep"] == params.lr_rep  # dumped as the subclass, not the empty base


def test_a_dict_is_refused_at_the_sender():
    with pytest.raises(ValidationError, match="typed Params"):
        TrialConfig(worker=WORKER, method="camu", params={"epochs": 3}, run_id="r", out_dir="o")
    with pytest.raises(ValidationError, match="typed Params"):
        SweepContext(job="j", scenario="s", method="camu", seed=0, tracking_uri="u", experiment_id="1",
                     scenario_run_id="p", scope_key="k", storage_path="/tmp", out_root="/tmp",
                     resources=ResourcesSpec(), base_params={"epochs": 3}, worker=WORKER)


def test_a_sampled_configuration_is_typed_by_the_method_and_checked():
    preset = base_params(MethodSpec(name="camu"), AT)
    sampled = with_values(preset, {"lr_out": 5e-4, "epochs": 4})
    assert type(sampled) is CamuParams
    assert (sampled.lr_out, sampled.epochs, sampled.lr_rep) == (5e-4, 4, preset.lr_rep)
    assert (preset.lr_out, preset.epochs) != (5e-4, 4)  # the preset itself is unchanged
    with pytest.raises(ValidationError, match="lr_outt"):
        with_values(preset, {"lr_outt": 1e-3})
    with pytest.raises(ValidationError, match="epochs"):
        with_values(preset, {"epochs": "many"})
