"""Shared fixtures. Tests never touch the network or the user's cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
# CXRBENCH_SHARED_DATA points elsewhere, e.g. from a git worktree not beside shared/
SHARED = Path(os.environ.get("CXRBENCH_SHARED_DATA") or REPO.parent / "shared" / "data")
REQUIRE_SHARED = os.environ.get("CXRBENCH_REQUIRE_SHARED") == "1"


def shared_path(*parts: str) -> Path:
    """A path under ../shared/data; skip the test (fail in CI) when absent."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        msg = f"{p} is absent (real data lives in ../shared/data beside the repo)"
        if REQUIRE_SHARED:
            pytest.fail(msg + " and CXRBENCH_REQUIRE_SHARED=1", pytrace=False)
        pytest.skip(msg)
    return p


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Every test gets its own embedding/image cache."""
    monkeypatch.setenv("CXRBENCH_CACHE", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture
def tiny():
    from cxrbench.testing import TinyDataset

    return TinyDataset(n=40)
