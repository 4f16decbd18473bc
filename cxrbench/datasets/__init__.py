"""Datasets: registry and base classes. Built-ins live one dataset per module."""

from cxrbench._registry import Registry
from cxrbench.datasets.base import UNKNOWN, Dataset, Index, Record, Subset

DATASETS: Registry = Registry(
    "dataset", "cxrbench.datasets", "cxrbench.datasets", extra_modules=("cxrbench.testing",)
)

__all__ = ["DATASETS", "UNKNOWN", "Dataset", "Index", "Record", "Subset"]
