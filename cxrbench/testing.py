"""Helpers for plugin authors and tests: a tiny dataset, random and oracle encoders.

Example:
    >>> from cxrbench.testing import TinyDataset, OracleEncoder
    >>> ds = TinyDataset(n=40)
    >>> r = cxrbench.run(OracleEncoder(ds), ds, out=None, n_boot=0)  # doctest: +SKIP
    >>> r.metrics["knn_auc@5"]  # doctest: +SKIP
    1.0
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import torch

from cxrbench.datasets import DATASETS
from cxrbench.datasets.base import Dataset, Index
from cxrbench.encoders import ENCODERS
from cxrbench.encoders.base import EmbeddingSpec, Encoder, InputSpec

TINY_LABELS = ("bright_top", "bright_left", "ring")


@DATASETS.register("tiny")
class TinyDataset(Dataset):
    """Tiny generated dataset (32x32 squares and rings) for plugin tests; instant to load."""

    name = "tiny"
    label_names = TINY_LABELS

    def __init__(self, root: str | None = None, n: int = 60, images_per_patient: int = 2,
                 seed: int = 0, size: int = 32) -> None:
        super().__init__(root, n=int(n), images_per_patient=int(images_per_patient),
                         seed=int(seed), size=int(size))
        self.n, self.ipp, self.seed, self.size = int(n), int(images_per_patient), int(seed), int(size)

    def _build_index(self) -> Index:
        rng = np.random.default_rng(self.seed)
        n_pat = -(-self.n // self.ipp)
        patient = np.arange(self.n) // self.ipp
        labels = (rng.random((self.n, len(TINY_LABELS))) < 0.4).astype(np.int8)
        test_pat = rng.permutation(n_pat)[: max(1, n_pat // 4)]
        splits = np.where(np.isin(patient, test_pat), "test", "train")
        return Index(
            ids=[f"tiny{i:05d}" for i in range(self.n)],
            patient_ids=[f"p{p:04d}" for p in patient],
            splits=splits,
            labels=labels,
            views=["PA"] * self.n,
        )

    def load_image(self, i: int) -> np.ndarray:
        s = self.size
        rng = np.random.default_rng((self.seed, i))
        img = rng.normal(0.3, 0.05, (s, s))
        lab = self.index.labels[i]
        if lab[0]:
            img[: s // 3] += 0.4
        if lab[1]:
            img[:, : s // 3] += 0.3
        if lab[2]:
            yy, xx = np.mgrid[:s, :s]
            r = np.hypot(yy - s / 2, xx - s / 2)
            img[(r > s / 5) & (r < s / 3)] += 0.4
        return np.clip(img, 0, 1).astype(np.float32)


@ENCODERS.register("random")
class RandomEncoder(Encoder):
    """Random features (a chance-level floor): a fixed random projection of the pixels."""

    name = "random"

    def __init__(self, dim: int = 32, size: int = 16, seed: int = 0, **params: Any) -> None:
        super().__init__(dim=int(dim), size=int(size), seed=int(seed), **params)
        self.input_spec = InputSpec(size=(int(size), int(size)))
        self.embedding_spec = EmbeddingSpec(dim=int(dim), distance="l2")
        g = torch.Generator().manual_seed(int(seed))
        # a random projection of hashed pixels: unrelated to image content
        self._proj = torch.randn(int(size) * int(size), int(dim), generator=g)

    def embed(self, batch: torch.Tensor) -> np.ndarray:
        x = batch.reshape(batch.shape[0], -1)
        x = torch.sin(x * 12345.678)  # destroy any monotone relation to content
        return (x @ self._proj).numpy().astype(np.float32)


class OracleEncoder(Encoder):
    """Cheats: embeds each image as its dataset label vector (the retrieval ceiling).

    It recognises images by a hash of their preprocessed pixels, so it works
    with any dataset whose images are distinct.
    """

    name = "oracle"

    def __init__(self, dataset: Dataset, size: int = 16, **params: Any) -> None:
        super().__init__(size=int(size), **params)
        self.input_spec = InputSpec(size=(int(size), int(size)))
        n_labels = len(dataset.label_names)
        self.embedding_spec = EmbeddingSpec(dim=n_labels, distance="l2")
        self._lookup: dict[str, np.ndarray] = {}
        pos = (dataset.index.labels == 1).astype(np.float32)
        for i in range(len(dataset)):
            self._lookup[self._key(self.preprocess(dataset.load_image(i)))] = pos[i]
        self._dataset_fp = dataset.fingerprint()

    @staticmethod
    def _key(t: torch.Tensor) -> str:
        # the harness feeds 8-bit quantised pixels (decoded-image cache): hash at that precision
        return hashlib.sha1(np.rint(t.numpy() * 255.0).astype(np.uint8).tobytes()).hexdigest()

    def state_key(self) -> str:
        return self._dataset_fp

    def embed(self, batch: torch.Tensor) -> np.ndarray:
        try:
            return np.stack([self._lookup[self._key(b)] for b in batch])
        except KeyError:
            raise ValueError("oracle: an image is not from the dataset it was built on") from None
