"""The job's progress display: the live line's content and remaining-time estimate, the plain lines
printed when output is not a terminal, and the libraries' chatter kept off the console."""

from __future__ import annotations

import logging

import pytest

from orchestrator import progress
from orchestrator.progress import JobProgress, quiet_libraries


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    c = Clock()
    monkeypatch.setattr(progress.time, "monotonic", c)
    return c


def test_line_shows_stage_epochs_and_remaining_from_the_pace(clock):
    p = JobProgress()
    p.begin()  # not a terminal under pytest: no live display, same state
    assert p.live is None
    p.stage(3, "oracle for class0, seed 0")
    p.start_task("training oracle", epochs=10)
    clock.now += 40
    p.epoch(4)  # 4 of 10 epochs in 40 s: 60 s left
    line = p.line()
    assert line.startswith("[3/5] training oracle · epoch 4/10 · ")  # the step first: narrow terminals cut the end
    assert "0:40 elapsed, ~1:00 left" in line
    p.epoch(99)
    assert p.epochs == (10, 10)  # never past the total
    p.start_task("decoding the train images once", 13_000, unit="images")  # a preparation counts images
    p.epoch(6_500, 13_000)
    assert p.line().startswith("[3/5] decoding the train images once · images 6500/13000 · ")


def test_sweep_counts_best_and_remaining(clock, capsys):
    p = JobProgress()
    p.stage(4, "camu on class0")
    p.start_task("camu sweep on seed 0")
    clock.now += 90
    p.sweep(done=2, running=1, stopped=1, failed=0, total=9, best=3.5)
    p.sweep(done=2, running=2, stopped=1, failed=0, total=9, best=4.0, quiet=True)  # a trial started: no line
    printed = [line for line in capsys.readouterr().out.splitlines() if "trials:" in line]
    assert printed == [("    camu sweep on seed 0 · trials: 2 done, 1 running, 1 stopped, 0 failed of 9; "
                       "best objective so far 3.50")]
    assert p.best == 3.5  # the best only improves
    # 3 trials ended in 90 s, 6 to go: 180 s
    assert p.remaining() == pytest.approx(180.0)
    assert "[4/5] camu sweep on seed 0 · trials 2/9 done, 2 running, 1 stopped, 0 failed, best 3.50" in p.line()
    assert "~3:00 left" in p.line()


def test_a_new_stage_resets_the_step(clock):
    p = JobProgress()
    p.start_task("x", epochs=3)
    p.sweep(1, 0, 0, 0, 2, 1.0, quiet=True)
    p.stage(5, "summary")
    assert p.epochs is None and p.trials is None and p.task == "" and p.remaining() is None


def test_quiet_libraries(monkeypatch):
    monkeypatch.delenv("RAY_AIR_NEW_OUTPUT", raising=False)
    monkeypatch.delenv("MLFLOW_LOGGING_LEVEL", raising=False)
    for name in ("ray.train", "optuna", "mlflow"):
        logging.getLogger(name).setLevel(logging.INFO)
    quiet_libraries()
    import os

    assert os.environ["RAY_AIR_NEW_OUTPUT"] == "0"  # Tune's legacy engine at verbose=0: no experiment box
    assert os.environ["MLFLOW_LOGGING_LEVEL"] == "WARNING"  # what MLflow reads when it (re)configures itself
    for name in ("ray.train", "ray.tune", "optuna", "mlflow"):
        assert logging.getLogger(name).getEffectiveLevel() >= logging.WARNING
    import optuna

    assert optuna.logging.get_verbosity() == optuna.logging.WARNING


def test_a_sweep_saved_by_an_older_version_resumes(capsys):
    """Tune pickles the progress callback with the sweep; one saved before a field existed must still work
    after ``camu-orch resume`` (it crashed with AttributeError on ``total``)."""
    import pickle

    from orchestrator.driver.sweep import TrialProgress

    state = TrialProgress(None, 2.0, 5).__getstate__()
    del state["total"], state["best"]  # as an older camu-orch saved it
    old = TrialProgress.__new__(TrialProgress)
    old.__dict__.update(state)
    restored = pickle.loads(pickle.dumps(old))
    restored._status([], quiet=False)
    assert restored.total == 0 and restored.best == float("inf")
    assert "trials: 0 done" in capsys.readouterr().out


def test_checkpoint_clock_attaches_a_checkpoint_once_per_interval(monkeypatch):
    from orchestrator.worker import reporting

    now = [100.0]
    monkeypatch.setattr(reporting.time, "monotonic", lambda: now[0])
    every_epoch, interval = reporting.CheckpointClock(0), reporting.CheckpointClock(30)
    due = []
    for t in (105.0, 120.0, 131.0, 140.0, 162.0):  # epoch ends
        now[0] = t
        due.append((every_epoch.due(), interval.due()))
    assert [d[0] for d in due] == [True] * 5
    assert [d[1] for d in due] == [False, False, True, False, True]  # 31 s after the start, then 31 s later


def test_a_process_keeps_the_dataset_it_loaded_for_its_next_trials():
    import torch

    from orchestrator.worker import loading
    from orchestrator.worker.wire import DataConfig, Named

    def cfg(seed: int) -> DataConfig:
        return DataConfig(dataset=Named(name="digits", options={"seed": seed}), model=Named(name="mnist_cnn"))

    first = loading.load_data(cfg(1), torch.device("cpu"))
    assert loading.load_data(cfg(1), torch.device("cpu")) is first  # a reused trial process: loaded once
    other = loading.load_data(cfg(2), torch.device("cpu"))
    assert other is not first and not torch.equal(other.train.labels, first.train.labels)
    assert len(loading._LOADED) == 1  # only the last dataset is kept


def test_the_per_epoch_objective_stays_within_its_share_of_unlearning_time():
    from orchestrator.worker.reporting import QuickBudget

    budget, computed = QuickBudget(0.05), []
    unlearn = 0.0
    for epoch in range(60):  # 2-s epochs, 0.4 s per evaluation: every epoch would cost 20%
        unlearn += 2.0
        if budget.due(unlearn):
            budget.charge(0.4)
            computed.append(epoch)
    assert computed[0] == 0 and budget.spent <= 0.05 * unlearn + 0.4  # the first is always fresh
    assert 5 <= len(computed) <= 16 and computed[-1] >= 50  # spread over the whole run, not only at its start
    long_epochs = QuickBudget(0.05)
    assert all(long_epochs.due(40.0 * (e + 1)) and long_epochs.charge(0.4) is None for e in range(10))  # always fresh
