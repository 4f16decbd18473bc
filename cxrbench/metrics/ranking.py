"""Standard retrieval metrics: P@K, mAP@K, Recall/HitRate@K and MRR@K.

Relevance of a retrieved image to a query:

* multi-label data: relevant when the two share at least one *positive*
  label (label value 1). Unknown labels (-1) never make an image relevant,
  on either side. A 'No Finding' column, if the dataset has one, is a label
  like any other: two normal images share it and are relevant to each other.
* single-label data (``EvalData.single_label``): relevant when the two label
  rows are identical (same class); an image with an unknown label is never
  relevant.

Which queries count: a query that cannot have any relevant image (multi-label:
no positive label; single-label: unknown class) is excluded from these four
metrics, as trec_eval does with topics without relevant documents; how many
were excluded is reported in the Evaluation notes. Padded neighbours (-1,
fewer than K found after exclusions) are non-relevant and K stays the
denominator.

Definitions, for one query with relevance r_1..r_K of its top K:

* ``p@K``: (r_1 + ... + r_K) / K.
* ``recall@K``: hit rate, 1 if any r_i = 1 in the top K (the CBIR "recall@K"
  of e.g. CLIP_benchmark; not the IR recall over all relevant images, which
  needs the gallery's relevant count).
* ``map@K``: mean over queries of AP@K = sum_i r_i * P@i / R_K with R_K the
  relevant images *in the top K* (0 when R_K = 0), as in the deep-hashing CBIR
  literature's mAP@K.
* ``mrr@K``: 1 / rank of the first relevant image in the top K, 0 if none.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from cxrbench.metrics import METRICS
from cxrbench.metrics import _kernels as kn
from cxrbench.metrics.base import EvalData, LabelMetric, Summary


def relevance_chunks(data: EvalData, k_max: int):
    """Yield (slice, rel (c, k_max) bool, valid (c,) bool) over query chunks."""
    nbs = data.neighbors
    qlab = data.qlabels()
    if data.single_label:
        cls, qcls_text = kn.class_ids(data.labels, data.query_labels)
        qcls_all = qcls_text if qcls_text is not None else cls[:-1][data.queries]
        for sl in kn.chunks(data.n_queries):
            qc = qcls_all[sl]
            nb = nbs[sl, :k_max]
            rel = (np.take(cls, nb) == qc[:, None]) & (qc >= 0)[:, None]
            yield sl, rel, qc >= 0
    else:
        words = kn.pack_bits(data.labels == 1)
        qwords = None if data.query_labels is None else kn.pack_bits(qlab == 1, sentinel=False)
        for sl in kn.chunks(data.n_queries):
            qw = ([w[data.queries[sl]] for w in words] if qwords is None
                  else [w[sl] for w in qwords])
            nw = kn.take_words(words, nbs[sl, :k_max])
            rel = kn.any_and(qw, nw)
            valid = np.zeros(sl.stop - sl.start, dtype=bool)
            for w in qw:
                valid |= w != 0
            yield sl, rel, valid


@METRICS.register("ranking")
class Ranking(LabelMetric):
    """P@K, mAP@K, Recall/HitRate@K, MRR@K (relevant: shares a positive label, or same class)."""

    name = "ranking"

    def summarize(self, data: EvalData, ks: Sequence[int]) -> Summary:
        ks = sorted({int(k) for k in ks})
        k_max = ks[-1]
        q = data.n_queries
        names = ("p", "map", "recall", "mrr")
        keys = [f"{m}@{k}" for m in names for k in ks]
        vals = np.zeros((q, len(keys)), dtype=np.float64)
        valid = np.zeros(q, dtype=bool)
        inv_rank = 1.0 / np.arange(1, k_max + 1, dtype=np.float64)
        kk = np.array(ks)
        nk = len(ks)
        for sl, rel, ok in relevance_chunks(data, k_max):
            valid[sl] = ok
            h = kn.prefix_at(rel, ks, np.int32)  # relevant in the top K
            # AP@K numerator: sum over relevant ranks i <= K of P@i = hits_i / i
            hits = np.cumsum(rel, axis=1, dtype=np.int32)
            contrib = np.multiply(hits, inv_rank)
            contrib *= rel
            first = np.where(rel.any(axis=1), rel.argmax(axis=1) + 1, k_max + 1)
            vals[sl, 0:nk] = h / kk
            vals[sl, nk:2 * nk] = kn.prefix_at(contrib, ks) / np.maximum(h, 1)
            vals[sl, 2 * nk:3 * nk] = h > 0
            vals[sl, 3 * nk:4 * nk] = np.where(first[:, None] <= kk[None, :], 1.0 / first[:, None], 0.0)
        s = kn.mean_summary(keys, vals, valid[:, None])
        n_out = int(q - valid.sum())
        if n_out:
            why = "an unknown class" if data.single_label else "no positive label"
            s.notes["ranking"] = (
                f"{n_out} of {q} queries have {why} and are excluded from p/map/recall/mrr "
                "(no retrieved image can be relevant to them)")
        return s
