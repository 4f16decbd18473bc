"""``cxrbench check --baseline FILE.json [--results DIR]``: the retrieval-quality gate."""

from __future__ import annotations

import argparse

HELP = "compare fresh Results with a baseline; exit 1 when a metric got worse"

STYLE = {"ok": "green", "improved": "bold green", "WORSE": "bold red", "MISSING": "bold red",
         "DATA CHANGED": "bold red", "new": "cyan"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--baseline", required=True, help="baseline JSON (cxrbench baseline ...)")
    p.add_argument("--results", default="results", help="folder of fresh Results (default: results)")
    p.add_argument("--all", action="store_true", help="show unchanged metrics too")


def _num(v: float | None) -> str:
    from cxrbench.leaderboards.boards import fmt_number

    return "" if v is None else fmt_number(v)


def main(args: argparse.Namespace) -> int:
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    from cxrbench.cli import console, err_console
    from cxrbench.leaderboards.check import check

    rep = check(args.baseline, args.results)
    lines = rep.lines if args.all else rep.moved()
    runs: dict[str, list] = {}
    for ln in lines:
        runs.setdefault(ln.run, []).append(ln)
    for run, group in runs.items():  # one table per run: fits an 80-column CI log
        t = Table(title=escape(run), title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
        for col in ("metric", "baseline [95% CI]", "now", "delta", "limit", "status"):
            t.add_column(col, justify="right" if col in ("now", "delta") else "left",
                         no_wrap=col != "status", min_width=8 if col == "status" else None)
        for ln in group:
            base = _num(ln.baseline) + ("" if ln.ci is None else
                                        f" [{_num(ln.ci[0])}, {_num(ln.ci[1])}]")
            d = ln.delta
            style = STYLE.get(ln.status.value, "")
            status = f"[{style}]{ln.status.value}[/{style}]" + (f" {escape(ln.note)}" if ln.note else "")
            t.add_row(escape(ln.metric), base, _num(ln.now), "" if d is None else f"{d:+.4f}",
                      ln.limit, status)
        console.print(t)
    if runs:
        console.print("limit: the baseline's 95% CI bound on the bad side, or the baseline "
                      "minus/plus an explicit tolerance from the baseline file", style="dim")
    n_cmp = sum(1 for ln in rep.lines if ln.metric != "(all)")
    console.print(f"{rep.n_entries} baseline run(s), {rep.n_results} fresh run(s), "
                  f"{n_cmp} metric(s) compared, {len(rep.failed)} failure(s)", highlight=False)
    if rep.failed:
        err_console.print("[bold red]quality check failed[/bold red]: see WORSE / MISSING / "
                          "DATA CHANGED above")
        return 1
    console.print("[green]quality check passed[/green]")
    return 0
