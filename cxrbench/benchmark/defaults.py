"""The default demo: what ``cxrbench run`` (no arguments) and ``make demo`` run.

Everything here works offline on the built-in phantom dataset.
"""

from __future__ import annotations

from typing import Any

DEFAULT_DATASET = "phantom"
DEFAULT_DATASET_PARAMS: dict[str, Any] = {"n": 1200}


def default_suite() -> list[dict[str, Any]]:
    """Run configs of the demo, cheapest first."""
    base = {"dataset": DEFAULT_DATASET, "dataset_params": dict(DEFAULT_DATASET_PARAMS),
            "protocol": "holdout", "k": [1, 5, 10]}
    return [
        {**base, "encoder": "random"},
        {**base, "encoder": "raw"},
    ]
