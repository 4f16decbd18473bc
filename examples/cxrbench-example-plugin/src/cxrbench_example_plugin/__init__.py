"""An example cxrbench encoder plugin (see the entry point in pyproject.toml)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from cxrbench.encoders import EmbeddingSpec, Encoder, InputSpec


class HistogramEncoder(Encoder):
    """Grey-level + gradient-orientation histograms (a tiny HOG), cosine distance."""

    name = "example-histogram"

    def __init__(self, bins: int = 32, orientations: int = 16, size: int = 128, **params: Any):
        super().__init__(bins=int(bins), orientations=int(orientations), size=int(size), **params)
        self.bins, self.orientations = int(bins), int(orientations)
        # The input contract: what embed() receives (the harness checks the first batch).
        self.input_spec = InputSpec(size=(int(size), int(size)), channels=1, value_range=(0.0, 1.0))
        # The embedding contract: how many features, compared how.
        self.embedding_spec = EmbeddingSpec(dim=self.bins + self.orientations, distance="cosine")

    def embed(self, batch: torch.Tensor) -> np.ndarray:
        x = batch[:, 0]  # N x H x W in [0, 1]
        n = x.shape[0]
        idx = (x.clamp(0, 1 - 1e-6) * self.bins).long().reshape(n, -1)
        grey = torch.zeros(n, self.bins).scatter_add_(1, idx, torch.ones_like(idx, dtype=torch.float32))
        gy = x[:, 2:, 1:-1] - x[:, :-2, 1:-1]
        gx = x[:, 1:-1, 2:] - x[:, 1:-1, :-2]
        mag = torch.hypot(gx, gy).reshape(n, -1)
        ang = torch.atan2(gy, gx).reshape(n, -1) % math.pi  # unsigned orientation
        oidx = (ang / math.pi * self.orientations).long().clamp(max=self.orientations - 1)
        orient = torch.zeros(n, self.orientations).scatter_add_(1, oidx, mag)
        grey = grey / grey.sum(1, keepdim=True)
        orient = orient / orient.sum(1, keepdim=True).clamp(min=1e-12)
        return torch.cat([grey, orient], 1).numpy().astype(np.float32)
