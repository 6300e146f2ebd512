"""Registered datasets. Each entry has a typed ``Options`` model and a builder returning ``ImageData``.

Nothing is downloaded unless the options say ``download: true``; a missing root raises
``DataRootError`` naming where the files were expected and how to get them.
"""

from __future__ import annotations

import contextlib
import contextvars
import gzip
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

import numpy as np
import torch
from pydantic import Field, field_validator
from torch.utils.data import DataLoader

from camu.data.pixels import BytesToInputs
from camu.data.sources import LazySource, Source, TensorSource
from camu.data.views import PLAIN_VIEW, ImageView
from camu.errors import CamuInputError
from camu.registry import Registry
from camu.schema import Seed, StrictModel


class DataRootError(FileNotFoundError):
    """The dataset's files are not where the options say; the message says how to fix it."""


class DataFormatError(CamuInputError):
    """A dataset file exists but is not what it should be (empty, truncated, another format)."""


@dataclass
class ImageData:
    """A classification dataset: train and test splits plus the facts models need.

    Model inputs are normalised, ``(pixel - mean) / std`` per channel, with pixels in [0, 1] (stored so, or
    stored as bytes and normalised as they are fetched: MNIST, Fashion-MNIST, CIFAR, image folders). Methods
    that act in pixel units (adversarial bounds, counterfactual noise) go through ``to_pixels`` /
    ``from_pixels``; a dataset without pixels (``synthetic``) has no ``mean``/``std`` and no bounds.
    """

    name: str
    train: Source
    test: Source
    num_classes: int
    in_channels: int
    image_size: tuple[int, int]
    class_names: list[str] = field(default_factory=list)
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()

    def to(self, device: torch.device | str) -> ImageData:
        """Move in-memory splits to ``device`` once (GPU-resident data for datasets that fit)."""
        return ImageData(self.name, self.train.to(device), self.test.to(device), self.num_classes,
                         self.in_channels, self.image_size, self.class_names, self.mean, self.std)

    @property
    def augmented(self) -> bool:
        """True when training batches are augmented (random resized crops + flips, ``camu.data.views``)."""
        return self.train.view.augment

    @property
    def has_pixels(self) -> bool:
        """True when the images are normalised [0, 1] pixels (every dataset but ``synthetic``)."""
        return bool(self.std)

    def _stats(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(shape)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(shape)
        return mean, std

    def to_pixels(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised images -> pixel values (identity for a dataset without pixels)."""
        if not self.has_pixels:
            return x
        mean, std = self._stats(x)
        return x * std + mean

    def from_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixel values -> normalised images (identity for a dataset without pixels)."""
        if not self.has_pixels:
            return pixels
        mean, std = self._stats(pixels)
        return (pixels - mean) / std


class DatasetOptions(StrictModel):
    """Base for per-dataset options; unknown keys are rejected."""


O = TypeVar("O", bound=DatasetOptions)


@dataclass(frozen=True)
class DatasetEntry(Generic[O]):
    """A registered dataset: its options model and its builder."""

    options: type[O]
    build: Callable[[O], ImageData]
    description: str


DATASETS: Registry[DatasetEntry] = Registry("dataset")


def register_dataset(name: str, options: type[O], description: str) -> Callable[[Callable[[O], ImageData]], Callable]:
    """Decorator registering ``build(options) -> ImageData`` under ``name``."""

    def decorate(build: Callable[[O], ImageData]) -> Callable[[O], ImageData]:
        DATASETS.register(name, description)(DatasetEntry(options, build, description))
        return build

    return decorate


def load_dataset(name: str, options: dict | None = None) -> ImageData:
    """Validate ``options`` against the dataset's model and build it."""
    entry = DATASETS.get(name)
    return entry.build(entry.options.model_validate(options or {}))


def _normalise(images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return (images - m) / s


def _resplit(images: torch.Tensor, labels: torch.Tensor, test_size: float, seed: int,
             inputs: BytesToInputs | None = None) -> tuple[TensorSource, TensorSource]:
    """Deterministically carve a train/test split out of one pool of samples (``inputs``: uint8 images'
    normalisation)."""
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(labels.shape[0], generator=g)
    n_test = round(labels.shape[0] * test_size)
    test, train = perm[:n_test], perm[n_test:]
    return (TensorSource(images[train], labels[train], inputs=inputs),
            TensorSource(images[test], labels[test], inputs=inputs))


# ----------------------------------------------------------------------------- digits / synthetic
DIGITS_MEAN, DIGITS_STD = (0.30,), (0.38,)


class DigitsOptions(DatasetOptions):
    test_size: float = Field(0.25, gt=0, lt=1, description="fraction of the 1,797 images held out as test")
    seed: Seed = Field(0, description="seed of the train/test split")
    augment: bool = Field(False, description="random resized crops + flips on training batches (tests)")


@register_dataset("digits", DigitsOptions, "scikit-learn's bundled 8x8 digits (1,797 images, offline)")
def build_digits(opt: DigitsOptions) -> ImageData:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    images = _normalise(images, DIGITS_MEAN, DIGITS_STD)
    train, test = _resplit(images, torch.tensor(bunch.target), opt.test_size, opt.seed)
    train.view = ImageView(augment=opt.augment)
    return ImageData("digits", train, test, 10, 1, (8, 8), [str(i) for i in range(10)], DIGITS_MEAN, DIGITS_STD)


class SyntheticOptions(DatasetOptions):
    num_train: int = Field(1000, ge=10, le=10_000_000)
    num_test: int = Field(200, ge=10, le=10_000_000)
    num_classes: int = Field(10, ge=2, le=100_000)
    channels: int = Field(1, ge=1, le=16)
    image_size: int = Field(8, ge=4, le=1024)
    noise: float = Field(1.0, ge=0, le=1000, description="pixel noise around each class prototype")
    seed: Seed = 0
    augment: bool = Field(False, description="random resized crops + flips on training batches (tests, benchmarks)")


@register_dataset("synthetic", SyntheticOptions, "Gaussian blobs around class prototypes, any size (tests, benchmarks)")
def build_synthetic(opt: SyntheticOptions) -> ImageData:
    g = torch.Generator().manual_seed(opt.seed)
    shape = (opt.channels, opt.image_size, opt.image_size)
    prototypes = torch.randn((opt.num_classes, *shape), generator=g)

    def draw(n: int, view: ImageView = PLAIN_VIEW) -> TensorSource:
        labels = torch.randint(0, opt.num_classes, (n,), generator=g)
        return TensorSource(prototypes[labels] + opt.noise * torch.randn((n, *shape), generator=g), labels, view)

    return ImageData("synthetic", draw(opt.num_train, ImageView(augment=opt.augment)), draw(opt.num_test),
                     opt.num_classes, opt.channels,
                     (opt.image_size, opt.image_size), [str(i) for i in range(opt.num_classes)])


# ----------------------------------------------------------------------------- MNIST family
class MnistOptions(DatasetOptions):
    root: Path = Field(description="folder with the raw idx .gz files (or MNIST/raw below it)")
    download: bool = Field(False, description="download into root when the files are missing")
    test_size: float | None = Field(
        None, gt=0, lt=1,
        description="pool every file found and re-split train/test with this test fraction "
                    "(needed when root holds only the 10k test files)")
    seed: Seed = Field(0, description="seed of the re-split")


IDX_UBYTE = 0x08  # the idx type code of unsigned bytes, the only one MNIST-style files use


def _read_idx(path: Path) -> np.ndarray:
    """Read a (possibly gzipped) idx file as torchvision ships them; anything else is a ``DataFormatError``."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            data = fh.read()
    except (OSError, EOFError) as err:  # gzip.BadGzipFile is an OSError; a truncated .gz raises EOFError
        raise DataFormatError(f"dataset.root: {path} cannot be read ({err}); replace it with the original "
                              f"file") from None
    ndim = data[3] if len(data) >= 4 else 0
    if len(data) < 4 or data[:2] != b"\x00\x00" or data[2] != IDX_UBYTE or not 1 <= ndim <= 4 \
            or len(data) < 4 + 4 * ndim:
        raise DataFormatError(f"dataset.root: {path} is not an idx file of unsigned bytes ({len(data)} bytes, "
                              f"header {data[:4].hex() or 'empty'}); replace it with the original file")
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    expected = 4 + 4 * ndim + int(np.prod(dims))
    if len(data) != expected:
        raise DataFormatError(f"dataset.root: {path} is truncated or padded ({len(data)} bytes where its header "
                              f"{dims} says {expected}); replace it with the original file")
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _find_idx(root: Path, folder: str, stem: str) -> Path | None:
    for base in (root, root / folder / "raw", root / "raw"):
        for candidate in (base / f"{stem}.gz", base / stem):
            if candidate.exists():
                return candidate
    return None


def _mnist_like(name: str, folder: str, mean: float, std: float, opt: MnistOptions) -> ImageData:
    root = opt.root.expanduser()
    stems = {"train_img": "train-images-idx3-ubyte", "train_lbl": "train-labels-idx1-ubyte",
             "test_img": "t10k-images-idx3-ubyte", "test_lbl": "t10k-labels-idx1-ubyte"}
    found = {k: _find_idx(root, folder, v) for k, v in stems.items()}
    if found["test_img"] is None and opt.download:
        import torchvision

        cls = torchvision.datasets.MNIST if name == "mnist" else torchvision.datasets.FashionMNIST
        cls(str(root), train=True, download=True)
        cls(str(root), train=False, download=True)
        found = {k: _find_idx(root, folder, v) for k, v in stems.items()}
    if found["test_img"] is None or found["test_lbl"] is None:
        raise DataRootError(
            f"dataset.root: no {name} files (t10k-images-idx3-ubyte[.gz]) under {root} or {root / folder / 'raw'}; "
            f"point dataset.root at the folder holding them, or set dataset.download: true to fetch them")

    def pair(img: Path, lbl: Path) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = _read_idx(img), _read_idx(lbl)
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels) or len(labels) == 0:
            raise DataFormatError(f"dataset.root: {img.name} holds {images.shape} images and {lbl.name} "
                                  f"{labels.shape} labels; expected N images of HxW and N labels (N > 0)")
        if labels.max() >= 10:
            raise DataFormatError(f"dataset.root: {lbl} has label {int(labels.max())}; {name} labels are 0-9")
        # kept as bytes (a quarter of float32, in memory and on the GPU), normalised batch by batch
        return torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))

    inputs = BytesToInputs((mean,), (std,))
    test_x, test_y = pair(found["test_img"], found["test_lbl"])
    has_train = found["train_img"] is not None and found["train_lbl"] is not None
    if opt.test_size is not None:
        parts = [pair(found["train_img"], found["train_lbl"])] if has_train else []
        xs = torch.cat([p[0] for p in parts] + [test_x])
        ys = torch.cat([p[1] for p in parts] + [test_y])
        train, test = _resplit(xs, ys, opt.test_size, opt.seed, inputs)
    elif has_train:
        train = TensorSource(*pair(found["train_img"], found["train_lbl"]), inputs=inputs)
        test = TensorSource(test_x, test_y, inputs=inputs)
    else:
        raise DataRootError(
            f"dataset.root: only the {name} test files are under {root}; set dataset.test_size (e.g. 0.2 for an "
            f"8,000/2,000 split of the 10k test set) or add the train-*-ubyte files")
    h, w = test_x.shape[-2:]
    return ImageData(name, train, test, 10, 1, (int(h), int(w)), [str(i) for i in range(10)], (mean,), (std,))


@register_dataset("mnist", MnistOptions, "MNIST from a local root of raw idx files (download only if asked)")
def build_mnist(opt: MnistOptions) -> ImageData:
    return _mnist_like("mnist", "MNIST", 0.1307, 0.3081, opt)


@register_dataset("fashion_mnist", MnistOptions, "Fashion-MNIST from a local root of raw idx files")
def build_fashion_mnist(opt: MnistOptions) -> ImageData:
    return _mnist_like("fashion_mnist", "FashionMNIST", 0.2860, 0.3530, opt)


# ----------------------------------------------------------------------------- CIFAR
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PAPER_SIZE = 224  # the official CaMU code's input size for CIFAR and ImageNet-style data
Setting = Literal["fast", "paper"]
SETTING_HELP = ("fast: small inputs (what most unlearning papers run); paper: the official CaMU "
                "regime, 224 px, ImageNet normalisation, RandomResizedCrop + horizontal flip on every training "
                "batch (training, unlearning, shadows) - pair it with model.stem: imagenet")


class CifarOptions(DatasetOptions):
    root: Path = Field(description="folder holding cifar-10-batches-py / cifar-100-python")
    download: bool = Field(False, description="download into root when missing")
    setting: Setting = Field("fast", description=f"{SETTING_HELP}; fast keeps 32 px and CIFAR's own normalisation, "
                                                 "and trains and unlearns with RandomCrop(32, padding 4) + horizontal "
                                                 "flip, as the SalUn, SCRUB and bad-teaching CIFAR code")
    augment: bool | None = Field(None, description="override the setting's augmentation (default: on)")


def cifar_data(name: str, opt: CifarOptions, train: tuple[torch.Tensor, torch.Tensor],
               test: tuple[torch.Tensor, torch.Tensor], classes: list[str], mean: tuple, std: tuple) -> ImageData:
    """CIFAR ``ImageData`` from uint8 (N, 32, 32, 3) arrays and labels, in the option's setting: stored at
    32 px either way; the paper setting views them at 224 px (a plain resize for evaluation, random
    resized crops + flips for training) with ImageNet normalisation, as the official code; the fast
    setting trains on pad crops + flips at 32 px (RandomCrop(32, padding=4), black padding)."""
    paper = opt.setting == "paper"
    mean, std = (IMAGENET_MEAN, IMAGENET_STD) if paper else (mean, std)
    size = (PAPER_SIZE, PAPER_SIZE) if paper else None
    augment = True if opt.augment is None else opt.augment
    black = tuple(-m / s for m, s in zip(mean, std))
    train_view = (ImageView(size, augment=augment) if paper
                  else ImageView(augment=augment, kind="pad_crop", pad=4, side=32, fill=black))

    inputs = BytesToInputs(mean, std)

    def source(images: torch.Tensor, labels: torch.Tensor, view: ImageView) -> TensorSource:
        # kept as bytes (a quarter of float32, in memory and on the GPU), normalised batch by batch
        return TensorSource(images.permute(0, 3, 1, 2).contiguous(), torch.as_tensor(labels), view, inputs)

    return ImageData(name, source(*train, train_view), source(*test, ImageView(size)),
                     len(classes), 3, size or (32, 32), list(classes), mean, std)


def _cifar(name: str, opt: CifarOptions, mean: tuple, std: tuple) -> ImageData:
    import torchvision

    cls = torchvision.datasets.CIFAR10 if name == "cifar10" else torchvision.datasets.CIFAR100
    root = opt.root.expanduser()
    try:
        splits = [cls(str(root), train=t, download=opt.download) for t in (True, False)]
    except RuntimeError as err:
        folder = "cifar-10-batches-py" if name == "cifar10" else "cifar-100-python"
        raise DataRootError(
            f"dataset.root: {name} not found under {root} (expected {root / folder}); "
            f"extract the python version of the archive there, or set dataset.download: true") from err

    train, test = ((torch.from_numpy(s.data), torch.tensor(s.targets)) for s in splits)
    return cifar_data(name, opt, train, test, list(splits[0].classes), mean, std)


@register_dataset("cifar10", CifarOptions, "CIFAR-10 from a local root (download only if asked)")
def build_cifar10(opt: CifarOptions) -> ImageData:
    return _cifar("cifar10", opt, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))


@register_dataset("cifar100", CifarOptions, "CIFAR-100 from a local root (download only if asked)")
def build_cifar100(opt: CifarOptions) -> ImageData:
    return _cifar("cifar100", opt, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))


# ----------------------------------------------------------------------------- ImageNet-style trees
IN_MEMORY_LIMIT = 2 << 30  # bytes of decoded float32 images (train + val) below which in_memory: auto decodes them
IN_MEMORY_SHARE = 0.75     # in_memory: true may take at most this share of the memory available when it decodes
DECODE_BATCH = 64          # images per decode batch (the only transient copy besides the preallocated split)
_LABELS_ONLY: contextvars.ContextVar[bool] = contextvars.ContextVar("camu_labels_only", default=False)


@contextlib.contextmanager
def labels_only() -> Iterator[None]:
    """Within the block, an image folder is built from its file list and labels alone, never decoding its
    images into memory (its splits stay lazy, decoding on demand): what validating a job on the driver
    needs (labels for the splits, sizes for the model). Datasets that are arrays already are unaffected."""
    token = _LABELS_ONLY.set(True)
    try:
        yield
    finally:
        _LABELS_ONLY.reset(token)


def available_memory() -> int | None:
    """Bytes of memory this process can still take: the system's available memory (``MemAvailable``:
    free plus reclaimable caches), bounded by the headroom of its cgroup's limit (containers, Ray
    pods); None when unknown."""
    found: list[int] = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    if not found:
        try:
            found.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (AttributeError, ValueError, OSError):
            pass
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            limit = Path(limit_file).read_text().strip()
            if limit != "max" and int(limit) < 1 << 60:
                found.append(max(0, int(limit) - int(Path(usage_file).read_text().strip())))
            break
        except (OSError, ValueError):
            continue
    return min(found) if found else None


def _gib(n: float) -> str:
    return f"{n / (1 << 30):.1f} GiB"


class ImageFolderOptions(DatasetOptions):
    root: Path = Field(description="tree root/train/<class>/*.JPEG and root/val/<class>/*.JPEG")
    classes: list[str] | None = Field(None, min_length=2, description="class folder names to keep (an ImageNet subset)")
    max_per_class: int | None = Field(None, ge=1, description="cap on training images per class")
    image_size: int = Field(224, ge=16, le=1024, description="model input side in pixels")
    num_workers: int = Field(4, ge=0, le=256, description="DataLoader decode processes")
    setting: Setting = Field("fast", description=f"{SETTING_HELP}; both decode each image to a square of "
                                                 "image_size * 256/224 px; fast takes its centre crop of "
                                                 "image_size once at decode time")
    augment: bool | None = Field(None, description="override the setting's augmentation (default: on for paper)")
    cache_dir: Path | None = Field(None, description="folder of the decoded-once uint8 cache (camu.data.prepared): "
                                                     "every split is decoded into it once and memory-mapped by "
                                                     "every later reader; camu-orch sets it to the job's cache")
    in_memory: bool | Literal["auto"] = Field(
        "auto", description="decode every image once into memory instead of decoding files at every pass (auto: "
                            f"when train and val decoded take at most {IN_MEMORY_LIMIT >> 30} GiB together; true: "
                            "refused when they would not fit in the memory available)")

    @field_validator("classes")
    @classmethod
    def _distinct(cls, classes: list[str] | None) -> list[str] | None:
        if classes and len(set(classes)) != len(classes):
            twice = sorted({c for c in classes if classes.count(c) > 1})
            raise ValueError(f"lists {twice} twice; name each class once")
        return classes


def _image_folder_views(opt: ImageFolderOptions) -> tuple[int, int, ImageView, ImageView]:
    """(resized side, decoded side, train view, test view). Every image is resized to ImageNet's 256 for
    224; fast decodes its centre crop once, paper decodes the resized square and crops per batch: the
    centre for evaluation, a random resized crop + flip for training."""
    resized = int(opt.image_size * 256 / 224)
    augment = opt.setting == "paper" if opt.augment is None else opt.augment
    if opt.setting == "fast":
        return resized, opt.image_size, ImageView(augment=augment), ImageView()
    size, crop = (opt.image_size, opt.image_size), opt.image_size / resized
    return resized, resized, ImageView(size, crop, augment=augment), ImageView(size, crop)


def _decoded(source: LazySource, shape: tuple[int, ...], batch_size: int | None = None) -> TensorSource:
    """Every image of a lazy split decoded once (by its DataLoader workers) straight into one preallocated
    (N, *shape) tensor: the peak is the split plus one batch, not a list of batches and their concatenation."""
    images = torch.empty((len(source), *shape), dtype=torch.float32)
    loader = DataLoader(source.dataset, batch_size=batch_size or DECODE_BATCH, num_workers=source.num_workers)
    filled = 0
    for x, _ in loader:
        if tuple(x.shape[1:]) != tuple(shape) or filled + len(x) > len(images):
            raise DataFormatError(f"dataset.root: decoding gave images of shape {tuple(x.shape[1:])} where "
                                  f"{tuple(shape)} was expected")
        images[filled: filled + len(x)] = x
        filled += len(x)
    if filled != len(images):
        raise DataFormatError(f"dataset.root: {filled} of {len(images)} images decoded; the folder changed meanwhile")
    return TensorSource(images, source.labels, source.view)


def _decode_in_memory(opt: ImageFolderOptions, decoded_bytes: int) -> bool:
    """Whether to decode the image folder into memory; ``decoded_bytes`` is train and val together. Refuses
    ``in_memory: true`` beyond the memory available now (with a margin for the model and batches)."""
    if _LABELS_ONLY.get() or opt.in_memory is False:
        return False
    if opt.in_memory == "auto":
        return decoded_bytes <= IN_MEMORY_LIMIT
    available = available_memory()
    if available is not None and decoded_bytes > IN_MEMORY_SHARE * available:
        raise DataFormatError(
            f"dataset.in_memory: true would decode {_gib(decoded_bytes)} of images into memory, but this process has "
            f"{_gib(available)} available (at most {IN_MEMORY_SHARE:.0%} of it may go to images); set in_memory: "
            f"auto (decoded only up to {IN_MEMORY_LIMIT >> 30} GiB) or false to decode the files at every pass, or "
            f"keep fewer images (dataset.classes, dataset.max_per_class, a smaller dataset.image_size)")
    return True


def _image_folder_split(path: Path, opt: ImageFolderOptions, cap: int | None, resized: int, side: int,
                        view: ImageView) -> tuple[LazySource, list[str]]:
    """One split as a lazy source over its file list (labels only; nothing decoded yet)."""
    import torchvision
    from torchvision import transforms as T

    tf = T.Compose([T.Resize(resized), T.CenterCrop(side), T.ToTensor(),
                    T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    try:
        ds = torchvision.datasets.ImageFolder(str(path), transform=tf)
    except FileNotFoundError as err:  # no class folder, or a class folder without images
        raise DataRootError(f"dataset.root: {err}; lay images out as {path}/<class>/<image>") from None
    keep = opt.classes or ds.classes
    missing = sorted(set(keep) - set(ds.classes))
    if missing:
        raise DataFormatError(f"dataset.classes: {missing} are not folders of {path}; known e.g. {ds.classes[:5]}")
    remap = {ds.class_to_idx[c]: i for i, c in enumerate(keep)}
    samples, counts = [], dict.fromkeys(remap, 0)
    for file, label in ds.samples:
        if label in remap and (cap is None or counts[label] < cap):
            counts[label] += 1
            samples.append((file, remap[label]))
    ds.samples = ds.imgs = samples
    ds.targets = [s[1] for s in samples]
    ds.classes, ds.class_to_idx = list(keep), {c: i for i, c in enumerate(keep)}
    return LazySource(ds, torch.tensor(ds.targets, dtype=torch.long), opt.num_workers, view), list(keep)


class PilDecode:
    """What the decode path does to a file before ``ToTensor``: load as RGB, ``Resize`` the short side,
    ``CenterCrop`` the square (picklable, for decode processes)."""

    def __init__(self, resized: int, side: int) -> None:
        self.resized, self.side = resized, side

    def __call__(self, path: str) -> Any:
        from torchvision import transforms as T
        from torchvision.datasets.folder import default_loader

        return T.CenterCrop(self.side)(T.Resize(self.resized)(default_loader(path)))


_FALLBACK_SAID: set[str] = set()


@dataclass
class SplitToPrepare:
    """One split of a dataset as the decoded-once cache needs it: its files with labels, the options that
    change its pixels, the decode, the decoded side and the split's view."""

    files: list[tuple[str, int]]
    options: dict[str, Any]
    decode: Callable[[str], Any]
    side: int
    view: ImageView


def _image_folder_splits_to_prepare(opt: ImageFolderOptions, resized: int, side: int, lazy: Sequence[LazySource]
                                    ) -> list[SplitToPrepare]:
    import PIL
    import torchvision

    options = {"resized": resized, "side": side, "torchvision": torchvision.__version__, "pillow": PIL.__version__}
    return [SplitToPrepare([(str(f), int(label)) for f, label in split.dataset.samples], options,
                           PilDecode(resized, side), side, split.view) for split in lazy]


def _prepared(opt: ImageFolderOptions, resized: int, side: int, lazy_train: LazySource,
              lazy_test: LazySource) -> tuple[Source, Source] | None:
    """Both splits from the decoded-once uint8 cache under ``opt.cache_dir`` (built on first use, unless the
    job's driver prepared them before: ``prepare_dataset``), or None (said once per process, with the reason)
    when the cache cannot be used: the splits then stay lazy."""
    from camu.data.prepared import open_or_prepare

    if _LABELS_ONLY.get():
        return None
    out = []
    for split in _image_folder_splits_to_prepare(opt, resized, side, (lazy_train, lazy_test)):
        found, why = open_or_prepare(Path(opt.cache_dir).expanduser(), split.files, split.options, split.decode,
                                     side, IMAGENET_MEAN, IMAGENET_STD, split.view, workers=opt.num_workers)
        if found is None:
            if why not in _FALLBACK_SAID:
                _FALLBACK_SAID.add(why)
                logging.getLogger(__name__).warning(
                    "dataset.cache_dir: the decoded-once cache cannot be used (%s); images are decoded from the "
                    "files at every pass instead", why)
            return None
        out.append(found.source)
    return out[0], out[1]


def splits_to_prepare(name: str, options: dict | None = None) -> tuple[Path | None, list[SplitToPrepare]]:
    """(cache folder, splits) of a dataset that takes the decoded-once cache and names one (``cache_dir``),
    else (None, []): what a job's driver prepares once, over the cluster, before any trial reads it
    (``camu.data.prepared.prepare`` with a builder of its own)."""
    planner = _PREPARABLE.get(name)
    if planner is None:
        return None, []
    opt = DATASETS.get(name).options.model_validate(options or {})
    return (Path(opt.cache_dir).expanduser(), planner(opt)) if opt.cache_dir is not None else (None, [])


def _image_folder_root(opt: ImageFolderOptions) -> Path:
    root = opt.root.expanduser()
    for part in ("train", "val"):
        if not (root / part).is_dir():
            raise DataRootError(
                f"dataset.root: expected {root / part}/<class>/<image> folders; lay the ImageNet train and "
                f"val images out by class (e.g. with the usual valprep script) under {root}")
    return root


def _plan_image_folder(opt: ImageFolderOptions) -> list[SplitToPrepare]:
    root = _image_folder_root(opt)
    resized, side, train_view, test_view = _image_folder_views(opt)
    lazy_train, _ = _image_folder_split(root / "train", opt, opt.max_per_class, resized, side, train_view)
    lazy_test, _ = _image_folder_split(root / "val", opt, None, resized, side, test_view)
    return _image_folder_splits_to_prepare(opt, resized, side, (lazy_train, lazy_test))


_PREPARABLE: dict[str, Callable[[Any], list[SplitToPrepare]]] = {"imagefolder": _plan_image_folder}


@register_dataset("imagefolder", ImageFolderOptions,
                  "ImageNet-style tree root/{train,val}/<class>/*; class subset, per-class cap")
def build_imagefolder(opt: ImageFolderOptions) -> ImageData:
    root = _image_folder_root(opt)
    resized, side, train_view, test_view = _image_folder_views(opt)
    lazy_train, classes = _image_folder_split(root / "train", opt, opt.max_per_class, resized, side, train_view)
    lazy_test, _ = _image_folder_split(root / "val", opt, None, resized, side, test_view)
    shape = (3, side, side)
    train: Source = lazy_train
    test: Source = lazy_test
    prepared = _prepared(opt, resized, side, lazy_train, lazy_test) if opt.cache_dir is not None else None
    if prepared is not None:
        train, test = prepared
    elif _decode_in_memory(opt, (len(lazy_train) + len(lazy_test)) * 3 * side * side * 4):
        train, test = _decoded(lazy_train, shape), _decoded(lazy_test, shape)
    return ImageData("imagefolder", train, test, len(classes), 3, (opt.image_size, opt.image_size), classes,
                     IMAGENET_MEAN, IMAGENET_STD)
