"""Metric speed at the scale of seed 000: 551,383 queries, k = 100, 14 labels.

    pytest benchmarks/bench_metrics.py --benchmark-only

Every registered metric family (ranking, avg, knn_auc, irma) on one
leave-one-out neighbour table of 551,383 queries x 100 neighbours, at
k in (1, 5, 10, 100): the point values alone, and with the default 200
patient-level bootstrap replicates. Memory peaks at about 2 GB (the
neighbour table itself is 441 MB).
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from cxrbench.metrics import IrmaCodeTree
from cxrbench.metrics.base import EvalData
from cxrbench.metrics.evaluate import evaluate

Q, K, L = 551_383, 100, 14
KS = (1, 5, 10, 100)
# NIH-like prevalences: a few common findings, several rare ones
PREVALENCE = (0.10, 0.025, 0.12, 0.02, 0.18, 0.05, 0.045, 0.005, 0.03, 0.015, 0.02, 0.03,
              0.045, 0.002)


def make_data(seed: int = 0) -> EvalData:
    """The synthetic neighbour table (about 10 s to build)."""
    rng = np.random.default_rng(seed)
    labels = (rng.random((Q, L)) < np.array(PREVALENCE)).astype(np.int8)
    labels[rng.random((Q, L)) < 0.02] = -1  # some unknown labels
    # about 3.7 images per patient, as in NIH ChestX-ray14
    patients = np.array([f"p{i:06d}" for i in np.sort(rng.integers(0, Q * 10 // 37, Q))])
    # neighbours that share labels more often than chance, and a little padding
    nb = rng.integers(0, Q, (Q, K))
    order = np.argsort(labels[:, 4] * 2 + labels[:, 0], kind="stable")
    rank = np.empty(Q, dtype=np.int64)
    rank[order] = np.arange(Q)
    nb[:, :5] = order[np.clip(rank[:, None] + rng.integers(-50, 50, (Q, 5)), 0, Q - 1)]
    nb[rng.random(Q) < 0.001, -3:] = -1
    pool = np.array([f"1121-{d}-{a}-700" for d in ("110", "120", "210", "220", "4a0")
                     for a in ("200", "310", "411", "500", "914", "921", "942", "961")], object)
    codes = pool[rng.integers(0, len(pool), Q)]
    return EvalData(queries=np.arange(Q), neighbors=nb, distances=np.zeros((Q, 1), np.float32),
                    labels=labels, label_names=tuple(f"finding{i}" for i in range(L)),
                    patient_ids=patients, irma_codes=codes, irma_tree=IrmaCodeTree.from_codes(pool),
                    gallery=np.arange(Q))


@pytest.fixture(scope="module")
def data() -> EvalData:
    return make_data()


def _check(ev) -> None:
    for key in ("p@100", "map@100", "recall@10", "mrr@10", "avg@100", "avg_jaccard@100",
                "ndcg@100", "knn_auc@100", "knn_auc@10[finding4]", "irma_error@1",
                "irma_error_total@1", "irma_error@100"):
        assert key in ev.values, key


def _timed(benchmark):
    """evaluate() that also records its CPU time (the box may be shared: wall > CPU)."""
    cpu: list[float] = []

    def run(*args, **kwargs):
        t0 = time.process_time()
        ev = evaluate(*args, **kwargs)
        cpu.append(time.process_time() - t0)
        benchmark.extra_info["cpu_s_min"] = round(min(cpu), 2)
        return ev

    return run


def test_all_metrics_point_values(benchmark, data):
    ev = benchmark.pedantic(_timed(benchmark), args=(data, None, KS), kwargs={"n_boot": 0},
                            rounds=3, iterations=1)
    _check(ev)


def test_all_metrics_with_200_bootstrap_cis(benchmark, data):
    ev = benchmark.pedantic(_timed(benchmark), args=(data, None, KS),
                            kwargs={"n_boot": 200, "seed": 0}, rounds=1, iterations=1)
    _check(ev)
    assert len(ev.ci) == len(ev.values)
    benchmark.extra_info.update({k: round(v, 2) for k, v in ev.timings.items()})
