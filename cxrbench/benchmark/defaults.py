"""The default demo: what ``cxrbench run`` (no arguments) and ``make demo`` run.

The runs are the suite file shipped with the package, ``cxrbench/data/demo.yaml``
(also reachable as ``configs/suites/demo.yaml``); everything in it works
offline on the built-in phantom dataset.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

DEMO_SUITE = Path(__file__).resolve().parents[1] / "data" / "demo.yaml"


def default_suite() -> list[dict[str, Any]]:
    """Run configs of the demo, in the suite's order (cheapest first)."""
    from cxrbench.leaderboards.suite import load_suite

    return [sr.config.to_dict() for sr in load_suite(DEMO_SUITE).runs]
