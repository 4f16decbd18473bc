"""IRMA code hierarchy and the ImageCLEF 2007-2009 IRMA error, plus the ``irma`` metric family.

An IRMA code ``TTTT-DDD-AAA-BBB`` has four hierarchical axes: technical (T),
directional (D), anatomical (A) and biological (B). Each digit (0-9, a-z)
selects a child of the node named by the digits before it; a digit ``0``
means "unspecified".

**The error** (ImageCLEF 2007-2009 medical annotation task, as its official
``irmacode.py`` computes it). For one axis with correct digits l_1..l_I and
predicted digits p_1..p_I, position i weighs ``(1/i) * (1/b_i)``, where b_i is
the number of children, in the hierarchy, of the node at depth i-1 along the
*correct* code's path (b_i = 1 where a ``0`` digit has no node: the node has
no children at all). Walking the positions in order:

* correct, and nothing wrong or unspecified before: 0;
* correct digit ``0`` answered with ``*`` (and nothing wrong before): 0, and
  every later position counts as unspecified;
* ``*`` (don't know), or any position after an unspecified one: 0.5;
* otherwise wrong: 1, and every later position is wrong too.

Each axis is divided by its all-wrong maximum (sum of the weights); the image
error is ``0.25 x`` the sum over the four axes, in [0, 1]. An axis whose
correct code starts with ``C`` is skipped (contributes 0), as in the official
script. A predicted axis must be at least as long as the correct one.

**Incomplete hierarchies.** b_i is only as right as the hierarchy file. A
node used by a correct code but missing from the file makes the weights
unknowable, and it also makes its parent's child count too small for every
*other* code through that parent (e.g. the partial CSV lists anatomy
410..413 under 41 but codes use 414 and 415: b for anatomy 411 would be 4
instead of 6). So:

* :func:`irma_error` raises :class:`IrmaGapError` when the correct code's
  own path has a missing node or a node whose child count is suspect (a
  malformed line in the file). It cannot see gaps revealed only by other
  codes: run :meth:`IrmaCodeTree.check` on all the codes you evaluate.
* the ``irma`` metric runs that check on all query codes and, if anything is
  missing, is skipped with the list of gaps as the reason (never a silently
  wrong number).
* opt-in fallback: :meth:`IrmaCodeTree.extended` adds the nodes seen in the
  codes (b_i then counts the children observed in the codes, a lower bound);
  :meth:`IrmaCodeTree.from_codes` builds a hierarchy from codes alone. Both
  set ``approximate = True``, which the metric reports in its notes.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from cxrbench.metrics import METRICS
from cxrbench.metrics import _kernels as kn
from cxrbench.metrics._irma_read import (
    AXES,
    CODE,
    FOLDER_FILES,
    read_folder,
    read_official,
)
from cxrbench.metrics.base import EvalData, Metric, Summary

#: the prediction used when a neighbour is missing (padding) or has no code
DONT_KNOW = "-".join("*" * 8 for _ in AXES)


class IrmaGapError(ValueError):
    """The hierarchy cannot give exact weights b_i for some correct codes."""


@dataclass(frozen=True)
class Gap:
    """A hierarchy problem that affects the weights of some codes."""

    axis: int
    node: str
    kind: str  # "missing" | "incomplete" | "suspect"
    detail: str
    codes: tuple[str, ...]  # the affected codes (sorted)

    def __str__(self) -> str:
        eg = ", ".join(self.codes[:3]) + (", ..." if len(self.codes) > 3 else "")
        return f"{AXES[self.axis]} {self.node}: {self.detail} ({len(self.codes)} codes, e.g. {eg})"


def split_code(code: str) -> list[str]:
    """``'1121-120-200-700'`` -> its four axes; ValueError naming the code otherwise."""
    parts = str(code).strip().split("-")
    if len(parts) != 4 or not all(parts):
        raise ValueError(f"IRMA code {code!r} is not TTTT-DDD-AAA-BBB (four '-'-separated axes)")
    return parts


def axis_error(correct: str, predicted: str, b: Sequence[int]) -> float:
    """Normalised error of one axis, given the branching factors b of the correct path."""
    if len(predicted) < len(correct):
        raise ValueError(f"predicted axis {predicted!r} is shorter than the correct {correct!r}")
    err = worst = 0.0
    wrong = unspec = False
    for i, c in enumerate(correct):
        p = predicted[i]
        w = 1.0 / ((i + 1) * b[i])
        worst += w
        if c == p and not wrong and not unspec:
            continue
        if c == "0" and p == "*" and not wrong:
            unspec = True
        elif (p == "*" and not wrong) or unspec:
            err += 0.5 * w
            unspec = True
        else:
            wrong = True
            err += w
    return err / worst


class IrmaCodeTree:
    """The IRMA code hierarchy: per axis, code prefix -> label.

    Build it with :meth:`load`, :meth:`from_codes` or :meth:`extended`.

    Attributes:
        source: where it came from (for messages).
        issues: problems found while reading (malformed or duplicate lines ...).
        approximate: True when child counts come (partly) from observed codes.
        added: nodes added from observed codes, as ``'<axis> <code>'``.
    """

    def __init__(self, labels: Sequence[dict[str, str]], *, source: str = "",
                 issues: Iterable[str] = (), suspect: Sequence[dict[str, str]] | None = None,
                 approximate: bool = False, added: Iterable[str] = ()) -> None:
        if len(labels) != 4:
            raise ValueError(f"an IRMA hierarchy has 4 axes, got {len(labels)} ({source})")
        self.labels = [dict(d) for d in labels]
        self.source = source
        self.issues = list(issues)
        self.suspect = [dict(d) for d in (suspect or [{}, {}, {}, {}])]
        self.approximate = approximate
        self.added = tuple(added)
        self._kids = []
        for d in self.labels:
            kids: dict[str, int] = defaultdict(int)
            for code in d:
                kids[code[:-1]] += 1
            self._kids.append(dict(kids))
        self._axis_cache: dict[tuple[int, str, str], float] = {}

    # -- construction ---------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path) -> "IrmaCodeTree":
        """Read the official ``** axis`` / ``[code] label`` file or a folder of A.csv..D.csv.

        Problems in the file are collected in ``issues`` (never raised) unless
        the file cannot be an IRMA hierarchy at all.
        """
        path = Path(path)
        if path.is_dir():
            labels, suspects, issues = read_folder(path)
        elif path.is_file():
            labels, suspects, issues = read_official(path)
        else:
            raise FileNotFoundError(
                f"IRMA hierarchy {path} not found: give the official code file "
                f"(e.g. code-2008-04-14.txt) or a folder with {', '.join(FOLDER_FILES)}")
        return cls(labels, source=str(path), issues=issues, suspect=suspects)

    @classmethod
    def from_codes(cls, codes: Iterable[str]) -> "IrmaCodeTree":
        """An approximate hierarchy with every prefix of the observed codes as a node."""
        labels: list[dict[str, str]] = [{}, {}, {}, {}]
        n = 0
        for code in codes:
            n += 1
            for ax, part in enumerate(split_code(code)):
                if part.startswith("C") or not CODE.fullmatch(part):
                    continue
                for j in range(1, len(part) + 1):
                    labels[ax].setdefault(part[:j], "")
        return cls(labels, source=f"derived from {n} observed codes", approximate=True,
                   issues=["child counts are those seen in the codes (a lower bound)"])

    def extended(self, codes: Iterable[str]) -> "IrmaCodeTree":
        """A copy with the nodes that ``codes`` need but the file lacks (approximate).

        Also adds the parents of listed nodes whose parent is missing. Suspect
        child counts (malformed lines) are accepted as they are. b_i at an
        extended node counts the children listed plus those observed.
        """
        labels = [dict(d) for d in self.labels]
        added = list(self.added)
        for ax, d in enumerate(self.labels):  # parents implied by listed nodes (orphans)
            for code in sorted(d):
                for j in range(1, len(code)):
                    if code[:j] not in labels[ax]:
                        labels[ax][code[:j]] = f"(implied by {code})"
                        added.append(f"{AXES[ax]} {code[:j]}")
        plain = IrmaCodeTree(labels)  # the same nodes, suspect counts accepted
        for ax, part in _unique_parts(codes):
            _, _, prob = plain._walk(ax, part)
            if prob is None or prob[0] != "missing":
                continue
            for j in range(1, len(part) + 1):
                if part[:j] not in labels[ax]:
                    labels[ax][part[:j]] = "(observed in codes)"
                    added.append(f"{AXES[ax]} {part[:j]}")
        issues = list(self.issues) + [f"suspect child count accepted: {AXES[ax]} {node}: {why}"
                                      for ax, d in enumerate(self.suspect) for node, why in d.items()]
        return IrmaCodeTree(labels, source=f"{self.source} + nodes observed in codes",
                            issues=issues, approximate=True, added=added)

    # -- queries --------------------------------------------------------------
    def n_children(self, axis: int, node: str) -> int:
        return self._kids[axis].get(node, 0)

    def __contains__(self, item: tuple[int, str]) -> bool:
        return item[1] in self.labels[item[0]]

    def _walk(self, ax: int, part: str):
        """(b, used, problem): b_i, the node whose child count gave b_i, and the first gap."""
        nodes = self.labels[ax]
        node, real, b, used = "", "", [], []
        virtual = False
        for d in part:
            child = node + d
            kids = 0 if virtual else self._kids[ax].get(node, 0)
            if not virtual and node in self.suspect[ax]:  # b_i would use a suspect count
                return b, used, ("suspect", node, self.suspect[ax][node])
            if not virtual and child in nodes:
                b.append(kids)
                used.append(node)
                node = real = child
            elif d == "0" and kids == 0:
                b.append(1)
                used.append(real)
                node, virtual = child, True
            else:
                return b, used, ("missing", child, real)
        return b, used, None

    def branching(self, axis: int, part: str) -> tuple[int, ...]:
        """b_1..b_I along ``part`` of ``axis``; IrmaGapError when the tree cannot tell."""
        b, _, prob = self._walk(axis, part)
        if prob is not None:
            kind, node, extra = prob
            what = (f"node {node} is missing from the hierarchy" if kind == "missing"
                    else f"the child count of {node} is suspect: {extra}")
            raise IrmaGapError(
                f"IRMA {AXES[axis]} code {part!r}: {what} ({self.source}). " + _FIX)
        return tuple(b)

    def check(self, codes: Iterable[str]) -> list[Gap]:
        """Every gap that would make b_i wrong for one of ``codes`` (as correct codes).

        Missing nodes, parents whose child count is therefore too small
        (affecting codes whose own nodes all exist), and suspect counts.
        """
        parts = _unique_parts_with_codes(codes)
        missing: dict[tuple[int, str], set[str]] = defaultdict(set)
        incomplete: dict[tuple[int, str], set[str]] = defaultdict(set)  # node -> missing children
        suspect: dict[tuple[int, str], set[str]] = defaultdict(set)
        walks = {}
        for (ax, part), full in parts.items():
            b, used, prob = self._walk(ax, part)
            walks[(ax, part)] = used
            if prob is None:
                continue
            kind, node, extra = prob
            if kind == "missing":
                missing[(ax, node)].update(full)
                incomplete[(ax, extra)].add(node)
            else:
                suspect[(ax, node)].update(full)
        affected: dict[tuple[int, str], set[str]] = defaultdict(set)
        for (ax, part), full in parts.items():
            for node in set(walks[(ax, part)]):
                if (ax, node) in incomplete and not any(
                        part.startswith(m) for m in incomplete[(ax, node)]):
                    affected[(ax, node)].update(full)
        gaps = [Gap(ax, node, "missing", "node missing from the hierarchy", tuple(sorted(c)))
                for (ax, node), c in sorted(missing.items())]
        gaps += [Gap(ax, node, "incomplete",
                     f"child count {self.n_children(ax, node)} misses "
                     f"{', '.join(sorted(incomplete[(ax, node)]))}", tuple(sorted(c)))
                 for (ax, node), c in sorted(affected.items())]
        gaps += [Gap(ax, node, "suspect", f"suspect child count: {self.suspect[ax][node]}",
                     tuple(sorted(c))) for (ax, node), c in sorted(suspect.items())]
        return gaps

    def require(self, codes: Iterable[str]) -> None:
        """Raise IrmaGapError listing every gap ``check(codes)`` finds."""
        gaps = self.check(codes)
        if gaps:
            raise IrmaGapError(gap_message(self, gaps))

    def axis_error(self, axis: int, correct: str, predicted: str) -> float:
        """Normalised error of one axis (cached)."""
        key = (axis, correct, predicted)
        v = self._axis_cache.get(key)
        if v is None:
            v = axis_error(correct, predicted, self.branching(axis, correct))
            self._axis_cache[key] = v
        return v

    def text(self, code: str) -> list[str]:
        """Labels along each axis of ``code`` (for messages and reports)."""
        out = []
        for ax, part in enumerate(split_code(code)):
            out.append(" / ".join(self.labels[ax].get(part[:j], "?")
                                  for j in range(1, len(part) + 1)))
        return out

    def describe(self) -> dict:
        """A JSON-able summary for Result files."""
        return {"source": self.source, "approximate": self.approximate,
                "nodes": [len(d) for d in self.labels], "issues": list(self.issues),
                "suspect": {f"{AXES[ax]} {n}": why for ax, d in enumerate(self.suspect)
                            for n, why in d.items()},
                "added": list(self.added)}

    def __repr__(self) -> str:
        flag = ", approximate" if self.approximate else ""
        return f"IrmaCodeTree({self.source!r}, nodes={[len(d) for d in self.labels]}{flag})"


_FIX = ("Use a complete hierarchy (the official code-2008-04-14.txt), or opt in to an approximate "
        "one with tree.extended(codes) / IrmaCodeTree.from_codes(codes).")


def gap_message(tree: IrmaCodeTree, gaps: Sequence[Gap]) -> str:
    lines = [f"IRMA hierarchy {tree.source} cannot give exact weights b_i for some codes:"]
    lines += [f"  - {g}" for g in gaps]
    lines.append(_FIX)
    return "\n".join(lines)


def irma_error(correct: str, predicted: str, tree: IrmaCodeTree) -> float:
    """The ImageCLEF IRMA error of one image, in [0, 1] (see the module docstring).

    Example:
        >>> tree = IrmaCodeTree.from_codes(["1121-120-200-700"])
        >>> irma_error("1121-120-200-700", "1121-120-200-700", tree)
        0.0
    """
    c_axes, p_axes = split_code(correct), split_code(predicted)
    total = 0.0
    for ax in range(4):
        if c_axes[ax].startswith("C"):
            continue
        total += 0.25 * tree.axis_error(ax, c_axes[ax], p_axes[ax])
    return total


def _unique_parts(codes: Iterable[str]):
    return list(_unique_parts_with_codes(codes))


def _unique_parts_with_codes(codes: Iterable[str]) -> dict[tuple[int, str], set[str]]:
    out: dict[tuple[int, str], set[str]] = defaultdict(set)
    for code in sorted(set(map(str, codes))):
        for ax, part in enumerate(split_code(code)):
            if not part.startswith("C"):
                out[(ax, part)].add(code)
    return dict(sorted(out.items()))


# -- the metric family ----------------------------------------------------------
def _clean(c: str) -> str:
    c = c.strip()
    return "" if c in ("None", "nan", "NaN") else c


_LAST_CODES: list = [None, None]  # (array, result): applicable() and summarize() share it


def code_ids(codes) -> tuple[np.ndarray, np.ndarray]:
    """(unique cleaned codes, index per row); ``''`` stands for a missing code.

    Sorting fixed-width strings is much faster than sorting Python objects, so
    the codes are made ``str`` first (None / NaN become ``''``).
    """
    if _LAST_CODES[0] is codes:
        return _LAST_CODES[1]
    res = _code_ids(codes)
    _LAST_CODES[:] = [codes, res]
    return res


def _code_ids(codes) -> tuple[np.ndarray, np.ndarray]:
    arr = np.asarray(codes)
    if arr.dtype.kind != "U":
        arr = np.where(np.asarray(codes, dtype=object) == None, "", arr).astype(str)  # noqa: E711
    u, inv = np.unique(arr, return_inverse=True)
    clean = np.array([_clean(x) for x in u.tolist()], dtype=object)
    cu, cinv = np.unique(clean.astype(str), return_inverse=True)
    return cu.astype(object), cinv.reshape(-1)[inv.reshape(-1)]


def _code_problems(codes: Iterable[str], min_len: Sequence[int]) -> list[str]:
    bad = []
    for c in codes:
        try:
            parts = split_code(c)
        except ValueError as exc:
            bad.append(str(exc))
            continue
        for ax, part in enumerate(parts):
            if len(part) < min_len[ax]:
                bad.append(f"IRMA code {c!r}: {AXES[ax]} axis {part!r} shorter than the longest "
                           f"correct {AXES[ax]} code ({min_len[ax]} digits)")
                break
    return bad


def error_matrix(tree: IrmaCodeTree, correct: Sequence[str], predicted: Sequence[str]) -> np.ndarray:
    """(len(correct), len(predicted)) IRMA errors, computed per axis on unique parts."""
    c_parts = [split_code(c) for c in correct]
    p_parts = [split_code(p) for p in predicted]
    out = np.zeros((len(correct), len(predicted)))
    for ax in range(4):
        cu, ci = np.unique([p[ax] for p in c_parts], return_inverse=True)
        pu, pi = np.unique([p[ax] for p in p_parts], return_inverse=True)
        m = np.array([[0.0 if c.startswith("C") else tree.axis_error(ax, c, p) for p in pu]
                      for c in cu]).reshape(len(cu), len(pu))
        out += 0.25 * m[np.ix_(ci.reshape(-1), pi.reshape(-1))]
    return out


@METRICS.register("irma")
class IrmaMetric(Metric):
    """IRMA error of the retrieved images' codes (ImageCLEF 2007-2009): @1 mean and total, @K mean."""

    name = "irma"
    lower_is_better_prefixes = ("irma_error",)

    def applicable(self, data: EvalData) -> str | None:
        if data.irma_codes is None:
            return "the dataset has no IRMA codes"
        tree = data.irma_tree
        if tree is None:
            return "no IRMA code hierarchy (the dataset's irma_tree() returned None)"
        g_u, g_id = code_ids(data.irma_codes)
        if data.query_irma_codes is None:
            q_u = g_u[np.unique(g_id[data.queries])] if data.n_queries else g_u[:0]
        else:
            q_u = code_ids(data.query_irma_codes)[0]
        correct = sorted(c for c in q_u if c)
        if not correct:
            return "no query has an IRMA code"
        gallery = {c for c in g_u if c}
        bad = _code_problems(correct, (0, 0, 0, 0))
        if not bad:
            longest = [max(len(split_code(c)[ax]) for c in correct) for ax in range(4)]
            bad = _code_problems(gallery, longest)
        if bad:
            return "malformed IRMA codes: " + "; ".join(bad[:5]) + (
                f" (+{len(bad) - 5} more)" if len(bad) > 5 else "")
        gaps = tree.check(correct)
        if gaps:
            return gap_message(tree, gaps)
        return None

    def compute(self, data: EvalData, ks: Sequence[int]) -> dict[str, float]:
        return self.summarize(data, ks).values

    def summarize(self, data: EvalData, ks: Sequence[int]) -> Summary:
        tree: IrmaCodeTree = data.irma_tree
        ks = sorted({int(k) for k in ks})
        k_max, q = ks[-1], data.n_queries
        ug, g_id = code_ids(data.irma_codes)
        if data.query_irma_codes is None:
            uq, q_id = ug, g_id[data.queries]
        else:
            uq, q_id = code_ids(data.query_irma_codes)
        has_code = uq[q_id] != ""
        # predicted side: the gallery codes plus "don't know" (no code, or padding)
        pred = [c if c else DONT_KNOW for c in ug] + [DONT_KNOW]
        n_pred = len(pred)
        g_ext = np.append(g_id, n_pred - 1).astype(np.int64)
        no_code = np.append(ug[g_id] == "", False)
        # errors only for the correct codes the queries use
        used = np.unique(q_id)
        row = np.zeros(len(uq), dtype=np.int64)
        row[used] = np.arange(len(used))
        q_id = row[q_id]
        emat = np.zeros((len(used), n_pred))
        real = np.flatnonzero(uq[used] != "")
        if len(real):
            emat[real] = error_matrix(tree, [uq[used][i] for i in real], pred)
        flat = emat.ravel()
        keys = ["irma_error@1", "irma_error_total@1"] + [f"irma_error@{k}" for k in ks if k != 1]
        col = np.array([k for k in ks if k != 1], dtype=np.int64) - 1
        vals = np.zeros((q, len(keys)))
        n_pad = n_nocode = 0
        for sl in kn.chunks(q):
            nb = data.neighbors[sl, :k_max]
            nid = np.take(g_ext, nb)
            err = np.take(flat, q_id[sl, None] * n_pred + nid)
            vals[sl, 0] = vals[sl, 1] = err[:, 0]
            if len(col):
                vals[sl, 2:] = kn.prefix_at(err, [k for k in ks if k != 1]) / (col + 1)
            n_pad += int((nb < 0).sum())
            n_nocode += int(np.take(no_code, nb).sum())
        s = kn.mean_summary(keys, vals, has_code[:, None], sums=["irma_error_total@1"])
        notes = []
        if tree.approximate:
            added = f"; {len(tree.added)} nodes added from observed codes" if tree.added else ""
            notes.append(f"hierarchy is approximate ({tree.source}{added}): b_i count only the "
                         "children listed or seen in codes")
        if (~has_code).any():
            notes.append(f"{int((~has_code).sum())} of {q} queries have no IRMA code and are excluded")
        if n_pad or n_nocode:
            notes.append(f"{n_pad} padded neighbours and {n_nocode} neighbours without a code count "
                         "as a 'don't know' (all '*') prediction")
        if notes:
            s.notes["irma"] = "; ".join(notes)
        return s
