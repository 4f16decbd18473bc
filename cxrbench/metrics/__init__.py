"""Retrieval metrics: pure numpy functions over a neighbour table."""

from cxrbench._registry import Registry
from cxrbench.metrics.base import EvalData, Metric

METRICS: Registry = Registry("metric", "cxrbench.metrics", "cxrbench.metrics")

__all__ = ["METRICS", "EvalData", "Metric"]
