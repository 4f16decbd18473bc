"""Shared machinery of the pretrained encoders: precision, batch normalisation, resizing.

Precision (``precision=fp32|bf16|fp16``):

- ``fp32``: plain float32 (the default; on AVX2-only CPUs it is by far the fastest).
- ``bf16``: ``torch.autocast(dtype=bfloat16)`` on CPU or CUDA. Worth it on CPUs
  with AVX-512-BF16/AMX and on GPUs; about 10x slower on AVX2-only CPUs.
- ``fp16``: CUDA only (``torch.autocast(dtype=float16)``).

CNNs run in channels-last memory format at every precision (oneDNN's NHWC
kernels: 1.3-1.5x faster than NCHW in fp32 on the AVX2 dev CPU, outputs equal
to ~1e-6); transformers keep the default layout.

Embeddings are always returned as float32 numpy arrays.
"""

from __future__ import annotations

import contextlib
from enum import Enum
from typing import Sequence

import numpy as np
import torch
from PIL import Image


class Precision(str, Enum):
    FP32 = "fp32"
    BF16 = "bf16"
    FP16 = "fp16"

    @classmethod
    def parse(cls, value: "str | Precision", device: torch.device) -> "Precision":
        try:
            p = cls(str(value).lower())
        except ValueError:
            raise ValueError(
                f"unknown precision {value!r}; valid: {', '.join(x.value for x in cls)}"
            ) from None
        if p is cls.FP16 and device.type != "cuda":
            raise ValueError("precision=fp16 needs device=cuda; on CPU use bf16 or fp32")
        return p

    @property
    def dtype(self) -> torch.dtype:
        return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[self.value]


class Runner:
    """Runs a vision module at a precision: memory format, autocast, float32 output."""

    def __init__(self, module: torch.nn.Module, device: torch.device, precision: Precision,
                 channels_last: bool = True) -> None:
        self.device, self.precision = device, precision
        self.channels_last = bool(channels_last)
        module = module.eval().to(device)
        if self.channels_last:
            module = module.to(memory_format=torch.channels_last)
        for p in module.parameters():
            p.requires_grad_(False)
        self.module = module

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, dtype=torch.float32, non_blocking=True)
        if self.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.precision is Precision.FP32:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.precision.dtype)

    def __call__(self, x: torch.Tensor, **kwargs) -> torch.Tensor:
        with torch.inference_mode(), self.autocast():
            return self.module(self.prepare(x), **kwargs)


def normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Per-channel (x - mean) / std on an N x C x H x W batch."""
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - m) / s


def to_numpy32(t: torch.Tensor) -> np.ndarray:
    return t.detach().float().cpu().numpy().astype(np.float32, copy=False)


_PIL_FILTERS = {
    "nearest": Image.NEAREST, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC,
    "lanczos": Image.LANCZOS, "box": Image.BOX, "hamming": Image.HAMMING,
    0: Image.NEAREST, 1: Image.LANCZOS, 2: Image.BILINEAR, 3: Image.BICUBIC,
    4: Image.BOX, 5: Image.HAMMING,
}


def pil_filter(interpolation: str | int) -> int:
    key = interpolation.lower() if isinstance(interpolation, str) else int(interpolation)
    if key not in _PIL_FILTERS:
        raise ValueError(f"unknown interpolation {interpolation!r}")
    return _PIL_FILTERS[key]


def resize_crop(image: np.ndarray, out_size: tuple[int, int], *, mode: str = "squash",
                interpolation: str | int = "bilinear",
                shortest_edge: int | None = None) -> np.ndarray:
    """Resize a 2-D float image to ``out_size`` (H, W), the way the model's own pipeline does.

    Modes:
        ``squash``: resize straight to ``out_size`` (aspect ratio not kept).
        ``shortest``: scale so the shorter side is ``shortest_edge`` (default:
            the larger side of ``out_size``), then centre-crop ``out_size``
            (CLIP / DINOv2 preprocessing).
        ``longest``: scale so the longer side fits, then pad with zeros.

    The result is clipped to [0, 1] (bicubic kernels overshoot, as the uint8
    pipelines they stand in for cannot).
    """
    if image.ndim != 2:
        raise ValueError(f"expected a 2-D greyscale image, got shape {image.shape}")
    oh, ow = out_size
    h, w = image.shape
    pil = Image.fromarray(np.asarray(image, dtype=np.float32), mode="F")
    flt = pil_filter(interpolation)
    if mode == "squash":
        out = np.asarray(pil.resize((ow, oh), flt) if (h, w) != (oh, ow) else pil, np.float32)
    elif mode == "shortest":
        target = shortest_edge or max(oh, ow)
        scale = target / min(h, w)
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        arr = np.asarray(pil.resize((nw, nh), flt) if (nh, nw) != (h, w) else pil, np.float32)
        top, left = int(round((nh - oh) / 2.0)), int(round((nw - ow) / 2.0))
        if top < 0 or left < 0:  # crop larger than the resized image: pad first
            arr = np.pad(arr, ((max(0, -top),) * 2, (max(0, -left),) * 2))
            top, left = max(0, top), max(0, left)
        out = arr[top: top + oh, left: left + ow]
    elif mode == "longest":
        scale = min(oh / h, ow / w)
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        arr = np.asarray(pil.resize((nw, nh), flt), np.float32)
        out = np.zeros((oh, ow), np.float32)
        top, left = (oh - nh) // 2, (ow - nw) // 2
        out[top: top + nh, left: left + nw] = arr
    else:
        raise ValueError(f"unknown resize mode {mode!r}; valid: squash, shortest, longest")
    return np.clip(out, 0.0, 1.0).astype(np.float32, copy=False)


def grey_to_channels(image: np.ndarray, channels: int) -> torch.Tensor:
    """2-D float image -> C x H x W tensor, grey replicated across channels."""
    t = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
    return t.unsqueeze(0).expand(channels, -1, -1).contiguous()
