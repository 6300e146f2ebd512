"""The model to unlearn, when a job loads it (``original.uri``) instead of training it.

Whatever the source (a local file, ``runs:/``, ``models:/``, ``mlflow-artifacts:/``), only a
safetensors file or a weights-only state dict is read (``camu.weights``): a pickled model, whether a
``.pt`` file or an MLflow model logged with pickle, is refused and never executed.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from torch import nn

from camu.weights import load_weights
from orchestrator.job.uris import model_source
from orchestrator.record.tracking import Tracker


def load_original_weights(tracker: Tracker, uri: str, model: nn.Module, scratch: str | Path) -> nn.Module:
    """Load the weights behind ``uri`` into ``model`` (strict); remote files pass through ``scratch``."""
    source = model_source(uri)
    if source.kind == "file":
        return load_weights(model, Path(source.location).expanduser())
    Path(scratch).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=scratch) as tmp:
        return load_weights(model, tracker.download_weights(uri, tmp))
