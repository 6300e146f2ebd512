"""``final.json``: the marker that a trial finished, with its final metrics.

Rank 0 writes it as the very last step of a trial, after its weights, tables and metrics are logged, and
atomically (a temporary file in the same folder, then ``os.replace``): it either holds everything or does
not exist. A resumed job reads it to skip finished trials; a file that is missing, torn (a crash of an
older camu-orch mid-write, a full disk) or otherwise unreadable means "not finished", so the trial runs
again instead of every later resume crashing on it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from orchestrator.files import atomic_write

log = logging.getLogger(__name__)
FINAL_FILE = "final.json"


def write_final(path: str | Path, metrics: Mapping[str, Any]) -> Path:
    """Write ``{"final": 1.0, **metrics}`` to ``path`` atomically (same-folder temporary file, fsync,
    ``os.replace``); nothing is left behind when it fails."""
    path = Path(path)
    atomic_write(path, json.dumps({"final": 1.0, **metrics}).encode())
    return path


def read_final(path: str | Path) -> dict[str, float]:
    """The final metrics in ``path``, or ``{}`` (not finished) when the file is missing, unreadable, torn,
    or not a finished trial's record."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as err:
        log.warning("%s cannot be read (%s); the trial counts as not finished", path, err)
        return {}
    try:
        data = json.loads(text)
    except ValueError as err:
        log.warning("%s is torn or not JSON (%s); the trial counts as not finished", path, err)
        return {}
    if not isinstance(data, dict) or data.get("final") != 1.0 \
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in data.values()):
        log.warning("%s is not a finished trial's record; the trial counts as not finished", path)
        return {}
    return {k: float(v) for k, v in data.items()}
