"""Encoders: registry and base classes. Built-ins live one family per module."""

from cxrbench._registry import Registry
from cxrbench.encoders.base import Distance, EmbeddingSpec, Encoder, InputSpec

ENCODERS: Registry = Registry(
    "encoder", "cxrbench.encoders", "cxrbench.encoders", extra_modules=("cxrbench.testing",)
)

__all__ = ["ENCODERS", "Distance", "EmbeddingSpec", "Encoder", "InputSpec"]
