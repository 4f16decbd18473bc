"""Exact k-NN search with faiss, with self and same-patient exclusion.

Distances returned are those the index computes: squared L2 for ``l2``,
``1 - cosine similarity`` for ``cosine`` (so smaller is always closer; raw
cosine similarities can be negative, see DESIGN.md) and bit counts for
``hamming``. Exclusions are applied by over-fetching: ask faiss for more
neighbours than needed, drop the excluded ones, and re-query the rows that
ran short with a doubled budget until they are full or the gallery is used up.
"""

from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np

from cxrbench.encoders.base import Distance


@dataclass
class NeighborTable:
    """Q x k neighbours (dataset row indices, -1 = none) and their distances."""

    queries: np.ndarray  # (Q,) int64 dataset rows
    neighbors: np.ndarray  # (Q, k) int64 dataset rows
    distances: np.ndarray  # (Q, k) float32
    #: neighbours dropped because they were the query itself
    excluded_self: int = 0
    #: neighbours dropped because they belonged to the query's patient: how
    #: often same-patient images would have entered the top k
    excluded_same_patient: int = 0

    @property
    def k(self) -> int:
        return int(self.neighbors.shape[1])

    def save_tsv(self, path, ids: np.ndarray) -> None:
        """Write (query id, rank, neighbour id, distance) rows, one per neighbour."""
        with open(path, "w", encoding="utf-8") as fh:
            fh.write("query_id\trank\tneighbor_id\tdistance\n")
            for qi, q in enumerate(self.queries):
                for r in range(self.k):
                    n = self.neighbors[qi, r]
                    if n < 0:
                        break
                    fh.write(f"{ids[q]}\t{r + 1}\t{ids[n]}\t{float(self.distances[qi, r]):.7g}\n")


def _build_index(emb: np.ndarray, distance: Distance):
    if distance is Distance.HAMMING:
        index = faiss.IndexBinaryFlat(emb.shape[1] * 8)
        index.add(np.ascontiguousarray(emb, dtype=np.uint8))
        return index
    x = np.ascontiguousarray(emb, dtype=np.float32)
    if distance is Distance.COSINE:
        x = normalize_rows(x)
        index = faiss.IndexFlatIP(x.shape[1])
    else:
        index = faiss.IndexFlatL2(x.shape[1])
    index.add(x)
    return index


def normalize_rows(x: np.ndarray) -> np.ndarray:
    x = np.array(x, dtype=np.float32, copy=True)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    np.divide(x, norms, out=x, where=norms > 0)
    return x


def _prep_queries(q: np.ndarray, distance: Distance) -> np.ndarray:
    if distance is Distance.HAMMING:
        return np.ascontiguousarray(q, dtype=np.uint8)
    q = np.ascontiguousarray(q, dtype=np.float32)
    return normalize_rows(q) if distance is Distance.COSINE else q


def _raw_search(index, q: np.ndarray, k: int, distance: Distance):
    d, i = index.search(q, k)
    d = d.astype(np.float32, copy=False)
    if distance is Distance.COSINE:
        d = np.where(i >= 0, 1.0 - d, np.inf).astype(np.float32)
    return d, i.astype(np.int64, copy=False)


def knn_search(
    query_emb: np.ndarray,
    gallery_emb: np.ndarray,
    k: int,
    distance: Distance | str,
    *,
    query_rows: np.ndarray,
    gallery_rows: np.ndarray,
    patient_ids: np.ndarray | None = None,
    exclude_same_patient: bool = True,
    batch_size: int = 16384,
    index=None,
) -> NeighborTable:
    """Exact k-NN of each query in the gallery, with exclusions.

    Args:
        query_emb, gallery_emb: embeddings (rows aligned with ``query_rows`` and
            ``gallery_rows``, the dataset row indices they belong to).
        patient_ids: per dataset row; required for same-patient exclusion.
        index: a prebuilt faiss index over ``gallery_emb`` (reused across folds).
    """
    distance = Distance.parse(distance)
    query_rows = np.asarray(query_rows, dtype=np.int64)
    gallery_rows = np.asarray(gallery_rows, dtype=np.int64)
    nq, ng = len(query_rows), len(gallery_rows)
    out_i = np.full((nq, k), -1, dtype=np.int64)
    out_d = np.full((nq, k), np.inf, dtype=np.float32)
    table = NeighborTable(query_rows, out_i, out_d)
    if nq == 0 or ng == 0:
        return table
    if index is None:
        index = _build_index(gallery_emb, distance)
    if exclude_same_patient and patient_ids is None:
        raise ValueError("same-patient exclusion needs patient_ids")
    if exclude_same_patient:
        # integer patient codes: comparing ints is much cheaper than strings
        _, pcode = np.unique(np.asarray(patient_ids, dtype=object).astype(str), return_inverse=True)
        pcode = pcode.astype(np.int64)
    q_all = _prep_queries(query_emb, distance)
    for start in range(0, nq, batch_size):
        stop = min(start + batch_size, nq)
        todo = np.arange(start, stop)
        fetch = min(ng, k + 8)
        while len(todo):
            d, i = _raw_search(index, q_all[todo], fetch, distance)
            valid = i >= 0
            nb = np.where(valid, gallery_rows[np.clip(i, 0, None)], -1)
            qr = query_rows[todo][:, None]
            is_self = valid & (nb == qr)
            keep = valid & ~is_self
            same = np.zeros_like(keep)
            if exclude_same_patient:
                same = keep & (pcode[np.clip(nb, 0, None)] == pcode[qr])
                keep &= ~same
            n_keep = keep.sum(1)
            done = (n_keep >= k) | (fetch >= ng)
            if done.any():
                kp = keep[done]
                # stable sort puts kept neighbours first, in distance order
                order = np.argsort(~kp, axis=1, kind="stable")[:, :k]
                filled = np.arange(order.shape[1])[None, :] < n_keep[done][:, None]
                t = todo[done]
                w = order.shape[1]
                out_i[t, :w] = np.where(filled, np.take_along_axis(nb[done], order, 1), -1)
                out_d[t, :w] = np.where(filled, np.take_along_axis(d[done], order, 1), np.inf)
                # count exclusions only in the part of the list scanned to fill k
                used = (np.cumsum(kp, axis=1) - kp) < k
                table.excluded_self += int((is_self[done] & used).sum())
                table.excluded_same_patient += int((same[done] & used).sum())
            todo = todo[~done]
            fetch = min(ng, fetch * 2)
    return table
