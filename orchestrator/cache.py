"""Content-addressed cache of trained originals and oracles.

The key hashes everything that determines the trained weights: dataset (name and options), model,
recipe, and the exact training indices (for an oracle, the split's retained set). A later job with
the same inputs reuses the weights instead of retraining. Entries are safetensors + JSON metadata.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from orchestrator.naming import content_hash


@dataclass
class CachedModel:
    key: str
    folder: Path

    @property
    def weights(self) -> Path:
        return self.folder / "weights.safetensors"

    @property
    def meta_path(self) -> Path:
        return self.folder / "meta.json"

    def exists(self) -> bool:
        return self.weights.exists() and self.meta_path.exists()

    def meta(self) -> dict[str, Any]:
        return json.loads(self.meta_path.read_text())

    def write_meta(self, meta: dict[str, Any]) -> None:
        tmp = self.meta_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(meta, indent=2, default=str))
        os.replace(tmp, self.meta_path)  # atomic: an entry is complete or absent


def indices_digest(indices: torch.Tensor) -> str:
    return hashlib.sha256(indices.cpu().numpy().astype("int64").tobytes()).hexdigest()[:16]


def model_key(role: str, dataset: dict[str, Any], model: dict[str, Any], recipe: dict[str, Any],
              train_indices: torch.Tensor) -> str:
    """Cache key of a trained model; ``num_workers``-style runtime options do not enter it."""
    options = {k: v for k, v in dataset["options"].items() if k != "num_workers"}
    return content_hash({"role": role, "dataset": {"name": dataset["name"], "options": options}, "model": model,
                         "recipe": recipe, "indices": indices_digest(train_indices)}, length=20)


def entry(cache_dir: str | Path, key: str) -> CachedModel:
    folder = Path(cache_dir) / key
    folder.mkdir(parents=True, exist_ok=True)
    return CachedModel(key, folder)
