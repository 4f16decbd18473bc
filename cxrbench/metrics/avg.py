"""Label-overlap metrics: AvG@K (seed 001), its Jaccard variant, and graded NDCG@K.

For a query q and a retrieved image n, ``shared(q, n)`` is the number of
labels positive (value 1) in both; unknown labels (-1) are never shared and
never count in a union. Padded neighbours (-1) share nothing; K stays the
denominator.

* ``avg@K`` (Haq et al., seed 001): AvG = (s_1 + ... + s_K) / K with s_n the
  labels shared with the image at rank n; averaged over **all** queries, as
  published (a query without positive labels scores 0).
* ``avg_jaccard@K``: mean over the top K of shared / union of the positive
  label sets; averaged over queries with at least one positive label (for
  the others the ratio is 0/0).
* ``ndcg@K``: DCG@K = sum_i shared_i / log2(i + 1), divided by the ideal
  DCG@K: the DCG of the K gallery images sharing the most labels with the
  query. The ideal is computed from the gallery's label-set histogram (never
  a queries x gallery matrix), minus the query itself when it is a gallery
  row (self is always excluded from retrieval); same-patient exclusions are
  *not* removed from the ideal. With k-fold galleries (``EvalData.query_gallery``)
  each query's ideal comes from its own fold's gallery. Queries whose ideal
  DCG is 0 (no gallery image shares a label with them) are excluded. Needs
  ``EvalData.gallery``; without it the ndcg keys are reported absent.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from cxrbench.metrics import METRICS
from cxrbench.metrics import _kernels as kn
from cxrbench.metrics.base import EvalData, LabelMetric, Summary


def _masks(words: list[np.ndarray], rows) -> np.ndarray:
    """(n,) uint64 label masks when L <= 64, else (n, W) uint64."""
    if len(words) == 1:
        return words[0][rows].astype(np.uint64)
    return np.stack([w[rows].astype(np.uint64) for w in words], axis=1)


def _unique(masks: np.ndarray, **kw):
    return np.unique(masks, axis=0 if masks.ndim == 2 else None, **kw)


def _shared(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) number of bits set in both."""
    if a.ndim == 1:
        return np.bitwise_count(a[:, None] & b[None, :]).astype(np.int64)
    out = np.zeros((len(a), len(b)), dtype=np.int64)
    for w in range(a.shape[1]):
        out += np.bitwise_count(a[:, w][:, None] & b[:, w][None, :])
    return out


def ideal_dcg(data: EvalData, ks: Sequence[int]) -> np.ndarray:
    """(Q, len(ks)) ideal DCG@K (see the module docstring), per gallery."""
    words = kn.pack_bits(data.labels == 1, sentinel=False)
    if data.query_labels is None:
        q_masks = _masks(words, data.queries)
    else:
        q_masks = _masks(kn.pack_bits(data.query_labels == 1, sentinel=False), slice(None))
    out = np.zeros((data.n_queries, len(ks)))
    for pos, gal in data.galleries():
        gal = np.unique(np.asarray(gal, dtype=np.int64))
        is_self = (np.isin(data.queries[pos], gal) if data.query_labels is None
                   else np.zeros(len(pos), dtype=bool))
        out[pos] = _ideal(q_masks[pos], is_self, _masks(words, gal), data.labels.shape[1], ks)
    return out


def _ideal(q_masks: np.ndarray, is_self: np.ndarray, gal_masks: np.ndarray, n_lab: int,
           ks: Sequence[int]) -> np.ndarray:
    k_max = max(ks)
    g_masks, g_counts = _unique(gal_masks, return_counts=True)
    uq, q_inv = _unique(q_masks, return_inverse=True)
    q_inv = q_inv.reshape(-1)
    # hist[u, s]: gallery images sharing exactly s positive labels with label set u
    hist = np.zeros((len(uq), n_lab + 1), dtype=np.int64)
    step = max(1, (1 << 21) // max(len(g_masks), 1))
    for s0 in range(0, len(uq), step):
        shared = _shared(uq[s0:s0 + step], g_masks)
        rows = len(shared)
        idx = (np.arange(rows)[:, None] * (n_lab + 1) + shared).ravel()
        hist[s0:s0 + rows] = np.bincount(
            idx, weights=np.broadcast_to(g_counts, shared.shape).ravel(),
            minlength=rows * (n_lab + 1)).reshape(rows, n_lab + 1)
    # one ideal per (label set, query is a gallery row): self is never retrievable
    key = q_inv * 2 + is_self
    ukeys, k_inv = np.unique(key, return_inverse=True)
    u, self_in = np.divmod(ukeys, 2)
    h = hist[u]
    n_pos = np.bitwise_count(uq).reshape(len(uq), -1).sum(axis=1).astype(np.int64)
    h[np.arange(len(u)), n_pos[u]] -= self_in
    desc = np.cumsum(h[:, ::-1], axis=1)  # desc[:, j]: images sharing >= n_lab - j labels
    ranks = np.arange(1, k_max + 1)
    # the ideal gain at rank i is the largest s with (images sharing >= s labels) >= i
    j = (desc[:, :, None] < ranks[None, None, :]).sum(axis=1)  # (U, k_max)
    gains = np.where(j <= n_lab, n_lab - np.minimum(j, n_lab), 0).astype(np.float64)
    idcg = np.cumsum(gains / np.log2(ranks + 1), axis=1)
    return idcg[:, np.asarray(ks) - 1][k_inv.reshape(-1)]


@METRICS.register("avg")
class AverageShared(LabelMetric):
    """AvG@K (mean labels shared with the top K, seed 001), avg_jaccard@K and graded NDCG@K."""

    name = "avg"

    def summarize(self, data: EvalData, ks: Sequence[int]) -> Summary:
        ks = sorted({int(k) for k in ks})
        k_max, nk, q = ks[-1], len(ks), data.n_queries
        kk = np.array(ks, dtype=np.float64)
        have_gallery = data.gallery is not None
        idcg = ideal_dcg(data, ks) if have_gallery else None
        disc = 1.0 / np.log2(np.arange(2, k_max + 2))
        words = kn.pack_bits(data.labels == 1)
        qwords = None if data.query_labels is None else kn.pack_bits(data.query_labels == 1,
                                                                     sentinel=False)
        keys = [f"avg@{k}" for k in ks] + [f"avg_jaccard@{k}" for k in ks]
        if have_gallery:
            keys += [f"ndcg@{k}" for k in ks]
        vals = np.zeros((q, len(keys)))
        valid = np.zeros((q, 3), dtype=bool)
        valid[:, 0] = True
        for sl in kn.chunks(q):
            qw = ([w[data.queries[sl]] for w in words] if qwords is None
                  else [w[sl] for w in qwords])
            nw = kn.take_words(words, data.neighbors[sl, :k_max])
            shared = kn.popcount_and(qw, nw)
            union = np.maximum(kn.popcount_or(qw, nw), 1)  # union 0 only if shared 0
            valid[sl, 1] = kn.popcount(qw) > 0
            vals[sl, 0:nk] = kn.prefix_at(shared, ks, np.int32) / kk
            jac = np.divide(shared, union, dtype=np.float64)
            vals[sl, nk:2 * nk] = kn.prefix_at(jac, ks) / kk
            if have_gallery:
                dcg = kn.prefix_at(np.multiply(shared, disc), ks)
                ideal = idcg[sl]
                valid[sl, 2] = ideal[:, 0] > 0
                vals[sl, 2 * nk:] = dcg / np.where(ideal > 0, ideal, 1.0)
        which = [0] * nk + [1] * nk + ([2] * nk if have_gallery else [])
        s = kn.mean_summary(keys, vals, valid, which)
        n_nopos = int(q - valid[:, 1].sum())
        if n_nopos:
            s.notes["avg"] = (f"{n_nopos} of {q} queries have no positive label: they count (as 0) "
                              "in avg@K and are excluded from avg_jaccard@K and ndcg@K")
        if have_gallery:
            n_out = int(q - valid[:, 2].sum())
            if n_out > n_nopos:
                s.notes["ndcg"] = (f"{n_out} of {q} queries share no label with any gallery image "
                                   "(ideal DCG 0) and are excluded from ndcg@K")
        else:
            for k in ks:
                s.absent[f"ndcg@{k}"] = ("needs the gallery rows (EvalData.gallery) for the ideal "
                                         "ranking")
        return s
