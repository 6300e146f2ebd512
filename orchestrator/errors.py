"""What the user is told when a command fails.

Expected failures (bad input, files that are not what they should be, a store or cluster that cannot
be reached) become one clear message and exit status 2; a job that started and then failed exits 1
with where to look; anything else is a bug and keeps its traceback. Every message is redacted.
The project's own errors are recognised by class (``InputProblem``, camu's ``CamuInputError``; a
``ResourceUnavailableError`` or ``ParamChanged`` is a failed job); third-party library classes only
when their library is already imported, so this module costs nothing at start-up.
"""

from __future__ import annotations

import sys
import traceback
from dataclasses import dataclass

from orchestrator.inputs import InputProblem
from orchestrator.secrets import redact

INPUT_ERROR = 2
JOB_FAILED = 1


@dataclass(frozen=True)
class Failure:
    """How to report an exception: exit status and message."""

    code: int
    message: str


def _is(exc: BaseException, module: str, name: str) -> bool:
    """isinstance(exc, module.name) when ``module`` is loaded (never imports it)."""
    mod = sys.modules.get(module)
    cls = getattr(mod, name, None) if mod is not None else None
    return isinstance(cls, type) and isinstance(exc, cls)


def _pydantic_lines(exc: BaseException) -> str:
    from orchestrator.job.messages import format_validation_error

    return "\n".join(f"  - {line}" for line in format_validation_error(exc))  # type: ignore[arg-type]


def classify(exc: BaseException) -> Failure | None:
    """The ``Failure`` for an expected error, or None for a bug."""
    for candidate in (exc, exc.__cause__):
        if candidate is None:
            continue
        failure = _classify_one(candidate)
        if failure is not None:
            return Failure(failure.code, redact(failure.message))
    return None


class JobFailedError(RuntimeError):
    """Base of the project's errors that mean a started job failed (exit 1, its runs marked FAILED)."""


class ResourceUnavailableError(JobFailedError):
    """A run could not get its workers' resources within the bounded wait."""


def _camu_input_error(exc: BaseException) -> bool:
    """isinstance(exc, camu.errors.CamuInputError), without importing camu (and torch) when no camu code ran."""
    module = sys.modules.get("camu.errors")
    return module is not None and isinstance(exc, module.CamuInputError)


def _classify_one(exc: BaseException) -> Failure | None:
    # Ray first: an error raised inside a Ray task comes back as a class deriving from both RayTaskError and the
    # original (a DataFormatError in an evaluation task): the job had started, so it failed (exit 1)
    if _is(exc, "ray.train", "TrainingFailedError") or _is(exc, "ray.tune.error", "TuneError") \
            or _is(exc, "ray.exceptions", "RayError"):
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return Failure(JOB_FAILED, f"the job failed: {first[:500]}\nits MLflow runs are marked FAILED; worker logs: "
                                   f"camu-orch logs (cluster) or the Ray session logs; continue with camu-orch resume")
    if isinstance(exc, InputProblem) or _camu_input_error(exc):
        return Failure(INPUT_ERROR, str(exc))
    if isinstance(exc, JobFailedError):
        return Failure(JOB_FAILED, str(exc))
    if _is(exc, "pydantic_core._pydantic_core", "ValidationError") or _is(exc, "pydantic", "ValidationError"):
        return Failure(INPUT_ERROR, f"invalid values:\n{_pydantic_lines(exc)}")
    if _is(exc, "mlflow.exceptions", "MlflowException"):
        return Failure(INPUT_ERROR, f"MLflow: {getattr(exc, 'message', str(exc))[:800]}")
    if _is(exc, "sqlalchemy.exc", "SQLAlchemyError") or _is(exc, "sqlite3", "DatabaseError"):
        orig = getattr(exc, "orig", None) or exc
        return Failure(INPUT_ERROR, f"the MLflow database cannot be used ({str(orig).splitlines()[0][:300]}); "
                                    f"check --tracking-uri / MLFLOW_TRACKING_URI, or move a corrupt file aside")
    if _is(exc, "pyarrow.lib", "ArrowException"):
        return Failure(INPUT_ERROR, f"not a readable Parquet/Arrow table: {str(exc)[:300]}")
    if _is(exc, "yaml", "YAMLError"):
        return Failure(INPUT_ERROR, f"not valid YAML: {exc}")
    if isinstance(exc, UnicodeDecodeError):
        return Failure(INPUT_ERROR, f"a file is not UTF-8 text ({exc.reason} at byte {exc.start})")
    if isinstance(exc, (ConnectionError, TimeoutError)) or _is(exc, "requests.exceptions", "RequestException"):
        return Failure(INPUT_ERROR, str(exc)[:800])
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        return Failure(INPUT_ERROR, f"{where}{exc.strerror or exc}")
    if isinstance(exc, LookupError):
        return Failure(INPUT_ERROR, str(exc))
    return None


def redacted_traceback(exc: BaseException) -> str:
    """The exception's traceback, redacted (it may quote URIs with credentials)."""
    return redact("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
