"""The named objectives of a multi-objective sweep: their values against an independent writing of their
definitions, the job file's checks of ``sweep.objectives`` / ``sweep.choose`` (each error names the field and
the fix), and the multi-objective Optuna search told the presets' vectors."""

from __future__ import annotations

import math

import pytest
import yaml
from typer.testing import CliRunner

from camu.methods import CamuParams
from orchestrator.cli import app
from orchestrator.driver.sweep import search_algorithm, tune_space
from orchestrator.job.space import SearchSpace
from orchestrator.job.spec import SweepSpec
from orchestrator.worker.objective import objective_values, with_objective_values

ORACLE = {"sel_ra": 99.0, "sel_fa": 0.0, "sel_ta": 90.0, "sel_ta_retained": 95.0, "sel_mia_official": 0.30,
          "ra": 98.0}
RUN = {"sel_ra": 97.5, "sel_fa": 2.0, "sel_ta": 89.0, "sel_ta_retained": 93.0, "sel_mia_official": 0.34,
       "ra": 10.0, "fa": 50.0, "unlearn_seconds": 12.5, "lira_auc": 0.58}


def test_objective_values_follow_their_definitions():
    values = objective_values(RUN, ORACLE)
    # forgetting: mean of |FA - FA*| and 100 |MIA - MIA*| on the selection part
    assert values["obj_forgetting"] == pytest.approx((abs(2.0 - 0.0) + 100 * abs(0.34 - 0.30)) / 2)
    # utility: mean of the RA, TA and retained-class TA gaps (selection part, never the report part's RA)
    assert values["obj_utility"] == pytest.approx((1.5 + 1.0 + 2.0) / 3)
    assert values["obj_privacy"] == pytest.approx(8.0)  # |0.58 - 0.5| x 100
    assert values["obj_time"] == 12.5
    assert values["gap_mia_official"] == pytest.approx(4.0) and values["gap_ra"] == pytest.approx(1.5)
    # random removal has no retained-class TA: utility is the mean of the two gaps that exist
    random = {k: v for k, v in RUN.items() if k != "sel_ta_retained"}
    assert objective_values(random, ORACLE)["obj_utility"] == pytest.approx((1.5 + 1.0) / 2)
    # without the per-example attack the privacy objective is absent (NaN in the summary), never 0
    assert "obj_privacy" not in objective_values({k: v for k, v in RUN.items() if k != "lira_auc"}, ORACLE)
    # without an MIA the forgetting objective is not measured on FA alone
    assert "obj_forgetting" not in objective_values({k: v for k, v in RUN.items() if k != "sel_mia_official"},
                                                    ORACLE)
    # a run recorded before objectives existed gets them computed; a failed run stays empty
    assert with_objective_values({"final": 1.0, **RUN}, ORACLE)["obj_time"] == 12.5
    assert with_objective_values({}, ORACLE) == {}


JOB = {"name": "mo", "dataset": {"name": "digits"}, "model": {"name": "mnist_cnn"},
       "scenarios": [{"name": "c", "kind": "classes", "classes": [0]}], "methods": [{"name": "camu"}]}


@pytest.mark.parametrize("sweep, extra, message", [
    ({"choose": "knee"}, {}, "sweep.choose: knee needs two or more sweep.objectives"),
    ({"objectives": ["forgetting", "utility"], "choose": {"weights": {"time": 1}}}, {},
     "must be listed in sweep.objectives"),
    ({"objectives": ["utility", "time"], "choose": {"constraint": {"limits": {"rx": 1}, "minimise": "time"}}}, {},
     "constraint.limits: ['rx'] are neither gap metrics nor objectives"),
    ({"objectives": ["utility", "time"], "choose": {"constraint": {"limits": {"ra": 1}}}}, {},
     "minimise: time"),
    ({"objectives": ["forgetting", "speed"]}, {}, "sweep.objectives.1"),
    ({"objectives": ["forgetting", "forgetting"]}, {}, "objectives: list each objective once"),
    ({"objectives": ["forgetting", "privacy"]}, {}, "evaluation.privacy: {shadows: 8}"),
    ({"objectives": ["forgetting", "utility"], "choose": {"weights": {"utility": -1}}}, {}, ">= 0"),
])
def test_bad_objectives_and_rules_are_refused_before_anything_runs(tmp_path, sweep, extra, message):
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump({**JOB, "sweep": sweep, **extra}))
    out = CliRunner().invoke(app, ["validate", "--no-data", str(path)])
    assert out.exit_code == 2, out.output
    assert message in " ".join(out.output.split()), out.output


def test_a_good_multi_objective_job_validates(tmp_path):
    path = tmp_path / "job.yaml"
    sweep = {"objectives": ["forgetting", "utility", "time"],
             "choose": {"constraint": {"limits": {"ra": 1.0, "ta": 1.0, "ta_retained": 1.0}, "minimise": "time"}}}
    path.write_text(yaml.safe_dump({**JOB, "sweep": sweep}))
    out = CliRunner().invoke(app, ["validate", "--no-data", str(path)])
    assert out.exit_code == 0, out.output
    spec = SweepSpec.model_validate(sweep)
    assert spec.multi_objective and spec.choose.describe() == \
        "constraint: lowest time with ra <= 1, ta <= 1, ta_retained <= 1"


def test_the_multi_objective_search_is_told_the_presets_vectors():
    space = SearchSpace.parse({"lr_out": {"loguniform": [1.0e-5, 1.0e-2]}, "epochs": {"randint": [1, 5]}})
    sweep = SweepSpec.model_validate({"search": "optuna", "objectives": ["forgetting", "time"]})
    preset = CamuParams.model_validate({"lr_out": 1e-3, "epochs": 2})
    told = [(preset, {"obj_forgetting": 3.0, "obj_time": 9.0, "objective": 4.0}),
            (preset.model_copy(update={"lr_out": 1e-4}), {"obj_forgetting": 5.0, "objective": 1.0})]  # no time
    alg = search_algorithm(sweep, space, told)
    # Tune hands every searcher its scalar metric (for early stopping): the search keeps its two
    alg.set_search_properties("objective", "min", tune_space(space))
    study = alg.searcher._ot_study
    assert [d.name for d in study.directions] == ["MINIMIZE", "MINIMIZE"]
    done = [t for t in study.trials if t.values is not None]
    assert [t.values for t in done] == [[3.0, 9.0]]  # a point missing an objective is not told
    assert done[0].params == {"lr_out": 1e-3, "epochs": 2}
    config = alg.suggest("trial_1")
    assert set(config) == {"lr_out", "epochs"} and 1e-5 <= config["lr_out"] <= 1e-2
    # a trial stopped before its final evaluation has no objectives: recorded as pruned, not as a value
    alg.on_trial_complete("trial_1", {"objective": 2.0, "obj_forgetting": 1.0})
    assert study.trials[-1].state.name == "PRUNED" and not math.isnan(study.trials[0].values[0])
    alg.suggest("trial_2")
    alg.on_trial_complete("trial_2", {"objective": 2.0, "obj_forgetting": 1.0, "obj_time": 4.0})
    assert study.trials[-1].state.name == "COMPLETE" and study.trials[-1].values == [1.0, 4.0]
    # Tune checks every result, per-epoch ones too, for the searcher's metric: the scalar objective
    assert alg.metric == "objective"
