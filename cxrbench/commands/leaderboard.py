"""``cxrbench leaderboard RESULTS_DIR --out DIR``: markdown tables and plots from Results."""

from __future__ import annotations

import argparse

HELP = "write markdown leaderboards and PNG plots from a folder of Result files"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("results", help="folder of Result JSON files (searched recursively)")
    p.add_argument("--out", default="leaderboards", help="output folder (default: leaderboards)")
    p.add_argument("--k", type=int, help="preferred cut-off for the main columns")
    p.add_argument("--no-plots", action="store_true", help="markdown only")
    p.add_argument("--clean", action="store_true",
                   help="remove leaderboard files of an earlier generation that are not rewritten")


def main(args: argparse.Namespace) -> int:
    from rich.table import Table

    from cxrbench.cli import console, err_console
    from cxrbench.leaderboards.markdown import summary
    from cxrbench.leaderboards.publish import publish

    pub = publish(args.results, args.out, k=args.k, plots=not args.no_plots, clean=args.clean)
    for path, why in pub.problems:
        err_console.print(f"[yellow]skipped[/yellow] {path}: {why}", highlight=False)
    if not pub.boards:
        err_console.print(f"[yellow]no Result files under {args.results}[/yellow]")
    t = Table(title=f"leaderboards -> {args.out}")
    t.add_column("board")
    t.add_column("encoders", justify="right")
    t.add_column("best")
    for s in summary(pub.boards):
        t.add_row(s["board"], str(s["rows"]), s["best"])
    console.print(t)
    console.print(f"{pub.n_results} Result(s), {pub.n_superseded} superseded; "
                  f"wrote {len(pub.written)} file(s)"
                  + (f", removed {len(pub.removed)} stale" if pub.removed else ""), highlight=False)
    return 0
