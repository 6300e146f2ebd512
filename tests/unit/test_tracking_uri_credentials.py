"""A tracking URI never carries a password: it would be written wherever the URI travels (the trial
configuration Ray stores on shared storage, a job's environment)."""

from __future__ import annotations

import pytest

from orchestrator.job.uris import tracking_uri_problem


@pytest.mark.parametrize("uri", ["http://alice:s3cret@mlflow.example:5000", "https://alice@mlflow.example",
                                 "postgresql://alice:s3cret@db.example/mlflow"])
def test_credentials_in_a_tracking_uri_are_refused_with_the_fix(uri):
    problem = tracking_uri_problem(uri)
    assert problem is not None and "carries credentials" in problem
    assert "s3cret" not in problem and "***@" in problem
    assert ("MLFLOW_TRACKING_PASSWORD" in problem) == uri.startswith("http")


@pytest.mark.parametrize("uri", ["http://mlflow.example:5000", "postgresql://alice@db.example/mlflow"])
def test_uris_without_a_password_stay_accepted(uri):
    assert tracking_uri_problem(uri) is None
