"""final.json marks a finished trial: written last (after the metrics are logged) and atomically, and a torn
or unreadable one reads as 'not finished' instead of crashing every later resume."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pyarrow as pa
import pytest
import torch
from torch import nn

from orchestrator import files  # write_final writes through files.atomic_write
from orchestrator.worker.finals import read_final, write_final


def test_round_trip_and_missing(tmp_path):
    assert read_final(tmp_path / "final.json") == {}
    write_final(tmp_path / "final.json", {"fa": 12.5, "ra": float("nan")})
    got = read_final(tmp_path / "final.json")
    assert got["final"] == 1.0 and got["fa"] == 12.5 and got["ra"] != got["ra"]
    assert [p.name for p in tmp_path.iterdir()] == ["final.json"]  # no temporary file left


@pytest.mark.parametrize("content", [b'{"final": 1.0, "fa": 12.', b"", b"\xff\xfe garbage", b"[1, 2]",
                                     b'{"fa": 3.0}', b'{"final": 1.0, "fa": "x"}'])
def test_a_torn_or_foreign_file_reads_as_not_finished(tmp_path, content):
    (tmp_path / "final.json").write_bytes(content)
    assert read_final(tmp_path / "final.json") == {}


def test_a_folder_in_its_place_reads_as_not_finished(tmp_path):
    (tmp_path / "final.json").mkdir()
    assert read_final(tmp_path / "final.json") == {}


def test_a_failed_write_leaves_no_file_behind(tmp_path, monkeypatch):
    """Written beside and then renamed into place: a crash mid-write never leaves a torn final.json."""
    def crash(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files.os, "replace", crash)
    with pytest.raises(OSError):
        write_final(tmp_path / "final.json", {"fa": 1.0})
    assert list(tmp_path.iterdir()) == []


def test_a_failed_write_keeps_the_previous_file_whole(tmp_path, monkeypatch):
    write_final(tmp_path / "final.json", {"fa": 1.0})
    real = files.os.fsync

    def crash(fd):
        real(fd)
        raise OSError(5, "I/O error")

    monkeypatch.setattr(files.os, "fsync", crash)
    with pytest.raises(OSError):
        write_final(tmp_path / "final.json", {"fa": 2.0})
    assert read_final(tmp_path / "final.json")["fa"] == 1.0
    assert [p.name for p in tmp_path.iterdir()] == ["final.json"]


class RecordingTracker:
    """Notes, at each call, whether final.json already existed."""

    def __init__(self, final_path):
        self.final_path, self.calls = final_path, []

    def _note(self, what):
        self.calls.append((what, self.final_path.exists()))

    def log_metrics(self, run_id, metrics, step=None):
        self._note(("metrics", tuple(sorted(metrics))))

    def log_artifact(self, run_id, path, artifact_path=None):
        self._note(("artifact", artifact_path))

    def log_parquet(self, run_id, table, artifact_file):
        self._note(("parquet", artifact_file))


def test_trial_final_is_written_after_everything_is_logged(tmp_path, monkeypatch):
    from orchestrator.worker import unlearning
    from orchestrator.worker.reporting import Timings

    monkeypatch.setattr(unlearning, "assess", lambda *a, **k: ({"fa": 5.0, "ra": 90.0}, pa.table({"x": [1]}), [1.0, 2.0], [(0, 3.0)]))
    out = tmp_path / "trial"
    out.mkdir()
    tracker = RecordingTracker(out / "final.json")
    cfg = SimpleNamespace(worker=SimpleNamespace(oracle_metrics={}, oracle_seconds=4.0), out_dir=str(out), run_id="r",
                          log_weights=True)
    result = SimpleNamespace(model=nn.Linear(2, 2), members=None, seconds=2.0, epochs=3)
    final = unlearning._final(cfg, tracker, result, None, None, torch.device("cpu"), Timings())
    assert tracker.calls and all(not existed for _, existed in tracker.calls), tracker.calls
    logged = [what for what, _ in tracker.calls if what[0] == "metrics" and "fa" in what[1]]
    assert logged, "the final metrics are logged to MLflow"
    on_disk = json.loads((out / "final.json").read_text())
    assert on_disk == {"final": 1.0, **final} and final["rte"] == 2.0
    assert sorted(p.name for p in out.iterdir()) == ["final.json", "weights.safetensors"]
