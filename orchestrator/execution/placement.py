"""Releasing the resources of Ray Train runs that ended without releasing them.

A Train V2 run reserves its workers' CPUs/GPUs in a placement group created by the run's controller
actor. When Tune stops a trial (ASHA, the end of a sweep, an error) the controller dies with the trial,
but a placement group created by an actor lives until its *job* ends; Train's own cleaner removes it
only when Ray's state API (the dashboard) is up, which a local `ray.init` without a dashboard lacks.
The next stage then waits forever for resources nobody uses (the hang of the flagship job).

``PlacementGroupReaper`` runs in the job's driver and removes, every second, the placement groups of
this job whose creating actor is dead. It reads creator information from the GCS table through Ray's
internal accessor (not in the public table); Ray is pinned exactly, and any failure to read only
disables the reaper with a warning.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import ray
from typing_extensions import Self

log = logging.getLogger(__name__)
NIL_ACTOR = b"\xff"  # a placement group created by a driver (no actor) has an all-0xff creator id


def _live_groups() -> list[Any]:
    """This job's live (not removed), non-detached placement groups, as GCS table entries."""
    from ray.core.generated import gcs_pb2

    table = gcs_pb2.PlacementGroupTableData
    live = (table.PENDING, table.PREPARED, table.CREATED, table.RESCHEDULING)
    accessor = ray._private.state.state._connect_and_get_accessor()
    job = ray.get_runtime_context().get_job_id()
    groups = (table.FromString(raw) for raw in accessor.get_placement_group_table())
    return [pg for pg in groups if pg.creator_job_id.hex() == job and pg.state in live and not pg.is_detached]


def _created_by_actor(pg: Any) -> bool:
    return bool(pg.creator_actor_id) and set(pg.creator_actor_id) != set(NIL_ACTOR)


def held_placement_groups() -> list[str]:
    """One line per live placement group of this job: what it reserves and whether its creator lives
    (named in the error of a run that could not start, so the holder of the resources is visible)."""
    from ray.core.generated import gcs_pb2

    out = []
    for pg in _live_groups():
        cpus = sum(b.unit_resources.get("CPU", 0.0) for b in pg.bundles)
        gpus = sum(b.unit_resources.get("GPU", 0.0) for b in pg.bundles)
        state = gcs_pb2.PlacementGroupTableData.PlacementGroupState.Name(pg.state)
        creator = (f"actor {pg.creator_actor_id.hex()[:12]} ({'dead' if pg.creator_actor_dead else 'alive'})"
                   if _created_by_actor(pg) else "driver")
        out.append(f"{pg.placement_group_id.hex()[:12]} {pg.name or '-'} {state} {cpus:g} CPU {gpus:g} GPU, "
                   f"created by {creator}")
    return out


def orphaned_placement_groups() -> list[str]:
    """Hex ids of this job's live placement groups whose creating actor has died."""
    return [pg.placement_group_id.hex() for pg in _live_groups() if _created_by_actor(pg) and pg.creator_actor_dead]


def release_orphaned_placement_groups() -> int:
    """Remove the orphaned placement groups of this job; returns how many were removed."""
    from ray.util.placement_group import PlacementGroup

    removed = 0
    for pg_id in orphaned_placement_groups():
        ray.util.remove_placement_group(PlacementGroup(ray.PlacementGroupID(bytes.fromhex(pg_id))))
        log.info("released placement group %s of a Train run that ended", pg_id)
        removed += 1
    return removed


def _actor_created_groups() -> list[str]:
    """Hex ids of this job's live placement groups created by an actor (a Train run's controller)."""
    return [pg.placement_group_id.hex() for pg in _live_groups() if _created_by_actor(pg)]


def wait_until_released(timeout_s: float = 20.0, interval_s: float = 0.5) -> list[str]:
    """Between stages (driver only: no Train run of this job is running then): wait until every placement
    group a finished Train run created is gone, releasing orphaned ones as they appear, and after
    ``timeout_s`` remove what is still held. Tune stops an early-stopped trial's process asynchronously
    and a stopped trial's controller can outlive its trial, keeping its workers' CPUs reserved; without
    this the next stage would wait for (and time out on) resources nobody uses. Returns the ids removed
    by force (the caller says so); never raises."""
    import time

    from ray.util.placement_group import PlacementGroup

    if not ray.is_initialized():
        return []
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            release_orphaned_placement_groups()
            held = _actor_created_groups()
            if not held:
                return []
            if time.monotonic() >= deadline:
                for pg_id in held:
                    ray.util.remove_placement_group(PlacementGroup(ray.PlacementGroupID(bytes.fromhex(pg_id))))
                    log.info("removed placement group %s: its Train run ended %.0f s ago", pg_id, timeout_s)
                return held
            time.sleep(interval_s)
    except Exception as err:  # noqa: BLE001 - a safeguard must not take the job down
        log.warning("could not check that the previous stage released its resources: %s", err)
        return []


class PlacementGroupReaper:
    """A driver-side daemon thread calling ``release_orphaned_placement_groups`` every ``interval_s``."""

    def __init__(self, interval_s: float = 1.0) -> None:
        self.interval_s = interval_s
        self.released = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="camu-pg-reaper", daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.released += release_orphaned_placement_groups()
            except Exception as err:  # noqa: BLE001 - never let the reaper take the job down
                if not ray.is_initialized():
                    return
                log.warning("placement-group reaper disabled: %s", err)
                return
