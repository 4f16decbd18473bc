"""Markdown leaderboards: one file per dataset, one section per board, a README index.

Output is a pure function of the Results (sorted, no clock, no paths), so the
same Result files always give byte-identical markdown.
"""

from __future__ import annotations

from typing import Any, Sequence

from cxrbench.leaderboards.boards import (
    Board,
    Row,
    best_rows,
    fmt_number,
    parse_key,
    protocol_text,
    ranked,
)
from cxrbench.leaderboards.collect import describe_params

ARROW = {True: "↑", False: "↓"}


def _esc(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table(header: Sequence[str], align: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |",
           "|" + "|".join("---:" if a == "r" else ":---" for a in align) + "|"]
    out += ["| " + " | ".join(cells) + " |" for cells in rows]
    return out


def cell(row: Row, key: str, bold: bool, with_ci: bool = True) -> str:
    """``**0.812** [0.790, 0.834]``; empty when the run has no such value."""
    v = row.value(key)
    if v is None:
        return ""
    s = fmt_number(v)
    if bold:
        s = f"**{s}**"
    ci = row.ci(key) if with_ci else None
    if ci:
        s += f" [{fmt_number(ci[0])}, {fmt_number(ci[1])}]"
    return s


def _ms(row: Row) -> str:
    v = row.seconds_per_image
    if v is None:
        return ""
    ms = v * 1000
    return f"{ms:.0f}" if ms >= 1000 else f"{ms:.3g}"


def _dim(row: Row) -> str:
    d = row.dim
    if d is None:
        return ""
    return f"{d} bits" if row.embedding.get("distance") == "hamming" else str(d)


def _bytes(row: Row) -> str:
    b = row.bytes_per_image
    if b is None:
        return ""
    return str(int(b)) if float(b).is_integer() else f"{b:g}"


def _span(values: list[str]) -> str:
    vals = sorted({v for v in values if v})
    if not vals:
        return "unknown date"
    return vals[0] if len(vals) == 1 else f"{vals[0]} to {vals[-1]}"


def run_dates(board: Board) -> str:
    return _span([(r.result.created or "")[:10] for r in board.rows])


def versions(board: Board) -> str:
    vs = sorted({str(r.result.environment.get("cxrbench", "?")) for r in board.rows})
    return ", ".join(vs)


def _queries(row: Row) -> int | None:
    q = row.result.protocol.get("n_queries")
    return None if q is None else int(q)


def _n_boot(row: Row) -> int:
    return int(row.result.environment.get("n_boot", (row.result.config or {}).get("n_boot", 0)) or 0)


def board_section(board: Board, plots: Sequence[tuple[str, str]] = ()) -> list[str]:
    """Markdown lines of one board: facts, main table, per-label table, plots."""
    rows = ranked(board)
    queries = sorted({q for _, r in rows if (q := _queries(r)) is not None})
    boots = sorted({_n_boot(r) for _, r in rows})
    lines = [f"## {_esc(board.title())}", ""]
    facts = [f"Dataset `{board.dataset}`, fingerprint `{board.dataset_fingerprint}`"]
    if board.dataset_params:
        facts.append(f"parameters {_esc(describe_params(board.dataset_params))}")
    if len(queries) == 1:
        facts.append(f"{queries[0]} queries")
    facts.append(f"runs of {run_dates(board)} with cxrbench {versions(board)}")
    lines.append("; ".join(facts) + ".")
    with_ci = [b for b in boots if b > 0]
    if not with_ci:
        legend = "Cells: value (no confidence intervals: n_boot = 0). "
    else:
        legend = (f"Cells: value [95% CI] (patient-level bootstrap, "
                  f"{', '.join(map(str, with_ci))} replicates"
                  + ("; runs with n_boot = 0 have no CI" if 0 in boots else "") + "). ")
    legend += "**Bold**: best in column (↑ higher is better, ↓ lower is better). "
    if board.primary:
        legend += f"Rank: by {board.primary}. "
    legend += "Empty cell: not measured."
    if any(r.fit_seconds for _, r in rows):
        legend += " ms/image: embedding time; fit s: training time of trainable encoders."
    lines += [legend, ""]

    header = ["rank", "encoder"]
    align = ["r", "l"]
    header += [f"{c} {ARROW[board.higher_is_better(c)]}" for c in board.columns]
    align += ["r"] * len(board.columns)
    show_q = len(queries) > 1
    if show_q:
        header.append("queries")
        align.append("r")
    header += ["dim", "bytes/image", "ms/image"]
    align += ["r", "r", "r"]
    show_fit = any(r.fit_seconds for _, r in rows)
    if show_fit:
        header.append("fit s")
        align.append("r")
    bests = {c: best_rows(board, c) for c in board.columns}
    index = {id(r): i for i, r in enumerate(board.rows)}
    body = []
    for rank, r in rows:
        i = index[id(r)]
        cells = ["" if rank is None else str(rank), _esc(r.label)]
        cells += [cell(r, c, i in bests[c]) for c in board.columns]
        if show_q:
            q = _queries(r)
            cells.append("" if q is None else str(q))
        cells += [_dim(r), _bytes(r), _ms(r)]
        if show_fit:
            cells.append("" if r.fit_seconds is None else f"{r.fit_seconds:.3g}")
        body.append(cells)
    lines += _table(header, align, body)
    if board.superseded:
        lines += ["", f"{board.superseded} older run(s) of the same configuration superseded "
                      "by the newest."]
    lines += per_label_section(board, [r for _, r in rows])
    if plots:
        lines += ["", " ".join(f"![{_esc(alt)}]({name})" for name, alt in plots)]
    lines.append("")
    return lines


def per_label_section(board: Board, rows: Sequence[Row]) -> list[str]:
    """The per-label k-NN-vote AUC table at the main table's ``knn_auc`` cut-off."""
    key = board.knn_key
    if key is None:
        return []
    _, k, _ = parse_key(key)  # type: ignore[misc]
    names = list(board.label_names)
    seen: set[str] = set()
    for r in board.rows:
        for m in r.result.metrics:
            p = parse_key(m)
            if p and p[0] == "knn_auc" and p[1] == k and p[2] is not None:
                seen.add(p[2])
    labels = [n for n in names if n in seen] + sorted(seen - set(names))
    if not labels:
        return []
    lines = ["", f"### k-NN-vote AUC per label ({key})", ""]
    keys = [f"knn_auc@{k}[{lab}]" for lab in labels]
    bests = {kk: best_rows(board, kk) for kk in keys}
    index = {id(r): i for i, r in enumerate(board.rows)}
    body = [[_esc(r.label)] + [cell(r, kk, index[id(r)] in bests[kk], with_ci=False) for kk in keys]
            for r in rows]
    lines += _table(["encoder"] + [_esc(lab) for lab in labels], ["l"] + ["r"] * len(labels), body)
    absent = [n for n in names if n not in seen]
    if absent:
        lines += ["", "No k-NN-vote AUC in any run (a class absent among the queries): "
                      + ", ".join(absent) + "."]
    return lines


def dataset_file(dataset: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in dataset) + ".md"


def render(
    boards: Sequence[Board],
    *,
    plots: dict[str, list[tuple[str, str]]] | None = None,
    n_results: int | None = None,
    n_superseded: int = 0,
    problems: Sequence[tuple[str, str]] = (),
) -> dict[str, str]:
    """All markdown files: ``{"README.md": ..., "<dataset>.md": ...}``."""
    plots = plots or {}
    files: dict[str, list[str]] = {}
    for b in boards:
        name = dataset_file(b.dataset)
        if name not in files:
            files[name] = [f"# {b.dataset} leaderboard", "",
                           "Generated by `cxrbench leaderboard` from Result files; do not edit "
                           "by hand.", ""]
        files[name] += board_section(b, plots.get(b.slug, ()))
    out = {name: "\n".join(lines).rstrip("\n") + "\n" for name, lines in files.items()}
    out["README.md"] = readme(boards, n_results=n_results, n_superseded=n_superseded,
                              problems=problems)
    return out


def _best_text(board: Board) -> str:
    key = board.primary
    if key is None:
        return ""
    rows = [board.rows[i] for i in sorted(best_rows(board, key))]
    if not rows:
        return ""
    labels = ", ".join(sorted(_esc(r.label) for r in rows))
    return f"{labels}: {key} = {fmt_number(rows[0].value(key))}"  # type: ignore[arg-type]


def readme(
    boards: Sequence[Board],
    *,
    n_results: int | None = None,
    n_superseded: int = 0,
    problems: Sequence[tuple[str, str]] = (),
) -> str:
    """The index: one line per board with its file, fingerprint, best row and provenance."""
    n = n_results if n_results is not None else sum(len(b.rows) for b in boards)
    lines = ["# cxrbench leaderboards", "",
             f"Generated by `cxrbench leaderboard` from {n} Result file(s); do not edit by hand. "
             "Each table names the cxrbench version, the dataset fingerprint and the dates of "
             "its runs. A cell without a measurement stays empty; nothing is averaged over a "
             "subset of runs.", ""]
    if n_superseded:
        lines += [f"{n_superseded} older Result(s) with the same run fingerprint were superseded "
                  "by the newest.", ""]
    body = []
    for b in boards:
        body.append([f"[{_esc(b.data_label())}]({dataset_file(b.dataset)})", _esc(protocol_text(b.protocol)),
                     f"`{b.dataset_fingerprint}`", str(len(b.rows)), _best_text(b),
                     run_dates(b), versions(b)])
    lines += _table(["dataset", "protocol", "fingerprint", "encoders", "best", "runs", "cxrbench"],
                    ["l", "l", "l", "r", "l", "l", "l"], body)
    if problems:
        lines += ["", "Files that could not be read:", ""]
        lines += [f"- `{p}`: {_esc(why)}" for p, why in sorted(problems)]
    return "\n".join(lines) + "\n"


def summary(boards: Sequence[Board]) -> list[dict[str, Any]]:
    """Plain data for the CLI's terminal summary."""
    return [{"board": b.title(), "rows": len(b.rows), "best": _best_text(b)} for b in boards]
