"""Shared helpers of the learned-encoder tests: small data, a recording dataset."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from cxrbench.datasets import DATASETS, Dataset, Index
from cxrbench.testing import TinyDataset

#: small, fast settings per encoder (the defaults are for real data)
FAST = {
    "stacked-ae": {"layers": [48, 16], "epochs": 4, "batch_size": 10},
    "autothorax": {"backbone": "raw", "backbone_params": {"size": 16}, "hidden": [48],
                   "bottleneck": 16, "epochs": 8, "batch_size": 16},
    "supervised-cnn": {"size": 32, "epochs": 3, "batch_size": 16, "patience": 5},
}


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """One torch thread: on a shared 2-core box two threads are several times slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def small_dataset(n: int = 48) -> Dataset:
    """The ``phantom`` dataset when it is registered, else :class:`TinyDataset`."""
    if "phantom" in DATASETS:
        try:
            ds = DATASETS.create("phantom", n=n, size=64)
            if len(ds.split_indices("train")) and len(ds.split_indices("test")):
                return ds
        except TypeError:
            pass
    return TinyDataset(n=n)


class RecordingDataset(Dataset):
    """Wraps a dataset and records which rows ``load_image`` was asked for."""

    name = "recording"

    def __init__(self, inner: Dataset) -> None:
        super().__init__(None)
        self.inner = inner
        self.label_names = inner.label_names
        self.single_label = inner.single_label
        self.loaded: list[int] = []

    def _build_index(self) -> Index:
        return self.inner.index

    def load_image(self, i: int) -> np.ndarray:
        self.loaded.append(int(i))
        return self.inner.load_image(i)

    def content_key(self) -> str:
        return self.inner.fingerprint()


class SingleLabelTiny(TinyDataset):
    """TinyDataset with exactly one of two classes per image: 'plain' or 'ring'."""

    name = "tiny-single"
    label_names = ("plain", "ring")
    single_label = True

    def _build_index(self) -> Index:
        ix = super()._build_index()
        ring = ix.labels[:, 2]
        labels = np.stack([1 - ring, ring], axis=1).astype(np.int8)
        return Index(ids=ix.ids, patient_ids=ix.patient_ids, splits=ix.splits,
                     labels=labels, views=ix.views)

    def load_image(self, i: int) -> np.ndarray:
        s = self.size
        img = np.random.default_rng((self.seed, i)).normal(0.3, 0.05, (s, s))
        if self.index.labels[i, 1]:
            yy, xx = np.mgrid[:s, :s]
            r = np.hypot(yy - s / 2, xx - s / 2)
            img[(r > s / 5) & (r < s / 3)] += 0.4
        return np.clip(img, 0, 1).astype(np.float32)


def tiny_batch(encoder: Any, dataset: Dataset, rows) -> Any:
    import torch

    return torch.stack([encoder.preprocess(dataset.load_image(int(i))) for i in rows])
