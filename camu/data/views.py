"""How stored images become model inputs: an evaluation view and, for training, augmented views.

The official CaMU code trains its CIFAR models (and unlearns them) at 224 px with
``RandomResizedCrop(224)`` + ``RandomHorizontalFlip`` and evaluates on the plainly resized image. Here
images stay stored small (CIFAR at 32 px, image folders decoded once to a square base size) and the
view is applied per batch, on the batch's device, as one batched bilinear resampling
(``affine_grid`` + ``grid_sample``): a whole-image box for evaluation, one random box (and flip) per
sample for training.

A *crop table* holds one draw per sample: ``(x0, y0, w, h, flip)`` with the box in fractions of the
stored image. Drawing the table from a generator that depends only on (seed, tag, epoch) and indexing
it by sample index makes the augmentation the same whatever the number of data-parallel workers, and
lets a method keep one fixed draw for some samples (CaMU's x_f and x_cf) while others are re-augmented.
Bilinear resampling commutes with the per-channel affine normalisation, so views are taken on
normalised tensors.

Two training augmentations: ``resized_crop`` (torchvision's RandomResizedCrop + flip, the official CaMU
224-px regime) and ``pad_crop`` (RandomCrop(size, padding=4) with black padding + flip, what SalUn,
SCRUB and bad teaching train and unlearn CIFAR with at 32 px). A pad crop is a whole-image box shifted
by whole pixels, so its bilinear resampling is an exact shift; the padding is black in pixel space
(``fill``: the normalised value of a black pixel per channel).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

CROP_FIELDS = 5  # x0, y0, w, h (fractions of the stored image), flip (0 or 1)
ATTEMPTS = 10    # torchvision's RandomResizedCrop tries 10 boxes before falling back to a centre crop


@dataclass(frozen=True)
class ImageView:
    """The view of one split: output ``size`` (None: as stored), the side fraction of the centred box
    the evaluation view keeps (``eval_crop``, e.g. 224/256 for ImageNet-style evaluation), and whether
    training batches are augmented (``kind``): random resized crops (area ``scale``, aspect ``ratio``), or
    pad crops (shifts of up to ``pad`` pixels with ``fill`` outside), each with horizontal flips."""

    size: tuple[int, int] | None = None
    eval_crop: float = 1.0
    augment: bool = False
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0)
    kind: Literal["resized_crop", "pad_crop"] = "resized_crop"
    pad: int = 4  # pad_crop: pixels of padding on each side
    side: int = 32  # pad_crop: the stored images' side (pixels), to shift by whole pixels
    fill: tuple[float, ...] = ()  # pad_crop: a black pixel, normalised, per channel (empty: 0)

    @property
    def is_identity(self) -> bool:
        """True when evaluation inputs are the stored images themselves."""
        return self.size is None and self.eval_crop == 1.0

    def draw(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` random training draws (n, 5): random resized crops, or pad crops (``draw_pad_crops``)."""
        if self.kind == "pad_crop":
            return self.draw_pad_crops(n, generator)
        return self.draw_resized_crops(n, generator)

    def draw_pad_crops(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """RandomCrop(side, padding=pad) + flip: a whole-image box offset by a uniform whole number of
        pixels in [-pad, pad] on each axis; flip with probability 1/2."""
        offsets = torch.randint(0, 2 * self.pad + 1, (n, 2), generator=generator).float() - self.pad
        flip = (torch.rand(n, generator=generator) < 0.5).float()
        ones = torch.ones(n)
        return torch.stack([offsets[:, 0] / self.side, offsets[:, 1] / self.side, ones, ones, flip], dim=1)

    def draw_resized_crops(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` random-resized-crop draws (n, 5) as torchvision samples them: area fraction uniform in
        ``scale``, log aspect ratio uniform in ``ratio``, the first of 10 attempts that fits, else the
        whole image (stored images are square, so torchvision's fallback box is the whole image); flip
        with probability 1/2."""
        area = torch.empty(n, ATTEMPTS).uniform_(*self.scale, generator=generator)
        log_ratio = torch.empty(n, ATTEMPTS).uniform_(math.log(self.ratio[0]), math.log(self.ratio[1]),
                                                      generator=generator)
        aspect = torch.exp(log_ratio)
        w, h = torch.sqrt(area * aspect), torch.sqrt(area / aspect)  # fractions of a square stored image
        fits = (w <= 1.0) & (h <= 1.0)
        first = torch.where(fits.any(1), fits.float().argmax(1), torch.full((n,), -1))
        pick = first.clamp(min=0).unsqueeze(1)
        w, h = w.gather(1, pick).squeeze(1), h.gather(1, pick).squeeze(1)
        fallback = first < 0
        w = torch.where(fallback, torch.ones(n), w)
        h = torch.where(fallback, torch.ones(n), h)
        ux, uy = torch.rand(n, generator=generator), torch.rand(n, generator=generator)
        flip = (torch.rand(n, generator=generator) < 0.5).float()
        return torch.stack([ux * (1 - w), uy * (1 - h), w, h, flip], dim=1)

    def eval_boxes(self, n: int) -> torch.Tensor:
        """The evaluation view's draws: the centred ``eval_crop`` box, never flipped."""
        c = self.eval_crop
        return torch.tensor([(1 - c) / 2, (1 - c) / 2, c, c, 0.0]).expand(n, CROP_FIELDS)

    def __call__(self, images: torch.Tensor, crops: torch.Tensor | None = None) -> torch.Tensor:
        """Model inputs from stored ``images`` (N, C, H, W): the evaluation view, or the given crops."""
        if crops is None:
            if self.is_identity:
                return images
            crops = self.eval_boxes(len(images))
        size = self.size or tuple(images.shape[-2:])
        if self.kind == "pad_crop" and self.augment:
            fill = torch.tensor(self.fill or [0.0] * images.shape[1], device=images.device,
                                dtype=torch.float32).view(1, -1, 1, 1)
            shifted = resample(images.float() - fill, crops.to(images.device, torch.float32), size, "zeros")
            return (shifted + fill).to(images.dtype)
        return resample(images, crops.to(images.device, torch.float32), size)


PLAIN_VIEW = ImageView()  # the stored images as they are, never augmented


def resample(images: torch.Tensor, crops: torch.Tensor, size: tuple[int, int],
             padding: Literal["border", "zeros"] = "border") -> torch.Tensor:
    """Each image's box (fractions of the image), flipped where asked, resized to ``size`` bilinearly
    (pixel-centre convention: a whole-image box at the stored size returns the image unchanged); outside
    the image: the border pixel, or 0 (``padding``)."""
    x0, y0, w, h, flip = crops.unbind(1)
    sign = 1.0 - 2.0 * flip
    theta = torch.zeros(len(images), 2, 3, device=images.device, dtype=torch.float32)
    theta[:, 0, 0] = w * sign
    theta[:, 0, 2] = 2 * x0 + w - 1
    theta[:, 1, 1] = h
    theta[:, 1, 2] = 2 * y0 + h - 1
    grid = F.affine_grid(theta, [len(images), images.shape[1], *size], align_corners=False)
    out = F.grid_sample(images.float(), grid, mode="bilinear", padding_mode=padding, align_corners=False)
    return out.to(images.dtype)
