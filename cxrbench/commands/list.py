"""``cxrbench list encoders|datasets|metrics``."""

from __future__ import annotations

import argparse

from rich.table import Table

HELP = "list registered encoders, datasets or metrics"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("kind", choices=["encoders", "datasets", "metrics"])


def main(args: argparse.Namespace) -> int:
    from cxrbench import DATASETS, ENCODERS, METRICS
    from cxrbench.cli import console

    reg = {"encoders": ENCODERS, "datasets": DATASETS, "metrics": METRICS}[args.kind]
    table = Table(title=args.kind, show_lines=False)
    table.add_column("name", style="bold")
    table.add_column("description")
    table.add_column("source", style="dim")
    for e in reg.entries():
        table.add_row(e.name, e.description, e.source)
    console.print(table)
    return 0
