"""Relearning's gap curve (the CaMU paper's relearning figure): acc(D_r sample) - acc(D_f) before relearning
and every N optimizer steps, recomputed here independently from the model's state at those steps; the
steps it is recorded at; Adam's weight decay reaching the optimizer; and the report's figure of the mean
over seeds."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from camu import build_model, forget_indices, make_split, retain_indices
from camu.relearn import RelearnParams, gap_retain_sample, relearn
from camu.training import TrainRecipe, train_classifier

CPU = torch.device("cpu")


def _setup(tiny):
    torch.manual_seed(0)
    model = build_model("mnist_cnn", {}, 1, tiny.num_classes, tiny.image_size)
    split = make_split("classes", {"classes": [1]}, tiny.train.labels, tiny.class_names, 0)
    return model, forget_indices(split), retain_indices(split)


def _argmax_accuracy(model, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Written here, not camu's: percent of argmax predictions equal to the labels, eval mode, float32."""
    was = model.training
    model.eval()
    with torch.no_grad():
        logits = model(images.float())[0].float()
    model.train(was)
    return 100.0 * (logits.argmax(1) == labels).sum().item() / len(labels)


def _images(tiny, idx: torch.Tensor) -> torch.Tensor:
    x, _ = next(iter(tiny.train.batches([idx], CPU)))
    return x


def test_gap_curve_equals_an_independent_recomputation(tiny, monkeypatch):
    model, forget, retain = _setup(tiny)
    params = RelearnParams(epochs=1, lr=1e-3, batch_size=8, weight_decay=1e-4, gap_every_batches=3,
                           gap_retain_sample=50)
    # the sample: 50 of D_r drawn with the relearn seed (recomputed here), fewer than |D_r|
    assert len(retain) > 50
    sample = retain[torch.randperm(len(retain), generator=torch.Generator().manual_seed(5))[:50].sort().values]
    assert torch.equal(gap_retain_sample(retain, 50, 5), sample)
    assert torch.equal(gap_retain_sample(retain, 10**6, 5), retain)  # all of D_r when smaller

    # record the relearned copy's weights after every optimizer step with a wrapped on_step
    import camu.relearn as relearn_module

    snapshots: dict[int, dict[str, torch.Tensor]] = {0: copy.deepcopy(model.state_dict())}

    def spy(*args, **kwargs):
        inner = kwargs["on_step"]

        def on_step(step, net):
            snapshots[step] = copy.deepcopy(net.state_dict())
            inner(step, net)

        return train_classifier(*args, **{**kwargs, "on_step": on_step})

    monkeypatch.setattr(relearn_module, "train_classifier", spy)
    found = relearn(model, tiny, forget, retain, 100.0, params, CPU, seed=5)

    labels = tiny.train.labels.cpu()
    x_r, y_r = _images(tiny, sample), labels[sample]
    x_f, y_f = _images(tiny, forget), labels[forget]
    probe = copy.deepcopy(model)
    assert len(found.gap_curve) >= 3
    for step, gap in found.gap_curve:
        probe.load_state_dict(snapshots[step])
        expected = _argmax_accuracy(probe, x_r, y_r) - _argmax_accuracy(probe, x_f, y_f)
        # camu's accuracy averages in float32; one sample of 50 moves it by 2 points
        assert gap == pytest.approx(expected, abs=1e-4), step
    # relearning changed the model between recorded steps (the curve is not one model's value repeated)
    assert any(not torch.equal(snapshots[0][k], snapshots[found.gap_curve[-1][0]][k]) for k in snapshots[0])
    # the original model is untouched; FA curve and relearn_epochs as before (FA after each epoch)
    assert found.fa_curve[0] == pytest.approx(_argmax_accuracy(model, x_f, y_f))
    assert len(found.fa_curve) == 2


@pytest.mark.parametrize("every", [1, 4, 7])
def test_gap_steps_are_multiples_up_to_the_last_step(tiny, every):
    model, forget, retain = _setup(tiny)
    params = RelearnParams(epochs=1, batch_size=8, gap_every_batches=every)
    found = relearn(model, tiny, forget, retain, 100.0, params, CPU, seed=0)
    total = -(-len(retain) // 8)  # optimizer steps of one epoch (the last batch may be smaller)
    assert [s for s, _ in found.gap_curve] == list(range(0, total // every * every + 1, every))
    if every != 4:
        return
    two = relearn(model, tiny, forget, retain, 100.0, params.model_copy(update={"epochs": 2}), CPU, seed=0)
    assert [s for s, _ in two.gap_curve] == list(range(0, 2 * total // every * every + 1, every))


def test_without_gap_option_nothing_changes(tiny):
    model, forget, retain = _setup(tiny)
    plain = relearn(model, tiny, forget, retain, 100.0, RelearnParams(epochs=2, batch_size=8), CPU, seed=0)
    with_gap = relearn(model, tiny, forget, retain, 100.0,
                       RelearnParams(epochs=2, batch_size=8, gap_every_batches=2), CPU, seed=0)
    assert plain.gap_curve == []
    # evaluating between steps draws no random numbers and leaves the model in train mode
    assert plain.fa_curve == with_gap.fa_curve and plain.relearn_epochs == with_gap.relearn_epochs
    assert RelearnParams().weight_decay == 0.0 and RelearnParams().gap_every_batches is None
    assert RelearnParams().gap_retain_sample == 2000
    with pytest.raises(ValueError):
        RelearnParams(gap_every_batches=0)


def test_on_step_leaves_training_unchanged(tiny):
    model, _, retain = _setup(tiny)
    recipe = TrainRecipe(epochs=2, batch_size=16, lr=1e-3, weight_decay=0.0, seed=1)
    a, b = copy.deepcopy(model), copy.deepcopy(model)
    seen: list[int] = []
    stats_a = train_classifier(a, tiny.train, retain, recipe, CPU)
    stats_b = train_classifier(b, tiny.train, retain, recipe, CPU, on_step=lambda s, net: seen.append(s))
    assert stats_a.losses == stats_b.losses
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert seen == list(range(1, 2 * -(-len(retain) // 16) + 1))


def test_weight_decay_reaches_adam(tiny, monkeypatch):
    model, forget, retain = _setup(tiny)
    import camu.relearn as relearn_module

    finals: dict[float, torch.Tensor] = {}

    def spy(m, *args, **kwargs):
        stats = train_classifier(m, *args, **kwargs)
        recipe = args[2]
        finals[recipe.weight_decay] = torch.cat([p.detach().flatten() for p in m.parameters()])
        return stats

    monkeypatch.setattr(relearn_module, "train_classifier", spy)
    real_adam = torch.optim.Adam
    decays: list[float] = []

    def adam(params, **kwargs):
        decays.append(kwargs.get("weight_decay", 0.0))
        return real_adam(params, **kwargs)

    monkeypatch.setattr(torch.optim, "Adam", adam)
    for wd in (0.0, 1.0):
        relearn(model, tiny, forget, retain, 100.0, RelearnParams(epochs=2, batch_size=8, lr=1e-2, weight_decay=wd),
                CPU, seed=0)
    assert decays == [0.0, 1.0]
    norm0, norm1 = finals[0.0].norm().item(), finals[1.0].norm().item()
    # a huge L2 term pulls the weights toward zero: clearly smaller than without it
    assert norm1 < 0.9 * norm0, (norm0, norm1)


# ----------------------------------------------------------------------------- the report
def _gap_source():
    from orchestrator.record.report.source import MethodDetail, ReportSource
    from tests.unit.test_report import summary_fixture

    source = ReportSource.from_summary(summary_fixture(), job="fixture")
    sc = source.scenarios[0]  # class0; random10 keeps no gap curves
    rng = np.random.default_rng(0)
    steps = [0, 100, 200, 300]
    for method in sc.methods:
        sc.details[method] = MethodDetail(f"r-{method}", "t0", relearn_gap={
            seed: [(s, float(v)) for s, v in zip(steps, rng.uniform(-5, 40, len(steps)))] for seed in (0, 1, 2)})
    sc.reference_gap = {"oracle": {seed: [(s, 30.0 + seed) for s in steps] for seed in (0, 1, 2)},
                        "original": {0: [(s, 0.5) for s in steps]}}
    return source, sc, steps


def test_report_draws_the_gap_figure_as_the_mean_over_seeds(tmp_path):
    from PIL import Image

    from orchestrator.record.report import render_source
    from orchestrator.record.report.figures import relearning_gap, styles

    source, sc, steps = _gap_source()
    outcome = render_source(source, tmp_path / "report.html", figures_dir=tmp_path / "figures")
    assert "class0-relearning_gap" in outcome.figures
    assert "random10-relearning_gap" in outcome.missing
    pixels = np.asarray(Image.open(tmp_path / "figures" / "class0-relearning_gap.png").convert("L"))
    assert (pixels < 128).mean() > 0.005, "an empty figure"
    text = (tmp_path / "report.html").read_text()
    assert "Relearning gap" in text and "no run has a relearning gap curve" in text  # random10 says why

    fig = relearning_gap(sc, styles(sc.methods))
    ax = fig.axes[0]
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    for method, detail in sc.details.items():
        expected = [sum(dict(detail.relearn_gap[s])[t] for s in (0, 1, 2)) / 3 for t in steps]
        line = lines[f"{method} (3 seeds)"]
        assert list(line.get_xdata()) == steps
        assert list(line.get_ydata()) == pytest.approx(expected)
    oracle = lines["oracle (retrain) (3 seeds)"]
    assert list(oracle.get_ydata()) == pytest.approx([31.0] * len(steps))
    assert oracle.get_color() == "black" and oracle.get_linestyle() == "--"
    assert list(lines["original (1 seed)"].get_ydata()) == pytest.approx([0.5] * len(steps))
    assert "points" in ax.get_ylabel() and "batches" in ax.get_xlabel()


def test_source_reads_gap_curves_of_every_seed(tmp_path):
    """load_source's detail reader: each method's chosen run on every seed, the references' on every seed,
    and a job without gap curves costs one look-up per run (the sweep seed's)."""
    from orchestrator.record.report.source import ReportSource, _details
    from tests.unit.test_report import summary_fixture

    source = ReportSource.from_summary(summary_fixture(), job="fixture")
    sc = source.scenarios[0]
    sc.run_id = "scenario-run"
    chosen = {(r["method"], r["seed"]): r["run_id"] for r in sc.rows if r["is_best"] and r["method"] in sc.methods}
    store = {(run, "relearn_gap"): [(0, 10.0 + seed), (100, 5.0 + seed)] for (m, seed), run in chosen.items()}
    store.update({("scenario-run", f"oracle.seed{s}.relearn_gap"): [(0, 30.0), (100, 29.0 + s)] for s in (0, 1, 2)})

    class Store:
        def __init__(self, data):
            self.data, self.asked = data, []

        def metric_history(self, run_id, key):
            self.asked.append((run_id, key))
            return self.data.get((run_id, key), [])

        def download(self, *args):
            raise FileNotFoundError

    tracker = Store(store)
    _details(tracker, sc, tmp_path, [])
    for method in sc.methods:
        assert sorted(sc.details[method].relearn_gap) == [0, 1, 2]
        assert sc.details[method].relearn_gap[2] == store[(chosen[(method, 2)], "relearn_gap")]
    assert sc.reference_gap["oracle"] == {s: [(0, 30.0), (100, 29.0 + s)] for s in (0, 1, 2)}
    assert "original" not in sc.reference_gap  # the original is not relearned

    empty = Store({})
    bare = ReportSource.from_summary(summary_fixture(), job="fixture").scenarios[0]
    bare.run_id = "scenario-run"
    _details(empty, bare, tmp_path, [])
    gap_reads = [a for a in empty.asked if a[1].endswith("relearn_gap")]
    assert len(gap_reads) == len(bare.methods) + 2  # the sweep seed only: methods, original, oracle
    assert all(not d.relearn_gap for d in bare.details.values()) and bare.reference_gap == {}


def test_trial_logs_the_gap_curve_by_batch(tmp_path, monkeypatch):
    """_final logs relearn_gap with step = the batch index, beside relearn_fa by epoch."""
    from types import SimpleNamespace

    import pyarrow as pa

    from orchestrator.worker import unlearning
    from orchestrator.worker.reporting import Timings
    from orchestrator.worker.unlearning import _final

    gap = [(0, 40.0), (100, 12.5), (200, 3.0)]
    monkeypatch.setattr(unlearning, "assess", lambda *a, **k: ({"fa": 1.0}, pa.table({"x": [1]}), [1.0, 50.0], gap))
    logged: list[tuple[str, dict, int | None]] = []
    tracker = SimpleNamespace(log_metrics=lambda run, m, step=None: logged.append((run, dict(m), step)),
                              log_artifact=lambda *a, **k: None, log_parquet=lambda *a, **k: None)
    cfg = SimpleNamespace(worker=SimpleNamespace(oracle_metrics={}, oracle_seconds=10.0), out_dir=str(tmp_path),
                          run_id="trial-run", log_weights=False)
    result = SimpleNamespace(model=torch.nn.Linear(2, 2), members=None, seconds=2.0, epochs=3)
    _final(cfg, tracker, result, None, None, CPU, Timings())
    assert [(m["relearn_gap"], step) for _, m, step in logged if "relearn_gap" in m] == [(v, s) for s, v in gap]
    assert [(m["relearn_fa"], step) for _, m, step in logged if "relearn_fa" in m] == [(1.0, 0), (50.0, 1)]


def test_reference_evaluation_returns_the_oracles_gap(tmp_path):
    """evaluate_weights (the references' Ray task, run here in-process): the oracle's entry holds the gap
    curve next to its FA curve; the original is not relearned (its FA is relearning's target)."""
    from camu.data import load_dataset
    from camu.scenarios import save_split
    from camu.weights import save_weights
    from orchestrator.job.spec import EvaluationSpec, ObjectiveSpec
    from orchestrator.worker.evaluation import evaluate_weights
    from orchestrator.worker.wire import Named, WorkerConfig

    options = {"num_train": 160, "num_test": 40, "num_classes": 4, "image_size": 8, "seed": 3}
    data = load_dataset("synthetic", options)
    split = make_split("classes", {"classes": [1]}, data.train.labels, data.class_names, 0)
    split_path = str(save_split(split, tmp_path / "split.parquet"))
    torch.manual_seed(0)
    model = build_model("mnist_cnn", {}, 1, data.num_classes, data.image_size)
    weights = str(save_weights(model, tmp_path / "w.safetensors"))
    relearn_opts = RelearnParams(epochs=1, batch_size=8, weight_decay=1e-4, gap_every_batches=5)
    worker = WorkerConfig(dataset=Named(name="synthetic", options=options), model=Named(name="mnist_cnn"),
                          device="cpu", split_path=split_path, original_weights=weights, seed=0,
                          scenario_kind="classes", oracle_metrics={}, oracle_seconds=1.0, objective=ObjectiveSpec(),
                          evaluation=EvaluationSpec(relearn=relearn_opts), tracking_uri="file:///nonexistent")
    out = evaluate_weights(worker, {"original": weights, "oracle": weights})
    assert out["original"]["gap"] == [] and out["original"]["curve"] == []
    steps = [s for s, _ in out["oracle"]["gap"]]
    assert steps[0] == 0 and steps[1:] == list(range(5, steps[-1] + 1, 5)) and len(steps) >= 3
    assert len(out["oracle"]["curve"]) == 2
