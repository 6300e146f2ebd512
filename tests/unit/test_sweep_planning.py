"""The sweep's plumbing without running trials: the search starts from the presets, spaces become Tune
domains, ASHA reads per-epoch reports, GPU packing places N single-worker trials per GPU."""

from __future__ import annotations

import math

import pytest

from camu.methods import CamuParams
from orchestrator.driver.sweep import scheduler, search_algorithm, tune_space
from orchestrator.job.space import SearchSpace
from orchestrator.job.spec import ResourcesSpec, SweepSpec

SPACE = SearchSpace.parse({"lr_out": {"loguniform": [1.0e-5, 1.0e-2]}, "epochs": {"randint": [1, 5]},
                           "label_policy": {"choice": ["partner", "soft"]}})
PRESET = {"lr_out": 1e-3, "epochs": 2, "label_policy": "partner", "w_rep_keep": 0.5}


def test_optuna_is_told_the_presets_first():
    """The presets' results reach the study before any new trial: the search starts from what is known."""
    other = {**PRESET, "lr_out": 5e-5, "epochs": 3}
    told = [(CamuParams.model_validate(p), {"objective": o}) for p, o in [(PRESET, 1.5), (other, 0.7), ({**PRESET, "epochs": 9}, 0.1)]]
    alg = search_algorithm(SweepSpec(search="optuna"), SPACE, told)
    alg.set_search_properties("objective", "min", tune_space(SPACE))
    study = alg.searcher._ot_study
    done = [t for t in study.trials if t.value is not None]
    assert [t.params for t in done] == [{k: PRESET[k] for k in SPACE.searched}, {k: other[k] for k in SPACE.searched}]
    assert [t.value for t in done] == [1.5, 0.7]  # a point outside the space (epochs 9) is left out
    assert study.best_value == 0.7


def test_points_in_the_space():
    assert SPACE.contains(PRESET)
    assert not SPACE.contains({**PRESET, "lr_out": 0.5})
    assert not SPACE.contains({**PRESET, "label_policy": "uniform_other"})
    assert not SPACE.contains({**PRESET, "epochs": [1]})


def test_domains_and_asha():
    domains = tune_space(SPACE)
    assert domains["epochs"].lower == 1 and domains["epochs"].upper == 6  # randint bounds are inclusive
    assert math.isclose(domains["lr_out"].lower, 1e-5)
    asha = scheduler(SweepSpec(scheduler="asha", grace_period=2, reduction_factor=3), max_epochs=8)
    assert asha._max_t == 9 and asha._reduction_factor == 3  # every epoch reports, plus the final evaluation
    assert scheduler(SweepSpec(), 8) is None
    # one-epoch trials (unrolling SGD): the only rung would come after unlearning, so no early stopping
    assert scheduler(SweepSpec(scheduler="asha", grace_period=1), max_epochs=1) is None
    assert scheduler(SweepSpec(scheduler="asha", grace_period=1), max_epochs=2) is not None


def test_gpu_packing_places_n_trials_per_gpu():
    packed = ResourcesSpec(num_workers=1, cpus_per_worker=2, trials_per_gpu=4)
    assert packed.gpus_per_worker == 0.25
    assert packed.concurrent_runs(cluster_cpus=16, cluster_gpus=1) == 4
    assert packed.concurrent_runs(cluster_cpus=16, cluster_gpus=2) == 8
    assert packed.concurrent_runs(cluster_cpus=4, cluster_gpus=2) == 2  # CPUs bound it here
    from orchestrator.execution.trainer import scaling_config

    assert scaling_config(packed).resources_per_worker == {"CPU": 2, "GPU": 0.25}
    with pytest.raises(ValueError, match="trials_per_gpu"):
        ResourcesSpec(num_workers=2, trials_per_gpu=2)


def test_single_worker_trials_hold_the_workers_resources_in_their_own_process():
    """One worker: the trial computes in its Tune trial's process, which reserves that worker's CPUs and GPU
    share and gets Train's retries added to Tune's; several workers: a Train run, the driver holding no CPU."""
    from orchestrator.driver.sweep import DRIVER_MEMORY, in_trial_process, trial_driver_resources, trial_retries

    packed = ResourcesSpec(num_workers=1, cpus_per_worker=2, trials_per_gpu=4, worker_max_failures=2)
    assert in_trial_process(packed) and trial_driver_resources(packed) == {"CPU": 2, "GPU": 0.25}
    assert trial_driver_resources(ResourcesSpec(num_workers=1, cpus_per_worker=3)) == {"CPU": 3}
    assert trial_retries(SweepSpec(max_failures=1), packed) == 3
    assert trial_retries(SweepSpec(max_failures=1), ResourcesSpec(num_workers=1, worker_max_failures=-1)) == -1
    local = ResourcesSpec(num_workers=0)
    assert in_trial_process(local) and trial_driver_resources(local) == {"CPU": 0.01}
    assert trial_driver_resources(ResourcesSpec(num_workers=0, gpus_per_worker=1)) == {"CPU": 0.01, "GPU": 1}
    assert trial_retries(SweepSpec(max_failures=1), local) == 1
    ddp = ResourcesSpec(num_workers=2, cpus_per_worker=2, gpus_per_worker=1, worker_max_failures=2)
    assert not in_trial_process(ddp) and trial_driver_resources(ddp) == {"CPU": 0, "memory": DRIVER_MEMORY}
    assert trial_retries(SweepSpec(max_failures=1), ddp) == 1  # Train retries its workers itself


def test_a_trial_id_is_read_back_from_its_tune_folder_name():
    """A replayed trial reports nothing: its Tune id comes from the folder Tune named after it."""
    from orchestrator.driver.sweep import _tune_id_from_path, ordinal

    folder = "/runs/sweep-1/trial_driver_1ba02_00001_1_lr=0.0123_2026-12-06_15-53-01"
    assert _tune_id_from_path(folder) == "1ba02_00001" and ordinal("1ba02_00001") == "00001"
    assert _tune_id_from_path("/x/trial_driver_0a1b2c3d_00012_12_lr=1e-3") == "0a1b2c3d_00012"


def test_an_in_process_trial_keeps_its_checkpoint_in_its_own_folder(tmp_path):
    """The state a trial in its Tune trial's process reports is kept in its folder (Tune's folder of a sweep is
    never read back), read by the next attempt of the same trial, and removed once the trial has finished."""
    import torch

    from orchestrator.worker.reporting import RESUME_FILE, Channel

    reported = []

    class FakeTune:  # what Tune receives: the metrics, never a checkpoint
        @staticmethod
        def report(metrics, checkpoint=None):
            reported.append((metrics, checkpoint))

        @staticmethod
        def get_checkpoint():
            return None

    folder = tmp_path / "trial"
    channel = Channel(via_tune=True, resume_dir=folder)
    channel.api = FakeTune
    assert channel.resume_state() is None
    state = {"epoch": 2, "model": {"w": torch.arange(3.0)}}
    channel.report({"epoch": 2, "objective": 1.0}, state)
    assert reported == [({"epoch": 2, "objective": 1.0}, None)]
    again = Channel(via_tune=True, resume_dir=folder)
    again.api = FakeTune
    restored = again.resume_state()
    assert restored["epoch"] == 2 and torch.equal(restored["model"]["w"], torch.arange(3.0))
    assert [p.name for p in folder.iterdir()] == [RESUME_FILE]  # no staging file left
    again.finished()
    assert not (folder / RESUME_FILE).exists() and again.resume_state() is None


def test_a_trial_tune_stops_in_its_own_process_is_closed_as_stopped_or_finished(tmp_path, monkeypatch):
    """Tune ends an in-process trial it stops with SystemExit inside the report that told it so: with its
    final.json written (the scheduler's last rung came with the final report) the trial finished and is not
    closed as stopped; before that it was stopped early, its run closed as stopped (not failed) and its
    checkpoint removed. Either way the exit reaches Tune."""
    import json

    from orchestrator.driver import sweep
    from orchestrator.record.run_identity import Tag
    from orchestrator.worker.finals import FINAL_FILE
    from orchestrator.worker.reporting import RESUME_FILE

    class Tracker:
        def __init__(self):
            self.tags, self.ended = {}, None

        def set_tags(self, run_id, tags):
            self.tags.update(tags)

        def end(self, run_id, status):
            self.ended = status

    def stopped_by_tune(_config):
        raise SystemExit(0)

    monkeypatch.setattr(sweep, "unlearn_worker", stopped_by_tune)
    config = type("Config", (), {"out_dir": str(tmp_path), "run_id": "r"})()
    (tmp_path / RESUME_FILE).write_bytes(b"state")
    tracker = Tracker()
    with pytest.raises(SystemExit):
        sweep._in_trial_process(config, tracker)
    assert tracker.tags == {Tag.STOPPED_EARLY: "true"} and tracker.ended == "FINISHED"
    assert not (tmp_path / RESUME_FILE).exists()

    (tmp_path / FINAL_FILE).write_text(json.dumps({"final": 1.0, "objective": 0.5}))
    tracker = Tracker()
    with pytest.raises(SystemExit):  # finished: Tune's exit still reaches Tune, after _run_opened's bookkeeping
        sweep._in_trial_process(config, tracker)
    assert tracker.tags == {} and tracker.ended is None  # not closed as stopped
