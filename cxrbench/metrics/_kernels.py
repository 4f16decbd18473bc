"""Shared numpy kernels over the neighbour table (not a metric module).

Labels are packed into bit words, one bit per label, so the labels of all
Q x k neighbours are one fast ``np.take`` of small integers instead of a
(Q, k, L) gather. Every word array carries one extra zero row at the end:
neighbour ``-1`` (padding) then indexes that row, so padding is "no label"
without a mask. Queries are processed in chunks, so peak memory stays at a
few hundred MB whatever Q is.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np

#: queries per chunk: (CHUNK, k=100) int64 neighbours = 26 MB
CHUNK = 1 << 15


def chunks(n: int, size: int = CHUNK) -> Iterator[slice]:
    for s in range(0, n, size):
        yield slice(s, min(n, s + size))


def _word_dtype(nbits: int) -> type:
    for dt, width in ((np.uint8, 8), (np.uint16, 16), (np.uint32, 32)):
        if nbits <= width:
            return dt
    return np.uint64


def pack_bits(mask: np.ndarray, sentinel: bool = True) -> list[np.ndarray]:
    """(N, L) bool -> list of (N [+1],) unsigned words, bit ``l % 64`` of word ``l // 64``.

    With ``sentinel`` a zero row is appended (index -1 reads it).
    """
    mask = np.asarray(mask, dtype=bool)
    n, n_lab = mask.shape
    words = []
    for w0 in range(0, max(n_lab, 1), 64):
        sub = mask[:, w0:w0 + 64]
        dt = _word_dtype(max(sub.shape[1], 1))
        word = np.zeros(n + int(sentinel), dtype=dt)
        for j in range(sub.shape[1]):
            word[:n] |= sub[:, j].astype(dt) << dt(j)
        words.append(word)
    return words


def take_words(words: list[np.ndarray], idx: np.ndarray) -> list[np.ndarray]:
    return [np.take(w, idx) for w in words]


def popcount_and(qw: list[np.ndarray], nw: list[np.ndarray]) -> np.ndarray:
    """Number of labels set in both the query (c,) and its neighbours (c, k)."""
    out = None
    for q, n in zip(qw, nw):
        c = np.bitwise_count(n & q[:, None])
        out = c if out is None else out + c
    return out


def popcount_or(qw: list[np.ndarray], nw: list[np.ndarray]) -> np.ndarray:
    out = None
    for q, n in zip(qw, nw):
        c = np.bitwise_count(n | q[:, None])
        out = c if out is None else out + c
    return out


def popcount(words: list[np.ndarray]) -> np.ndarray:
    out = None
    for w in words:
        c = np.bitwise_count(w).astype(np.int32)
        out = c if out is None else out + c
    return out


def any_and(qw: list[np.ndarray], nw: list[np.ndarray]) -> np.ndarray:
    out = None
    for q, n in zip(qw, nw):
        c = (n & q[:, None]) != 0
        out = c if out is None else out | c
    return out


# byte -> uint64 with bit j of the byte moved to byte j (one 8-bit counter per label)
_SPREAD = np.zeros(256, dtype=np.uint64)
for _b in range(256):
    _SPREAD[_b] = sum(((_b >> _j) & 1) << (8 * _j) for _j in range(8))


def label_counts(nw: list[np.ndarray], n_labels: int, ks: Sequence[int]) -> np.ndarray:
    """Positives per label among the top K neighbours: (c, len(ks), n_labels) int32.

    Each byte of a neighbour's label word is spread into eight 8-bit
    counters of a uint64, so summing uint64s over ranks counts eight labels
    at once; sums run over at most 255 ranks before being widened, so a
    counter never overflows.
    """
    ks = list(ks)
    c = nw[0].shape[0]
    out = np.zeros((c, len(ks), n_labels), dtype=np.int32)
    bounds = [0] + ks
    for wi, w in enumerate(nw):
        nbytes = w.dtype.itemsize
        for bi in range(nbytes):
            lab0 = wi * 64 + bi * 8
            if lab0 >= n_labels:
                break
            nl = min(8, n_labels - lab0)
            byte = ((w >> w.dtype.type(8 * bi)) & w.dtype.type(0xFF)).astype(np.uint8) if bi else (
                (w & w.dtype.type(0xFF)).astype(np.uint8))
            spread = np.take(_SPREAD, byte)  # (c, k) uint64
            acc = np.zeros((c, 8), dtype=np.int32)
            for j in range(len(ks)):
                for s in range(bounds[j], bounds[j + 1], 255):
                    e = min(bounds[j + 1], s + 255)
                    part = spread[:, s:e].sum(axis=1, dtype=np.uint64)
                    acc += part.view(np.uint8).reshape(c, 8)
                out[:, j, lab0:lab0 + nl] = acc[:, :nl]
    return out


def prefix_at(x: np.ndarray, ks: Sequence[int], dtype=np.float64) -> np.ndarray:
    """(c, len(ks)) sums of the first K columns of ``x`` (c, >= max ks), for K in ``ks``.

    Summing the segments between consecutive ks is much faster than a full
    cumulative sum over k.
    """
    out = np.empty((x.shape[0], len(ks)), dtype=dtype)
    acc = np.zeros(x.shape[0], dtype=dtype)
    prev = 0
    for j, k in enumerate(ks):
        if k > prev:
            acc = acc + x[:, prev:k].sum(axis=1, dtype=dtype)
        out[:, j] = acc
        prev = k
    return out


def class_ids(labels: np.ndarray, query_labels: np.ndarray | None = None):
    """Single-label class id per row (rows with an unknown entry -> -1).

    Returns (ids for ``labels`` with a sentinel -2 appended, ids for
    ``query_labels`` or None). Two rows are the same class when their label
    rows are identical, which covers both one-hot (N, C) and binary (N, 1)
    single-label encodings.
    """
    rows = labels if query_labels is None else np.concatenate([labels, query_labels])
    _, inv = np.unique(np.asarray(rows, dtype=np.int8), axis=0, return_inverse=True)
    inv = inv.reshape(-1).astype(np.int64)
    inv[(rows < 0).any(axis=1)] = -1
    n = labels.shape[0]
    ids = np.append(inv[:n], -2)
    return ids, (None if query_labels is None else inv[n:])


def mean_summary(keys: Sequence[str], values: np.ndarray, valid: np.ndarray,
                 which: Sequence[int] | None = None, sums: Sequence[str] = ()):
    """A :class:`~cxrbench.metrics.base.Summary` for metrics that are means over queries.

    Args:
        keys: one key per column of ``values``.
        values: (Q, M) per-query values (ignored where not valid).
        valid: (Q, V) bool: which queries count, V masks shared by the keys.
        which: for each key, the column of ``valid`` it uses (default 0).
        sums: keys reported as the weighted *sum* over valid queries instead
            of the mean (e.g. ``irma_error_total@1``).
    """
    from cxrbench.metrics.base import Summary

    keys = list(keys)
    valid = np.asarray(valid, dtype=bool).reshape(len(values), -1)
    which = np.zeros(len(keys), dtype=np.int64) if which is None else np.asarray(which, dtype=np.int64)
    n_valid = valid.shape[1]
    vals = np.where(valid[:, which], values, 0.0)
    dense = np.concatenate([valid.astype(np.float64), vals], axis=1)
    is_sum = np.array([k in set(sums) for k in keys])

    def finish(d: np.ndarray, _h: np.ndarray | None) -> dict[str, np.ndarray]:
        d = np.atleast_2d(d)
        n = d[:, which]
        tot = d[:, n_valid:]
        with np.errstate(invalid="ignore", divide="ignore"):
            res = np.where(is_sum[None, :], np.where(n > 0, tot, np.nan), tot / n)
        return {k: res[:, j] for j, k in enumerate(keys)}

    point = finish(dense.sum(axis=0)[None, :], None)
    values_out = {k: float(v[0]) for k, v in point.items() if np.isfinite(v[0])}
    absent = {k: "no query qualifies for it" for k, v in point.items() if not np.isfinite(v[0])}
    return Summary(values=values_out, dense=dense, finish=finish, absent=absent)
