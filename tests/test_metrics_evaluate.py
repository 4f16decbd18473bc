"""evaluate(): point values, patient-level bootstrap CIs, fast path == generic path."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pytest

from cxrbench.metrics import METRICS, IrmaCodeTree
from cxrbench.metrics.base import EvalData, Metric
from cxrbench.metrics.evaluate import bootstrap_samples, evaluate, patient_bootstrap_rows

FAMILIES = ("ranking", "avg", "knn_auc", "irma")


def random_data(seed=0, n=120, n_lab=3, k=6, per_patient=3, pad=0.05) -> EvalData:
    rng = np.random.default_rng(seed)
    labels = (rng.random((n, n_lab)) < 0.35).astype(np.int8)
    labels[rng.random((n, n_lab)) < 0.05] = -1
    patients = np.array([f"p{i // per_patient:03d}" for i in range(n)])
    queries = np.arange(0, n, 2)
    nb = np.stack([rng.choice(np.flatnonzero(patients != patients[q]), k, replace=False)
                   for q in queries])
    nb[:, -1][rng.random(len(queries)) < pad] = -1
    pool = ["1121-120-200-700", "1121-110-411-700", "1123-127-500-000", "1121-4a0-914-700"]
    codes = np.array(rng.choice(pool, n), dtype=object)
    return EvalData(queries=queries, neighbors=nb, distances=np.zeros(nb.shape, np.float32),
                    labels=labels, label_names=("A", "B", "C")[:n_lab], patient_ids=patients,
                    irma_codes=codes, irma_tree=IrmaCodeTree.from_codes(pool),
                    gallery=np.arange(n))


class Generic(Metric):
    """A plugin-style wrapper: compute() only, so the bootstrap takes the generic path."""

    def __init__(self, inner: Metric) -> None:
        self.inner = inner

    def compute(self, data: EvalData, ks: Sequence[int]) -> dict[str, float]:
        return self.inner.compute(data, ks)


@pytest.mark.parametrize("family", FAMILIES)
def test_summary_reproduces_its_values(family):
    data = random_data()
    s = METRICS.create(family).summarize(data, [1, 3, 6])
    q = data.n_queries
    d = np.ones(q) @ s.dense if s.dense is not None else None
    h = None
    if s.bins is not None:
        b = s.bins[s.bins >= 0]
        h = np.bincount(b, minlength=s.n_bins).astype(float)
    got = {k: float(v[0]) for k, v in s.finish(d, h).items() if np.isfinite(v[0])}
    assert got == pytest.approx(s.values, abs=1e-12)


@pytest.mark.parametrize("family", FAMILIES)
def test_fast_bootstrap_equals_recomputing_on_resampled_tables(family):
    data = random_data(seed=1)
    m = METRICS.create(family)
    ks = [1, 4]
    fast = bootstrap_samples(data, [(m, m.summarize(data, ks))], ks, 12, seed=5)
    slow = bootstrap_samples(data, [(Generic(m), None)], ks, 12, seed=5)
    assert set(fast) >= set(slow)
    for key, arr in slow.items():
        np.testing.assert_allclose(fast[key], arr, rtol=0, atol=1e-10, err_msg=key)


def test_ci_contains_point_and_is_seeded():
    data = random_data(seed=2)
    a = evaluate(data, None, [1, 5], n_boot=60, seed=3)
    b = evaluate(data, None, [1, 5], n_boot=60, seed=3)
    c = evaluate(data, None, [1, 5], n_boot=60, seed=4)
    assert a.ci == b.ci and a.values == b.values
    assert a.ci != c.ci
    assert set(a.ci) == set(a.values)
    for key, (lo, hi) in a.ci.items():
        assert lo <= a.values[key] + 1e-9 and a.values[key] - 1e-9 <= hi, key
    assert {"point", "bootstrap"} <= set(a.timings)
    # patients are drawn by id, so the CIs do not depend on the order of the queries
    perm = np.random.default_rng(0).permutation(data.n_queries)
    p = evaluate(data.take(perm), None, [1, 5], n_boot=60, seed=3)
    assert p.values == pytest.approx(a.values, abs=1e-12)
    assert set(p.ci) == set(a.ci)
    for key in a.ci:
        assert p.ci[key] == pytest.approx(a.ci[key], abs=1e-12), key
    # the same families and ks give the same keys as the point estimates
    assert set(evaluate(data, None, [1, 5], n_boot=0).values) == set(a.values)


def test_patients_are_resampled_not_images():
    # every patient has two queries: one always hits, one always misses, so any
    # patient-level replicate has P@1 = 1/2 exactly; resampling images would not
    labels = np.array([[1, 0], [0, 1]] * 20 + [[1, 0]] * 4, np.int8)
    patients = np.array([f"p{i // 2}" for i in range(40)] + ["g"] * 4)
    queries = np.arange(40)
    nb = np.where(queries % 2 == 0, 40, 41)[:, None]  # even -> {A} (hit), odd -> {A} (miss)
    data = EvalData(queries=queries, neighbors=nb, distances=np.zeros(nb.shape, np.float32),
                    labels=labels, label_names=("A", "B"), patient_ids=patients)
    ev = evaluate(data, ["ranking"], [1], n_boot=100, seed=0)
    assert ev.values["p@1"] == 0.5 and ev.ci["p@1"] == (0.5, 0.5)
    # and the generic path's rows contain whole patients, as often as each was drawn
    for rows in patient_bootstrap_rows(patients[queries], 20, seed=1):
        counts = np.bincount(rows, minlength=40)
        assert (counts[0::2] == counts[1::2]).all() and len(rows) == 40


def test_plugin_metric_gets_patient_level_ci():
    class Mean(Metric):
        """mean query row index (a plugin without summarize)"""

        def compute(self, data, ks):
            return {"rowmean@1": float(np.mean(data.queries))}

    METRICS.add("test_rowmean", Mean)
    try:
        ev = evaluate(random_data(), ["test_rowmean"], [1], n_boot=30, seed=0)
    finally:
        METRICS.unregister("test_rowmean")
    lo, hi = ev.ci["rowmean@1"]
    assert lo < ev.values["rowmean@1"] < hi


def test_absent_keys_and_notes_are_reported():
    data = random_data()
    labels = data.labels.copy()
    labels[:, 1] = 0  # no positive B anywhere
    ev = evaluate(EvalData(**{**data.__dict__, "labels": labels}), None, [3], n_boot=0)
    assert "knn_auc@3[B]" not in ev.values and "one class" in ev.skipped["knn_auc@3[B]"]
    assert "knn_auc@3[A]" in ev.values and ev.ci == {}
    assert "ranking" in ev.notes and "irma" in ev.notes


def test_rejects_bad_k():
    with pytest.raises(ValueError, match="exceeds"):
        evaluate(random_data(), None, [7], n_boot=0)
    with pytest.raises(ValueError, match=">= 1"):
        evaluate(random_data(), None, [0], n_boot=0)


def test_not_applicable_metrics_are_listed():
    data = random_data()
    no_codes = EvalData(**{**data.__dict__, "irma_codes": None})
    ev = evaluate(no_codes, ["irma", "ranking"], [1], n_boot=0)  # asked for: says why not
    assert "no IRMA codes" in ev.skipped["irma"] and "p@1" in ev.values
    assert not any(k.startswith("irma") for k in ev.values)
    assert "irma" not in evaluate(no_codes, None, [1], n_boot=0).skipped  # default: just left out


@pytest.mark.parametrize("protocol", ["leave-one-out", "kfold", "holdout"])
def test_harness_passes_the_searched_gallery(tiny, protocol):
    # ndcg's ideal must come from the rows each query searched (per fold for kfold)
    import math

    import cxrbench
    from cxrbench.benchmark.harness import patient_folds

    r = cxrbench.run("random", tiny, out=None, n_boot=0, protocol=protocol, k=[5], folds=3)
    t = r._table
    ix = tiny.index
    if protocol == "kfold":
        folds = patient_folds(ix.patient_ids, 3, 0)
        gallery_of = [np.flatnonzero(folds != folds[q]) for q in t.queries]
    elif protocol == "holdout":
        gallery_of = [tiny.split_indices("train")] * len(t.queries)
    else:
        gallery_of = [np.arange(len(ix))] * len(t.queries)
    pos = [set(np.flatnonzero(row == 1)) for row in ix.labels]
    vals = []
    for qi, q in enumerate(t.queries):
        if not pos[q]:
            continue
        gains = sorted((len(pos[q] & pos[g]) for g in gallery_of[qi] if g != q), reverse=True)[:5]
        ideal = sum(g / math.log2(i + 2) for i, g in enumerate(gains))
        dcg = sum(len(pos[q] & pos[n]) / math.log2(i + 2) for i, n in enumerate(t.neighbors[qi])
                  if n >= 0)
        if ideal > 0:
            vals.append(dcg / ideal)
    assert r.metrics["ndcg@5"] == pytest.approx(np.mean(vals), abs=1e-12)
