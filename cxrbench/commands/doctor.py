"""``cxrbench doctor``: check a dataset's layout and files before benchmarking on it."""

from __future__ import annotations

import argparse
import logging
from collections import Counter
from typing import Any

import numpy as np
from rich.table import Table

HELP = "check a dataset folder: layout, counts per split, missing/unreadable files, labels, views"

#: rows shown at most in the unreadable-files table (all are counted)
_SHOW = 20


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", "-d", required=True, help="dataset name (cxrbench list datasets)")
    p.add_argument("--root", help="dataset root folder")
    p.add_argument("--set", nargs="+", action="extend", metavar="KEY=VALUE",
                   help="dataset parameter, e.g. --set dataset.uncertain=zeros (prefix optional)")
    p.add_argument("--images", choices=["sample", "all", "none"], default="sample",
                   help="decode a random sample of images (default), all of them, or none")
    p.add_argument("--sample", type=int, default=500, help="images decoded with --images sample")
    p.add_argument("--seed", type=int, default=0, help="seed of the image sample")
    p.add_argument("--strict", action="store_true",
                   help="treat warnings (missing files, absent labels ...) as problems")


def dataset_params(items: list[str] | None) -> dict[str, Any]:
    from cxrbench.commands.run import parse_sets

    enc, ds = parse_sets([i if i.startswith("dataset.") else f"dataset.{i}" for i in items or []])
    return {**enc, **ds}


def check_images(dataset: Any, rows: np.ndarray,
                 progress: Any = None) -> tuple[list[tuple[int, str]], Counter]:
    """Decode ``rows``; return (row, error) for failures and a Counter of image sizes."""
    read = getattr(dataset, "read", None) or dataset.load_image
    bad: list[tuple[int, str]] = []
    sizes: Counter = Counter()
    for k, i in enumerate(rows.tolist()):
        try:
            img = read(int(i))
            sizes[f"{img.shape[1]}x{img.shape[0]}"] += 1
        except Exception as exc:  # noqa: BLE001 - every failure is a finding
            bad.append((int(i), str(exc)))
        if progress:
            progress(k + 1, len(rows))
    return bad, sizes


def main(args: argparse.Namespace) -> int:
    from cxrbench.cli import console
    from cxrbench.datasets import DATASETS
    from cxrbench.datasets.base import SPLITS

    # the dataset's warnings are printed below with the other findings, not logged twice
    logging.getLogger("cxrbench.datasets").setLevel(logging.ERROR)
    params = dataset_params(args.set)
    ds = DATASETS.create(args.dataset, root=args.root, **params)
    ix = ds.index  # layout errors surface here, as a one-line error from the CLI
    n = len(ix)
    problems: list[str] = []
    warnings: list[str] = list(ds.info.get("warnings", []))

    console.print(f"[bold]{ds.name}[/bold] at {ds.root}  (fingerprint {ds.fingerprint()})")
    if params:
        console.print(f"parameters: {params}")
    if n == 0:
        problems.append("the dataset has no images")

    # -- splits ------------------------------------------------------------------------------
    t = Table(title="splits")
    for c in ("split", "images", "patients", "images/patient (max)"):
        t.add_column(c, justify="right" if c != "split" else "left")
    for s in (*SPLITS, "all"):
        m = np.ones(n, dtype=bool) if s == "all" else ix.splits == s
        if not m.any() and s != "all":
            continue
        pats = Counter(ix.patient_ids[m].tolist())
        t.add_row(s, str(int(m.sum())), str(len(pats)),
                  f"{m.sum() / max(len(pats), 1):.2f} ({max(pats.values()) if pats else 0})")
    console.print(t)
    split_info = ds.info.get("split")
    if split_info:
        console.print(f"split: {split_info}")
    leaks = _patients_in_several_splits(ix)
    if leaks:
        problems.append(f"{leaks} patients have images in more than one split")

    # -- labels ------------------------------------------------------------------------------
    names = list(ds.label_names)
    t = Table(title=f"labels ({'single-label' if ds.single_label else 'multi-label'}; "
                    "+split = positives in that split)")
    t.add_column("label", no_wrap=True)
    present = [s for s in SPLITS if (ix.splits == s).any()]
    for s in present:
        t.add_column(f"+{s}", justify="right")
    for c in ("negative", "unknown", "prevalence"):
        t.add_column(c, justify="right")
    for j, name in enumerate(names):
        col = ix.labels[:, j]
        pos, neg, unk = int((col == 1).sum()), int((col == 0).sum()), int((col == -1).sum())
        prev = f"{100 * pos / (pos + neg):.1f}%" if pos + neg else "-"
        t.add_row(name, *[str(int((col[ix.splits == s] == 1).sum())) for s in present],
                  str(neg), str(unk), prev)
        if pos == 0:
            warnings.append(f"label {name!r} has no positive image")
    if len(names) <= 60:
        console.print(t)
    else:
        console.print(f"{len(names)} labels (table omitted); "
                      f"positives per image: {float((ix.labels == 1).sum(1).mean()):.2f}")
    none = int(((ix.labels == 1).sum(1) == 0).sum())
    if none and ds.single_label:
        problems.append(f"{none} images have no class in a single-label dataset")

    # -- views -------------------------------------------------------------------------------
    views = Counter(ix.views.tolist())
    if set(views) != {""}:
        t = Table(title="views")
        t.add_column("view")
        t.add_column("images", justify="right")
        for v, c in views.most_common():
            t.add_row(v or "(unknown)", str(c))
        console.print(t)

    # -- files -------------------------------------------------------------------------------
    missing = ds.info.get("missing_files")
    if missing:
        ex = ", ".join(ds.info.get("missing_examples", [])[:3])
        console.print(f"[yellow]missing:[/yellow] {missing} listed images are not on disk (e.g. {ex})")
    if args.images != "none" and n:
        rows = np.arange(n)
        if args.images == "sample" and n > args.sample:
            rows = np.sort(np.random.default_rng(args.seed).choice(n, args.sample, replace=False))
        bad, sizes = _check_with_progress(ds, rows)
        what = "all" if len(rows) == n else f"a random sample of {len(rows)} of {n}"
        common = ", ".join(f"{s} ({c})" for s, c in sizes.most_common(3))
        console.print(f"decoded {what} images: {len(rows) - len(bad)} readable"
                      + (f"; sizes {common}" if common else ""))
        if bad:
            t = Table(title=f"unreadable images ({len(bad)})")
            t.add_column("row", justify="right")
            t.add_column("id")
            t.add_column("error")
            for i, err in bad[:_SHOW]:
                t.add_row(str(i), str(ix.ids[i]), err)
            console.print(t)
            problems.append(f"{len(bad)} of {len(rows)} decoded images are unreadable"
                            + ("" if len(rows) == n else " (in the sample)"))

    # -- verdict -----------------------------------------------------------------------------
    for w in warnings:
        console.print(f"[yellow]warning:[/yellow] {w}")
    if args.strict:
        problems += warnings
    for p in problems:
        console.print(f"[bold red]problem:[/bold red] {p}")
    if problems:
        console.print(f"[bold red]{len(problems)} problem(s)[/bold red]")
        return 1
    console.print(f"[bold green]ok[/bold green]: {n} images ready"
                  + (f" ({len(warnings)} warning(s))" if warnings else ""))
    return 0


def _check_with_progress(ds: Any, rows: np.ndarray) -> tuple[list[tuple[int, str]], Counter]:
    if len(rows) < 200:
        return check_images(ds, rows)
    from cxrbench.progress import RichProgress

    bar = RichProgress(transient=True)
    try:
        return check_images(ds, rows, lambda k, total: bar.set("decode images", k, total))
    finally:
        bar.close()


def _patients_in_several_splits(ix: Any) -> int:
    seen: dict[str, str] = {}
    leaks: set[str] = set()
    for p, s in zip(ix.patient_ids.tolist(), ix.splits.tolist()):
        if seen.setdefault(p, s) != s:
            leaks.add(p)
    return len(leaks)
