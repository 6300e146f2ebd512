"""The one unlearning loop every method runs through.

``run_unlearning`` makes the trainable copy of the original, builds the method's optimizers, restores
a resume state, times the unlearning (reporting excluded), runs the method's epochs and reports each
one through ``ctx.on_epoch``. The method's own code only sees ``Run`` (``camu.methods.run``), whose helpers
carry what must be the same everywhere:

- data parallel: global batches are drawn from generators that depend only on (seed, tag, epoch), each
  rank takes its strided share, per-sample losses are reduced as ``sum * world_size / global_batch``
  and gradients averaged over the group (``sync_gradients``), so W workers at global batch B compute
  exactly what one worker computes (the gradient of the global mean), whatever the share sizes;
- on augmented data (``ImageData.augmented``) every training batch gets the epoch's per-sample draw of
  the view's augmentation (random resized crops or pad crops, + flips), indexed by sample so that it
  does not depend on the world size;
- on CUDA every forward runs under bf16 autocast (unless the job's precision is fp32) with channels_last
  inputs;
- per-step losses stay on the device and cross the group and the host once per epoch.
"""

from __future__ import annotations

from typing import Any

import torch

from camu.methods.base import METHODS, UnlearningMethod
from camu.methods.context import MethodParams, Stopwatch, UnlearnContext, UnlearnResult, trainable_copy
from camu.methods.run import Run
from camu.runtime import sync_batch_norm


def _state(run: Run, epoch: int, unlearn_seconds: float) -> dict[str, Any]:
    """What a resume needs: weights, optimizers, method state, and the unlearning time spent so far (a
    resumed run's time is the whole run's, not the part after the interruption)."""
    return {"model": run.model.state_dict(), "optimizers": {k: o.state_dict() for k, o in run.optimizers.items()},
            "epoch": epoch, "extra": run.extra, "unlearn_seconds": unlearn_seconds}


def run_unlearning(method: UnlearningMethod, params: MethodParams, ctx: UnlearnContext) -> UnlearnResult:
    """Unlearn ``ctx.forget`` from a copy of ``ctx.original`` with ``method``; the original is never modified."""
    model = method.adapt(trainable_copy(ctx.original, ctx.device), ctx, params)
    if ctx.shard.world_size > 1 and ctx.sync_batchnorm:
        model = sync_batch_norm(model)
    run = Run(ctx, model, method.optimizers(model, params))
    start, before = 0, 0.0
    if ctx.resume_state is not None:
        model.load_state_dict(ctx.resume_state["model"])
        for name, opt in run.optimizers.items():
            opt.load_state_dict(ctx.resume_state["optimizers"][name])
        run.extra = dict(ctx.resume_state.get("extra", {}))
        start = int(ctx.resume_state["epoch"]) + 1
        before = float(ctx.resume_state.get("unlearn_seconds", 0.0))
    history: dict[str, list[float]] = {}
    reporting = 0.0
    with Stopwatch(ctx.device) as watch:
        method.prepare(run, params)
        for epoch in range(start, method.num_epochs(params)):
            run.epoch = epoch
            model.train()
            method.epoch(run, params, epoch)
            losses = run.take_losses()
            for name, values in losses.items():
                history.setdefault(name, []).extend(values)
            if ctx.on_epoch is not None:
                so_far = before + watch.elapsed() - reporting
                with Stopwatch(torch.device("cpu")) as report:
                    metrics = {name: sum(v) / len(v) for name, v in losses.items() if v}
                    ctx.on_epoch(epoch, metrics, _state(run, epoch, so_far), model)
                reporting += report.seconds
    return UnlearnResult(method.finish(run, params), before + watch.seconds - reporting, history,
                         method.num_epochs(params),
                         method.members(run), reporting)


def run_method(name: str, params: dict | MethodParams | None, ctx: UnlearnContext) -> UnlearnResult:
    """Validate ``params`` for method ``name`` and run it through the shared loop."""
    cls = METHODS.get(name)
    if not isinstance(params, cls.Params):  # a dict (or None) from a script; the orchestrator sends the model
        params = cls.Params.model_validate(params or {})
    return run_unlearning(cls(), params, ctx)
