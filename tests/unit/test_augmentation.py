"""Augmentation (the paper data regime): views checked against torchvision's own crop and resize, draws
as RandomResizedCrop samples them, per-sample draws independent of batching, the CIFAR/image-folder
settings, training that augments, and CaMU's x_f/x_cf fixed at one draw while x_s is re-augmented."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchvision.transforms import functional as TF

from camu import build_model, forget_indices, make_split, retain_indices
from camu.data import load_dataset
from camu.data.datasets import IMAGENET_MEAN, IMAGENET_STD, CifarOptions, cifar_data
from camu.data.views import ImageView, resample
from camu.loop import Run, run_method
from camu.methods import METHODS, UnlearnContext
from camu.methods.base import Setting
from camu.training import TrainRecipe, train_classifier

CPU = torch.device("cpu")


def box(left: int, top: int, width: int, height: int, side: int, flip: bool = False) -> torch.Tensor:
    """A crop row for a pixel box of a ``side`` x ``side`` image."""
    return torch.tensor([[left / side, top / side, width / side, height / side, float(flip)]])


def test_a_box_at_its_own_size_is_exactly_those_pixels_and_flip_mirrors_them():
    img = torch.randn(1, 3, 12, 12)
    out = resample(img, box(3, 2, 8, 6, 12), (6, 8))
    assert torch.allclose(out, TF.crop(img, 2, 3, 6, 8), atol=1e-5)
    flipped = resample(img, box(3, 2, 8, 6, 12, flip=True), (6, 8))
    assert torch.allclose(flipped, TF.hflip(TF.crop(img, 2, 3, 6, 8)), atol=1e-5)
    assert torch.allclose(ImageView()(img), img) and torch.allclose(resample(img, box(0, 0, 12, 12, 12), (12, 12)), img,
                                                                    atol=1e-5)


def test_an_enlarged_crop_is_torchvisions_bilinear_resized_crop_inside_the_box():
    # torchvision resizes the cut-out crop (its border clamps at the crop's edge); the view samples the whole
    # image, so the two agree on every output pixel whose bilinear neighbours lie inside the box.
    img = torch.randn(2, 3, 16, 16)
    ours = resample(img, box(4, 2, 8, 8, 16).expand(2, 5), (32, 32))
    theirs = TF.resized_crop(img, 2, 4, 8, 8, [32, 32], antialias=False)
    assert torch.allclose(ours[..., 2:-2, 2:-2], theirs[..., 2:-2, 2:-2], atol=1e-5)
    resized = ImageView(size=(64, 64))(img)  # the paper setting's evaluation view of CIFAR: a plain resize
    assert torch.allclose(resized, F.interpolate(img, size=(64, 64), mode="bilinear", align_corners=False), atol=1e-5)


def test_the_eval_crop_is_the_centre_crop():
    img = torch.randn(1, 3, 16, 16)
    out = ImageView(size=(14, 14), eval_crop=14 / 16)(img)
    assert torch.allclose(out, TF.center_crop(img, [14, 14]), atol=1e-5)


def test_draws_follow_random_resized_crop():
    view = ImageView(augment=True)
    crops = view.draw(20000, torch.Generator().manual_seed(0))
    x0, y0, w, h, flip = crops.unbind(1)
    assert (x0 >= 0).all() and (y0 >= 0).all() and (x0 + w <= 1 + 1e-6).all() and (y0 + h <= 1 + 1e-6).all()
    area, aspect = w * h, w / h
    assert (area >= 0.08 - 1e-6).all() and (area <= 1 + 1e-6).all()
    assert (aspect >= 3 / 4 - 1e-5).all() and (aspect <= 4 / 3 + 1e-5).all()
    # log aspect is uniform in [log 3/4, log 4/3] among accepted draws: its mean is ~0
    assert abs(torch.log(aspect).mean().item()) < 0.01
    assert 0.48 < flip.mean().item() < 0.52 and set(flip.unique().tolist()) == {0.0, 1.0}
    assert area.max() > 0.9 and area.min() < 0.1  # the whole scale range is reached
    assert torch.equal(crops, view.draw(20000, torch.Generator().manual_seed(0)))


def fake_cifar(n: int = 20) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 32, 32, 3), generator=g, dtype=torch.uint8)
    return (images, torch.arange(n) % 10), (images[:8], torch.arange(8) % 10)


@pytest.mark.parametrize("setting", ["fast", "paper"])
def test_cifar_settings(setting):
    train, test = fake_cifar()
    data = cifar_data("cifar10", CifarOptions(root=Path("unused"), setting=setting), train, test,
                      [str(i) for i in range(10)], (0.49, 0.48, 0.45), (0.25, 0.24, 0.26))
    x = data.test.fetch(torch.arange(4), CPU)
    pixels = train[0][:4].permute(0, 3, 1, 2).float() / 255
    if setting == "paper":  # 224 px, ImageNet normalisation, augmented training batches
        assert x.shape == (4, 3, 224, 224) and data.image_size == (224, 224) and data.augmented
        mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        expected = F.interpolate((pixels - mean) / std, size=(224, 224), mode="bilinear", align_corners=False)
        assert torch.allclose(x, expected, atol=1e-4)
        stored = data.test.images[:4]  # kept as bytes at 32 px; the view resizes the normalised batch
        assert stored.dtype == torch.uint8 and torch.equal(stored, train[0][:4].permute(0, 3, 1, 2))
    else:  # 32 px, CIFAR's normalisation, pad crops + flips on training batches
        assert x.shape == (4, 3, 32, 32) and data.augmented and data.train.view.kind == "pad_crop"
        assert torch.allclose(data.to_pixels(x), pixels, atol=1e-5)
    overridden = cifar_data("cifar10", CifarOptions(root=Path("u"), setting=setting, augment=False),
                            train, test, [str(i) for i in range(10)], (0.5,) * 3, (0.25,) * 3)
    assert not overridden.augmented


def test_fast_cifar_pad_crop_is_random_crop_32_padding_4_with_black_padding_and_flip():
    """Against torchvision's RandomCrop(32, padding=4) + RandomHorizontalFlip written out: zero-pad the
    pixel image by 4, take the 32x32 window at the drawn offset, flip; then normalise."""
    train, test = fake_cifar()
    mean, std = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)
    data = cifar_data("cifar10", CifarOptions(root=Path("unused")), train, test, [str(i) for i in range(10)], mean, std)
    view = data.train.view
    crops = view.draw(20, torch.Generator().manual_seed(3))
    x = data.train.fetch(torch.arange(20), CPU, crops)
    pixels = train[0].permute(0, 3, 1, 2).float() / 255
    padded = F.pad(pixels, (4, 4, 4, 4), value=0.0)  # black
    m, s = torch.tensor(mean).view(3, 1, 1), torch.tensor(std).view(3, 1, 1)
    for i in range(20):
        ox, oy = round(float(crops[i, 0]) * 32) + 4, round(float(crops[i, 1]) * 32) + 4
        assert 0 <= ox <= 8 and 0 <= oy <= 8
        window = padded[i, :, oy: oy + 32, ox: ox + 32]
        if crops[i, 4] > 0.5:
            window = window.flip(-1)
        assert torch.allclose(x[i], (window - m) / s, atol=1e-4), i
    many = view.draw(20000, torch.Generator().manual_seed(0))
    offsets = (many[:, :2] * 32).round()
    assert set(offsets.unique().tolist()) == set(range(-4, 5)) and 0.48 < many[:, 4].mean() < 0.52


@pytest.mark.parametrize("in_memory", [False, True], ids=["decoded-per-pass", "in-memory"])
def test_image_folder_paper_setting(tmp_path, in_memory):
    from PIL import Image

    rng = np.random.default_rng(0)
    for part in ("train", "val"):
        for cls in ("a", "b"):
            (tmp_path / part / cls).mkdir(parents=True)
            for i in range(3):
                Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(tmp_path / part / cls / f"{i}.png")
    common = {"root": str(tmp_path), "image_size": 28, "num_workers": 0, "in_memory": in_memory}
    fast = load_dataset("imagefolder", common)
    paper = load_dataset("imagefolder", {**common, "setting": "paper"})
    assert not fast.augmented and paper.augmented
    assert type(paper.train).__name__ == ("TensorSource" if in_memory else "LazySource")
    lazy = load_dataset("imagefolder", {**common, "setting": "paper", "in_memory": False})
    assert torch.equal(paper.train.fetch(torch.arange(6), CPU), lazy.train.fetch(torch.arange(6), CPU))
    idx = torch.arange(4)
    # the paper setting decodes the 32 px square and takes its 28 px centre: what fast decodes at once
    assert torch.allclose(paper.test.fetch(idx, CPU), fast.test.fetch(idx, CPU), atol=1e-4)
    crops = paper.train.view.draw(4, torch.Generator().manual_seed(1))
    augmented = paper.train.fetch(idx, CPU, crops)
    assert augmented.shape == (4, 3, 28, 28) and not torch.allclose(augmented, paper.train.fetch(idx, CPU))
    batches = list(paper.train.batches([idx], CPU, [crops]))  # the batch path applies the same draw
    assert torch.allclose(batches[0][0], augmented, atol=1e-5)


def augmented_setup():
    data = load_dataset("synthetic", {"num_train": 96, "num_test": 24, "num_classes": 3, "image_size": 8, "seed": 2,
                                      "augment": True})
    torch.manual_seed(0)
    original = build_model("mnist_cnn", {}, 1, 3, (8, 8))
    train_classifier(original, data.train, torch.arange(96), TrainRecipe(epochs=1, batch_size=32), CPU)
    split = make_split("classes", {"classes": [1]}, data.train.labels, data.class_names, 0)
    return data, original, split


def context(data, original, split, **kw) -> UnlearnContext:
    return UnlearnContext(original, data, forget_indices(split), retain_indices(split), CPU, seed=5, **kw)


def test_a_run_draws_per_sample_per_epoch_whatever_the_batching():
    data, original, split = augmented_setup()
    run = Run(context(data, original, split), copy.deepcopy(original), {})
    idx = torch.arange(12)
    whole = torch.cat([x for x, _ in run.stream([idx])])
    halves = torch.cat([x for x, _ in run.stream([idx[:5], idx[5:]])])
    assert torch.allclose(whole, halves)  # a sample's view depends on the sample, not on its batch
    assert not torch.allclose(whole, data.train.fetch(idx, CPU))  # augmented, not the evaluation view
    assert torch.allclose(torch.cat([x for x, _ in run.stream([idx], augment=False)]), data.train.fetch(idx, CPU))
    run.epoch = 1
    assert not torch.allclose(torch.cat([x for x, _ in run.stream([idx])]), whole)  # a new draw each epoch


def test_training_augments_every_epoch():
    """The trainer hands every sample of every epoch a fresh draw (rows of the per-epoch crop table)."""
    data = load_dataset("synthetic", {"num_train": 64, "num_test": 16, "num_classes": 2, "image_size": 8,
                                      "noise": 0.1, "augment": True})
    seen: list[torch.Tensor] = []
    original_batches = type(data.train).batches

    def spy(self, index_batches, device, crops=None):
        seen.append(torch.cat(list(crops)) if crops is not None else torch.empty(0))
        return original_batches(self, index_batches, device, crops)

    torch.manual_seed(0)
    model = build_model("mnist_cnn", {}, 1, 2, (8, 8))
    try:
        type(data.train).batches = spy
        train_classifier(model, data.train, torch.arange(64), TrainRecipe(epochs=2, batch_size=16), CPU)
    finally:
        type(data.train).batches = original_batches
    assert len(seen) == 2 and all(len(s) == 64 for s in seen)  # every sample of every epoch has a draw
    assert not torch.equal(seen[0], seen[1])


def camu_params(**kw) -> dict:
    base = {"epochs": 2, "batch_size": 64, "lr_rep": 1e-9, "lr_out": 1e-9, "noise_scale": 0.5}
    return {**base, **kw}


def test_camu_keep_target_is_the_frozen_model_on_the_same_augmented_x_s():
    # At the first step f == f0, so the keep KL is zero only if the target was computed on the very
    # view of x_s that f sees (a target from the un-augmented x_s would leave a positive KL).
    data, original, split = augmented_setup()
    params = camu_params(epochs=1, w_rep_forget=0.0)
    result = run_method("camu", params, context(data, original, split))
    assert result.history["loss_rep"][0] == pytest.approx(0.0, abs=1e-6)


def test_camu_x_f_and_x_cf_keep_one_draw():
    data, original, split = augmented_setup()
    n_forget = len(forget_indices(split))
    assert n_forget <= 64  # one step per epoch: both epochs see the same tuples
    # Forget term only, model barely moving: the same x_f and x_cf give the same loss in both epochs.
    forget_only = run_method("camu", camu_params(w_rep_keep=0.0), context(data, original, split))
    first, second = forget_only.history["loss_rep"]
    assert first > 1e-3 and second == pytest.approx(first, rel=1e-4)


@pytest.mark.parametrize("name", [n for n in METHODS.names() if METHODS.get(n).__module__.startswith("camu.")])
def test_every_method_resumes_to_the_same_weights_on_augmented_data(name):
    data, original, split = augmented_setup()
    method = METHODS.get(name)()
    params = method.preset(method.preset_names(Setting("mnist", "synthetic", "classes"))[0], Setting("mnist", "synthetic", "classes"))
    params = {**params, **{k: v for k, v in {"epochs": 2, "batch_size": 32, "forget_batch_size": 16}.items()
                           if k in params}}
    states = []
    full = run_method(name, params, context(data, original, split,
                                            on_epoch=lambda e, m, state, model: states.append(copy.deepcopy(state)),
                                            initial=original))
    if len(states) < 2:
        return
    resumed = run_method(name, params, context(data, original, split, resume_state=states[0], initial=original))
    for key, value in full.model.state_dict().items():
        assert torch.allclose(value, resumed.model.state_dict()[key], atol=1e-6), key
