"""Command line: ``cxrbench <command> ...``. Parses arguments and calls the library.

Each subcommand is a module in :mod:`cxrbench.commands` that defines ``HELP``,
``add_arguments(parser)`` and ``main(args) -> int``; they are discovered, so a
new command is one new file.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import pkgutil
import sys

from rich.console import Console
from rich.logging import RichHandler

import cxrbench
from cxrbench import commands

console = Console()
err_console = Console(stderr=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cxrbench",
        description="Benchmark content-based image retrieval on chest X-rays.",
    )
    parser.add_argument("--version", action="version", version=f"cxrbench {cxrbench.__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"cxrbench.commands.{info.name}")
        name = getattr(mod, "NAME", info.name)
        p = sub.add_parser(name, help=mod.HELP, description=mod.HELP)
        mod.add_arguments(p)
        p.set_defaults(_main=mod.main)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=err_console, show_path=False, show_time=False)],
    )
    for noisy in ("PIL", "matplotlib", "urllib3", "filelock", "huggingface_hub", "timm"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if not getattr(args, "command", None):
        # `cxrbench` alone: behave like `cxrbench run` (the default demo)
        args = parser.parse_args(["run", *(argv or [])])
    try:
        return int(args._main(args) or 0)
    except KeyboardInterrupt:
        err_console.print("[red]interrupted[/red]: finished work is cached; rerun to resume")
        return 130
    except (ValueError, KeyError, FileNotFoundError, FileExistsError, RuntimeError, ImportError) as exc:
        if args.verbose or os.environ.get("CXRBENCH_DEBUG"):
            raise
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        err_console.print(f"[bold red]error:[/bold red] {msg}", highlight=False)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
