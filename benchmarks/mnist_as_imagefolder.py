"""Write real MNIST images as an image folder (``OUT/train/<digit>/*.png``, ``OUT/val/<digit>/*.png``):
a dataset layout that no preset was written for (3-channel PNGs, ImageNet normalisation through the
``imagefolder`` dataset), for checking that sweeps find good settings on untuned data.

    python benchmarks/mnist_as_imagefolder.py --src ../shared/data/mnist10k --out /tmp/mnist_png
    camu-orch submit jobs/mnist_class.yaml --set dataset='{name: imagefolder, root: /tmp/mnist_png, image_size: 28}'

The source is a torchvision MNIST raw folder (the 10k test set is enough); ``--val-fraction`` of it
(stratified, seeded) becomes ``val/``.
"""

from __future__ import annotations

import argparse
import gzip
from pathlib import Path

import numpy as np


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (optionally gzipped) as an array (the MNIST distribution format)."""
    if path.suffix == ".gz":
        with gzip.open(path) as fh:
            raw = fh.read()
    else:
        raw = path.read_bytes()
    dims = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def find(src: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem):
        for candidate in (src / name, src / "MNIST" / "raw" / name, src / "raw" / name):
            if candidate.exists():
                return candidate
    raise SystemExit(f"{stem}[.gz] not found under {src}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--src", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--images", default="t10k-images-idx3-ubyte")
    parser.add_argument("--labels", default="t10k-labels-idx1-ubyte")
    parser.add_argument("--val-fraction", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    from PIL import Image

    images, labels = read_idx(find(args.src, args.images)), read_idx(find(args.src, args.labels))
    rng = np.random.default_rng(args.seed)
    val = np.zeros(len(labels), dtype=bool)
    for digit in np.unique(labels):  # stratified: the same share of every class in val/
        idx = rng.permutation(np.flatnonzero(labels == digit))
        val[idx[: round(len(idx) * args.val_fraction)]] = True
    for i, (image, label) in enumerate(zip(images, labels)):
        folder = args.out / ("val" if val[i] else "train") / str(int(label))
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{i:05d}.png")
    print(f"{(~val).sum()} train and {val.sum()} val images in {args.out}")


if __name__ == "__main__":
    main()
