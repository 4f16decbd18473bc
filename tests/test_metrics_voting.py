"""knn_auc family: k-NN-vote AUC (seed 000) and majority-vote statistics."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score

from cxrbench.metrics import METRICS
from cxrbench.metrics.base import EvalData
from cxrbench.metrics.voting import hist_auc

# rows: 0 {A}, 1 {A,B}, 2 {C}, 3 {B, C unknown}, 4 {}, 5 {A,C}
LABELS = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 1], [0, 1, -1], [0, 0, 0], [1, 0, 1]], np.int8)
NAMES = ("A", "B", "C")


def table(queries=(0, 2, 4), neighbors=((1, 2, 5), (3, 5, -1), (0, 1, 2)), labels=LABELS,
          names=NAMES, **kw) -> EvalData:
    labels = np.asarray(labels, np.int8)
    return EvalData(queries=np.asarray(queries), neighbors=np.asarray(neighbors),
                    distances=np.zeros(np.shape(neighbors), np.float32), labels=labels,
                    label_names=tuple(names), patient_ids=np.array([f"p{i}" for i in range(len(labels))]),
                    **kw)


def vote(data, ks):
    return METRICS.create("knn_auc").summarize(data, ks)


def test_hand_table():
    s = vote(table(), [1, 2, 3])
    v = s.values
    # A: y = (1, 0, 0); positives among top K: q0 (1, 1, 2), q2 (0, 1, 1), q4 (1, 2, 2)
    assert v["knn_auc@1[A]"] == pytest.approx(0.75)  # pos 1 vs negs 0, 1
    assert v["knn_auc@2[A]"] == pytest.approx(0.25)  # pos 1/2 vs negs 1/2, 1
    assert v["knn_auc@3[A]"] == pytest.approx(0.75)  # pos 2/3 vs negs 1/3, 2/3
    # C: y = (0, 1, 0); row 3's unknown C counts as not positive; padding too
    assert v["knn_auc@1[C]"] == pytest.approx(0.5)
    assert v["knn_auc@2[C]"] == pytest.approx(0.75)
    assert v["knn_auc@3[C]"] == pytest.approx(0.25)
    # B has no positive query: absent, never 0.5, and the macro mean skips it
    for k in (1, 2, 3):
        assert f"knn_auc@{k}[B]" not in v and "1 positive" not in s.absent[f"knn_auc@{k}[B]"]
        assert "0 positive" in s.absent[f"knn_auc@{k}[B]"]
    assert v["knn_auc@1"] == pytest.approx((0.75 + 0.5) / 2)
    assert v["knn_auc@3"] == pytest.approx((0.75 + 0.25) / 2)
    # votes at K=3 (positive when >= 2 of 3): A: q0 TP, q2 TN, q4 FP; C: q0 FP, q2 FN, q4 TN
    assert v["sensitivity@3[A]"] == 1.0 and v["specificity@3[A]"] == 0.5
    assert v["precision@3[A]"] == 0.5 and v["f1@3[A]"] == pytest.approx(2 / 3)
    assert v["sensitivity@3[C]"] == 0.0 and v["specificity@3[C]"] == 0.5
    assert v["precision@3[C]"] == 0.0 and v["f1@3[C]"] == 0.0
    # B: every query negative and voted negative
    assert v["specificity@3[B]"] == 1.0
    assert "sensitivity@3[B]" in s.absent and "precision@3[B]" in s.absent and "f1@3[B]" in s.absent
    # K=2: a 1-1 tie is a positive vote: A: q0 TP, q2 FP, q4 FP
    assert v["sensitivity@2[A]"] == 1.0 and v["specificity@2[A]"] == 0.0
    assert v["precision@2[A]"] == pytest.approx(1 / 3) and v["f1@2[A]"] == pytest.approx(0.5)


def brute_force(data: EvalData, k: int) -> dict[str, float]:
    out: dict[str, float] = {}
    aucs = []
    for li, name in enumerate(data.label_names):
        ys, scores = [], []
        for qi, q in enumerate(data.queries):
            y = data.labels[q, li]
            if y < 0:
                continue
            pos = sum(1 for n in data.neighbors[qi, :k] if n >= 0 and data.labels[n, li] == 1)
            ys.append(y)
            scores.append(pos / k)
        ys, scores = np.array(ys), np.array(scores)
        if len(set(ys.tolist())) == 2:
            out[f"knn_auc@{k}[{name}]"] = roc_auc_score(ys, scores)
            aucs.append(out[f"knn_auc@{k}[{name}]"])
        pred = scores >= 0.5
        tp, fp = int((pred & (ys == 1)).sum()), int((pred & (ys == 0)).sum())
        fn, tn = int((~pred & (ys == 1)).sum()), int((~pred & (ys == 0)).sum())
        if tp + fn:
            out[f"sensitivity@{k}[{name}]"] = tp / (tp + fn)
        if tn + fp:
            out[f"specificity@{k}[{name}]"] = tn / (tn + fp)
        if tp + fp:
            out[f"precision@{k}[{name}]"] = tp / (tp + fp)
        if 2 * tp + fp + fn:
            out[f"f1@{k}[{name}]"] = 2 * tp / (2 * tp + fp + fn)
    if aucs:
        out[f"knn_auc@{k}"] = float(np.mean(aucs))
    return out


def random_table(rng, n=80, n_lab=4, k=7, q=40, prevalence=0.3):
    labels = (rng.random((n, n_lab)) < prevalence).astype(np.int8)
    labels[rng.random((n, n_lab)) < 0.1] = -1
    queries = rng.choice(n, q, replace=False)
    nb = np.stack([rng.choice(np.setdiff1d(np.arange(n), [x]), k, replace=False) for x in queries])
    nb[:, -2:][rng.random((q, 2)) < 0.2] = -1
    nb[:, -1][nb[:, -2] < 0] = -1
    return table(queries=queries, neighbors=nb, labels=labels,
                 names=[f"L{i}" for i in range(n_lab)])


@pytest.mark.parametrize("seed", range(5))
def test_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    data = random_table(rng, prevalence=[0.3, 0.05, 0.5][seed % 3])
    got = vote(data, [1, 4, 7]).values
    for k in (1, 4, 7):
        mine = {key: v for key, v in got.items() if f"@{k}" in key}
        assert mine == pytest.approx(brute_force(data, k), abs=1e-12)


def test_many_labels_and_large_k():
    # more than 64 labels (several words) and k > 255 (counter widening)
    rng = np.random.default_rng(3)
    n, k = 400, 300
    labels = (rng.random((n, 70)) < 0.4).astype(np.int8)
    queries = np.arange(20)
    nb = np.stack([rng.choice(np.setdiff1d(np.arange(n), [x]), k, replace=False) for x in queries])
    data = table(queries=queries, neighbors=nb, labels=labels, names=[f"L{i}" for i in range(70)])
    got = vote(data, [k]).values
    assert {key: v for key, v in got.items()} == pytest.approx(brute_force(data, k), abs=1e-12)


def test_hist_auc_equals_sklearn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    s = rng.integers(0, 11, 500)
    neg = np.bincount(s[y == 0], minlength=11)[None]
    pos = np.bincount(s[y == 1], minlength=11)[None]
    assert hist_auc(neg, pos)[0] == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_oracle_gives_auc_one():
    # each query's neighbours carry exactly its labels: positives score 1, negatives 0
    rng = np.random.default_rng(1)
    labels = np.repeat((rng.random((30, 3)) < 0.5).astype(np.int8), 4, axis=0)
    queries = np.arange(0, 120, 4)
    nb = np.stack([[q + 1, q + 2, q + 3] for q in queries])
    v = vote(table(queries=queries, neighbors=nb, labels=labels, names="ABC"), [3]).values
    assert v["knn_auc@3"] == 1.0
    assert all(v[f"sensitivity@3[{x}]"] == 1.0 and v[f"specificity@3[{x}]"] == 1.0 for x in "ABC")


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_random_labels_give_auc_near_half(seed):
    rng = np.random.default_rng(seed)
    n, k = 4000, 10
    labels = (rng.random((n, 3)) < 0.3).astype(np.int8)
    queries = np.arange(n)
    nb = rng.integers(0, n, (n, k))
    v = vote(table(queries=queries, neighbors=nb, labels=labels, names="ABC"), [k]).values
    # 4000 queries, ~1200 positives: the AUC's standard error is about 0.01
    assert abs(v[f"knn_auc@{k}"] - 0.5) < 0.05


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_invariant_to_query_order(seed):
    rng = np.random.default_rng(seed)
    data = random_table(rng, n=30, q=15, k=4)
    perm = rng.permutation(data.n_queries)
    assert vote(data.take(perm), [1, 4]).values == pytest.approx(vote(data, [1, 4]).values,
                                                                 abs=1e-12)
