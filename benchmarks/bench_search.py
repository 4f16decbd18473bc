"""Search speed: our exact search with exclusions vs bare faiss, in one run.

    make bench   (or: pytest benchmarks/bench_search.py --benchmark-only)
"""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from cxrbench.benchmark.search import knn_search

N, Q, DIM, K = 100_000, 2_000, 256, 10


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    g = rng.normal(size=(N, DIM)).astype(np.float32)
    pids = np.array([f"p{i // 3}" for i in range(N)], dtype=object)
    return g, pids


def test_bare_faiss(benchmark, data):
    g, _ = data
    index = faiss.IndexFlatL2(DIM)
    index.add(g)
    benchmark(index.search, g[:Q], K)


def test_knn_search_with_exclusions(benchmark, data):
    g, pids = data
    rows = np.arange(N)
    benchmark(lambda: knn_search(g[:Q], g, K, "l2", query_rows=rows[:Q], gallery_rows=rows,
                                 patient_ids=pids))
