"""Compute a set of metrics with patient-level bootstrap confidence intervals.

Bootstrap: each replicate draws as many patients as there are, with
replacement (seeded ``numpy.random.default_rng(seed)``), and takes all query
rows of each drawn patient as often as it was drawn; the CI is the
percentile interval of the replicate values. Images of one patient are never
split, so follow-up films do not shrink the intervals.

Two equivalent paths compute a replicate:

* fast (every built-in family): the family's :class:`~cxrbench.metrics.base.Summary`
  holds per-query additive statistics. They are summed per patient once;
  a batch of replicates is then a matrix product of the patient counts with
  those sums (dense statistics) or with a sparse patient x bin histogram
  (AUC / vote counts). No neighbour table is copied.
* generic (plugins without ``summarize``): ``compute`` on the resampled
  table ``data.take(rows)``.

Both draw the same patient counts from the same seed, so a plugin and a
built-in see the same replicates, and the two paths agree exactly (tested).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np

from cxrbench.metrics import METRICS
from cxrbench.metrics.base import EvalData, Metric, Summary

log = logging.getLogger(__name__)

#: replicates drawn per matrix product (memory: batch x patients x 8 bytes)
BOOT_BATCH = 32


@dataclass
class Evaluation:
    values: dict[str, float] = field(default_factory=dict)
    ci: dict[str, tuple[float, float]] = field(default_factory=dict)
    higher_is_better: dict[str, bool] = field(default_factory=dict)
    #: metric family or single key -> why it is not reported (not applicable,
    #: a label with one class only, no gallery for ndcg ...)
    skipped: dict[str, str] = field(default_factory=dict)
    #: facts about how values were computed (queries excluded, approximations)
    notes: dict[str, str] = field(default_factory=dict)
    n_boot: int = 0
    #: wall-clock seconds: "point" (all values) and "bootstrap" (all CIs)
    timings: dict[str, float] = field(default_factory=dict)


def default_metrics(data: EvalData) -> list[str]:
    """Every registered metric that applies to ``data``."""
    return [n for n in METRICS.names() if METRICS.create(n).applicable(data) is None]


def _patient_index(patients: np.ndarray) -> tuple[np.ndarray, int]:
    _, inverse = np.unique(np.asarray(patients), return_inverse=True)
    inverse = inverse.reshape(-1)
    return inverse, (int(inverse.max()) + 1 if len(inverse) else 0)


def patient_bootstrap_counts(n_patients: int, n_boot: int, seed: int) -> Iterator[np.ndarray]:
    """Yield, per replicate, how often each patient was drawn ((P,) int64)."""
    rng = np.random.default_rng(seed)
    for _ in range(n_boot):
        yield np.bincount(rng.integers(0, n_patients, n_patients), minlength=n_patients)


def patient_bootstrap_rows(patients: np.ndarray, n_boot: int, seed: int):
    """Yield query-row index arrays, resampling *patients* with replacement.

    Each replicate draws as many patients as there are (with replacement) and
    takes all query rows of each drawn patient as often as it was drawn.
    """
    inverse, n_pat = _patient_index(patients)
    qrows = np.arange(len(patients))
    for counts in patient_bootstrap_counts(n_pat, n_boot, seed):
        yield np.repeat(qrows, counts[inverse])


def evaluate(
    data: EvalData,
    metrics: Sequence[str] | None,
    ks: Sequence[int],
    *,
    n_boot: int = 200,
    seed: int = 0,
    ci_level: float = 0.95,
) -> Evaluation:
    """Compute ``metrics`` at ``ks``; 95% CIs by resampling query patients.

    Args:
        metrics: registered metric names, or None for all applicable ones.
        n_boot: bootstrap replicates; 0 disables confidence intervals.
    """
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise ValueError(f"k values must be >= 1, got {list(ks)}")
    if ks[-1] > data.k_max:
        raise ValueError(f"k={ks[-1]} exceeds the neighbour table's {data.k_max} columns")
    names = list(metrics) if metrics else default_metrics(data)
    out = Evaluation(n_boot=n_boot)
    fams: list[tuple[Metric, Summary | None]] = []
    t0 = time.perf_counter()
    for name in names:
        m: Metric = METRICS.create(name)
        why = m.applicable(data)
        if why is not None:
            if metrics:  # explicitly requested: say why it was skipped
                log.warning("metric %s skipped: %s", name, why)
            out.skipped[name] = why
            continue
        s = m.summarize(data, ks)
        vals = dict(s.values) if s is not None else m.compute(data, ks)
        out.values.update(vals)
        out.higher_is_better.update({key: m.higher_is_better(key) for key in vals})
        if s is not None:
            out.skipped.update(s.absent)
            out.notes.update(s.notes)
        fams.append((m, s))
    out.timings["point"] = time.perf_counter() - t0
    if n_boot > 0 and data.n_queries > 1 and fams:
        t0 = time.perf_counter()
        samples = bootstrap_samples(data, fams, ks, n_boot, seed)
        alpha = (1.0 - ci_level) / 2
        for key in out.values:
            arr = samples.get(key)
            if arr is None:
                continue
            arr = arr[np.isfinite(arr)]
            if len(arr) >= max(10, n_boot // 2):
                lo, hi = np.quantile(arr, [alpha, 1 - alpha])
                out.ci[key] = (float(lo), float(hi))
        out.timings["bootstrap"] = time.perf_counter() - t0
    return out


def bootstrap_samples(
    data: EvalData, fams: Sequence[tuple[Metric, Summary | None]], ks: Sequence[int],
    n_boot: int, seed: int,
) -> dict[str, np.ndarray]:
    """Replicate values per key, (n_boot,) arrays with NaN where undefined."""
    from scipy import sparse  # scipy and threadpoolctl come with scikit-learn
    from threadpoolctl import threadpool_limits

    inverse, n_pat = _patient_index(data.query_patients())
    q = data.n_queries
    samples: dict[str, np.ndarray] = {}

    def put(key: str, r0: int, v) -> None:
        arr = samples.get(key)
        if arr is None:
            arr = samples[key] = np.full(n_boot, np.nan)
        v = np.atleast_1d(np.asarray(v, dtype=np.float64))
        arr[r0:r0 + len(v)] = v

    # patient aggregation matrix A (P x Q): row p sums the queries of patient p
    agg = sparse.csr_matrix((np.ones(q), (inverse, np.arange(q))), shape=(n_pat, q))
    prepared = []
    for m, s in fams:
        if s is None or s.finish is None:
            prepared.append((m, None, None, None))
            continue
        dense_p = agg @ s.dense if s.dense is not None else None
        hist_p = None
        if s.bins is not None:
            b = np.asarray(s.bins)
            ok = b >= 0
            per_q = ok.sum(axis=1)
            idx_t = np.int32 if max(int(per_q.sum()), s.n_bins) < 2**31 - 1 else np.int64
            indptr = np.concatenate([[0], np.cumsum(per_q)]).astype(idx_t)
            per_query = sparse.csc_matrix(
                (np.ones(int(indptr[-1]), dtype=np.float32), b[ok].astype(idx_t, copy=False),
                 indptr), shape=(s.n_bins, q))
            # csc: the product walks patients in order and scatters into a small
            # (bins x batch) block that stays in cache
            hist_p = (per_query @ agg.T.astype(np.float32)).tocsc()  # (n_bins, P)
        prepared.append((m, s, dense_p, hist_p))

    counts_iter = patient_bootstrap_counts(n_pat, n_boot, seed)
    # the products are small and memory-bound: one BLAS thread is as fast, and
    # idle BLAS threads spinning between calls cost 4x the CPU time (measured)
    with threadpool_limits(limits=1, user_api="blas"):
        _replicates(data, ks, prepared, counts_iter, inverse, n_boot, put)
    return samples


def _replicates(data, ks, prepared, counts_iter, inverse, n_boot, put) -> None:
    qrows = np.arange(data.n_queries)
    for r0 in range(0, n_boot, BOOT_BATCH):
        nb = min(BOOT_BATCH, n_boot - r0)
        counts = np.stack([next(counts_iter) for _ in range(nb)])  # (nb, P)
        cf = counts.astype(np.float64)
        ct32 = None
        for m, s, dense_p, hist_p in prepared:
            if s is None:
                for r in range(nb):
                    rows = np.repeat(qrows, counts[r][inverse])
                    for key, v in m.compute(data.take(rows), ks).items():
                        put(key, r0 + r, v if v is not None else np.nan)
                continue
            d = cf @ dense_p if dense_p is not None else None
            h = None
            if hist_p is not None:
                if ct32 is None:
                    ct32 = np.ascontiguousarray(counts.T, dtype=np.float32)
                h = np.asarray(hist_p @ ct32).T.astype(np.float64)
            for key, v in s.finish(d, h).items():
                put(key, r0, v)
