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
    from rich.table import Table

    from cxrbench.cli import console, err_console
    from cxrbench.leaderboards.check import check

    rep = check(args.baseline, args.results)
    lines = rep.lines if args.all else rep.moved()
    if lines:
        t = Table(title=f"{args.results} vs {args.baseline}")
        for col in ("run", "metric", "baseline", "95% CI", "now", "delta", "tolerance", "status"):
            t.add_column(col, justify="right" if col in ("baseline", "now", "delta", "tolerance")
                         else "left")
        for ln in lines:
            ci = "" if ln.ci is None else f"[{_num(ln.ci[0])}, {_num(ln.ci[1])}]"
            d = ln.delta
            delta = "" if d is None else f"{d:+.4f}"
            tol = "CI" if ln.tolerance is None and ln.ci else _num(ln.tolerance)
            style = STYLE.get(ln.status.value, "")
            status = f"[{style}]{ln.status.value}[/{style}]" + (f" {ln.note}" if ln.note else "")
            t.add_row(ln.run, ln.metric, _num(ln.baseline), ci, _num(ln.now), delta, tol, status)
        console.print(t)
    n_cmp = sum(1 for ln in rep.lines if ln.metric != "(all)")
    console.print(f"{rep.n_entries} baseline run(s), {rep.n_results} fresh run(s), "
                  f"{n_cmp} metric(s) compared, {len(rep.failed)} failure(s)", highlight=False)
    if rep.failed:
        err_console.print("[bold red]quality check failed[/bold red]: see WORSE / MISSING / "
                          "DATA CHANGED above")
        return 1
    console.print("[green]quality check passed[/green]")
    return 0
