"""A catalogue of bad inputs, tried as a careless or hostile user would: every one is answered by the
command line with exit status 2 and a message naming the field (and the fix), never a traceback, and
nothing is created in the working folder. All in-process (CliRunner), well under a minute together."""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from typer.testing import CliRunner

from orchestrator.cli import app

runner = CliRunner()
GOOD: dict[str, Any] = {
    "name": "catalogue",
    "dataset": {"name": "digits"},
    "model": {"name": "mnist_cnn"},
    "original": {"recipe": {"epochs": 1}},
    "scenarios": [{"name": "class3", "kind": "classes", "classes": [3]},
                  {"name": "random10", "kind": "random", "fraction": 0.1}],
    "methods": [{"name": "camu", "sweep": {"space": {"lr_out": {"loguniform": [1.0e-4, 1.0e-2]}}}}],
    "sweep": {"num_samples": 2},
    "resources": {"num_workers": 1, "cpus_per_worker": 1},
    "device": "cpu",
}


def job(**changes: Any) -> dict[str, Any]:
    """GOOD with dotted-path changes applied, e.g. job(**{"resources.num_workers": -1})."""
    data = copy.deepcopy(GOOD)
    for path, value in changes.items():
        node = data
        *parents, last = path.split(".")
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
    return data


@dataclass
class Case:
    """One bad input: ``build(inputs)`` writes what it needs under ``inputs`` and returns CLI arguments."""

    id: str
    build: Callable[[Path], list[str]]
    expect: str


def validate_job(data: Any, *extra: str, name: str = "job.yaml") -> Callable[[Path], list[str]]:
    def build(inputs: Path) -> list[str]:
        path = inputs / name
        path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
        return ["validate", str(path), *extra]
    return build


def validate_with(make: Callable[[Path], dict[str, Any]]) -> Callable[[Path], list[str]]:
    """A job whose content refers to files written under ``inputs`` first."""
    def build(inputs: Path) -> list[str]:
        return validate_job(make(inputs))(inputs)
    return build


def raw_file(content: bytes, name: str = "job.yaml") -> Callable[[Path], list[str]]:
    def build(inputs: Path) -> list[str]:
        (inputs / name).write_bytes(content)
        return ["validate", str(inputs / name)]
    return build


def file_in(inputs: Path, name: str, content: bytes) -> str:
    path = inputs / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return str(path)


def indices(make_file: Callable[[Path], str], **extra: Any) -> Callable[[Path], list[str]]:
    return validate_with(lambda d: job(scenarios=[{"name": "ids", "kind": "indices", "path": make_file(d), **extra}]))


def parquet(inputs: Path, table: pa.Table) -> str:
    pq.write_table(table, inputs / "ids.parquet")
    return str(inputs / "ids.parquet")


def mnist_root(files: dict[str, bytes]) -> Callable[[Path], list[str]]:
    def make(inputs: Path) -> dict[str, Any]:
        for name, content in files.items():
            file_in(inputs / "mnist", name, content)
        return job(dataset={"name": "mnist", "root": str(inputs / "mnist"), "test_size": 0.2})
    return validate_with(make)


def weights_file(name: str, write: Callable[[Path], None]) -> Callable[[Path], list[str]]:
    def make(inputs: Path) -> dict[str, Any]:
        write(inputs / name)
        return job(original={"uri": str(inputs / name)})
    return validate_with(make)


class Evil:
    def __reduce__(self):
        return (os.system, ("touch /tmp/camu-pwned-catalogue",))


def _save_pickle(path: Path) -> None:
    torch.save({"weight": Evil()}, path)


def _right_weights(inputs: Path) -> str:
    from camu.models import build_model
    from camu.weights import save_weights

    return str(save_weights(build_model("mnist_cnn", {}, 1, 10, (8, 8)), inputs / "right.safetensors"))


def _save_wrong_shape(path: Path) -> None:
    from camu.models import build_model
    from camu.weights import save_weights

    save_weights(build_model("mnist_cnn", {}, 1, 4, (8, 8)), path)


IDX_HEADER = b"\x00\x00\x08\x03" + (10).to_bytes(4, "big") + (28).to_bytes(4, "big") + (28).to_bytes(4, "big")
DEEP = "a: " + "[" * 200 + "]" * 200 + "\n"
BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n" for p, c in zip("abcdefg", "bcdefgh"))
TARGET = {"scenario": "class3", "method": "camu", "metric": "fa", "value": 0.0, "tolerance": 1.0, "source": "official run"}
GRID = {f"w_{k}": {"grid": list(range(1, 301))} for k in ("rep_keep", "rep_forget", "out_keep", "out_forget")}

CASES = [
    # ------------------------------------------------------------------ the file itself
    Case("missing-file", lambda d: ["validate", str(d / "nope.yaml")], "does not exist"),
    Case("folder", lambda d: ["validate", str(d)], "is not a file"),
    Case("not-utf8", raw_file("name: caf\xe9\n".encode("latin-1")), "not UTF-8"),
    Case("binary", raw_file(b"\x00\x01\x02name"), "is binary"),
    Case("empty-file", raw_file(b""), "must be a YAML mapping"),
    Case("top-level-list", raw_file(b"- a\n- b\n"), "must be a YAML mapping"),
    Case("yaml-syntax", raw_file(b"name: [unclosed\n"), "(syntax)"),
    Case("duplicate-key", raw_file(b"name: a\nname: b\n"), "key 'name' appears twice"),
    Case("deep-nesting", raw_file(DEEP.encode()), "nested more than"),
    Case("python-tag", raw_file(b"name: !!python/object/apply:os.system ['touch /tmp/camu-pwned']\n"), "(syntax)"),
    Case("alias-bomb", raw_file(BOMB.encode()), "(size)"),
    Case("recursive-alias", raw_file(b"a: &a [*a]\n"), "(syntax)"),
    Case("huge-file", raw_file(b"#" * 1_100_000), "bytes"),
    # ------------------------------------------------------------------ --set overrides
    Case("set-no-equals", validate_job(GOOD, "--set", "oops"), "--set oops: use KEY=VALUE"),
    Case("set-bad-yaml", validate_job(GOOD, "--set", "methods=[unclosed"), "not valid YAML"),
    Case("set-tag", validate_job(GOOD, "--set", "name=!!python/object/apply:os.system [x]"), "not valid YAML"),
    Case("set-through-scalar", validate_job(GOOD, "--set", "name.x=1"), "name is a single value"),
    Case("set-index-out-of-range", validate_job(GOOD, "--set", "scenarios.5.fraction=0.1"), "index it with 0..1"),
    # ------------------------------------------------------------------ name
    Case("name-500-chars", validate_job(job(name="a" * 500)), "name: String should have at most 64"),
    Case("name-dotdot", validate_job(job(name="..")), "name: use letters, digits"),
    Case("name-slash", validate_job(job(name="a/b")), "name: use letters, digits"),
    Case("name-empty", validate_job(job(name="")), "name: use letters, digits"),
    Case("name-markup", validate_job(job(name="[/x]")), "(got '[/x]')"),
    # ------------------------------------------------------------------ dataset and model
    Case("dataset-unknown", validate_job(job(dataset={"name": "imagenet"})), "dataset.name: unknown dataset 'imagenet'"),
    Case("dataset-option-typo", validate_job(job(dataset={"name": "digits", "sede": 1})), "dataset.sede: unknown option"),
    Case("dataset-nan", validate_job(job(dataset={"name": "digits", "test_size": float("nan")})), "dataset.test_size: must be a finite"),
    Case("dataset-bool", validate_job(job(dataset={"name": "digits", "test_size": True})), "dataset.test_size: true is a boolean"),
    Case("dataset-setting-unknown", validate_job(job(dataset={"name": "cifar10", "root": "x", "setting": "official"})),
         "dataset.setting: "),
    Case("paper-setting-cifar-stem", validate_job(job(dataset={"name": "cifar10", "root": "x", "setting": "paper"},
                                                      model={"name": "resnet18", "stem": "cifar"})),
         "model.stem: cifar is the 32-px stem"),
    Case("dataset-huge", validate_job(job(dataset={"name": "synthetic", "num_train": 10**12})), "dataset.num_train"),
    Case("dataset-negative-seed", validate_job(job(dataset={"name": "digits", "seed": -3})), "dataset.seed"),
    Case("mnist-root-missing", validate_with(lambda d: job(dataset={"name": "mnist", "root": str(d / "none")})), "dataset.root: no mnist files"),
    Case("mnist-empty-files", mnist_root({"t10k-images-idx3-ubyte": b"", "t10k-labels-idx1-ubyte": b""}), "is not an idx file"),
    Case("mnist-truncated", mnist_root({"t10k-images-idx3-ubyte": IDX_HEADER + b"\0" * 100,
                                        "t10k-labels-idx1-ubyte": b"\x00\x00\x08\x01" + (10).to_bytes(4, "big") + b"\0" * 10}),
         "is truncated or padded"),
    Case("mnist-bad-gzip", mnist_root({"t10k-images-idx3-ubyte.gz": b"not gzip", "t10k-labels-idx1-ubyte.gz": b"x"}),
         "cannot be read"),
    Case("model-unknown", validate_job(job(model={"name": "vgg"})), "model.name: unknown model 'vgg'"),
    Case("model-bad-stem", validate_job(job(model={"name": "resnet18", "stem": "huge"})), "model.stem"),
    Case("model-negative-width", validate_job(job(model={"name": "mnist_cnn", "embedding_dim": -1})), "model.embedding_dim"),
    # ------------------------------------------------------------------ original model
    Case("uri-empty", validate_job(job(original={"uri": ""})), "original.uri: empty"),
    Case("uri-folder", validate_with(lambda d: job(original={"uri": str(d)})), "original.uri: " ),
    Case("uri-text-as-safetensors", weights_file("w.safetensors", lambda p: p.write_text("just text")), "original.uri: "),
    Case("uri-not-weights", weights_file("notes.txt", lambda p: p.write_text("x")), "is not a weights file"),
    Case("uri-pickle", weights_file("evil.pt", _save_pickle), "refused to load"),
    Case("uri-wrong-shape", weights_file("small.safetensors", _save_wrong_shape), "do not fit the model"),
    Case("uri-models-query", validate_job(job(original={"uri": "models:/evil/1?x=://"})), "is not a registered-model URI"),
    Case("uri-s3", validate_job(job(original={"uri": "s3://bucket/w.safetensors"})), "original.uri: scheme 's3'"),
    Case("uri-runs-bad-id", validate_job(job(original={"uri": "runs:/abc/model"})), "is not a run artifact URI"),
    Case("recipe-epochs-zero", validate_job(job(**{"original.recipe.epochs": 0})), "original.recipe.epochs"),
    Case("recipe-lr-inf", validate_job(job(**{"original.recipe.lr": float("inf")})), "original.recipe.lr: must be a finite"),
    Case("recipe-seed-huge", validate_job(job(**{"original.recipe.seed": 2**40})), "original.recipe.seed"),
    # ------------------------------------------------------------------ scenarios
    Case("scenarios-empty", validate_job(job(scenarios=[])), "scenarios: List should have at least 1"),
    Case("scenario-duplicate-names", validate_job(job(**{"scenarios.1.name": "class3"})), "used twice"),
    Case("scenario-bad-name", validate_job(job(**{"scenarios.0.name": "a b"})), "scenarios.0.name"),
    Case("scenario-unknown-kind", validate_job(job(**{"scenarios.0.kind": "everything"})), "scenarios.0.kind: unknown kind"),
    Case("fraction-missing", validate_job(job(scenarios=[{"name": "r", "kind": "random"}])), "scenarios.0.fraction: required"),
    Case("fraction-nan", validate_job(job(**{"scenarios.1.fraction": float("nan")})), "scenarios.1.fraction: must be a finite"),
    Case("fraction-above-one", validate_job(job(**{"scenarios.1.fraction": 1.5})), "scenarios.1.fraction"),
    Case("classes-true", validate_job(job(**{"scenarios.0.classes": [True]})), "scenarios.0.classes: booleans"),
    Case("classes-unknown", validate_job(job(**{"scenarios.0.classes": [42]})), "class 42 is not in the dataset"),
    Case("classes-twice", validate_job(job(**{"scenarios.0.classes": [3, "3"]})), "listed more than once"),
    Case("proportions-twice", validate_job(job(scenarios=[{"name": "p", "kind": "proportions",
                                                           "proportions": {3: 0.5, "3": 0.2}}])), "listed more than once"),
    Case("proportions-above-one", validate_job(job(scenarios=[{"name": "p", "kind": "proportions",
                                                               "proportions": {3: 2.0}}])), "scenarios.0.proportions.3"),
    Case("indices-missing", indices(lambda d: str(d / "none.txt")), "does not exist"),
    Case("indices-folder", indices(lambda d: str(d)), "is not a file"),
    Case("indices-binary", indices(lambda d: file_in(d, "ids.txt", b"\x00\x01\x02")), "is binary"),
    Case("indices-not-utf8", indices(lambda d: file_in(d, "ids.txt", b"1\n\xe9\n")), "not UTF-8"),
    Case("indices-beyond-int64", indices(lambda d: file_in(d, "ids.txt", f"1\n{2**70}\n".encode())), "beyond any training index"),
    Case("indices-float-text", indices(lambda d: file_in(d, "ids.txt", b"1.5\n")), "not an integer index"),
    Case("indices-corrupt-parquet", indices(lambda d: file_in(d, "ids.parquet", b"PAR1 not really")), "not a readable parquet"),
    Case("indices-parquet-nulls", indices(lambda d: parquet(d, pa.table({"index": [1, None, 3]}))), "missing value"),
    Case("indices-parquet-floats", indices(lambda d: parquet(d, pa.table({"index": [1.0, 2.7]}))), "indices must be integers"),
    Case("indices-parquet-column", indices(lambda d: parquet(d, pa.table({"id": [1, 2]}))), "has no column 'index'"),
    Case("indices-out-of-range", indices(lambda d: file_in(d, "ids.txt", b"1\n99999\n")), "out of range"),
    # ------------------------------------------------------------------ seeds
    Case("seed-negative", validate_job(job(seeds=[-1])), "seeds.0: Input should be greater than or equal to 0"),
    Case("seed-huge", validate_job(job(seeds=[2**63])), "seeds.0"),
    Case("seed-bool", validate_job(job(seeds=[True])), "seeds"),
    Case("seed-twice", validate_job(job(seeds=[1, 1])), "list each seed once"),
    Case("seeds-not-a-list", validate_job(job(seeds="zero")), "seeds"),
    # ------------------------------------------------------------------ methods and the sweep
    Case("legacy-camu-block", validate_job(job(camu={"preset": "official"})), "methods:\n      - name: camu"),
    Case("legacy-sweep-space", validate_job(job(**{"sweep.space": {"lr_out": {"uniform": [0.1, 1.0]}}})),
         "sweep.space: search spaces are per method now"),
    Case("method-unknown", validate_job(job(methods=[{"name": "gradient_magic"}])), "methods.0.name: unknown method"),
    Case("method-twice", validate_job(job(methods=[{"name": "camu"}, {"name": "camu"}])), "listed twice"),
    Case("methods-empty", validate_job(job(methods=[])), "methods: List should have at least 1"),
    Case("method-preset", validate_job(job(methods=[{"name": "camu", "preset": "best"}])), "methods.0.preset: 'best'"),
    Case("method-param-typo", validate_job(job(methods=[{"name": "scrub", "params": {"lr_typo": 1}}])),
         "methods.0.params.lr_typo: unknown parameter of scrub"),
    Case("method-param-inf", validate_job(job(**{"methods.0.params": {"lr_out": float("inf")}})), "methods.0.params.lr_out: must be a finite"),
    Case("method-param-string", validate_job(job(**{"methods.0.params": {"batch_size": "x"}})), "methods.0.params.batch_size"),
    Case("method-param-bool", validate_job(job(**{"methods.0.params": {"epochs": True}})), "methods.0.params.epochs: true is a boolean"),
    Case("method-class-only", validate_job(job(methods=[{"name": "boundary_shrink"}])),
         "boundary_shrink is defined only for classes scenarios"),
    Case("method-needs-initial", validate_with(lambda d: job(methods=[{"name": "unrolling_sgd"}],
                                                             original={"uri": _right_weights(d)})),
         "unrolling_sgd replays the original's training"),
    Case("sweep-search", validate_job(job(**{"sweep.search": "bayes"})), "sweep.search"),
    Case("sweep-negative-samples", validate_job(job(**{"sweep.num_samples": -1})), "sweep.num_samples"),
    Case("sweep-concurrency-1e6", validate_job(job(**{"sweep.max_concurrent_trials": 1e6})), "sweep.max_concurrent_trials"),
    Case("space-unknown-param", validate_job(job(**{"methods.0.sweep": {"space": {"lr": {"uniform": [0.1, 1.0]}}}})),
         "methods.0.sweep.space.lr: not a parameter of camu"),
    Case("space-unknown-kind", validate_job(job(**{"methods.0.sweep": {"space": {"lr_out": {"normal": [0, 1]}}}})), "use exactly one of"),
    Case("space-string-bounds", validate_job(job(**{"methods.0.sweep": {"space": {"lr_out": {"uniform": ["a", "b"]}}}})), "must be numbers"),
    Case("space-low-above-high", validate_job(job(**{"methods.0.sweep": {"space": {"lr_out": {"uniform": [0.1, 0.01]}}}})), "low < high"),
    Case("space-log-zero", validate_job(job(**{"methods.0.sweep": {"space": {"lr_out": {"loguniform": [0, 0.1]}}}})), "low bound must be > 0"),
    Case("space-inf-bound", validate_job(job(**{"methods.0.sweep": {"space": {"lr_out": {"uniform": [0, float("inf")]}}}})), "must be finite"),
    Case("space-int-uniform", validate_job(job(**{"methods.0.sweep": {"space": {"epochs": {"uniform": [1, 4]}}}})), "search it with randint"),
    Case("space-literal-uniform", validate_job(job(**{"methods.0.sweep": {"space": {"noise": {"uniform": [0, 1]}}}})), "is not numeric"),
    Case("space-bad-choice", validate_job(job(**{"methods.0.sweep": {"space": {"noise": {"choice": ["uniform", "cauchy"]}}}})),
         "methods.0.sweep.space.noise"),
    Case("space-empty-choice", validate_job(job(**{"methods.0.sweep": {"space": {"noise": {"choice": []}}}})), "non-empty list"),
    Case("space-beyond-range", validate_job(job(**{"methods.0.sweep": {"space": {"epochs": {"randint": [1, 500]}}}})),
         "methods.0.sweep.space.epochs"),
    Case("grid-8-billion", validate_job(job(**{"sweep.search": "grid", "methods.0.sweep": {"space": GRID}})),
         "trials per scenario and seed"),
    Case("grid-without-grid-search", validate_job(job(**{"methods.0.sweep": {"space": {"epochs": {"grid": [1, 2]}}}})),
         "needs sweep.search: grid"),
    Case("sweep-scheduler", validate_job(job(**{"sweep.scheduler": "pbt"})), "sweep.scheduler"),
    Case("objective-negative", validate_job(job(**{"sweep.objective": {"ra_max_drop": -1}})), "sweep.objective.ra_max_drop"),
    Case("selection-fraction-zero", validate_job(job(evaluation={"selection_fraction": 0})), "evaluation.selection_fraction: 0 would choose"),
    Case("selection-fraction-one", validate_job(job(evaluation={"selection_fraction": 1})), "evaluation.selection_fraction: 1 would leave"),
    # ------------------------------------------------------------------ resources
    Case("gpus-inf", validate_job(job(**{"resources.gpus_per_worker": float("inf")})), "resources.gpus_per_worker: must be a finite"),
    Case("gpus-nan", validate_job(job(**{"resources.gpus_per_worker": float("nan")})), "resources.gpus_per_worker: must be a finite"),
    Case("cpus-below-resolution", validate_job(job(**{"resources.cpus_per_worker": 1e-9})), "resources.cpus_per_worker"),
    Case("workers-negative", validate_job(job(**{"resources.num_workers": -1})), "resources.num_workers"),
    Case("fractional-gpu-ddp", validate_job(job(resources={"num_workers": 2, "gpus_per_worker": 0.5})), "fraction of a GPU"),
    Case("batch-below-workers", validate_job(job(resources={"num_workers": 4}, **{"methods.0.params": {"batch_size": 2}})),
         "global batch 2"),
    Case("cpus-beyond-machine", validate_job(job(resources={"num_workers": 64, "cpus_per_worker": 64})), "far beyond"),
    Case("concurrency-beyond-machine", validate_job(job(**{"sweep.max_concurrent_trials": 1000})), "sweep.max_concurrent_trials"),
    # ------------------------------------------------------------------ tracking, storage, device
    Case("tracking-file-store", validate_job(job(tracking={"uri": "file:///tmp/mlruns"})), "tracking.uri: file:///tmp/mlruns is a file store"),
    Case("tracking-unknown-scheme", validate_job(job(tracking={"uri": "ftp://host/x"})), "tracking.uri: scheme 'ftp'"),
    Case("tracking-sqlite-missing-folder", validate_job(job(tracking={"uri": "sqlite:////nonexistent/m.db"})), "folder /nonexistent does not exist"),
    Case("registered-model-slash", validate_job(job(tracking={"registered_model": "team/model"})), "tracking.registered_model"),
    Case("experiment-empty", validate_job(job(tracking={"experiment": ""})), "tracking.experiment"),
    Case("storage-unwritable", validate_job(job(storage={"path": "/proc/camu"})), "storage.path: cannot write"),
    Case("storage-is-file", validate_with(lambda d: job(storage={"cache_dir": file_in(d, "f", b"x")})), "storage.cache_dir: "),
    Case("storage-s3-without-cache", validate_job(job(storage={"path": "s3://bucket/runs"})), "storage.cache_dir: required"),
    Case("storage-cache-s3", validate_job(job(storage={"cache_dir": "s3://bucket/cache"})), "storage.cache_dir: s3:// is not a folder"),
    Case("storage-under-file", validate_with(lambda d: job(storage={"path": file_in(d, "g", b"x") + "/sub"})), "is a file"),
    Case("device", validate_job(job(device="tpu")), "device"),
    # ------------------------------------------------------------------ expect: targets
    Case("expect-unknown-scenario", validate_job(job(expect=[dict(TARGET, scenario="class4")])), "expect.0.scenario: unknown scenario 'class4'"),
    Case("expect-unknown-method", validate_job(job(expect=[dict(TARGET, method="scrub")])), "expect.0.method: unknown method 'scrub'"),
    Case("expect-unknown-metric", validate_job(job(expect=[dict(TARGET, metric="acc")])), "expect.0.metric: unknown metric 'acc'; choose one of ra, fa"),
    Case("expect-negative-tolerance", validate_job(job(expect=[dict(TARGET, tolerance=-1)])), "expect.0.tolerance"),
    Case("expect-no-source", validate_job(job(expect=[{k: v for k, v in TARGET.items() if k != "source"}])), "expect.0.source: required"),
]


@pytest.fixture()
def workdir(tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    return work


def _assert_answered(result, expect: str, work: Path) -> None:
    out = result.output
    assert result.exit_code == 2, out
    assert expect in out, out
    assert "Traceback" not in out and "internal error" not in out, out
    assert list(work.iterdir()) == [], "a rejected command must not create anything in the working folder"


def test_catalogue_is_large_and_distinct():
    assert len(CASES) >= 60
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input_is_answered(case, tmp_path, workdir):
    inputs = tmp_path / "in"
    inputs.mkdir()
    _assert_answered(runner.invoke(app, case.build(inputs)), case.expect, workdir)
    assert not Path("/tmp/camu-pwned-catalogue").exists()


def test_every_problem_is_listed_at_once(tmp_path, workdir):
    """Schema, registry, space and data problems of one file come in one answer (no second round)."""
    bad = job(name="a/b", model={"name": "vgg"}, methods=[{"name": "camu", "params": {"lr_typo": 1},
                                                            "sweep": {"space": {"epochs": {"uniform": [1, 3]}}}}],
              **{"resources.gpus_per_worker": float("nan"), "scenarios.0.classes": [42]})
    result = runner.invoke(app, validate_job(bad)(tmp_path))
    for expected in ("name:", "model.name: unknown model", "methods.0.params.lr_typo", "resources.gpus_per_worker",
                     "methods.0.sweep.space.epochs.uniform"):
        assert expected in result.output, result.output
    assert result.exit_code == 2


def test_debug_shows_the_traceback(tmp_path, workdir):
    result = runner.invoke(app, ["--debug", "validate", str(tmp_path / "missing.yaml")])
    assert result.exit_code == 2 and "Traceback" in result.output and "does not exist" in result.output


# ---------------------------------------------------------------------- results and resume
@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A real sqlite store holding one job run that never finished and has no job.yaml."""
    from orchestrator.record.tracking import Tracker

    folder = tmp_path_factory.mktemp("store")
    tracker = Tracker(f"sqlite:///{folder / 'mlflow.db'}")
    from orchestrator.record.identity import experiment_name

    exp = tracker.experiment(experiment_name("e", "owner"))
    from orchestrator.record.identity import run_identity_tags

    run = tracker.find_or_create_run(exp, "half", {"camu.role": "job", "camu.job": "half", "camu.submission": "s1",
                                                   **run_identity_tags()}, key="job:half:s1")
    corrupt = folder / "corrupt.db"
    corrupt.write_bytes(os.urandom(4096))
    return {"uri": tracker.uri, "run": run, "corrupt": f"sqlite:///{corrupt}", "folder": folder}


STORE_CASES = [
    ("results-no-store", lambda s, d: ["results", "x", "--tracking-uri", f"sqlite:///{d / 'none.db'}"], "no MLflow store at"),
    ("results-corrupt-db", lambda s, d: ["results", "x", "--tracking-uri", s["corrupt"]], "MLflow database cannot be used"),
    ("results-unknown-run-id", lambda s, d: ["results", "0" * 32, "--tracking-uri", s["uri"]], "no run with id"),
    ("results-quote-in-name", lambda s, d: ["results", "it's", "--tracking-uri", s["uri"]], "neither a job name"),
    ("results-unknown-name", lambda s, d: ["results", "nope", "--tracking-uri", s["uri"]], "no job run named 'nope'"),
    ("results-unfinished", lambda s, d: ["results", "half", "--tracking-uri", s["uri"]], "did not finish"),
    ("results-output-missing-folder", lambda s, d: ["results", "half", "--tracking-uri", s["uri"], "-o",
                                                    str(d / "no" / "t.json")], "--output: folder"),
    ("results-parquet-to-stdout", lambda s, d: ["results", "half", "--format", "parquet", "--tracking-uri", s["uri"]],
     "give -o FILE"),
    ("results-unreachable", lambda s, d: ["results", "x", "--tracking-uri", "http://127.0.0.1:9"], "cannot reach MLflow"),
    ("results-file-store", lambda s, d: ["results", "x", "--tracking-uri", "file:///tmp/x"], "--tracking-uri: "),
    ("resume-no-job-yaml", lambda s, d: ["resume", "half", "--tracking-uri", s["uri"]], "has no job.yaml"),
    ("resume-unknown", lambda s, d: ["resume", "nope", "--tracking-uri", s["uri"]], "no job run named"),
    ("submit-ray-client-address", lambda s, d: ["submit", "x.yaml", "--address", "ray://head:10001"], "--address"),
    ("status-no-cluster", lambda s, d: ["status", "camu-x"], "no cluster"),
]


@pytest.mark.parametrize("case", STORE_CASES, ids=lambda c: c[0])
def test_store_and_cluster_commands_are_answered(case, store, tmp_path, workdir):
    _, build, expect = case
    _assert_answered(runner.invoke(app, build(store, tmp_path)), expect, workdir)


# ---------------------------------------------------------------------- secrets
def test_no_password_in_any_printed_error(tmp_path, workdir, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "hunter2-secret")
    secret_uri = "http://alice:hunter2-secret@127.0.0.1:9"
    attempts = [
        ["results", "x", "--tracking-uri", secret_uri],
        ["--debug", "results", "x", "--tracking-uri", secret_uri],
        ["resume", "x", "--tracking-uri", secret_uri],
        validate_job(job(tracking={"uri": "ftp://alice:hunter2-secret@host/x"}), name="a.yaml")(tmp_path),
        validate_job(job(original={"uri": "s3://key:hunter2-secret@bucket/w.safetensors"}), name="b.yaml")(tmp_path),
        ["submit", *validate_job(job(tracking={"uri": secret_uri}), name="c.yaml")(tmp_path)[1:]],
    ]
    for args in attempts:
        result = runner.invoke(app, args)
        assert result.exit_code == 2, result.output
        assert "hunter2" not in result.output, result.output
        assert "***" in result.output or "scheme" in result.output, result.output
