"""Shared fixtures: small offline data, deterministic CPU torch, and the env Ray tests need."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
torch.set_num_threads(2)

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
MNIST10K = SHARED / "data" / "mnist10k"


@pytest.fixture(scope="session")
def digits():
    from camu.data import load_dataset

    return load_dataset("digits")


@pytest.fixture()
def tiny():
    """A 160-sample, 4-class synthetic set: fast enough for step-level tests."""
    from camu.data import load_dataset

    return load_dataset("synthetic", {"num_train": 160, "num_test": 40, "num_classes": 4, "image_size": 8, "seed": 3})
