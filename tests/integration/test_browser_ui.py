"""The browser tier: a small real job, then `mlflow ui` on its store, driven in headless Chromium
(Debian's `chromium`, through Playwright; nothing downloads a browser) through the links camu-orch
printed and wrote, asserting what a user sees. Screenshots go to ``test-artifacts/browser/`` (or
``$CAMU_TEST_ARTIFACTS/browser``). Skipped cleanly when no Chromium is installed."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.record.identity import experiment_name
from tests.integration.conftest import in_job_folder

CHROMIUM = next((p for p in (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")) if p), None)
pytestmark = [pytest.mark.integration, pytest.mark.browser,
              pytest.mark.skipif(CHROMIUM is None, reason="no Chromium installed (Debian: apt install chromium)")]
ARTIFACTS = Path(os.environ.get("CAMU_TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts")) / "browser"
JOB = {
    "name": "ui",
    "dataset": {"name": "digits"},
    "model": {"name": "mnist_cnn"},
    "original": {"recipe": {"epochs": 3, "batch_size": 64}},
    "scenarios": [{"name": "class3", "kind": "classes", "classes": [3]}],
    "seeds": [0],
    "methods": [{"name": "camu", "params": {"epochs": 2}},
                {"name": "finetune", "params": {"epochs": 1, "batch_size": 128}}],
    "sweep": {"num_samples": 1},
    "resources": {"num_workers": 0},
    "tracking": {"experiment": "ui"},
    "device": "cpu",
}
ROW = "div[role='row']"
EXPAND = "button[data-component-id$='runnamecellrenderer.tsx_46']"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _line(output: str, label: str) -> str:
    found = re.search(rf"^{re.escape(label)}\s+(\S+)$", output, re.MULTILINE)
    assert found, f"{label!r} not printed:\n{output[-3000:]}"
    return found.group(1)


@pytest.fixture(scope="module")
def served(ray_cluster, tmp_path_factory):
    """Run the job (links for the UI on a free port), then serve its store with `mlflow ui`."""
    work = tmp_path_factory.mktemp("ui")
    (work / "ui.yaml").write_text(yaml.safe_dump(JOB))
    port = _free_port()
    with in_job_folder(work):
        submitted = CliRunner().invoke(app, ["submit", "ui.yaml", "--ui-url", f"http://127.0.0.1:{port}"])
    assert submitted.exit_code == 0, submitted.output[-3000:]
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "ui", "--backend-store-uri",
                               f"sqlite:///{work / 'mlflow.db'}", "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=work, start_new_session=True)
    import requests

    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            if requests.get(f"http://127.0.0.1:{port}/health", timeout=2).ok:
                break
        except requests.RequestException:
            time.sleep(1)
    else:
        server.kill()
        pytest.fail("mlflow ui did not start in 90 s")
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
    yield {"output": submitted.output, "client": client, "work": work, "port": port}
    server.terminate()
    server.wait(timeout=30)


@pytest.fixture(scope="module")
def page(served):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        tab = browser.new_page(viewport={"width": 1600, "height": 1000})
        tab.set_default_timeout(45_000)
        yield tab
        browser.close()


def _row(page, name: str):
    return page.locator(ROW).filter(has=page.get_by_text(name, exact=True))


def _open(page, parent: str, child: str) -> None:
    """Show ``parent``'s nested runs (the UI remembers expanded rows between pages: click only if needed)."""
    _row(page, parent).first.wait_for()
    time.sleep(1)
    if not _row(page, child).first.is_visible():
        _row(page, parent).first.locator(EXPAND).click()
    _row(page, child).first.wait_for()


def _visible_run_names(page) -> set[str]:
    return {t.strip() for t in page.locator(f"{ROW} a[href*='/runs/']").all_inner_texts()}


def _runs(served, query: str):
    exp = served["client"].get_experiment_by_name(experiment_name("ui", "owner"))
    return served["client"].search_runs([exp.experiment_id], query, max_results=500)


def test_printed_link_opens_the_runs_table_with_nested_runs(served, page):
    link = _line(served["output"], "runs in the UI:")
    assert link.startswith(f"http://127.0.0.1:{served['port']}/#/experiments/") and "workflowType=machine_learning" in link
    page.goto(link)
    _row(page, "ui").first.wait_for()
    assert "workflowType=machine_learning" in page.url
    body = page.inner_text("body")
    assert "Runs" in body and "Token usage" not in body  # the runs table, not the GenAI overview
    _open(page, "ui", "class3")  # the job run holds its scenario ...
    _open(page, "class3", "class3/camu/seed0/preset")  # ... which holds every trial
    names = _visible_run_names(page)
    trials = {r.info.run_name for r in _runs(served, "tags.`camu.role` = 'trial'")}
    assert trials <= names, trials - names
    page.screenshot(path=str(ARTIFACTS / "runs-nested.png"))


def test_best_trials_filter_shows_only_the_chosen_configurations(served, page):
    link = _line(served["output"], "best trials:")
    page.goto(link)
    best = {r.info.run_name for r in _runs(served, "tags.`camu.is_best` = 'true'")}
    assert {n.split("/")[1] for n in best} == {"camu", "finetune"}
    page.get_by_text("matching runs").wait_for()  # (the UI counts the parent shown for context too)
    for name in best:
        _open(page, "class3", name)
    shown = {n for n in _visible_run_names(page) if n.startswith("class3/")}
    assert shown == best, shown
    page.screenshot(path=str(ARTIFACTS / "best-trials.png"))


def test_compare_view_of_the_chosen_configurations(served, page):
    parent = _runs(served, "tags.`camu.role` = 'job'")[0]
    note = parent.data.tags["mlflow.note.content"]
    compare = re.search(r"\[class3: compare the chosen configurations\]\((\S+)\)", note)
    assert compare, note
    page.goto(compare.group(1))
    page.get_by_text("Comparing 2 Runs").wait_for()
    text = page.inner_text("body")
    for needle in ("camu.lr_out", "finetune.lr", "avg_gap", "mia_efficacy", "class3/camu/seed0/", "class3/finetune/seed0/"):
        assert needle in text, needle
    best = {r.info.run_id: r for r in _runs(served, "tags.`camu.is_best` = 'true'")}
    for run in best.values():  # the final metric values as the run recorded them
        assert f"{run.data.metrics['avg_gap']:.4g}"[:4] in text.replace(",", "")
    page.screenshot(path=str(ARTIFACTS / "compare.png"), full_page=True)


def test_report_artifact_renders_with_its_figures(served, page):
    link = _line(served["output"], "report in the UI:")
    page.goto(link)
    frame = None
    deadline = time.time() + 45
    while frame is None and time.time() < deadline:
        frame = next((f for f in page.frames if "Unlearning report" in (f.content() or "")), None)
        time.sleep(0.5)
    assert frame is not None, "the report did not render in the artifact viewer"
    sizes = frame.locator("img").evaluate_all("els => els.map(e => [e.complete, e.naturalWidth])")
    assert len(sizes) >= 4 and all(done and width > 300 for done, width in sizes), sizes
    page.screenshot(path=str(ARTIFACTS / "report-in-mlflow.png"))
    local = Path(_line(served["output"], "report:"))
    page.goto(local.as_uri())
    page.get_by_text("Unlearning report: ui").wait_for()
    assert "Forgetting vs utility" in page.inner_text("body")
    page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)
