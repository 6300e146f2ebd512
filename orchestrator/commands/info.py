"""The commands about this installation rather than a job: ``version``, ``doctor`` (can this Python run
camu-orch jobs; also the cluster preflight job) and ``ls`` (the registered datasets, models, scenarios and
methods, with each method's presets and kept differences) with the table helper it uses. They read only the
installed packages and the registries, never a job file, a store or a cluster. Named ``info`` rather than
``inspect`` so that it does not shadow the standard library's ``inspect`` where it is imported by name.
"""

from __future__ import annotations

import sys
from enum import Enum
from typing import Annotated

import typer

from orchestrator import __version__
from orchestrator.commands.options import fail


class Registry(str, Enum):
    datasets = "datasets"
    models = "models"
    scenarios = "scenarios"
    methods = "methods"


class ListFormat(str, Enum):
    table = "table"
    json = "json"


def version() -> None:
    """Print the camu-orch version."""
    import camu

    typer.echo(f"camu-orch {__version__} (camu {camu.__version__})")


DEPENDENCIES = ("torch", "torchvision", "ray", "mlflow", "pyarrow", "pandas", "pydantic", "yaml", "numpy", "sklearn",
                "xgboost", "optuna", "safetensors", "typer", "rich")


def doctor() -> None:
    """Check that this Python can run camu-orch jobs: every dependency imports, Ray is the pinned version.
    Submissions run it on the cluster first (the preflight job).

    Example: python -m orchestrator doctor
    """
    import importlib

    from orchestrator import RAY_VERSION

    problems = []
    typer.echo(f"python {sys.version.split()[0]} at {sys.executable}")
    for name in DEPENDENCIES:
        try:
            module = importlib.import_module(name)
        except Exception as err:  # noqa: BLE001 - any import failure is the answer
            problems.append(f"{name}: cannot be imported ({type(err).__name__}: {err})")
            continue
        typer.echo(f"{name:<12} {getattr(module, '__version__', '?')}")
    import camu.methods  # noqa: F401 - the project itself (from the working directory)

    ray = sys.modules.get("ray")
    if ray is not None and ray.__version__ != RAY_VERSION:
        problems.append(f"ray: {ray.__version__} is installed but camu-orch needs {RAY_VERSION}")
    if problems:
        fail("this Python cannot run camu-orch jobs:\n" + "\n".join(f"  - {p}" for p in problems)
             + "\ninstall the project's requirements (pip install -e .) in the environment that runs Ray")
    typer.echo("ok")


def list_registry(what: Annotated[Registry, typer.Argument(help="which registry to list")],
                  fmt: Annotated[ListFormat, typer.Option(
                      "--format", help="table, or json (methods: every preset per model family and scenario "
                                       "kind with its values and reference source)")] = ListFormat.table,
                  ) -> None:
    """List registered datasets, models, scenarios or methods. For methods: each one's presets per model
    family (mnist: the paper's CNN; cifar: a ResNet) with their reference source, and the differences from
    the reference it keeps on purpose.

    Example: camu-orch ls methods --format json
    """
    import json

    import camu

    registry = {"datasets": camu.DATASETS, "models": camu.MODELS, "scenarios": camu.SCENARIOS,
                "methods": camu.METHODS}[what.value]
    if what is Registry.methods:
        from orchestrator.job.presets import method_catalogue

        catalogue = method_catalogue(camu.SCENARIOS.names())
        if fmt is ListFormat.json:
            typer.echo(json.dumps(catalogue, indent=2))
            return
        for entry in catalogue:
            typer.echo(f"{entry['name']}: {entry['description']}")
            for row in _distinct_presets(entry["presets"]):
                values = ", ".join(f"{k}={v}" for k, v in row["values"].items())
                typer.echo(f"    {row['preset']} [{row['family']}; {row['kinds']}]: {values}")
                typer.echo(f"        source: {row['source']}" + (f"; note: {row['note']}" if row["note"] else ""))
            for deviation in entry["deviations"]:
                typer.echo(f"    kept difference: {deviation}")
        return
    if fmt is ListFormat.json:
        typer.echo(json.dumps(registry.describe(), indent=2))
        return
    width = max(map(len, registry.names()), default=0) + 2
    for name, description in registry.describe().items():
        typer.echo(f"{name:<{width}}{description}")


def _distinct_presets(rows: list[dict]) -> list[dict]:
    """Preset rows with the scenario kinds that share the same values merged (for the table)."""
    merged: dict[tuple, dict] = {}
    for row in rows:
        key = (row["preset"], row["family"], repr(sorted(row["values"].items())), row["source"], row["note"])
        if key in merged:
            merged[key]["kinds"] += f", {row['scenario_kind']}"
        else:
            merged[key] = {**row, "kinds": row["scenario_kind"]}
    return list(merged.values())
