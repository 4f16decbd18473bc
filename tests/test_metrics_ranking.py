"""ranking family: P@K, mAP@K, Recall/HitRate@K, MRR@K.

Checked against a hand-computed table, a brute-force reference written here,
and properties (P@1 == HitRate@1, invariance to query order).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cxrbench.metrics import METRICS
from cxrbench.metrics.base import EvalData

# rows: 0 {A}, 1 {A,B}, 2 {C}, 3 {B, C unknown}, 4 {}, 5 {A,C}
LABELS = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 1], [0, 1, -1], [0, 0, 0], [1, 0, 1]], np.int8)
PATIENTS = np.array(["p0", "p0", "p1", "p2", "p3", "p4"])
QUERIES = np.array([0, 2, 4])
NEIGHBORS = np.array([[1, 2, 5], [3, 5, -1], [0, 1, 2]])


def table(queries=QUERIES, neighbors=NEIGHBORS, labels=LABELS, single=False, **kw) -> EvalData:
    return EvalData(queries=np.asarray(queries), neighbors=np.asarray(neighbors),
                    distances=np.zeros(np.shape(neighbors), np.float32), labels=labels,
                    label_names=tuple(f"L{i}" for i in range(labels.shape[1])),
                    patient_ids=np.array([f"p{i}" for i in range(len(labels))]) if len(labels) != 6
                    else PATIENTS, single_label=single, **kw)


def ranking(data, ks):
    return METRICS.create("ranking").compute(data, ks)


def test_hand_table():
    # q0 {A}: relevance [1, 0, 1]; q2 {C}: [0, 1, 0] (row 3's unknown C is not shared,
    # padding is not relevant); q4 has no positive label: excluded.
    v = ranking(table(), [1, 2, 3])
    expect = {
        "p@1": 0.5, "p@2": 0.5, "p@3": 0.5,
        "recall@1": 0.5, "recall@2": 1.0, "recall@3": 1.0,
        "mrr@1": 0.5, "mrr@2": 0.75, "mrr@3": 0.75,
        # AP@3: q0 (P@1 + P@3) / 2 = (1 + 2/3) / 2, q2 P@2 / 1 = 1/2
        "map@1": 0.5, "map@2": 0.75, "map@3": ((1 + 2 / 3) / 2 + 0.5) / 2,
    }
    assert v == pytest.approx(expect, abs=1e-12)
    s = METRICS.create("ranking").summarize(table(), [3])
    assert "1 of 3 queries have no positive label" in s.notes["ranking"]


def test_single_label_exact_class():
    # binary single-label (N, 1): class 0 images are relevant to class-0 queries
    labels = np.array([[0], [0], [1], [1], [0]], np.int8)
    d = table(queries=[0, 2], neighbors=[[1, 2], [4, 3]], labels=labels, single=True)
    v = ranking(d, [1, 2])
    assert v["p@1"] == pytest.approx(0.5)  # q0 -> row1 (0) yes; q2 -> row4 (0) no
    assert v["p@2"] == pytest.approx(0.5)
    assert v["mrr@2"] == pytest.approx((1 + 0.5) / 2)
    # one-hot multi-class: same row = same class, sharing a column alone is not enough
    onehot = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 0, 1]], np.int8)
    d = table(queries=[0, 1], neighbors=[[2, 1], [3, 0]], labels=onehot, single=True)
    assert ranking(d, [2])["p@2"] == pytest.approx(0.25)


def brute_force(data: EvalData, k: int) -> dict[str, float]:
    """Per query, per rank, with Python sets: the definitions written out."""
    out = {m: [] for m in ("p", "map", "recall", "mrr")}
    for qi, q in enumerate(data.queries):
        if data.single_label:
            qrow = tuple(data.labels[q])
            if -1 in qrow:
                continue
            rel = [n >= 0 and tuple(data.labels[n]) == qrow for n in data.neighbors[qi, :k]]
        else:
            qpos = {j for j, v in enumerate(data.labels[q]) if v == 1}
            if not qpos:
                continue
            rel = [n >= 0 and bool(qpos & {j for j, v in enumerate(data.labels[n]) if v == 1})
                   for n in data.neighbors[qi, :k]]
        hits, ap, first = 0, 0.0, 0
        for i, r in enumerate(rel, start=1):
            if r:
                hits += 1
                ap += hits / i
                first = first or i
        out["p"].append(hits / k)
        out["recall"].append(float(hits > 0))
        out["mrr"].append(1 / first if first else 0.0)
        out["map"].append(ap / hits if hits else 0.0)
    return {f"{m}@{k}": float(np.mean(v)) for m, v in out.items() if v}


def random_table(rng, n=60, n_lab=5, k=8, q=25, single=False, p_unknown=0.1):
    if single:
        labels = np.eye(n_lab, dtype=np.int8)[rng.integers(0, n_lab, n)]
    else:
        labels = (rng.random((n, n_lab)) < 0.3).astype(np.int8)
        labels[rng.random((n, n_lab)) < p_unknown] = -1
    queries = rng.choice(n, q, replace=False)
    nb = np.stack([rng.choice(np.setdiff1d(np.arange(n), [x]), k, replace=False) for x in queries])
    nb[rng.random(nb.shape) < 0.05] = -1
    nb = np.sort(np.where(nb < 0, np.iinfo(np.int64).max, nb), axis=1)  # padding at the end
    nb[nb == np.iinfo(np.int64).max] = -1
    return table(queries=queries, neighbors=nb, labels=labels, single=single)


@pytest.mark.parametrize("single", [False, True])
@pytest.mark.parametrize("seed", range(4))
def test_matches_brute_force(seed, single):
    data = random_table(np.random.default_rng(seed), single=single)
    got = ranking(data, [1, 3, 8])
    for k in (1, 3, 8):
        assert {key: got[key] for key in got if key.endswith(f"@{k}")} == pytest.approx(
            brute_force(data, k), abs=1e-9)


def test_text_queries_use_query_labels():
    # query_labels replace the dataset rows' labels for the queries
    d = table(query_labels=np.array([[0, 0, 1], [1, 0, 0], [0, 1, 0]], np.int8))
    v = ranking(d, [1])
    # q0 (now {C}) -> row1 {A,B} no; q1 ({A}) -> row3 {B} no; q2 ({B}) -> row0 {A} no
    assert v["p@1"] == 0.0


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), single=st.booleans())
def test_p1_equals_hit_rate_1_and_order_invariance(seed, single):
    rng = np.random.default_rng(seed)
    data = random_table(rng, n=30, q=12, k=5, single=single)
    v = ranking(data, [1, 5])
    if "p@1" in v:
        assert v["p@1"] == pytest.approx(v["recall@1"]) == pytest.approx(v["map@1"])
        assert v["mrr@1"] == pytest.approx(v["p@1"])
    perm = rng.permutation(data.n_queries)
    assert ranking(data.take(perm), [1, 5]) == pytest.approx(v, abs=1e-12)
