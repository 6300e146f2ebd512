"""CaMU counterfactuals: each forgetting sample x_f is paired with a remaining sample x_s from the
partner pool D_s, and its counterfactual is, in pixel units, x_cf = (1 - mix) * x_s + mix * x_f + eps.

The official construction is mix = 0 with eps ~ U[0, 1) added to the tensors the official loaders
yield: raw [0, 1] pixels on MNIST / Fashion-MNIST (they are not normalised there), ImageNet-normalised
pixels on CIFAR (so U[0, 1) times the ImageNet std of each channel, in pixel units). camu keeps images
normalised, so the noise is added in pixel space and the result normalised again: the official
counterfactual on every dataset. Its label y_cf is the partner's label, redrawn uniformly among the
other classes when it equals y_f. x_cf is only ever passed through the frozen original model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

NoiseKind = Literal["uniform", "gaussian", "none"]
LabelPolicy = Literal["partner", "uniform_other", "soft"]


@dataclass(frozen=True)
class Pairing:
    """One epoch's counterfactual tuples, as positions into the training split.

    ``forget[i]`` is the i-th forgetting sample (D_f, possibly repeated), ``partner[i]`` its
    partner in D_s and ``cf_label[i]`` the counterfactual's hard label. ``pool`` is D_s itself.
    """

    forget: torch.Tensor
    partner: torch.Tensor
    cf_label: torch.Tensor
    pool: torch.Tensor


def draw_pool(retain: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """D_s: a uniformly random subset of D_r of ``size`` (capped at |D_r|)."""
    size = max(1, min(size, len(retain)))
    return retain[torch.randperm(len(retain), generator=generator)[:size]]


def pair_partners(forget: torch.Tensor, pool: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A random pairing of forgetting samples with pool members: 1:1 without replacement while the
    pool lasts (the official |D_s| = |D_f| case), cycling through fresh permutations beyond it."""
    rounds = -(-len(forget) // len(pool))
    order = torch.cat([torch.randperm(len(pool), generator=generator) for _ in range(rounds)])
    return pool[order[: len(forget)]]


def redraw_equal_labels(cf_label: torch.Tensor, forget_label: torch.Tensor, num_classes: int,
                        generator: torch.Generator) -> torch.Tensor:
    """Replace every y_cf equal to y_f by a uniform draw among the other classes.

    This is the behaviour the official code intends; its index bug leaves about 1% of pairs with
    y_cf == y_f under random removal. Here no pair keeps the forgetting label.
    """
    out = cf_label.clone()
    clash = out == forget_label
    if clash.any():
        # uniform over the K-1 other classes: draw in [0, K-2] and skip over y_f.
        draw = torch.randint(0, num_classes - 1, (int(clash.sum()),), generator=generator)
        draw = draw + (draw >= forget_label[clash]).long()
        out[clash] = draw
    return out


def counterfactual_labels(policy: LabelPolicy, partner_label: torch.Tensor, forget_label: torch.Tensor,
                          num_classes: int, generator: torch.Generator) -> torch.Tensor:
    """Hard labels y_cf. ``soft`` keeps partner labels here; the soft targets come from the frozen
    model's output on x_cf (see ``soft_targets``)."""
    if policy == "uniform_other":
        return redraw_equal_labels(forget_label.clone(), forget_label, num_classes, generator)
    return redraw_equal_labels(partner_label, forget_label, num_classes, generator)


def make_pairing(forget: torch.Tensor, retain: torch.Tensor, labels: torch.Tensor, num_classes: int,
                 pool_ratio: float, forget_repeat: int, policy: LabelPolicy,
                 generator: torch.Generator) -> Pairing:
    """Draw D_s (|D_s| = pool_ratio * |D_f| * forget_repeat), pair it with D_f and label the tuples."""
    forget_all = forget.repeat(forget_repeat)
    pool = draw_pool(retain, round(pool_ratio * len(forget_all)), generator)
    partner = pair_partners(forget_all, pool, generator)
    cf_label = counterfactual_labels(policy, labels[partner], labels[forget_all], num_classes, generator)
    return Pairing(forget_all, partner, cf_label, pool)


def sample_noise(shape: torch.Size, kind: NoiseKind, scale: float | list[float], generator: torch.Generator,
                 device: torch.device) -> torch.Tensor:
    """Element-wise noise eps for a batch of counterfactuals (drawn on CPU for reproducibility);
    ``scale`` is one number or one per channel."""
    scales = torch.tensor(scale if isinstance(scale, list) else [scale], dtype=torch.float32)
    if kind == "none" or not bool(scales.any()):
        return torch.zeros(shape, device=device)
    draw = torch.rand if kind == "uniform" else torch.randn
    if len(scales) > 1:
        if len(scales) != shape[1]:
            raise ValueError(f"noise_scale has {len(scales)} values but the images have {shape[1]} channels")
        scales = scales.view(1, -1, *([1] * (len(shape) - 2)))
    return (scales * draw(shape, generator=generator)).to(device)


def counterfactual_images(x_partner: torch.Tensor, x_forget: torch.Tensor, noise: torch.Tensor,
                          mix: float) -> torch.Tensor:
    """x_cf = (1 - mix) * x_s + mix * x_f + eps, all in the same units (camu: pixels; official: mix = 0,
    eps ~ U[0, 1))."""
    base = x_partner if mix == 0 else torch.lerp(x_partner, x_forget, mix)
    return base + noise


def soft_targets(cf_logits: torch.Tensor, forget_label: torch.Tensor) -> torch.Tensor:
    """Soft counterfactual labels: the frozen model's softmax on x_cf with y_f's mass removed."""
    probs = torch.softmax(cf_logits.float(), dim=1)
    probs[torch.arange(len(probs), device=probs.device), forget_label] = 0.0
    return probs / probs.sum(dim=1, keepdim=True).clamp_min(1e-12)
