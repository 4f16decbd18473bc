"""``cxrbench suite FILE.yaml``: run every run of a suite, resumably."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

HELP = "run a YAML suite of runs (skips finished ones, continues past failures)"

STYLE = {"done": "green", "exists": "cyan", "skipped": "yellow", "failed": "bold red",
         "todo": "white"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("suite", help="suite YAML file (see configs/suites/)")
    p.add_argument("--out", help="results folder (default: results/<suite name>)")
    p.add_argument("--only", nargs="+", action="extend", metavar="PATTERN",
                   help="run only runs whose label matches (glob, or substring)")
    p.add_argument("--list", action="store_true",
                   help="show the runs and what would happen to each; run nothing")
    p.add_argument("--strict", action="store_true",
                   help="a skipped run (missing dataset root) counts as a failure")
    p.add_argument("--device", choices=["cpu", "cuda"], help="torch device for every run")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--workers", type=int, dest="num_workers", help="DataLoader workers")
    p.add_argument("--cache-dir", help="embedding cache folder")
    p.add_argument("--no-cache", action="store_true", help="do not read or write caches")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars")


class SuiteProgress:
    """One display: an overall bar over runs plus the current run's stage bars."""

    def __init__(self, console: Any, total: int, enabled: bool, log_runs: bool = True) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.console = console
        self.enabled = enabled
        self.log_runs = log_runs
        self.progress = Progress(
            TextColumn("[bold]{task.description:<22}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TimeRemainingColumn(), console=console, disable=not enabled,
        )
        self.overall = self.progress.add_task("suite", total=total)
        self.stages: dict[str, int] = {}
        self.progress.start()

    def stage(self, name: str, advance: float, total: float) -> None:
        if name not in self.stages:
            self.stages[name] = self.progress.add_task(f"  {name}", total=total)
        task = self.stages[name]
        self.progress.update(task, total=total)
        self.progress.advance(task, advance)

    def event(self, kind: str, run: Any, outcome: Any) -> None:
        if kind == "start":
            self.progress.update(self.overall, description=f"suite: run {run.index}")
            return
        for task in self.stages.values():
            self.progress.remove_task(task)
        self.stages.clear()
        self.progress.advance(self.overall, 1)
        if not self.log_runs:
            return
        style = STYLE.get(outcome.status, "")
        extra = f" ({outcome.seconds:.1f}s)" if outcome.status == "done" else ""
        why = f": {outcome.reason}" if outcome.reason and outcome.status != "exists" else ""
        from rich.markup import escape

        self.progress.console.print(
            f"[{style}]{outcome.status:>7}[/{style}] {escape(run.label + extra + why)}",
            highlight=False)

    def close(self) -> None:
        self.progress.stop()


def main(args: argparse.Namespace) -> int:
    from rich.markup import escape
    from rich.table import Table

    from cxrbench.cli import console, err_console
    from cxrbench.leaderboards.suite import load_suite, run_suite, select
    from cxrbench.report import fmt, headline_keys

    suite = load_suite(args.suite)
    out = Path(args.out) if args.out else Path("results") / suite.name
    overrides: dict[str, Any] = {k: v for k, v in {
        "device": args.device, "batch_size": args.batch_size, "num_workers": args.num_workers,
        "cache_dir": args.cache_dir}.items() if v is not None}
    if args.no_cache:
        overrides["use_cache"] = False
    chosen = select(suite.runs, args.only)
    if not chosen:
        err_console.print(f"[red]no run of suite {suite.name!r} matches {args.only}[/red]")
        return 2
    console.print(f"[bold]suite[/bold] {suite.name}: {len(chosen)} of {len(suite.runs)} runs "
                  f"-> {out}", highlight=False)
    display = SuiteProgress(err_console, len(chosen), enabled=not (args.quiet or args.list),
                            log_runs=not args.list)
    try:
        report = run_suite(suite, out, only=args.only, overrides=overrides,
                           progress=display.stage, on_event=display.event, dry_run=args.list)
    finally:
        display.close()

    t = Table(title=f"suite {suite.name} -> {out}")
    for col in ("#", "run", "status", "detail"):
        t.add_column(col, justify="right" if col == "#" else "left", no_wrap=col == "status")
    for o in report.outcomes:
        detail = o.reason if o.status in ("failed", "skipped") else ""
        if o.result is not None:
            keys = headline_keys(o.result)[:2]
            detail = ", ".join(f"{k} {fmt(o.result, k)}" for k in keys) or "(no metrics)"
        style = STYLE.get(o.status, "")
        t.add_row(str(o.run.index), escape(o.run.label), f"[{style}]{o.status}[/{style}]",
                  escape(detail))
    console.print(t)
    counts = {s: report.count(s) for s in ("done", "exists", "skipped", "failed", "todo")}
    console.print(", ".join(f"{n} {s}" for s, n in counts.items() if n) or "nothing to do",
                  highlight=False)
    if args.verbose:
        for o in report.failed:
            err_console.print(f"[bold red]{escape(o.run.label)}[/bold red]\n{escape(o.traceback)}",
                              highlight=False)
    if report.failed:
        err_console.print(f"[bold red]{len(report.failed)} run(s) failed[/bold red] "
                          "(rerun the suite to retry them; finished runs are not repeated)")
        return 1
    if args.strict and counts["skipped"]:
        err_console.print(f"[bold red]{counts['skipped']} run(s) skipped[/bold red] and --strict")
        return 1
    return 0
