"""Retrieval metrics: pure numpy functions over a neighbour table."""

from cxrbench._registry import Registry
from cxrbench.metrics.base import EvalData, Metric, Summary

METRICS: Registry = Registry("metric", "cxrbench.metrics", "cxrbench.metrics")

from cxrbench.metrics.irma import IrmaCodeTree, IrmaGapError, irma_error  # noqa: E402

__all__ = ["METRICS", "EvalData", "IrmaCodeTree", "IrmaGapError", "Metric", "Summary", "irma_error"]
