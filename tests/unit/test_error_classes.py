"""Exit codes follow error classes: every input error of camu and of the orchestrator exits 2 (bad input),
every failure of a started job exits 1, whatever module the class lives in."""

from __future__ import annotations

import pytest

from camu.data.datasets import DataFormatError
from camu.errors import CamuInputError
from camu.scenarios import ScenarioError
from camu.weights import UnsafeWeightsError
from orchestrator.errors import INPUT_ERROR, JOB_FAILED, JobFailedError, ResourceUnavailableError, classify
from orchestrator.inputs import InputError, InputProblem
from orchestrator.job.spec import JobSpecError
from orchestrator.job.uris import UriError
from orchestrator.record.tracking import ParamChanged


@pytest.mark.parametrize("exc", [
    ScenarioError("classes: [12] are not classes of this dataset"),
    DataFormatError("dataset.root: x is not an idx file"),
    UnsafeWeightsError("w.pt: refused to load"),
    UriError("scheme 'ftp' is not supported"),
    InputError("--address", ["--address: not a Jobs API address"]),
    JobSpecError("job.yaml", ["seeds: give at least one seed"]),
])
def test_input_errors_exit_2_with_their_message(exc: Exception) -> None:
    failure = classify(exc)
    assert failure is not None and failure.code == INPUT_ERROR
    assert str(exc).splitlines()[0] in failure.message


@pytest.mark.parametrize("exc", [ResourceUnavailableError("no workers within 60 s"),
                                 ParamChanged("r" * 32, {"lr": ("0.1", "0.2")})])
def test_failures_of_a_started_job_exit_1(exc: Exception) -> None:
    failure = classify(exc)
    assert failure is not None and failure.code == JOB_FAILED


def test_a_new_error_class_is_classified_by_its_base_not_its_module() -> None:
    """A subclass defined anywhere (here, in a test module) gets its base's exit code."""

    class SomewhereElse(CamuInputError):
        pass

    class AlsoElsewhere(InputProblem):
        pass

    class Stopped(JobFailedError):
        pass

    assert classify(SomewhereElse("x")).code == INPUT_ERROR
    assert classify(AlsoElsewhere("x")).code == INPUT_ERROR
    assert classify(Stopped("x")).code == JOB_FAILED
    assert classify(RuntimeError("a bug")) is None  # anything else keeps its traceback


def test_an_input_error_raised_inside_a_ray_task_is_a_failed_job() -> None:
    """ray.get re-raises a task's error as a class deriving from RayTaskError and the original: the job had
    started, so it exits 1 with where to look, not 2."""
    from ray.exceptions import RayTaskError

    wrapped = RayTaskError("evaluate_weights", "Traceback ...", ScenarioError("bad classes")).as_instanceof_cause()
    assert isinstance(wrapped, ScenarioError)
    failure = classify(wrapped)
    assert failure.code == JOB_FAILED and "continue with camu-orch resume" in failure.message


def test_job_spec_errors_are_input_errors_with_every_problem() -> None:
    err = JobSpecError("job.yaml", ["a: one", "b: two"])
    assert isinstance(err, InputError) and err.path == "job.yaml" and err.errors == ["a: one", "b: two"]
    assert str(err) == "job.yaml: 2 problem(s)\n  - a: one\n  - b: two"
