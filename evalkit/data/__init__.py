"""Datasets: a registry of torchvision sets, the bundled offline subset, and array files.

Everything is returned as an :class:`ArraySplit` (uint8 or float images NCHW, int64 labels)
so training and evaluation share one batching path with no per-dataset code.
"""

from evalkit.data.arrays import ArraySplit, iterate_batches, load_array_file
from evalkit.data.registry import DATASETS, DatasetInfo, dataset_info, load_split

__all__ = [
    "ArraySplit",
    "DATASETS",
    "DatasetInfo",
    "dataset_info",
    "iterate_batches",
    "load_array_file",
    "load_split",
]
