"""Pipeline stage 1 (with the splits): an image folder decoded once, by Ray tasks over the cluster's CPUs, into
the job's decoded-once cache (``camu.data.prepared``) before any training or trial reads it.

Why Ray tasks and not Ray Data: the product is a set of files (one uint8 shard, its sha256, per task) in a
folder every node mounts (``check_storage`` requires a shared cache on a multi-node cluster), not a stream to
consume. A task decodes its shard's JPEGs, writes the shard into the staging folder and returns only its
count and sha256, so no pixel crosses the object store (Ray Data would carry every decoded block through it,
2.5 GB for Imagenette at 256 px, spilling on a small store); Ray places the tasks on whichever node has a
free CPU and reruns a task whose node died. The driver holds the split's lock meanwhile (trials and other
jobs that need the same split wait and then open it), then writes the labels and the manifest and renames
the folder into place, exactly as a local build does.

This runs before any stage holds resources: run from inside a trial, tasks would wait for CPUs that the
sweep's own trials hold. A trial that finds no prepared split (a script, a job whose cache cannot be
written) still builds it with its node's processes, or falls back to decoding files at every pass.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import ray

from camu.data.datasets import splits_to_prepare
from camu.data.prepared import SHARD_IMAGES, Chunk, PrepareReport, decode_and_write_shard, prepare
from orchestrator.driver.context import JobRun, data_config
from orchestrator.progress import PROGRESS, say
from orchestrator.worker.loading import dataset_options

MIN_SHARD_IMAGES = 256  # below this a task's start costs more than its decoding


def shard_size(images: int, cpus: float) -> int:
    """Images per shard: two tasks per CPU of the cluster where the split is large enough, so that every
    CPU decodes and the last tasks finish close together; between ``MIN_SHARD_IMAGES`` and ``SHARD_IMAGES``."""
    per_task = math.ceil(images / max(1.0, 2 * cpus))
    return int(min(SHARD_IMAGES, max(MIN_SHARD_IMAGES, per_task)))


def ray_shards(on_progress: Callable[[int, int, float], None] | None = None,
               cpus_per_task: float = 1.0) -> Callable[..., list[dict[str, Any]]]:
    """A shard builder (``camu.data.prepared.ShardBuilder``) running one Ray task per shard; ``on_progress``
    gets (images done, images in all, seconds so far) as tasks finish."""

    def build(staging: Path, chunks: Sequence[Chunk], decode: Callable[[str], Any], side: int
              ) -> list[dict[str, Any]]:
        task = ray.remote(num_cpus=cpus_per_task, max_retries=2)(decode_and_write_shard)
        sizes, pending = {}, []
        for number, files in chunks:
            ref = task.remote(str(staging), number, list(files), decode, side)
            sizes[ref], pending = len(files), [*pending, ref]
        total, done, entries, start = sum(sizes.values()), 0, [], time.perf_counter()
        try:
            while pending:
                ready, pending = ray.wait(pending, num_returns=1)
                entries.append(ray.get(ready[0]))
                done += sizes[ready[0]]
                if on_progress is not None:
                    on_progress(done, total, time.perf_counter() - start)
        except BaseException:
            for ref in pending:  # a failed or interrupted build: stop the rest (its staging folder is removed)
                ray.cancel(ref, force=True)
            raise
        return entries

    return build


def prepare_data(ctx: JobRun) -> list[PrepareReport]:
    """Prepare every split of the job's dataset that takes the decoded-once cache (none for in-memory datasets);
    returns what was built (empty when every split was ready)."""
    spec = ctx.spec
    cache, splits = splits_to_prepare(spec.dataset.name, dataset_options(data_config(spec, ctx.cache_dir)))
    if cache is None:
        return []
    cpus = ray.cluster_resources().get("CPU", 1.0)
    built = []
    for name, split in zip(("train", "val"), splits, strict=False):
        said = [0.0]

        def progress(done: int, total: int, seconds: float, name: str = name, said: list[float] = said) -> None:
            PROGRESS.epoch(done, total)
            if seconds - said[0] >= 10 or done == total:  # the rate in the log, every 10 s at most
                said[0] = seconds
                say(f"    decoding {name}: {done}/{total} images, {done / max(seconds, 1e-9):.0f} images/s")

        PROGRESS.start_task(f"decoding the {name} images once", len(split.files), unit="images")
        try:
            folder, report = prepare(cache, split.files, split.options, split.decode, split.side,
                                     builder=ray_shards(progress), shard_images=shard_size(len(split.files), cpus),
                                     workers=int(cpus))
        except ray.exceptions.RayTaskError:
            raise  # an image that cannot be decoded (its error names the file), not a cache that cannot be written
        except OSError as err:
            say(f"    the decoded-once cache cannot be written ({cache}: {err.strerror or err}); trials decode the "
                f"image files at every pass instead")
            return built
        if report is None:
            say(f"    {name}: {len(split.files)} images decoded once before, read from {folder}")
        else:
            built.append(report)
            say(f"    {name}: {report.images} images decoded once in {report.seconds:.1f} s ({report.rate:.0f} "
                f"images/s, Ray tasks on {cpus:g} CPUs), {report.bytes / 2**20:.0f} MiB in {folder}")
    return built
