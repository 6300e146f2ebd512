"""Between stages the driver waits until finished Train runs gave their placement groups back: an
orphaned group (its creating actor died, as a stopped trial's controller does) is removed, and a group
whose creator still lives is reported, not waited on forever. Real Ray (the session's local cluster)."""

from __future__ import annotations

import time

import pytest

pytestmark = pytest.mark.integration


def _creator(ray):
    @ray.remote(num_cpus=0)
    class Creator:
        """Stands in for a Train run's controller: an actor that reserves workers' CPUs."""

        def reserve(self, cpus: float) -> str:
            from ray.util.placement_group import placement_group

            self.pg = placement_group([{"CPU": cpus}])
            ray.get(self.pg.ready(), timeout=30)
            return self.pg.id.hex()

    return Creator


def test_orphaned_group_is_released_and_a_live_one_is_reported(ray_cluster):
    from orchestrator.placement import wait_until_released

    ray = ray_cluster
    creator = _creator(ray).remote()
    pg_id = ray.get(creator.reserve.remote(1.0))
    before = ray.available_resources().get("CPU", 0)

    ray.kill(creator)  # the creator dies; its group would stay reserved until the job ends
    start = time.monotonic()
    assert wait_until_released(timeout_s=30, interval_s=0.2) == []  # released as an orphan, not by force
    assert time.monotonic() - start < 30
    _cpus_back(ray, before + 1.0)


def test_a_group_whose_creator_lingers_is_removed_after_the_timeout(ray_cluster):
    from orchestrator.placement import wait_until_released

    ray = ray_cluster
    creator = _creator(ray).remote()
    pg_id = ray.get(creator.reserve.remote(1.0))
    before = ray.available_resources().get("CPU", 0)
    start = time.monotonic()
    assert wait_until_released(timeout_s=1.0, interval_s=0.2) == [pg_id]  # the creator lives: removed by force
    assert time.monotonic() - start >= 1.0
    _cpus_back(ray, before + 1.0)
    ray.kill(creator)


def _cpus_back(ray, expected: float) -> None:
    deadline = time.time() + 10
    while time.time() < deadline and ray.available_resources().get("CPU", 0) < expected:
        time.sleep(0.2)
    assert ray.available_resources().get("CPU", 0) == pytest.approx(expected)
