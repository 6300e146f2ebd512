"""A method may run on fewer of the job's seeds (a heavy baseline in a job with a time budget), never CaMU
or the oracle, and never on a seed the job does not have."""

from __future__ import annotations

import pytest

from orchestrator.job.spec import JobSpec

BASE = {"name": "j", "dataset": {"name": "digits"}, "model": {"name": "mnist_cnn"},
        "scenarios": [{"name": "c", "kind": "classes", "classes": [3]}], "seeds": [0, 1, 2, 3, 4]}


def test_a_baseline_may_run_on_a_subset_of_the_seeds():
    spec = JobSpec.model_validate({**BASE, "methods": [{"name": "camu"}, {"name": "scrub", "seeds": [0, 1]}]})
    assert spec.methods[1].seeds == [0, 1] and spec.methods[0].seeds is None


@pytest.mark.parametrize("methods, message", [
    ([{"name": "scrub", "seeds": [0, 7]}], r"methods.0.seeds: \[7\] are not seeds of this job"),
    ([{"name": "camu", "seeds": [0]}], "methods.0.seeds: camu runs on every seed"),
    ([{"name": "retrain", "seeds": [0, 1]}], "methods.0.seeds: retrain runs on every seed"),
])
def test_bad_method_seeds_are_refused(methods, message):
    with pytest.raises(ValueError, match=message):
        JobSpec.model_validate({**BASE, "methods": methods})


def test_compare_runs_a_method_only_on_its_seeds(monkeypatch):
    """compare_method hands the preset runs only the references of the method's own seeds."""
    from types import SimpleNamespace

    import orchestrator.driver.method_stage as compare

    spec = JobSpec.model_validate({**BASE, "methods": [{"name": "finetune", "seeds": [1, 3], "sweep": {"space": {}}}]})
    seen = []
    monkeypatch.setattr(compare, "_context", lambda ctx, sc, method, ref, child, params: SimpleNamespace(
        seed=ref.seed, worker=SimpleNamespace(oracle_metrics={})))
    monkeypatch.setattr(compare, "_run", lambda c, params, trial, scenario, method, rows:
                        seen.append(c.seed) or {"final": 1.0, "objective": 1.0})
    monkeypatch.setattr(compare, "_retain", lambda *a: None)
    monkeypatch.setattr(compare, "_record_front", lambda *a: None)
    ctx = SimpleNamespace(spec=spec)
    refs = [SimpleNamespace(seed=s) for s in spec.seeds]
    compare.compare_method(ctx, spec.scenarios[0], spec.methods[0], refs, "child", [])
    assert sorted(set(seen)) == [1, 3]


@pytest.mark.parametrize("space, trials", [({}, ["preset"]), (None, ["preset", "preset-official-cifar"])])
def test_an_empty_space_runs_the_preset_alone(monkeypatch, space, trials):
    """``sweep: {space: {}}`` is "the preset alone" (README): CaMU's other family's preset is a candidate of a
    search, so it runs only when there is one."""
    from types import SimpleNamespace

    import orchestrator.driver.method_stage as compare

    method = {"name": "camu", **({"sweep": {"space": space}} if space is not None else {})}
    spec = JobSpec.model_validate({**BASE, "seeds": [0], "sweep": {"num_samples": 0}, "methods": [method]})
    seen = []

    def run(c, params, trial, scenario, method, rows):
        seen.append(trial)
        rows.append({"scenario": scenario, "method": method, "trial_id": trial, "seed": c.seed, "objective": 1.0,
                     "status": "finished"})
        return {"final": 1.0, "objective": 1.0}

    monkeypatch.setattr(compare, "_context", lambda ctx, sc, method, ref, child, params: SimpleNamespace(
        seed=ref.seed, worker=SimpleNamespace(oracle_metrics={})))
    monkeypatch.setattr(compare, "_run", run)
    monkeypatch.setattr(compare, "_sweep", lambda *a: {})
    monkeypatch.setattr(compare, "_retain", lambda *a: None)
    monkeypatch.setattr(compare, "_record_front", lambda *a: None)
    compare.compare_method(SimpleNamespace(spec=spec), spec.scenarios[0], spec.methods[0],
                           [SimpleNamespace(seed=0)], "child", [])
    assert sorted(set(seen)) == trials
