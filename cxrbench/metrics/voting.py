"""k-NN-vote AUC (seed 000) and the majority-vote decision statistics per label.

For label l and a query, the vote score is the fraction of its top K
neighbours positive for l: ``score = (#neighbours with label value 1) / K``.
Unknown neighbour labels (-1) and padded neighbours (-1 rows) count as not
positive; K stays the denominator.

* ``knn_auc@K[<label>]``: ROC-AUC (scikit-learn ``roc_auc_score``) of the
  score against the query's label, over the queries whose label is known
  (not -1). The score takes only K + 1 values, so scikit-learn is given the
  (label, score) histogram with ``sample_weight`` = counts: the exact AUC of
  all queries, ties counted one half, in milliseconds at 551k queries.
* ``knn_auc@K``: the macro mean over labels that have both classes among
  the known queries. A label with one class only has no AUC: its key is
  absent (listed in ``Evaluation.skipped`` with the reason), never 0.5 or 1.
* Majority vote: predicted positive when score >= 0.5 (a tie at even K
  counts as positive, the side that keeps recall on rare findings, seed
  003). ``sensitivity@K[l]`` = TP / P, ``specificity@K[l]`` = TN / N,
  ``precision@K[l]`` = TP / (TP + FP), ``f1@K[l]`` = 2TP / (2TP + FP + FN);
  a ratio with a zero denominator is absent, with the reason.

Every label column is treated alike: a 'No Finding' column, if the dataset
has one, gets its own AUC and is part of the macro mean.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from sklearn.metrics import roc_auc_score

from cxrbench.metrics import METRICS
from cxrbench.metrics import _kernels as kn
from cxrbench.metrics.base import EvalData, LabelMetric, Summary

VOTE_STATS = ("sensitivity", "specificity", "precision", "f1")


def vote_counts(data: EvalData, ks: Sequence[int]) -> np.ndarray:
    """(Q, len(ks), L) number of top-K neighbours positive for each label."""
    n_lab = data.labels.shape[1]
    words = kn.pack_bits(data.labels == 1)
    dt = np.int16 if ks[-1] < 32768 else np.int32
    out = np.zeros((data.n_queries, len(ks), n_lab), dtype=dt)
    for sl in kn.chunks(data.n_queries):
        nw = kn.take_words(words, data.neighbors[sl, :ks[-1]])
        out[sl] = kn.label_counts(nw, n_lab, ks)
    return out


def hist_auc(neg: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """Mann-Whitney AUC from score histograms (R, S) of negatives and positives.

    AUC = P(score_pos > score_neg) + P(equal) / 2; NaN without both classes.
    """
    n_neg, n_pos = neg.sum(axis=1), pos.sum(axis=1)
    below = np.cumsum(neg, axis=1) - neg
    num = (pos * (below + 0.5 * neg)).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((n_neg > 0) & (n_pos > 0), num / (n_neg * n_pos), np.nan)


@METRICS.register("knn_auc")
class KnnVote(LabelMetric):
    """k-NN-vote AUC (seed 000), per label and macro, and the vote's sensitivity/specificity/F1."""

    name = "knn_auc"

    def summarize(self, data: EvalData, ks: Sequence[int]) -> Summary:
        ks = sorted({int(k) for k in ks})
        names = list(data.label_names)
        n_lab, nk = len(names), len(ks)
        y = np.asarray(data.qlabels(), dtype=np.int8)
        counts = vote_counts(data, ks)
        # histogram layout: for (k index j, label l): K+1 negative bins then K+1 positive bins
        width = np.repeat(2 * (np.array(ks) + 1), n_lab)  # per column h = j * L + l
        base = np.concatenate([[0], np.cumsum(width)[:-1]])
        n_bins = int(width.sum())
        bins = np.empty((data.n_queries, nk, n_lab), dtype=np.int32)
        base3 = base.reshape(nk, n_lab).astype(np.int32)
        step3 = (np.array(ks, dtype=np.int32) + 1)[:, None]  # (nk, 1)
        hist = np.zeros(n_bins, dtype=np.int64)
        for sl in kn.chunks(data.n_queries):
            yy = y[sl, None, :].astype(np.int32)  # (c, 1, L)
            b = bins[sl]
            np.add(counts[sl], base3, out=b, dtype=np.int32)
            b += yy * step3
            b[np.broadcast_to(yy < 0, b.shape)] = -1
            hist += np.bincount(b[b >= 0], minlength=n_bins)
        bins = bins.reshape(data.n_queries, nk * n_lab)  # column j * L + l
        # The bootstrap sums query weights into these bins. The fullest bin of each
        # column (typically "negative, no positive neighbour") is left out and
        # recovered as (weight of the queries whose label is known) - (other bins),
        # which skips most of the work for rare labels.
        mode = np.array([base[h] + int(np.argmax(hist[base[h]:base[h] + width[h]]))
                         for h in range(nk * n_lab)], dtype=np.int32)
        for h in range(nk * n_lab):
            col = bins[:, h]
            col[col == mode[h]] = -1
        known = (y >= 0).astype(np.float64)  # (Q, L): the dense statistics
        lab_of = np.tile(np.arange(n_lab), nk)

        def split(h: np.ndarray, j: int, li: int):
            k, b = ks[j], base[j * n_lab + li]
            return h[:, b:b + k + 1], h[:, b + k + 1:b + 2 * (k + 1)]

        def finish(d: np.ndarray, h: np.ndarray) -> dict[str, np.ndarray]:
            h = np.array(np.atleast_2d(h), dtype=np.float64)
            d = np.atleast_2d(d)
            for hh in range(nk * n_lab):
                seg = h[:, base[hh]:base[hh] + width[hh]]
                seg[:, mode[hh] - base[hh]] = 0.0
                h[:, mode[hh]] = d[:, lab_of[hh]] - seg.sum(axis=1)
            out: dict[str, np.ndarray] = {}
            for j, k in enumerate(ks):
                aucs = []
                for li, lab in enumerate(names):
                    neg, pos = split(h, j, li)
                    auc = hist_auc(neg, pos)
                    aucs.append(auc)
                    out[f"knn_auc@{k}[{lab}]"] = auc
                    out.update(_vote_stats(neg, pos, k, lab))
                a = np.stack(aucs, axis=1)
                n_ok = np.isfinite(a).sum(axis=1)
                with np.errstate(invalid="ignore", divide="ignore"):
                    out[f"knn_auc@{k}"] = np.where(n_ok > 0, np.nansum(a, axis=1) / n_ok, np.nan)
            return out

        hist = hist.astype(np.float64)[None, :]
        point = finish(known.sum(axis=0)[None, :], hist)
        values: dict[str, float] = {}
        absent: dict[str, str] = {}
        for key, v in point.items():
            if np.isfinite(v[0]):
                values[key] = float(v[0])
        # the AUC point estimates from scikit-learn, on the weighted histogram
        for j, k in enumerate(ks):
            aucs = []
            for li, lab in enumerate(names):
                neg, pos = split(hist, j, li)
                key = f"knn_auc@{k}[{lab}]"
                n_neg, n_pos = int(neg.sum()), int(pos.sum())
                if n_neg == 0 or n_pos == 0:
                    absent[key] = (f"only one class among the {n_neg + n_pos} queries whose "
                                   f"'{lab}' is known ({n_pos} positive, {n_neg} negative)")
                    values.pop(key, None)
                    continue
                values[key] = _sk_auc(neg[0], pos[0])
                aucs.append(values[key])
            if aucs:
                values[f"knn_auc@{k}"] = float(np.mean(aucs))
            else:
                absent[f"knn_auc@{k}"] = "no label has both classes among the known queries"
        for key in point:
            if key not in values and key not in absent:
                absent[key] = _why_undefined(key)
        s = Summary(values=values, dense=known, bins=bins, n_bins=n_bins, finish=finish,
                    absent=absent)
        n_unknown = (y < 0).sum(axis=0)
        if n_unknown.any():
            s.notes["knn_auc"] = "queries with an unknown label are left out of that label: " + ", ".join(
                f"{lab} {int(n)}" for lab, n in zip(names, n_unknown) if n)
        return s


def _sk_auc(neg: np.ndarray, pos: np.ndarray) -> float:
    scores = np.arange(len(neg), dtype=np.float64)
    y = np.r_[np.zeros(len(neg)), np.ones(len(pos))]
    w = np.r_[neg, pos]
    keep = w > 0
    return float(roc_auc_score(y[keep], np.r_[scores, scores][keep], sample_weight=w[keep]))


def _vote_stats(neg: np.ndarray, pos: np.ndarray, k: int, lab: str) -> dict[str, np.ndarray]:
    thr = (k + 1) // 2  # predicted positive when count / k >= 0.5, i.e. count >= ceil(k / 2)
    tp, fp = pos[:, thr:].sum(axis=1), neg[:, thr:].sum(axis=1)
    p, n = pos.sum(axis=1), neg.sum(axis=1)
    fn, tn = p - tp, n - fp
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            f"sensitivity@{k}[{lab}]": np.where(p > 0, tp / p, np.nan),
            f"specificity@{k}[{lab}]": np.where(n > 0, tn / n, np.nan),
            f"precision@{k}[{lab}]": np.where(tp + fp > 0, tp / (tp + fp), np.nan),
            f"f1@{k}[{lab}]": np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), np.nan),
        }


def _why_undefined(key: str) -> str:
    stat = key.split("@", 1)[0]
    return {
        "sensitivity": "no query is known positive for this label",
        "specificity": "no query is known negative for this label",
        "precision": "the vote never predicts this label positive",
        "f1": "no known positive query and no positive vote",
    }.get(stat, "undefined on these queries")
