"""Datasets (registry), image sources and forgetting scenarios."""

from camu.data.datasets import DATASETS, DataFormatError, DataRootError, ImageData, load_dataset
from camu.data.sources import LazySource, Source, TensorSource

__all__ = ["DATASETS", "DataFormatError", "DataRootError", "ImageData", "LazySource", "Source", "TensorSource",
           "load_dataset"]
