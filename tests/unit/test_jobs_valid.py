"""Every shipped job file validates: schema, registries, every method's resolved configuration on every
scenario, and the data itself where it is available offline (digits; MNIST from ../shared/data/mnist10k;
the ImageNet-subset job against a tiny image tree with its own class folders)."""

from pathlib import Path

import numpy as np
import pytest
import yaml

from orchestrator.job.presets import base_params, search_space, setting
from orchestrator.job.validate import check_job
from tests.conftest import MNIST10K

JOBS = sorted((Path(__file__).resolve().parents[2] / "jobs").rglob("*.yaml"))


def test_there_are_jobs():
    names = {p.name for p in JOBS}
    assert {"quickstart.yaml", "mnist_class.yaml", "mnist_random.yaml", "cifar10_class.yaml", "cifar10_random.yaml",
            "cifar10_paper.yaml", "imagenet_subset.yaml", "mnist_imagefolder.yaml"} <= names


def _overrides(path: Path, tmp_path: Path) -> tuple[list[str], bool]:
    """(--set overrides, whether the data can be checked here) for a shipped job."""
    raw = yaml.safe_load(path.read_text())
    dataset = raw["dataset"]["name"]
    if dataset in ("digits", "synthetic"):
        return [], True
    if dataset == "fashion_mnist" and Path(raw["dataset"]["root"]).is_dir():  # Debian's dataset-fashion-mnist
        return [], True
    if dataset == "mnist" and MNIST10K.exists():
        return [f"dataset.root={MNIST10K}", "dataset.test_size=0.2"], True
    if dataset == "imagefolder":
        from PIL import Image

        classes = raw["dataset"].get("classes") or [str(i) for i in range(10)]  # no class list: MNIST digits
        for part in ("train", "val"):
            for cls in classes:
                (tmp_path / part / cls).mkdir(parents=True)
                for i in range(2):
                    Image.fromarray(np.full((20, 20, 3), 40 * i, np.uint8)).save(tmp_path / part / cls / f"{i}.png")
        return [f"dataset.root={tmp_path}", "dataset.num_workers=0"], True
    return [], False


@pytest.mark.parametrize("path", JOBS, ids=lambda p: p.name)
def test_job_validates(path, tmp_path):
    overrides, with_data = _overrides(path, tmp_path)
    job = check_job(path, check_data=with_data, local=False, overrides=overrides)
    spec = job.spec
    text = path.read_text()
    assert text.splitlines()[0].startswith("#"), "each job opens with a comment saying what it runs"
    assert f"camu-orch submit jobs/{path.name}" in text
    assert spec.name == path.stem
    for scenario in spec.scenarios:
        for method in spec.methods:  # every method resolves to a complete configuration on every scenario
            params = base_params(method, setting(spec.model.name, spec.dataset.name, scenario.kind))
            assert set(search_space(method)) <= set(params.model_dump()), (method.name, scenario.name)
    if with_data:
        assert set(job.splits) == {(s.name, seed) for s in spec.scenarios for seed in spec.seeds}
        assert all(t.num_rows == len(job.data.train) for t in job.splits.values())
