"""The comparison report built from a stored summary fixture: every figure that a summary supports is
drawn (a real PNG with ink on it), the page's tables are ``results --by method``, unfinished trials
are said, the sweep's importance and the membership score follow their formulas, and the page is
self-contained."""

from __future__ import annotations

import base64
import io
import json
import math
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from orchestrator.record import summary as results
from orchestrator.record.report import render_source
from orchestrator.record.report.figures import importance
from orchestrator.record.report.page import _fmt
from orchestrator.record.report.source import ReportSource, membership_score


def _metrics(rng: np.random.Generator, fa: float, ta: float, seconds: float) -> dict[str, float]:
    m = {"ra": 97 + rng.normal(0, 0.5), "fa": fa, "ta": ta, "ta_retained": ta + 1, "ta_forgotten": fa,
         "mia_official": 0.5 + rng.normal(0, 0.02), "mia_efficacy": 10 + rng.normal(0, 2), "mia_auc": 0.55,
         "avg_gap": abs(fa) / 4 + abs(97 - ta) / 4, "unlearn_seconds": seconds, "rte": 30.0 / seconds,
         "objective": abs(fa) + rng.uniform(0, 3), "selection_fraction": 0.5, "final": 1.0}
    return m


def summary_fixture() -> pa.Table:
    """Two scenarios, two methods, three seeds, a sweep of five trials (one failed, one stopped)."""
    rng = np.random.default_rng(0)
    rows = []
    for scenario in ("class0", "random10"):
        for seed in (0, 1, 2):
            forgotten = 0.0 if scenario == "class0" else 96.0
            rows.append(results.reference_row(scenario, "original", seed, {**_metrics(rng, 99.5, 97.5, 1.0),
                                                                            "ta_forgotten": 99.0}, "r-orig", 0))
            oracle = _metrics(rng, forgotten, 97.0, 30.0)
            rows.append(results.reference_row(scenario, "oracle", seed, oracle, "r-oracle", 30.0))
            for method, lr in (("camu", 1e-3), ("finetune", 1e-2)):
                m = _metrics(rng, 5.0 + seed, 96.0, 2.0 + seed)
                rows.append(results.trial_row(scenario, method, seed, "preset", m, f"r-{method}-p{seed}", {"lr": lr}))
        for method in ("camu", "finetune"):
            for i, lr in enumerate((1e-4, 3e-4, 1e-2, 3e-2, 1e-1)):
                trial = f"t{i}"
                m = _metrics(rng, 50 * lr, 95.0 + 10 * lr, 1.0 + i)
                rows.append(results.trial_row(scenario, method, 0, trial, m if i < 4 else {}, f"r-{method}-{i}",
                                              {"lr": lr, "epochs": 1 + i % 2}, failed=(i == 4 and method == "camu")))
            for seed in (1, 2):
                rows.append(results.trial_row(scenario, method, seed, "t0", _metrics(rng, 0.1, 95.0, 1.0),
                                              f"r-{method}-rep{seed}", {"lr": 1e-4, "epochs": 1}))
            results.mark_chosen(rows, scenario, method, "t0")
    for row in rows:  # random removal forgets no class: no forgotten-class test accuracy
        if row["scenario"] == "random10":
            row["ta_forgotten"] = float("nan")
    return results.to_table(rows)


class _Page(HTMLParser):
    """The tables (rows of cell texts) and images of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self.images: list[str] = []
        self.external: list[str] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "img":
            self.images.append(a.get("src") or "")
        elif tag == "br" and self._cell is not None:
            self._cell.append(" ")
        if tag in ("script", "link", "iframe") or (tag == "img" and not (a.get("src") or "").startswith("data:")):
            self.external.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append(" ".join("".join(self._cell).split()))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    summary = summary_fixture()
    source = ReportSource.from_summary(summary, job="fixture")
    outcome = render_source(source, out / "report.html", figures_dir=out / "figures")
    page = _Page()
    page.feed((out / "report.html").read_text())
    return {"summary": summary, "outcome": outcome, "page": page, "out": out, "source": source}


def test_every_figure_a_summary_supports_is_drawn_with_ink(built):
    from PIL import Image

    expected = {f"{s}-{f}" for s in ("class0", "random10") for f in ("tradeoff", "frontier", "sweep-camu",
                                                                      "sweep-finetune")}
    assert expected <= set(built["outcome"].figures), built["outcome"].figures
    # a summary alone has no curves or per-sample tables: those figures are absent, and the page says why
    assert {f"{s}-{f}" for s in ("class0", "random10")
            for f in ("pareto", "epochs", "membership", "relearning", "relearning_gap")} \
        == set(built["outcome"].missing)
    assert len(built["page"].images) == len(expected)
    for src in built["page"].images:
        png = base64.b64decode(src.split(",", 1)[1])
        pixels = np.asarray(Image.open(io.BytesIO(png)).convert("L"))
        assert pixels.shape[0] > 200 and pixels.shape[1] > 300
        assert (pixels < 128).mean() > 0.005, "an empty figure"
    for key in expected:
        assert (built["out"] / "figures" / f"{key}.png").stat().st_size > 5000
        assert "<svg" in (built["out"] / "figures" / f"{key}.svg").read_text()[:2000]
    text = (built["out"] / "report.html").read_text()
    assert "Not drawn: no per-epoch metrics were read" in text and "the job did not ask for relearning" in text


def test_the_page_is_self_contained(built):
    assert built["page"].external == []
    text = (built["out"] / "report.html").read_text()
    assert not re.search(r"""src=['"](?!data:)""", text), "a resource the page would fetch"
    assert "<script" not in text


def test_tables_are_results_by_method(built):
    by = results.by_method(built["summary"]).to_pylist()
    comparison = [t for t in built["page"].tables if t and t[0][:3] == ["method", "configuration", "trial"]]
    assert len(comparison) == 2
    shown = [(table[0], row) for table in comparison for row in table[1:]]
    assert len(shown) == len(by)
    for (header, cells), row in zip(shown, by):
        name = "oracle (retrain)" if row["method"] == "oracle" else row["method"]
        assert cells[:5] == [name, row["config"], row["trial_id"], str(row["seeds"]), str(row["trials"])]
        for label, key in (("FA", "fa"), ("avg gap", "avg_gap"), ("time (s)", "unlearn_seconds")):
            column = next(i for i, h in enumerate(header) if h.startswith(label + " ") or h == label)
            assert cells[column] == _fmt(row[key], row[f"{key}_std"]), (label, cells, row)
            if row["seeds"] == 3:  # mean +- std over the seeds, recomputed here from the summary rows
                values = [r[key] for r in built["summary"].to_pylist() if r["scenario"] == row["scenario"]
                          and r["method"] == row["method"] and r["trial_id"] == row["trial_id"]
                          and (r["is_best"] or row["config"] != "best") and r["status"] == "finished"]
                mean, std = np.mean(values), np.std(values, ddof=1)
                assert cells[column] == _fmt(float(mean), float(std))


def test_unfinished_trials_are_said(built):
    text = (built["out"] / "report.html").read_text()
    # camu's fifth sweep trial failed, finetune's was stopped: each scenario says so and counts them
    assert text.count("trial(s) of this scenario did not finish") == 2
    status = [t for t in built["page"].tables if t and t[0] == ["method", "finished", "stopped", "failed"]]
    # 3 presets + 4 finished sweep trials + 2 replicates
    assert ["camu", "9", "0", "1"] in status[0] and ["finetune", "9", "1", "0"] in status[0]


def test_forgotten_class_accuracy_only_for_class_removal(built):
    comparison = [t for t in built["page"].tables if t and t[0][:3] == ["method", "configuration", "trial"]]
    assert any(h.startswith("TA forgotten") for h in comparison[0][0])
    assert not any(h.startswith("TA forgotten") for h in comparison[1][0])


def test_importance_is_spearman_rho_or_eta():
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 1, 12)
    y = list(-3 * x + rng.normal(0, 0.3, 12))

    def ranks(v):  # independent: average ranks by sorting (no ties here)
        order = np.argsort(v)
        r = np.empty(len(v))
        r[order] = np.arange(1, len(v) + 1)
        return r

    rx, ry = ranks(x), ranks(np.asarray(y))
    rho = 1 - 6 * np.sum((rx - ry) ** 2) / (len(x) * (len(x) ** 2 - 1))  # the textbook formula without ties
    assert importance(list(x), y) == pytest.approx(abs(rho))
    groups = ["a", "b", "a", "c", "b", "a", "c", "c", "b", "a", "b", "c"]
    y2 = np.asarray([{"a": 1.0, "b": 2.0, "c": 5.0}[g] for g in groups]) + rng.normal(0, 0.1, 12)
    means = {g: y2[[i for i, h in enumerate(groups) if h == g]].mean() for g in set(groups)}
    ss_between = sum(groups.count(g) * (m - y2.mean()) ** 2 for g, m in means.items())
    ss_total = ((y2 - y2.mean()) ** 2).sum()
    assert importance(groups, list(y2)) == pytest.approx(math.sqrt(ss_between / ss_total))
    assert math.isnan(importance([1, 2], [1.0, 2.0]))  # too few trials to say anything


def test_membership_score_is_the_logit_of_the_true_class_confidence():
    p = np.asarray([0.5, 0.9, 0.01, 0.999], dtype=np.float32)
    expected = [math.log(float(q) / (1 - float(q))) for q in p]
    assert membership_score(p) == pytest.approx(expected, rel=1e-5)
    assert np.isfinite(membership_score(np.asarray([0.0, 1.0], dtype=np.float32))).all()


def test_summary_only_source_guesses_the_scenario_kind_and_sweep_seed(built):
    kinds = {sc.name: sc.kind for sc in built["source"].scenarios}
    assert kinds == {"class0": "classes", "random10": "random"}
    assert {sc.seed for sc in built["source"].scenarios} == {0}


def test_params_of_the_sweep_figure_are_the_varied_ones(built):
    from orchestrator.record.report.figures import sweep_table

    sc = built["source"].scenarios[0]
    rows, varied = sweep_table(sc, "camu")
    assert varied == ["epochs", "lr"]
    assert len(rows) == 5  # preset + 4 finished sweep trials on seed 0 (the failed one has no objective)
    assert all(json.loads(r["params"])["lr"] == r["_params"]["lr"] for r in rows)


def test_report_of_a_missing_job_is_a_clear_error(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from orchestrator.cli import app

    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    missing = runner.invoke(app, ["report", "nope"])
    assert missing.exit_code == 2 and "error:" in missing.output and "Traceback" not in missing.output
    bad_url = runner.invoke(app, ["report", "nope", "--ui-url", "ftp://x"])
    assert bad_url.exit_code == 2 and "--ui-url" in bad_url.output
    bad_out = runner.invoke(app, ["report", "nope", "-o", str(tmp_path / "r.pdf")])
    assert bad_out.exit_code == 2 and "--output" in bad_out.output
    assert not list(Path(tmp_path).iterdir())  # nothing written, no store created


def test_expect_targets_table_shows_pass_and_fail(tmp_path):
    """A job's expect: targets appear in their scenario's section with the columns results --check prints,
    the measured mean +- std recomputed here from the summary rows, and the source HTML-escaped."""
    from orchestrator.job.spec import ExpectSpec

    summary = summary_fixture()
    rows = summary.to_pylist()
    fa = [r["fa"] for r in rows if r["scenario"] == "class0" and r["method"] == "camu" and r["is_best"]]
    mean, std = float(np.mean(fa)), float(np.std(fa, ddof=1))
    digits = 3 if abs(mean) < 1 else 2
    targets = [ExpectSpec(scenario="class0", method="camu", metric="fa", value=round(mean, 1), tolerance=0.5,
                          source="Fig. 3 <read by eye>"),
               ExpectSpec(scenario="class0", method="oracle", metric="ra", value=50.0, tolerance=1.0,
                          source="paper Table 2")]
    source = ReportSource.from_summary(summary, job="fixture", expect=targets)
    render_source(source, tmp_path / "report.html")
    text = (tmp_path / "report.html").read_text()
    page = _Page()
    page.feed(text)
    tables = [t for t in page.tables if t and t[0][:3] == ["scenario", "method", "metric"]]
    assert len(tables) == 1  # the random10 scenario has no targets: no table there
    header, *body = tables[0]
    assert header == ["scenario", "method", "metric", "target", "measured", "seeds", "result", "source"]
    assert body[0] == ["class0", "camu", "fa", f"{round(mean, 1):g} +- 0.5",
                       f"{mean:.{digits}f} +- {std:.{digits}f}", "3", "PASS", "Fig. 3 <read by eye>"]
    assert body[1][:3] == ["class0", "oracle", "ra"] and body[1][6] == "FAIL"
    assert "Fig. 3 &lt;read by eye&gt;" in text and "1 of 2 targets met" in text
