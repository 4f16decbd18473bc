"""Encoder interface: input contract, embedding contract, fit, embed.

The harness hands an encoder greyscale images (2-D float32 in [0, 1], any
size); :meth:`Encoder.preprocess` turns one into a tensor that satisfies the
encoder's :class:`InputSpec` (size, channels, value range); the harness checks
the first batch against that contract, then calls :meth:`Encoder.embed` on
batches. Model-specific normalisation (ImageNet mean/std, CLIP stats, ...)
happens inside ``embed``, so the contract stays a plain statement of what the
model sees.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np
import torch
from PIL import Image


class Distance(str, Enum):
    """How embeddings are compared. ``hamming`` embeddings are packed bits (uint8)."""

    L2 = "l2"
    COSINE = "cosine"
    HAMMING = "hamming"

    @classmethod
    def parse(cls, value: "str | Distance") -> "Distance":
        try:
            return cls(value)
        except ValueError:
            raise ValueError(
                f"unknown distance {value!r}; valid: {', '.join(d.value for d in cls)}"
            ) from None


@dataclass(frozen=True)
class InputSpec:
    """What the encoder's ``embed`` expects: N x channels x H x W float32 in value_range."""

    size: tuple[int, int] = (224, 224)  # (height, width)
    channels: int = 1
    value_range: tuple[float, float] = (0.0, 1.0)


@dataclass(frozen=True)
class EmbeddingSpec:
    """What ``embed`` returns.

    ``dim`` is the number of features, or of bits for Hamming embeddings, which
    are returned packed (``np.packbits`` order, uint8, dim/8 bytes per row).
    """

    dim: int
    distance: Distance = Distance.L2
    dtype: str = "float32"

    def __post_init__(self) -> None:
        object.__setattr__(self, "distance", Distance.parse(self.distance))
        if self.distance is Distance.HAMMING:
            if self.dim % 8:
                raise ValueError("Hamming embeddings need a bit count divisible by 8")
            object.__setattr__(self, "dtype", "uint8")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["distance"] = self.distance.value
        return d


ProgressFn = Callable[[str, float, float], None]


class Encoder(ABC):
    """Base class of all encoders.

    Subclasses set :attr:`input_spec`, :attr:`embedding_spec` (may be set in
    ``fit`` when it depends on training) and implement :meth:`embed`. Trainable
    encoders set ``trainable = True`` and implement :meth:`fit`, which sees only
    the rows it is given (the train split).
    """

    name: ClassVar[str] = "encoder"
    trainable: ClassVar[bool] = False

    def __init__(self, **params: Any) -> None:
        self._params = dict(params)
        self.device = torch.device(params.get("device", "cpu"))
        self.input_spec: InputSpec = InputSpec()
        self.embedding_spec: EmbeddingSpec | None = None
        #: where trainable encoders keep checkpoints; the harness sets it from
        #: its cache dir before ``fit`` (None: ``default_cache_dir()``)
        self.cache_dir: Path | None = None

    # -- to implement -------------------------------------------------------
    @abstractmethod
    def embed(self, batch: torch.Tensor) -> np.ndarray:
        """Embed a batch satisfying :attr:`input_spec`; return (N, dim) numpy."""

    def fit(self, train: Any, *, progress: ProgressFn | None = None, seed: int = 0) -> None:
        """Train on ``train`` (a :class:`~cxrbench.datasets.base.Subset`)."""
        if self.trainable:
            raise NotImplementedError(f"{type(self).__name__} is trainable but has no fit()")

    # -- provided -------------------------------------------------------------
    def params(self) -> dict[str, Any]:
        """Parameters that change the embedding (enter the fingerprint)."""
        return {k: v for k, v in self._params.items() if k not in ("device", "progress")}

    def weights_sha256(self) -> str | None:
        """sha256 of the weights file loaded, if any."""
        return None

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        h.update(f"{type(self).__module__}.{type(self).__qualname__}".encode())
        h.update(json.dumps(self.params(), sort_keys=True, default=str).encode())
        h.update(str(self.weights_sha256()).encode())
        h.update(json.dumps(asdict(self.input_spec), default=str).encode())
        h.update(self.state_key().encode())
        return h.hexdigest()[:16]

    def state_key(self) -> str:
        """Extra text hashed into the fingerprint (e.g. a trained checkpoint's key)."""
        return ""

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        """Greyscale [0,1] image -> C x H x W tensor in the input contract."""
        return to_input(image, self.input_spec)

    def report(self) -> dict[str, Any]:
        """Extra facts for the Result (e.g. a supervised encoder's own AUC)."""
        return {}

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "params": self.params(),
            "fingerprint": self.fingerprint(),
            "weights_sha256": self.weights_sha256(),
            "input": {
                "size": list(self.input_spec.size),
                "channels": self.input_spec.channels,
                "value_range": list(self.input_spec.value_range),
            },
            "embedding": None if self.embedding_spec is None else self.embedding_spec.to_dict(),
            "trainable": self.trainable,
        }


def resize_grey(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a 2-D float image to (height, width) with antialiased bilinear (PIL)."""
    h, w = size
    if image.shape == (h, w):
        return np.asarray(image, dtype=np.float32)
    pil = Image.fromarray(np.asarray(image, dtype=np.float32), mode="F")
    return np.array(pil.resize((w, h), Image.BILINEAR), dtype=np.float32)


def to_input(image: np.ndarray, spec: InputSpec) -> torch.Tensor:
    """The default preprocessing: resize, scale [0,1] -> value_range, replicate channels."""
    if image.ndim != 2:
        raise ValueError(f"expected a 2-D greyscale image, got shape {image.shape}")
    x = resize_grey(image, spec.size)
    lo, hi = spec.value_range
    if (lo, hi) != (0.0, 1.0):
        x = x * (hi - lo) + lo
    t = torch.from_numpy(np.array(x, dtype=np.float32))
    return t.unsqueeze(0).expand(spec.channels, -1, -1).contiguous()


def check_batch(batch: torch.Tensor, spec: InputSpec, encoder: str) -> None:
    """Raise if a batch breaks the encoder's declared input contract."""
    want = (spec.channels, *spec.size)
    if batch.ndim != 4 or tuple(batch.shape[1:]) != want:
        raise ValueError(
            f"encoder {encoder!r} declares input C x H x W = {want}, "
            f"but the batch has shape {tuple(batch.shape)}"
        )
    lo, hi = spec.value_range
    tol = 1e-3 * max(1.0, hi - lo)
    bmin, bmax = float(batch.min()), float(batch.max())
    if bmin < lo - tol or bmax > hi + tol:
        raise ValueError(
            f"encoder {encoder!r} declares inputs in [{lo}, {hi}] but the first batch spans "
            f"[{bmin:.4g}, {bmax:.4g}]: check its preprocess()"
        )
