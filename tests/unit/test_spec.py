"""Job files: the schema pass and the registry pass report every problem, naming field and fix."""

import textwrap

import pytest
import yaml

from orchestrator.job.spec import JobSpecError
from orchestrator.job.validate import check_job

GOOD = {
    "name": "t",
    "dataset": {"name": "synthetic", "num_train": 200, "num_test": 50, "num_classes": 4},
    "model": {"name": "mnist_cnn"},
    "original": {"recipe": {"epochs": 2}},
    "scenarios": [{"name": "c1", "kind": "classes", "classes": [1]}, {"name": "r", "kind": "random", "fraction": 0.1}],
    "methods": [{"name": "camu", "sweep": {"space": {"w_rep_forget": {"loguniform": [0.1, 2.0]},
                                                     "noise": {"choice": ["uniform", "none"]}}}},
                {"name": "finetune"}],
    "sweep": {"num_samples": 2},
    "resources": {"num_workers": 2},
}


def write(tmp_path, data, name="job.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data) if isinstance(data, dict) else data)
    return path


def errors_of(tmp_path, data, **kw):
    with pytest.raises(JobSpecError) as info:
        check_job(write(tmp_path, data), **kw)
    return info.value.errors


def test_good_job_validates_with_data_and_splits(tmp_path):
    job = check_job(write(tmp_path, GOOD))
    assert job.spec.dataset.options == {"num_train": 200, "num_test": 50, "num_classes": 4}
    assert set(job.splits) == {("c1", 0), ("r", 0)}
    assert job.spec.resources.lr_scaling == "none"


def test_schema_errors_are_all_listed(tmp_path):
    bad = {**GOOD, "sweeep": {}, "seeds": "zero", "resources": {"num_workers": -1, "gpus": 1}}
    errs = errors_of(tmp_path, bad)
    joined = "\n".join(errs)
    assert "sweeep: unknown key" in joined
    assert "seeds:" in joined
    assert "resources.num_workers" in joined and "resources.gpus: unknown key" in joined
    assert len(errs) >= 4


def test_registry_pass_names_field_and_fix(tmp_path):
    bad = {**GOOD, "dataset": {"name": "synthetic", "num_trian": 5},
           "model": {"name": "vgg"},
           "scenarios": [{"name": "x", "kind": "everything"}, {"name": "y", "kind": "random"}],
           "methods": [{"name": "camu", "params": {"w_rep_keep": -1, "lr_typo": 1},
                        "sweep": {"space": {"not_a_param": 1, "epochs": {"randint": [1, 500]}}}}]}
    joined = "\n".join(errors_of(tmp_path, bad))
    assert "dataset.num_trian: unknown option" in joined
    assert "model.name: unknown model 'vgg'; choose one of" in joined
    assert "scenarios.0.kind: unknown kind 'everything'" in joined
    assert "scenarios.1.fraction: required" in joined
    assert "methods.0.params.w_rep_keep" in joined and "methods.0.params.lr_typo: unknown parameter of camu" in joined
    assert "methods.0.sweep.space.not_a_param: not a parameter of camu" in joined
    assert "methods.0.sweep.space.epochs" in joined  # 500 is beyond the allowed range


def test_space_shape_and_grid_rules(tmp_path):
    space = lambda s: {**GOOD, "methods": [{"name": "camu", "sweep": {"space": s}}]}
    joined = "\n".join(errors_of(tmp_path, space({"lr_out": {"loguniform": [0.0, 1.0]}})))
    assert "low bound must be > 0" in joined
    joined = "\n".join(errors_of(tmp_path, space({"lr_out": {"grid": [1e-3, 1e-4]}})))
    assert "needs sweep.search: grid" in joined


def test_fractional_gpu_only_for_single_worker(tmp_path):
    joined = "\n".join(errors_of(tmp_path, {**GOOD, "resources": {"num_workers": 2, "gpus_per_worker": 0.5}}))
    assert "fraction of a GPU works only with num_workers: 1" in joined


def test_gpu_job_on_a_machine_without_gpus(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    joined = "\n".join(errors_of(tmp_path, {**GOOD, "resources": {"num_workers": 1, "gpus_per_worker": 1}}))
    assert "resources.gpus_per_worker" in joined and "--address" in joined


def test_missing_data_root_and_impossible_scenario(tmp_path):
    mnist = {**GOOD, "dataset": {"name": "mnist", "root": str(tmp_path / "nope")}}
    assert "dataset.root" in "\n".join(errors_of(tmp_path, mnist))
    impossible = {**GOOD, "scenarios": [{"name": "c9", "kind": "classes", "classes": [9]}]}
    assert "class 9 is not in the dataset" in "\n".join(errors_of(tmp_path, impossible))


def test_batch_smaller_than_workers(tmp_path):
    joined = "\n".join(errors_of(tmp_path, {**GOOD, "methods": [{"name": "camu", "params": {"batch_size": 1}}]}))
    assert "methods.0.params.batch_size: global batch 1 is smaller than resources.num_workers=2" in joined


def test_not_a_mapping_and_bad_yaml(tmp_path):
    assert "must be a YAML mapping" in errors_of(tmp_path, "- a\n- b\n")[0]
    assert "(syntax)" in errors_of(tmp_path, "name: [unclosed\n")[0]
    with pytest.raises(JobSpecError, match="does not exist"):
        check_job(tmp_path / "missing.yaml")


def test_yaml_is_data_not_code(tmp_path):
    evil = textwrap.dedent("""
        name: !!python/object/apply:os.system ["echo pwned"]
        dataset: {name: digits}
        model: {name: mnist_cnn}
        scenarios: [{name: a, kind: random, fraction: 0.1}]
    """)
    assert "(syntax)" in errors_of(tmp_path, evil)[0]
