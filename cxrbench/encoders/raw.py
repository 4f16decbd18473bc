"""The ``raw`` baseline of seed 002: pixels as features."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from cxrbench.encoders import ENCODERS
from cxrbench.encoders.base import EmbeddingSpec, Encoder, InputSpec


@ENCODERS.register("raw")
class RawPixels(Encoder):
    """Raw pixels: greyscale resized to 32x32, flattened to 1024 values in [0, 1] (L2)."""

    name = "raw"

    def __init__(self, size: int = 32, **params: Any) -> None:
        super().__init__(size=int(size), **params)
        self.input_spec = InputSpec(size=(int(size), int(size)), channels=1, value_range=(0.0, 1.0))
        self.embedding_spec = EmbeddingSpec(dim=int(size) * int(size), distance="l2")

    def embed(self, batch: torch.Tensor) -> np.ndarray:
        return batch.reshape(batch.shape[0], -1).numpy().astype(np.float32, copy=False)
