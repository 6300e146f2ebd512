"""Links into the MLflow UI: the address the user gave, else the tracking server's, else mlflow ui's
default; every page in model-training mode; filters that MLflow's search grammar accepts."""

from __future__ import annotations

import json
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from orchestrator.record.links import DEFAULT_UI, UI_URL_ENV, UiLinks, serve_hint, ui_base, ui_url_problem


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
    monkeypatch.delenv(UI_URL_ENV, raising=False)


def _hash_query(url: str) -> dict[str, list[str]]:
    fragment = urlsplit(url).fragment
    return parse_qs(fragment.split("?", 1)[1]) if "?" in fragment else {}


def test_the_ui_address_follows_what_the_user_gave(monkeypatch):
    assert ui_base("sqlite:////tmp/m.db") == DEFAULT_UI
    assert ui_base("http://user:secret@mlflow.example.org:8080/") == "http://mlflow.example.org:8080"  # no credentials
    assert ui_base("https://mlflow.example.org/team") == "https://mlflow.example.org/team"
    assert ui_base("sqlite:////tmp/m.db", "http://h:7000/") == "http://h:7000"
    monkeypatch.setenv(UI_URL_ENV, "http://env:5001")
    assert ui_base("http://server:5000") == "http://env:5001"
    assert ui_base("http://server:5000", "http://flag:9") == "http://flag:9"  # the flag beats the environment


def test_serve_hint_only_for_local_stores():
    assert serve_hint("sqlite:////tmp/m.db") == "mlflow ui --backend-store-uri sqlite:////tmp/m.db"
    assert serve_hint("sqlite:////tmp/m.db", "http://127.0.0.1:5055") == \
        "mlflow ui --backend-store-uri sqlite:////tmp/m.db --port 5055"
    assert serve_hint("http://server:5000") is None


@pytest.mark.parametrize("url", ["ftp://x", "localhost:5000", "http://u:p@h:5000", "http://h:5000/?a=1",
                                 "http://h:5000/#/x"])
def test_bad_ui_urls_are_refused(url):
    assert ui_url_problem(url)


def test_links_open_model_training_mode_with_the_filter():
    links = UiLinks("http://127.0.0.1:5000", "7")
    runs = links.job_runs("my-job")
    assert runs.startswith("http://127.0.0.1:5000/#/experiments/7/runs?")
    query = _hash_query(runs)
    assert query["workflowType"] == ["machine_learning"]
    assert query["searchFilter"] == ["tags.`camu.job` = 'my-job'"]
    best = _hash_query(links.best_trials("my-job", "class0"))["searchFilter"][0]
    assert best == "tags.`camu.is_best` = 'true' and tags.`camu.job` = 'my-job' and tags.`camu.scenario` = 'class0'"
    for url in (links.run("abc"), links.artifact("abc", "report/report.html")):
        assert _hash_query(url)["workflowType"] == ["machine_learning"]
    assert "/runs/abc/artifacts/report/report.html?" in links.artifact("abc", "report/report.html")


def test_compare_link_names_the_runs_and_the_experiment():
    url = UiLinks("http://h:5000", "3").compare(["a" * 32, "b" * 32])
    query = _hash_query(url)
    assert urlsplit(url).fragment.startswith("/compare-runs?")
    assert json.loads(unquote(query["runs"][0])) == ["a" * 32, "b" * 32]
    assert json.loads(unquote(query["experiments"][0])) == ["3"]


def test_filters_parse_with_mlflows_search_grammar():
    from mlflow.utils.search_utils import SearchUtils

    links = UiLinks("http://h:5000", "1")
    for url in (links.job_runs("j"), links.best_trials("j", "s")):
        parsed = SearchUtils.parse_search_filter(_hash_query(url)["searchFilter"][0])
        assert {c["key"] for c in parsed} >= {"camu.job"}
