"""camu-orch: Ray Train + Ray Tune + MLflow orchestration of the camu library."""

import os

__version__ = "0.1.0"
RAY_VERSION = "2.60.0"  # the pinned Ray: a cluster must run exactly this one (pyproject.toml, the image)

# Every process that imports the orchestrator (the CLI, Tune trial drivers, Ray Train workers) may talk
# to MLflow; none of them may ever unpickle a model from a store that others can write to. Weights are
# read as safetensors or weights-only state dicts (orchestrator.record.tracking.download_weights).
os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "false"
