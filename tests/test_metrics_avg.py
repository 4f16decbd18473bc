"""avg family: AvG@K (seed 001), avg_jaccard@K, graded ndcg@K."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cxrbench.metrics import METRICS
from cxrbench.metrics.base import EvalData

# rows: 0 {A}, 1 {A,B}, 2 {C}, 3 {B, C unknown}, 4 {}, 5 {A,C}
LABELS = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 1], [0, 1, -1], [0, 0, 0], [1, 0, 1]], np.int8)


def table(queries=(0, 2, 4), neighbors=((1, 2, 5), (3, 5, -1), (0, 1, 2)), labels=LABELS,
          gallery="all", **kw) -> EvalData:
    labels = np.asarray(labels, np.int8)
    return EvalData(queries=np.asarray(queries), neighbors=np.asarray(neighbors),
                    distances=np.zeros(np.shape(neighbors), np.float32), labels=labels,
                    label_names=tuple(f"L{i}" for i in range(labels.shape[1])),
                    patient_ids=np.array([f"p{i}" for i in range(len(labels))]),
                    gallery=np.arange(len(labels)) if isinstance(gallery, str) else gallery, **kw)


def avg(data, ks):
    return METRICS.create("avg").compute(data, ks)


def test_hand_table():
    # shared: q0 {A} -> [1, 0, 1]; q2 {C} -> [0, 1, 0]; q4 {} -> [0, 0, 0]
    # jaccard: q0 [1/2, 0, 1/2]; q2 [0, 1/2, 0]; q4 excluded (no positive label)
    # ideal gains (gallery = all rows, self removed): q0 [1, 1, 0]; q2 [1, 0, 0]
    l3, l4 = math.log2(3), math.log2(4)
    expect = {
        "avg@1": 1 / 3, "avg@2": (1 / 2 + 1 / 2 + 0) / 3, "avg@3": (2 / 3 + 1 / 3 + 0) / 3,
        "avg_jaccard@1": (1 / 2 + 0) / 2, "avg_jaccard@2": (1 / 4 + 1 / 4) / 2,
        "avg_jaccard@3": (1 / 3 + 1 / 6) / 2,
        "ndcg@1": (1 + 0) / 2,
        "ndcg@2": (1 / (1 + 1 / l3) + (1 / l3) / 1) / 2,
        "ndcg@3": ((1 + 1 / l4) / (1 + 1 / l3) + (1 / l3) / 1) / 2,
    }
    assert avg(table(), [1, 2, 3]) == pytest.approx(expect, abs=1e-12)


def test_published_avg_formula():
    # seed 001: AvG = sum_n s_n / K, s_n = labels shared with the image at rank n
    labels = np.array([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1], [0, 0, 0, 1], [0, 1, 1, 0]])
    d = table(queries=[0], neighbors=[[1, 2, 3, 4]], labels=labels)
    assert avg(d, [4])["avg@4"] == pytest.approx((2 + 3 + 0 + 2) / 4)


def test_ndcg_absent_without_gallery():
    s = METRICS.create("avg").summarize(table(gallery=None), [2])
    assert "ndcg@2" not in s.values and "gallery" in s.absent["ndcg@2"]
    assert s.values["avg@2"] == pytest.approx(1 / 3)


def brute_force(data: EvalData, k: int) -> dict[str, float]:
    def pos(row):
        return {j for j, v in enumerate(row) if v == 1}

    a, j, n = [], [], []
    for qi, q in enumerate(data.queries):
        qp = pos(data.labels[q])
        nbrs = [x for x in data.neighbors[qi, :k]]
        shared = [len(qp & pos(data.labels[x])) if x >= 0 else 0 for x in nbrs]
        a.append(sum(shared) / k)
        if not qp:
            continue
        j.append(sum(len(qp & pos(data.labels[x])) / len(qp | pos(data.labels[x]))
                     if x >= 0 else 0.0 for x in nbrs) / k)
        # ideal: all gallery rows but the query itself, sorted by shared labels
        gallery = (data.gallery if data.query_gallery is None
                   else data.gallery[data.query_gallery[qi]])
        gains = sorted((len(qp & pos(data.labels[g])) for g in gallery if g != q),
                       reverse=True)[:k]
        idcg = sum(g / math.log2(i + 2) for i, g in enumerate(gains))
        if idcg > 0:
            n.append(sum(s / math.log2(i + 2) for i, s in enumerate(shared)) / idcg)
    out = {f"avg@{k}": float(np.mean(a))}
    if j:
        out[f"avg_jaccard@{k}"] = float(np.mean(j))
    if n:
        out[f"ndcg@{k}"] = float(np.mean(n))
    return out


def random_table(rng, n=50, n_lab=4, k=6, q=20):
    labels = (rng.random((n, n_lab)) < 0.35).astype(np.int8)
    labels[rng.random((n, n_lab)) < 0.1] = -1
    queries = rng.choice(n, q, replace=False)
    nb = np.stack([rng.choice(np.setdiff1d(np.arange(n), [x]), k, replace=False) for x in queries])
    nb[:, -1][rng.random(q) < 0.3] = -1  # some padding
    gallery = np.arange(n) if rng.random() < 0.5 else rng.choice(n, n // 2, replace=False)
    return table(queries=queries, neighbors=nb, labels=labels, gallery=gallery)


@pytest.mark.parametrize("seed", range(5))
def test_matches_brute_force(seed):
    data = random_table(np.random.default_rng(seed))
    got = avg(data, [1, 4, 6])
    for k in (1, 4, 6):
        assert {key: got[key] for key in got if key.endswith(f"@{k}")} == pytest.approx(
            brute_force(data, k), abs=1e-9)


def test_kfold_galleries():
    # two folds: each query's ideal comes from the other fold's rows
    rng = np.random.default_rng(11)
    data = random_table(rng, n=40, q=20)
    fold = np.arange(40) % 2
    galleries = (np.flatnonzero(fold != 0), np.flatnonzero(fold != 1))
    data = EvalData(**{**data.__dict__, "gallery": galleries,
                       "query_gallery": fold[data.queries]})
    got = avg(data, [2, 6])
    assert {k: v for k, v in got.items() if k.endswith("@6")} == pytest.approx(
        brute_force(data, 6), abs=1e-9)
    perm = rng.permutation(data.n_queries)
    assert avg(data.take(perm), [2, 6]) == pytest.approx(got, abs=1e-12)


def test_many_label_words():
    # more than 64 labels: several bit words per image
    rng = np.random.default_rng(7)
    data = random_table(rng, n_lab=70, n=40, q=10)
    got = avg(data, [3])
    assert {k: v for k, v in got.items()} == pytest.approx(brute_force(data, 3), abs=1e-9)


def test_oracle_ndcg_is_one():
    # every neighbour shares all labels with the query and the gallery has no better image
    labels = np.array([[1, 0], [1, 0], [1, 0], [0, 1], [0, 1], [0, 1]], np.int8)
    d = table(queries=[0, 3], neighbors=[[1, 2], [4, 5]], labels=labels)
    v = avg(d, [2])
    assert v["ndcg@2"] == pytest.approx(1.0) and v["avg_jaccard@2"] == pytest.approx(1.0)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_invariant_to_query_order(seed):
    rng = np.random.default_rng(seed)
    data = random_table(rng, n=25, q=10, k=4)
    perm = rng.permutation(data.n_queries)
    assert avg(data.take(perm), [1, 4]) == pytest.approx(avg(data, [1, 4]), abs=1e-12)
