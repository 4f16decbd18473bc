"""Group Results into leaderboards ("boards") of comparable runs.

A board is one dataset content (name + fingerprint, so a subset or another
``n`` is another board) under one protocol (name, folds, same-patient
exclusion). Its rows are encoders; a row is the newest Result of one
(encoder, encoder params, seed, k, metrics, n_boot) on that board. Columns
are the main metric families (:data:`MAIN`), each at one cut-off ``k``.

Nothing is ever averaged or filled in: a cell is the Result's own number or
empty.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from cxrbench.benchmark.result import Result
from cxrbench.leaderboards.collect import (
    canonical,
    dedupe_by,
    describe_params,
    protocol_of,
)

#: main-table metric families, in column order
MAIN = ("knn_auc", "avg", "p", "map", "mrr", "ndcg", "irma_error", "irma_error_total")
#: families whose headline cut-off is 1 when present (the number papers print)
AT_ONE = ("irma_error", "irma_error_total")
_KEY = re.compile(r"^(?P<fam>[a-z_]+)@(?P<k>\d+)(\[(?P<label>.*)\])?$")


def parse_key(key: str) -> tuple[str, int, str | None] | None:
    """``knn_auc@10[Effusion]`` -> ``("knn_auc", 10, "Effusion")``; None if not a metric key."""
    m = _KEY.match(key)
    if not m:
        return None
    return m.group("fam"), int(m.group("k")), m.group("label")


@dataclass
class Row:
    result: Result
    label: str = ""

    @property
    def encoder(self) -> str:
        return str(self.result.encoder.get("name", "?"))

    def value(self, key: str) -> float | None:
        v = self.result.metrics.get(key)
        return None if v is None else float(v)

    def ci(self, key: str) -> tuple[float, float] | None:
        c = self.result.ci.get(key)
        return (float(c[0]), float(c[1])) if c else None

    @property
    def embedding(self) -> dict[str, Any]:
        return self.result.encoder.get("embedding") or {}

    @property
    def dim(self) -> int | None:
        d = self.embedding.get("dim")
        return None if d is None else int(d)

    @property
    def bytes_per_image(self) -> float | None:
        """Stored size of one embedding: bits/8 for Hamming, dim x dtype size otherwise."""
        e = self.embedding
        if e.get("dim") is None:
            return None
        if e.get("distance") == "hamming":
            return int(e["dim"]) / 8
        size = {"float64": 8, "float32": 4, "float16": 2, "bfloat16": 2, "uint8": 1,
                "int8": 1}.get(str(e.get("dtype", "float32")), 4)
        return int(e["dim"]) * size

    @property
    def seconds_per_image(self) -> float | None:
        v = (self.result.throughput or {}).get("seconds_per_image")
        return None if v is None else float(v)

    @property
    def fit_seconds(self) -> float | None:
        """Training time of a trainable encoder (None when it was not trained)."""
        v = (self.result.timings or {}).get("fit")
        return float(v) if v else None

    @property
    def images_per_s(self) -> float | None:
        v = (self.result.throughput or {}).get("images_per_s")
        return None if v is None else float(v)


@dataclass
class Board:
    dataset: str
    dataset_fingerprint: str
    dataset_params: dict[str, Any]
    protocol: dict[str, Any]
    rows: list[Row] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)
    superseded: int = 0
    #: the dataset params named in the title (those that differ between boards)
    shown_params: dict[str, Any] = field(default_factory=dict)
    show_fingerprint: bool = False

    @property
    def slug(self) -> str:
        """File-name part: ``<dataset>-<fingerprint[:8]>-<protocol>``."""
        p = self.protocol["name"] + (f"{self.protocol['folds']}" if "folds" in self.protocol else "")
        if not self.protocol.get("exclude_same_patient", True):
            p += "-samepatient"
        return f"{_safe(self.dataset)}-{self.dataset_fingerprint[:8]}-{_safe(p)}"

    @property
    def primary(self) -> str | None:
        return self.columns[0] if self.columns else None

    @property
    def knn_key(self) -> str | None:
        """The main table's ``knn_auc@k`` column, which the per-label table breaks down."""
        return next((c for c in self.columns if c.startswith("knn_auc@")), None)

    def higher_is_better(self, key: str) -> bool:
        for r in self.rows:
            if key in r.result.higher_is_better:
                return bool(r.result.higher_is_better[key])
        return True

    @property
    def label_names(self) -> list[str]:
        for r in self.rows:
            names = r.result.dataset.get("label_names")
            if names:
                return list(names)
        return []

    def data_label(self) -> str:
        """The dataset name plus what tells it apart from the other boards of that
        dataset: the differing parameters, else the fingerprint (see :func:`build_boards`)."""
        out = self.dataset
        if self.shown_params:
            out += f" ({describe_params(self.shown_params)})"
        if self.show_fingerprint:
            out += f" [data {self.dataset_fingerprint[:8]}]"
        return out

    def title(self) -> str:
        return f"{self.data_label()} · {protocol_text(self.protocol)}"


def protocol_text(p: dict[str, Any]) -> str:
    s = p["name"] + (f" ({p['folds']} folds)" if "folds" in p else "")
    return s + ("" if p.get("exclude_same_patient", True) else ", same-patient neighbours allowed")


def _safe(s: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in s)


def _row_identity(r: Result) -> str:
    cfg = r.config or {}
    return canonical({
        "encoder": r.encoder.get("name"), "params": r.encoder.get("params", {}),
        "seed": cfg.get("seed"), "k": cfg.get("k"), "metrics": cfg.get("metrics"),
        "n_boot": cfg.get("n_boot"),
    })


def _distinguishing(results: Sequence[Result]) -> dict[int, str]:
    """Labels for rows sharing an encoder name: the settings in which they differ."""
    facts = []
    for r in results:
        cfg = r.config or {}
        f = {**(r.encoder.get("params") or {})}
        for k in ("seed", "n_boot", "k", "metrics"):
            f[f"{k}" if k not in f else f"run.{k}"] = cfg.get(k)
        facts.append(f)
    keys = sorted({k for f in facts for k in f})
    differing = [k for k in keys if len({canonical(f.get(k)) for f in facts}) > 1]
    return {i: describe_params({k: f[k] for k in differing if k in f}) for i, f in enumerate(facts)}


def choose_columns(results: Sequence[Result], k: int | None = None) -> list[str]:
    """One column per main family present: at ``k`` when given (and present),
    else at the cut-off most rows have (ties: the larger); IRMA families at 1."""
    counts: dict[str, dict[int, int]] = {}
    for r in results:
        seen = set()
        for key in r.metrics:
            p = parse_key(key)
            if p and p[2] is None and (p[0], p[1]) not in seen:
                seen.add((p[0], p[1]))
                counts.setdefault(p[0], {}).setdefault(p[1], 0)
                counts[p[0]][p[1]] += 1
    cols = []
    for fam in MAIN:
        ks = counts.get(fam)
        if not ks:
            continue
        if fam in AT_ONE and 1 in ks:
            kk = 1
        elif k is not None and k in ks:
            kk = k
        else:
            kk = max(ks, key=lambda x: (ks[x], x))
        cols.append(f"{fam}@{kk}")
    return cols


def build_boards(results: Iterable[Result], k: int | None = None) -> list[Board]:
    """Group (already run-fingerprint-deduplicated) Results into sorted boards."""
    groups: dict[str, list[Result]] = {}
    meta: dict[str, tuple] = {}
    for r in results:
        prot = protocol_of(r)
        ds_params = r.dataset.get("params") or {}
        gk = canonical([r.dataset.get("name"), r.dataset.get("fingerprint"), prot])
        groups.setdefault(gk, []).append(r)
        meta[gk] = (str(r.dataset.get("name", "?")), str(r.dataset.get("fingerprint", "")),
                    ds_params, prot)
    boards = []
    for gk, rs in groups.items():
        name, fp, params, prot = meta[gk]
        kept, dropped = dedupe_by(rs, _row_identity)
        b = Board(name, fp, params, prot, superseded=len(dropped))
        by_enc: dict[str, list[Result]] = {}
        for r in kept:
            by_enc.setdefault(str(r.encoder.get("name", "?")), []).append(r)
        for enc, group in by_enc.items():
            group.sort(key=_row_identity)
            extra = _distinguishing(group) if len(group) > 1 else {}
            for i, r in enumerate(group):
                b.rows.append(Row(r, f"{enc} ({extra[i]})" if extra.get(i) else enc))
        b.columns = choose_columns(kept, k)
        boards.append(b)
    boards.sort(key=lambda b: (b.dataset, canonical(b.dataset_params), b.dataset_fingerprint,
                               canonical(b.protocol)))
    _name_data(boards)
    return boards


def _name_data(boards: list[Board]) -> None:
    """Short titles: of a dataset's parameters, show those in which its boards differ;
    when boards differ only in content (same params, other fingerprint), show that."""
    by_name: dict[str, list[Board]] = {}
    for b in boards:
        by_name.setdefault(b.dataset, []).append(b)
    for group in by_name.values():
        keys = sorted({k for b in group for k in b.dataset_params})
        differ = [k for k in keys
                  if len({canonical(b.dataset_params.get(k, "<unset>")) for b in group}) > 1]
        for b in group:
            b.shown_params = {k: b.dataset_params[k] for k in differ if k in b.dataset_params}
        fps_per_params: dict[str, set[str]] = {}
        for b in group:
            fps_per_params.setdefault(canonical(b.dataset_params), set()).add(b.dataset_fingerprint)
        for b in group:
            b.show_fingerprint = len(fps_per_params[canonical(b.dataset_params)]) > 1


def fmt_number(v: float) -> str:
    """The printed form of a metric value: 3 decimals, 1 decimal from 100 on (totals)."""
    return f"{v:.1f}" if abs(v) >= 100 else f"{v:.3f}"


def displayed(v: float | None) -> float | None:
    """The value as printed, so ties and bold follow what the reader sees."""
    return None if v is None else float(fmt_number(v))


def best_rows(board: Board, key: str) -> set[int]:
    """Indices of ``board.rows`` holding the best printed value of ``key`` (ties: all)."""
    vals = {i: displayed(r.value(key)) for i, r in enumerate(board.rows)}
    vals = {i: v for i, v in vals.items() if v is not None}
    if not vals:
        return set()
    best = (max if board.higher_is_better(key) else min)(vals.values())
    return {i for i, v in vals.items() if v == best}


def ranked(board: Board) -> list[tuple[int | None, Row]]:
    """Rows with their rank on the primary metric (competition ranking: 1, 2, 2, 4),
    best first; rows without the primary metric come last, unranked, by label."""
    key = board.primary
    if key is None:
        return [(None, r) for r in sorted(board.rows, key=lambda r: r.label)]
    sign = -1.0 if board.higher_is_better(key) else 1.0
    have = [(sign * displayed(r.value(key)), r) for r in board.rows if r.value(key) is not None]
    have.sort(key=lambda t: (t[0], t[1].label))
    out: list[tuple[int | None, Row]] = []
    for s, r in have:
        out.append((1 + sum(1 for s2, _ in have if s2 < s), r))
    out.extend((None, r) for r in sorted((r for r in board.rows if r.value(key) is None),
                                         key=lambda r: r.label))
    return out
