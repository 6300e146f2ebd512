"""CaMU (Causal Machine Unlearning, arXiv 2401.17504) as described in shared/docs/camu-method.md.

Each step takes a batch of B counterfactual tuples (x_f, x_cf, y_cf) and an independent batch of
B partner-pool samples (x_s, y_s), then
  1. representation level, optimizer 1 (Adam, lr_rep):
       L_rep = w_rep_keep * KL_sum(sm(f0.emb(x_s)) || sm(f.emb(x_s)))
             + w_rep_forget * KL_sum(sm(f0.emb(x_cf)) || sm(f.emb(x_f)))
  2. output level, optimizer 2 (a second Adam on the same parameters, lr_out), forward recomputed:
       L_out = w_out_keep * CE(f(x_s), y_s) + w_out_forget * CE(f(x_f), y_cf)

Efficiency: f0 is frozen and x_cf is fixed for an epoch, so the targets sm(f0.emb(.)) are computed
once per pairing (once per run unless partners are redrawn), never per step. x_s and x_f share one
forward pass when the model has no BatchNorm (batch statistics would otherwise couple them).
Data parallel: each rank takes its slice of the global batch; KL sums are scaled by the world size
so averaged gradients equal the single-process gradient at the same global batch.
"""

from __future__ import annotations

import time
from typing import ClassVar, Literal

import torch
import torch.distributed as dist
from pydantic import Field
from torch import nn

from camu.counterfactual import (
    LabelPolicy,
    NoiseKind,
    Pairing,
    counterfactual_images,
    make_pairing,
    sample_noise,
    soft_targets,
)
from camu.losses import cross_entropy, kl_sum
from camu.methods.base import (
    METHODS,
    MethodParams,
    Stopwatch,
    UnlearnContext,
    UnlearnResult,
    frozen_copy,
    trainable_copy,
)
from camu.models import has_batch_norm
from camu.runtime import Shard, autocast, global_batches, place_input, sync_gradients

TARGET_BATCH = 512  # batch size of the one-off frozen-model passes


class CamuParams(MethodParams):
    """Every knob the sweep may search; defaults are the official MNIST class-removal setting."""

    w_rep_keep: float = Field(0.5, ge=0, le=100, description="weight of KL on D_s representations")
    w_rep_forget: float = Field(0.5, ge=0, le=100, description="weight of KL pulling f.emb(x_f) to f0.emb(x_cf)")
    w_out_keep: float = Field(0.9, ge=0, le=100, description="weight of CE on (x_s, y_s)")
    w_out_forget: float = Field(0.01, ge=0, le=100, description="weight of CE on (x_f, y_cf)")
    lr_rep: float = Field(4e-4, gt=0, le=1.0, description="Adam learning rate of the representation step")
    lr_out: float = Field(1e-3, gt=0, le=1.0, description="Adam learning rate of the output step")
    weight_decay: float = Field(1e-4, ge=0, le=1.0, description="Adam weight decay of both optimizers")
    epochs: int = Field(2, ge=1, le=200, description="passes over the counterfactual tuples")
    batch_size: int = Field(32, ge=1, le=65536, description="global batch B (tuples and D_s samples per step)")
    noise: NoiseKind = Field("uniform", description="distribution of eps: uniform U[0,s), gaussian N(0,s^2), none")
    noise_scale: float = Field(1.0, ge=0, le=100, description="scale s of eps")
    mix: float = Field(0.0, ge=0, le=1, description="blend of x_f into the partner: x_cf = (1-mix) x_s + mix x_f + eps")
    label_policy: LabelPolicy = Field("partner", description="partner | uniform_other | soft")
    pool_ratio: float = Field(1.0, gt=0, le=100, description="|D_s| / |D_f|")
    redraw_partners: bool = Field(False, description="draw a new D_s and pairing every epoch")
    forget_repeat: int = Field(1, ge=1, le=100, description="repeat D_f this many times (official CIFAR-100 class: 10)")
    batch_forward: Literal["auto", "always", "never"] = Field(
        "auto", description="one forward over [x_s; x_f]: auto = when the model has no BatchNorm")


OFFICIAL_SETTINGS: dict[tuple[str, str], dict[str, float | int]] = {
    ("mnist", "random"): {"epochs": 10, "lr_out": 5e-4, "lr_rep": 4e-4},
    ("mnist", "class"): {"epochs": 2, "lr_out": 1e-3, "lr_rep": 4e-4},
    ("cifar", "random"): {"epochs": 10, "lr_out": 1e-4, "lr_rep": 1e-5},
    ("cifar", "class"): {"epochs": 2, "lr_out": 5e-5, "lr_rep": 1e-5},
}


def official_params(dataset: str, scenario_kind: str) -> CamuParams:
    """The official configuration for a dataset family and scenario (class removal vs the rest)."""
    family = "mnist" if dataset in {"mnist", "fashion_mnist", "digits", "synthetic"} else "cifar"
    kind = "class" if scenario_kind == "classes" else "random"
    extra = {"forget_repeat": 10} if dataset == "cifar100" and kind == "class" else {}
    return CamuParams(**OFFICIAL_SETTINGS[(family, kind)], **extra)


class _Targets:
    """Frozen-model targets for one pairing, indexed by tuple / pool position (kept on the device)."""

    def __init__(self, cf_rep: torch.Tensor, pool_rep: torch.Tensor, cf_label: torch.Tensor) -> None:
        self.cf_rep, self.pool_rep, self.cf_label = cf_rep, pool_rep, cf_label


@METHODS.register("camu", "CaMU: counterfactual representation + output alignment (two optimizers)")
class Camu:
    """CaMU unlearning; see the module docstring for the math."""

    Params: ClassVar[type[MethodParams]] = CamuParams

    def run(self, ctx: UnlearnContext, params: CamuParams) -> UnlearnResult:  # type: ignore[override]
        device = ctx.device
        f0 = frozen_copy(ctx.original, device)
        model = trainable_copy(ctx.original, device)
        opt_rep = torch.optim.Adam(model.parameters(), lr=params.lr_rep, weight_decay=params.weight_decay)
        opt_out = torch.optim.Adam(model.parameters(), lr=params.lr_out, weight_decay=params.weight_decay)
        start = 0
        if ctx.resume_state is not None:
            model.load_state_dict(ctx.resume_state["model"])
            opt_rep.load_state_dict(ctx.resume_state["opt_rep"])
            opt_out.load_state_dict(ctx.resume_state["opt_out"])
            start = int(ctx.resume_state["epoch"]) + 1
        together = params.batch_forward == "always" or (params.batch_forward == "auto" and not has_batch_norm(model))
        history: dict[str, list[float]] = {"loss_rep": [], "loss_out": []}
        reporting = 0.0
        pairing = targets = None
        with Stopwatch(device) as watch:
            for epoch in range(start, params.epochs):
                if targets is None or params.redraw_partners:
                    pairing = self._pairing(ctx, params, epoch)
                    targets = self._targets(ctx, params, f0, pairing, epoch)
                rep, out = self._epoch(ctx, params, model, opt_rep, opt_out, pairing, targets, epoch, together)
                history["loss_rep"] += rep
                history["loss_out"] += out
                t0 = time.perf_counter()
                ctx.report(epoch, {"loss_rep": sum(rep) / max(len(rep), 1), "loss_out": sum(out) / max(len(out), 1)},
                           {"model": model.state_dict(), "opt_rep": opt_rep.state_dict(),
                            "opt_out": opt_out.state_dict(), "epoch": epoch})
                reporting += time.perf_counter() - t0
        return UnlearnResult(model, watch.seconds - reporting, history)

    @staticmethod
    def _pairing(ctx: UnlearnContext, params: CamuParams, epoch: int) -> Pairing:
        g = ctx.epoch_generator(1, epoch if params.redraw_partners else 0)
        return make_pairing(ctx.forget, ctx.retain, ctx.data.train.labels.cpu(), ctx.data.num_classes,
                            params.pool_ratio, params.forget_repeat, params.label_policy, g)

    @staticmethod
    @torch.no_grad()
    def _targets(ctx: UnlearnContext, params: CamuParams, f0: nn.Module, pairing: Pairing, epoch: int) -> _Targets:
        """One pass of f0 over every x_cf and every D_s sample (the only f0 forwards of the epoch)."""
        device, source = ctx.device, ctx.data.train
        g = ctx.epoch_generator(2, epoch if params.redraw_partners else 0)
        cf_rep, cf_soft, pool_rep = [], [], []
        for pos in torch.split(torch.arange(len(pairing.forget)), TARGET_BATCH):
            x_s = source.fetch(pairing.partner[pos], device)
            x_f = source.fetch(pairing.forget[pos], device) if params.mix > 0 else x_s
            noise = sample_noise(x_s.shape, params.noise, params.noise_scale, g, device)
            with autocast(device):
                logits, emb = f0(place_input(counterfactual_images(x_s, x_f, noise, params.mix), device))
            cf_rep.append(torch.softmax(emb.float(), dim=1))
            if params.label_policy == "soft":
                y_f = ctx.data.train.labels[pairing.forget[pos].to(ctx.data.train.labels.device)].to(device)
                cf_soft.append(soft_targets(logits, y_f))
        for idx in torch.split(pairing.pool, TARGET_BATCH):
            with autocast(device):
                _, emb = f0(place_input(source.fetch(idx, device), device))
            pool_rep.append(torch.softmax(emb.float(), dim=1))
        cf_label = torch.cat(cf_soft) if cf_soft else pairing.cf_label.to(device)
        return _Targets(torch.cat(cf_rep), torch.cat(pool_rep), cf_label)

    @staticmethod
    def _epoch(ctx: UnlearnContext, params: CamuParams, model: nn.Module, opt_rep: torch.optim.Optimizer,
               opt_out: torch.optim.Optimizer, pairing: Pairing, targets: _Targets, epoch: int,
               together: bool) -> tuple[list[float], list[float]]:
        device, shard, source = ctx.device, ctx.shard, ctx.data.train
        g = ctx.epoch_generator(3, epoch)
        tuple_batches = global_batches(len(pairing.forget), params.batch_size, g, min_size=shard.world_size)
        keep_batches = _cycled_batches(len(pairing.pool), params.batch_size, len(tuple_batches), g)
        # Every index the epoch needs goes to the data's device in one copy, so that steps never wait on
        # small host-to-device transfers: positions into the targets and sample indices into the source.
        local_t = _to_device_batches([shard.take(b) for b in tuple_batches], device)
        local_k = _to_device_batches([shard.take(b) for b in keep_batches], device)
        index_device = source.images.device if hasattr(source, "images") else torch.device("cpu")
        forget_idx = pairing.forget.to(index_device)
        pool_idx = pairing.pool.to(index_device)
        forget_stream = source.batches([forget_idx[b.to(index_device)] for b in local_t], device)
        keep_stream = source.batches([pool_idx[b.to(index_device)] for b in local_k], device)
        labels_dev = targets.cf_label
        rep_losses, out_losses = [], []
        for t_dev, k_dev, (x_f, _), (x_s, y_s) in zip(local_t, local_k, forget_stream, keep_stream):
            x_f, x_s = place_input(x_f, device), place_input(x_s, device)

            # [1] representation level: KL to the frozen targets, optimizer 1.
            (_, emb_s), (_, emb_f) = _forward_pair(model, x_s, x_f, device, together)
            loss_rep = shard.world_size * (
                params.w_rep_keep * kl_sum(targets.pool_rep.index_select(0, k_dev), emb_s)
                + params.w_rep_forget * kl_sum(targets.cf_rep.index_select(0, t_dev), emb_f))
            opt_rep.zero_grad(set_to_none=True)
            loss_rep.backward()
            sync_gradients(model.parameters(), shard)
            opt_rep.step()

            # [2] output level: forward recomputed after step 1, optimizer 2.
            (logits_s, _), (logits_f, _) = _forward_pair(model, x_s, x_f, device, together)
            loss_out = (params.w_out_keep * cross_entropy(logits_s, y_s)
                        + params.w_out_forget * cross_entropy(logits_f, labels_dev.index_select(0, t_dev)))
            opt_out.zero_grad(set_to_none=True)
            loss_out.backward()
            sync_gradients(model.parameters(), shard)
            opt_out.step()
            rep_losses.append(loss_rep.detach() / shard.world_size)
            out_losses.append(loss_out.detach())
        return _global_losses(rep_losses, out_losses, shard)


def _global_losses(rep: list[torch.Tensor], out: list[torch.Tensor], shard: Shard) -> tuple[list[float], list[float]]:
    """Per-step losses of the whole global batch (KL sums add up over ranks, CE means average),
    with one collective and one host sync per epoch, not per step."""
    if not rep:
        return [], []
    losses = torch.stack([torch.stack(rep), torch.stack(out)])
    if shard.world_size > 1:
        dist.all_reduce(losses)
        losses[1] /= shard.world_size
    return losses[0].tolist(), losses[1].tolist()


def _to_device_batches(batches: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    """Move a list of index batches to ``device`` with a single transfer."""
    if not batches:
        return []
    flat = torch.cat(batches).to(device)
    return list(torch.split(flat, [len(b) for b in batches]))


def _cycled_batches(n: int, batch_size: int, count: int, g: torch.Generator) -> list[torch.Tensor]:
    """``count`` independent batches from a pool of ``n``, reshuffling whenever the pool runs out."""
    batches: list[torch.Tensor] = []
    while len(batches) < count:
        order = torch.randperm(n, generator=g)
        batches += [b for b in torch.split(order, batch_size) if len(b) == min(batch_size, n)]
    return batches[:count]


def _forward_pair(model: nn.Module, x_s: torch.Tensor, x_f: torch.Tensor, device: torch.device,
                  together: bool) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """(logits, emb) for x_s and x_f: one concatenated pass when allowed, else two passes."""
    with autocast(device):
        if together:
            logits, emb = model(torch.cat([x_s, x_f]))
            n = len(x_s)
            return (logits[:n], emb[:n]), (logits[n:], emb[n:])
        return model(x_s), model(x_f)


