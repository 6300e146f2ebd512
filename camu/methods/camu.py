"""CaMU, Causal Machine Unlearning (Shen, Zhang, Bialkowski, Chen, Xu; SDM 2024, arXiv 2401.17504;
reference code github.com/ShaofeiShen768/CaMU@987b41a), as described in shared/docs/camu-method.md.

Each step takes a batch of B counterfactual tuples (x_f, x_cf, y_cf) and an independent batch of
B partner-pool samples (x_s, y_s), then
  1. representation level, optimizer 1 (Adam, lr_rep):
       L_rep = w_rep_keep * KL_sum(sm(f0.emb(x_s)) || sm(f.emb(x_s)))
             + w_rep_forget * KL_sum(sm(f0.emb(x_cf)) || sm(f.emb(x_f)))
  2. output level, optimizer 2 (a second Adam on the same parameters, lr_out), forward recomputed:
       L_out = w_out_keep * CE(f(x_s), y_s) + w_out_forget * CE(f(x_f), y_cf)

Efficiency: f0 is frozen and x_cf is fixed for an epoch, so the targets sm(f0.emb(.)) are computed
once per pairing (once per run unless partners are redrawn), never per step. On augmented data (the
paper regime) x_f and x_cf are fixed at one draw per pairing, as in the official code, so their targets
stay once per pairing, while x_s is re-augmented every epoch and its target sm(f0.emb(x_s)) is then
computed in the step, on the same augmented x_s the unlearned model sees. x_s and x_f share one
forward pass when the model has no BatchNorm (batch statistics would otherwise couple them).
Data parallel (``camu.loop``): each rank takes its share of the global batch; KL sums are scaled by
the world size and cross-entropy means taken over the global batch, so averaged gradients equal the
single-process gradient at the same global batch.

Search space (documented default): the two forget-side loss weights and the two learning rates on log
scales, epochs, the counterfactual noise scale and the blend of x_f into the partner.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, field_validator
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
from camu.losses import cross_entropy_each, kl_sum
from camu.methods.base import (
    METHODS,
    MethodError,
    MethodParams,
    Preset,
    Run,
    Setting,
    UnlearnContext,
    UnlearningMethod,
    frozen_copy,
)
from camu.models import has_batch_norm
from camu.optim import adam
from camu.runtime import autocast, place_input

TARGET_BATCH = 512  # batch size of the one-off frozen-model passes


class CamuParams(MethodParams):
    """Every knob the sweep may search; defaults are the official MNIST class-removal setting."""

    @field_validator("noise_scale")
    @classmethod
    def _noise_range(cls, scale: float | list[float]) -> float | list[float]:
        values = scale if isinstance(scale, list) else [scale]
        if not values or len(values) > 16 or any(not 0 <= v <= 100 for v in values):
            raise ValueError("give a scale in [0, 100] pixel units, or one per channel (at most 16)")
        return scale

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
    noise_scale: float | list[float] = Field(
        1.0, description="scale s of eps in pixel units ([0, 1] pixels, whatever the dataset's normalisation); "
                         "a list gives one scale per channel (official CIFAR: the ImageNet std, 0.229 0.224 0.225)")
    mix: float = Field(0.0, ge=0, le=1, description="blend of x_f into the partner: x_cf = (1-mix) x_s + mix x_f + eps")
    label_policy: LabelPolicy = Field("partner", description="partner | uniform_other | soft")
    pool_ratio: float = Field(1.0, gt=0, le=100, description="|D_s| / |D_f|")
    redraw_partners: bool = Field(False, description="draw a new D_s and pairing every epoch")
    forget_repeat: int = Field(1, ge=1, le=100, description="repeat D_f this many times (official CIFAR-100 class: 10)")
    batch_forward: Literal["auto", "always", "never"] = Field(
        "auto", description="one forward over [x_s; x_f]: auto = when the model has no BatchNorm")


# U[0, 1) on the official loaders' tensors, in pixel units: raw pixels on MNIST-like data; on CIFAR the
# tensors are ImageNet-normalised, so one unit there is the ImageNet std of the channel.
OFFICIAL_NOISE = {"mnist": 1.0, "cifar": [0.229, 0.224, 0.225]}
OFFICIAL_SETTINGS: dict[tuple[str, str], dict[str, Any]] = {
    ("mnist", "random"): {"epochs": 10, "lr_out": 5e-4, "lr_rep": 4e-4, "noise_scale": OFFICIAL_NOISE["mnist"]},
    ("mnist", "class"): {"epochs": 2, "lr_out": 1e-3, "lr_rep": 4e-4, "noise_scale": OFFICIAL_NOISE["mnist"]},
    ("cifar", "random"): {"epochs": 10, "lr_out": 1e-4, "lr_rep": 1e-5, "noise_scale": OFFICIAL_NOISE["cifar"]},
    ("cifar", "class"): {"epochs": 2, "lr_out": 5e-5, "lr_rep": 1e-5, "noise_scale": OFFICIAL_NOISE["cifar"]},
}


MNIST_FAMILY = {"mnist", "fashion_mnist", "digits", "synthetic"}
OFFICIAL_SOURCE = ("github.com/ShaofeiShen768/CaMU@987b41a, CaMU/config.py (KL_LR = lr_rep, IMPAIR_LR = lr_out, "
                   "IMPAIR_EPOCHS) and CaMU/remove.py (two Adam optimizers, weight decay 1e-4)")


def usual_family(dataset: str) -> str:
    """The family of the model a dataset is usually unlearned with (MNIST-like: the paper's CNN; otherwise
    a ResNet). Jobs take the family from their model (``camu.models.model_family``); this default serves
    direct calls of ``official_params`` that name only a dataset."""
    return "mnist" if dataset in MNIST_FAMILY else "cifar"


def official_params(dataset: str, scenario_kind: str, family: str | None = None) -> CamuParams:
    """The official configuration for a model family (default: ``usual_family(dataset)``) and scenario
    (class removal vs the rest). The noise is in the dataset's pixel units, so a one-channel dataset
    takes the mean of the CIFAR per-channel scale."""
    kind = "class" if scenario_kind == "classes" else "random"
    extra: dict[str, Any] = {"forget_repeat": 10} if dataset == "cifar100" and kind == "class" else {}
    settings = dict(OFFICIAL_SETTINGS[(family or usual_family(dataset), kind)])
    if isinstance(settings["noise_scale"], list) and dataset in MNIST_FAMILY:  # one channel: the mean scale
        settings["noise_scale"] = round(sum(settings["noise_scale"]) / len(settings["noise_scale"]), 4)
    return CamuParams(**settings, **extra)


class _Targets:
    """Frozen-model targets for one pairing, indexed by tuple / pool position (kept on the device);
    ``pool_rep`` is None on augmented data (x_s changes every epoch: its target is computed per step).
    ``forget_crops``: the one augmentation draw of each tuple's x_f (None without augmentation)."""

    def __init__(self, cf_rep: torch.Tensor, pool_rep: torch.Tensor | None, cf_label: torch.Tensor,
                 forget_crops: torch.Tensor | None = None) -> None:
        self.cf_rep, self.pool_rep, self.cf_label, self.forget_crops = cf_rep, pool_rep, cf_label, forget_crops


@METHODS.register("camu", "CaMU (Shen et al. 2024): counterfactual representation + output alignment, two optimizers")
class Camu(UnlearningMethod[CamuParams]):
    """CaMU unlearning; see the module docstring for the math and references.

    Presets: ``official`` is the reference configuration of the model's family (the paper's CNN: MNIST-like;
    a ResNet: CIFAR-like) and scenario (class removal or the rest); ``official-mnist`` /
    ``official-cifar`` name either family.
    """

    Params = CamuParams
    lr_fields = ("lr_rep", "lr_out")
    space: ClassVar[dict[str, Any]] = {
        "w_rep_forget": {"loguniform": [0.1, 5.0]},
        "w_out_forget": {"loguniform": [0.001, 1.0]},
        "lr_rep": {"loguniform": [1.0e-6, 1.0e-2]},
        "lr_out": {"loguniform": [1.0e-6, 1.0e-2]},
        "epochs": {"randint": [1, 10]},
        "noise_scale": {"uniform": [0.0, 2.0]},
        "mix": {"uniform": [0.0, 0.5]},
    }

    def preset_names(self, setting: Setting) -> list[str]:
        own = f"official-{setting.family}"
        return ["official"] + [n for n in ("official-mnist", "official-cifar") if n != own]

    def preset_entry(self, name: str, setting: Setting) -> Preset:
        families = {"official": setting.family, "official-mnist": "mnist", "official-cifar": "cifar"}
        if name not in families:
            raise MethodError(f"unknown preset {name!r}; presets: official, official-mnist, official-cifar")
        values = official_params(setting.dataset, setting.scenario_kind, families[name]).model_dump()
        return Preset(values, OFFICIAL_SOURCE)

    def optimizers(self, model: nn.Module, params: CamuParams) -> dict[str, torch.optim.Optimizer]:
        # Two Adam optimizers on the same parameters, as the official code: [1] representation, [2] output.
        return {"rep": adam(model.parameters(), params.lr_rep, params.weight_decay),
                "out": adam(model.parameters(), params.lr_out, params.weight_decay)}

    def prepare(self, run: Run, params: CamuParams) -> None:
        self.params = params
        self.f0 = frozen_copy(run.ctx.original, run.device)
        self.together = params.batch_forward == "always" or (
            params.batch_forward == "auto" and not has_batch_norm(run.model))
        self.pairing: Pairing | None = None
        self.targets: _Targets | None = None

    def epoch(self, run: Run, params: CamuParams, epoch: int) -> None:
        if self.targets is None or params.redraw_partners:
            self.pairing = self._pairing(run.ctx, params, epoch)
            self.targets = self._targets(run.ctx, params, self.f0, self.pairing, epoch)
        pairing, targets, device = self.pairing, self.targets, run.device
        g = run.generator(3)
        tuple_batches = run.batches(len(pairing.forget), params.batch_size, g)
        keep_batches = _cycled_batches(len(pairing.pool), params.batch_size, len(tuple_batches), g)
        # Every index the epoch needs goes to the data's device in one copy, so that steps never wait on
        # small host-to-device transfers: positions into the targets and sample indices into the source.
        local_t = _to_device_batches([run.local(b) for b in tuple_batches], device)
        local_k = _to_device_batches([run.local(b) for b in keep_batches], device)
        source = run.ctx.data.train
        index_device = source.images.device if hasattr(source, "images") else torch.device("cpu")
        forget_idx, pool_idx = pairing.forget.to(index_device), pairing.pool.to(index_device)
        fixed = None if targets.forget_crops is None else [targets.forget_crops.index_select(0, t) for t in local_t]
        forget_stream = run.stream([forget_idx[b.to(index_device)] for b in local_t], crops=fixed)
        keep_stream = run.stream([pool_idx[b.to(index_device)] for b in local_k])  # x_s: this epoch's draw
        for t_dev, k_dev, b_t, b_k, (x_f, _), (x_s, y_s) in zip(local_t, local_k, tuple_batches, keep_batches,
                                                                 forget_stream, keep_stream):
            if targets.pool_rep is not None:
                keep_target = targets.pool_rep.index_select(0, k_dev)
            else:  # augmented x_s: the frozen target of this very view
                with torch.no_grad():
                    keep_target = torch.softmax(run.forward(self.f0, x_s)[1].float(), dim=1)
            # [1] representation level: KL to the frozen targets, optimizer 1 (KL sums: the group total).
            (_, emb_s), (_, emb_f) = _forward_pair(run, x_s, x_f, self.together)
            loss_rep = run.world * (params.w_rep_keep * kl_sum(keep_target, emb_s)
                                    + params.w_rep_forget * kl_sum(targets.cf_rep.index_select(0, t_dev), emb_f))
            run.step(loss_rep, "rep")
            # [2] output level: forward recomputed after step 1, optimizer 2.
            (logits_s, _), (logits_f, _) = _forward_pair(run, x_s, x_f, self.together)
            labels_f = targets.cf_label.index_select(0, t_dev)
            loss_out = (params.w_out_keep * run.mean(cross_entropy_each(logits_s, y_s), len(b_k))
                        + params.w_out_forget * run.mean(cross_entropy_each(logits_f, labels_f), len(b_t)))
            run.step(loss_out, "out")
            run.record("loss_rep", loss_rep)
            run.record("loss_out", loss_out)

    def members(self, run: Run) -> torch.Tensor | None:
        """D_s of the first pairing (the official attack's members; the pool, repeats included)."""
        params = getattr(self, "params", None)
        return self._pairing(run.ctx, params, 0).pool if params is not None else None

    @staticmethod
    def _pairing(ctx: UnlearnContext, params: CamuParams, epoch: int) -> Pairing:
        g = ctx.epoch_generator(1, epoch if params.redraw_partners else 0)
        return make_pairing(ctx.forget, ctx.retain, ctx.data.train.labels.cpu(), ctx.data.num_classes,
                            params.pool_ratio, params.forget_repeat, params.label_policy, g)

    @staticmethod
    @torch.no_grad()
    def _targets(ctx: UnlearnContext, params: CamuParams, f0: nn.Module, pairing: Pairing, epoch: int) -> _Targets:
        """One pass of f0 over every x_cf and (without augmentation) every D_s sample: the only f0
        forwards of the pairing. On augmented data x_f and the partner of x_cf get one draw each here."""
        device, source = ctx.device, ctx.data.train
        g = ctx.epoch_generator(2, epoch if params.redraw_partners else 0)
        forget_crops = partner_crops = None
        if ctx.data.augmented:
            g_aug = ctx.epoch_generator(4, epoch if params.redraw_partners else 0)
            forget_crops = source.view.draw(len(pairing.forget), g_aug)
            partner_crops = source.view.draw(len(pairing.forget), g_aug)
        cf_rep, cf_soft, pool_rep = [], [], []
        for pos in torch.split(torch.arange(len(pairing.forget)), TARGET_BATCH):
            x_s = source.fetch(pairing.partner[pos], device, None if partner_crops is None else partner_crops[pos])
            x_f = source.fetch(pairing.forget[pos], device, None if forget_crops is None else forget_crops[pos]) \
                if params.mix > 0 else x_s
            noise = sample_noise(x_s.shape, params.noise, params.noise_scale, g, device)
            data = ctx.data  # x_cf is built in pixel units, then normalised like every input
            x_cf = data.from_pixels(counterfactual_images(data.to_pixels(x_s), data.to_pixels(x_f), noise, params.mix))
            with autocast(device):
                logits, emb = f0(place_input(x_cf, device))
            cf_rep.append(torch.softmax(emb.float(), dim=1))
            if params.label_policy == "soft":
                y_f = ctx.data.train.labels[pairing.forget[pos].to(ctx.data.train.labels.device)].to(device)
                cf_soft.append(soft_targets(logits, y_f))
        for idx in torch.split(pairing.pool, TARGET_BATCH) if forget_crops is None else ():
            with autocast(device):
                _, emb = f0(place_input(source.fetch(idx, device), device))
            pool_rep.append(torch.softmax(emb.float(), dim=1))
        cf_label = torch.cat(cf_soft) if cf_soft else pairing.cf_label.to(device)
        return _Targets(torch.cat(cf_rep), torch.cat(pool_rep) if pool_rep else None, cf_label,
                        None if forget_crops is None else forget_crops.to(device))


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


def _forward_pair(run: Run, x_s: torch.Tensor, x_f: torch.Tensor,
                  together: bool) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """(logits, emb) for x_s and x_f: one concatenated pass when allowed, else two passes."""
    if together:
        logits, emb = run.forward(run.model, torch.cat([x_s, x_f]))
        n = len(x_s)
        return (logits[:n], emb[:n]), (logits[n:], emb[n:])
    return run.forward(run.model, x_s), run.forward(run.model, x_f)
