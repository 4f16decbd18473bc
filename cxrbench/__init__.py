"""cxrbench: a benchmark suite for content-based image retrieval on chest X-rays.

Example:
    >>> import cxrbench
    >>> result = cxrbench.run("raw", "phantom", out=None)  # doctest: +SKIP
    >>> result.metrics["knn_auc@10"]  # doctest: +SKIP
"""

__version__ = "0.1.0"

from cxrbench.benchmark.harness import (  # noqa: E402
    Protocol,
    RunConfig,
    create_dataset,
    create_encoder,
    run,
)
from cxrbench.benchmark.result import Result  # noqa: E402
from cxrbench.datasets import DATASETS  # noqa: E402
from cxrbench.encoders import ENCODERS  # noqa: E402
from cxrbench.metrics import METRICS  # noqa: E402


def list_encoders() -> list[str]:
    return ENCODERS.names()


def list_datasets() -> list[str]:
    return DATASETS.names()


def list_metrics() -> list[str]:
    return METRICS.names()


__all__ = [
    "DATASETS", "ENCODERS", "METRICS", "Protocol", "Result", "RunConfig", "__version__",
    "create_dataset", "create_encoder", "list_datasets", "list_encoders", "list_metrics", "run",
]
