"""``cxrbench baseline RESULTS_DIR --out FILE.json``: freeze Results as a quality baseline."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "write a baseline (expected metrics with CIs) from a folder of Result files"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("results", help="folder of Result JSON files (searched recursively)")
    p.add_argument("--out", required=True, help="baseline JSON file to write")
    p.add_argument("--force", action="store_true",
                   help="replace an existing baseline (its tolerances are kept)")
    p.add_argument("--metrics", nargs="+", metavar="PATTERN",
                   help="metric keys to include (glob, e.g. 'knn_auc@*'); default: all but per-label")
    p.add_argument("--per-label", action="store_true", help="also per-label metrics (key[label])")


def main(args: argparse.Namespace) -> int:
    from cxrbench.cli import console
    from cxrbench.leaderboards.check import load_baseline, make_baseline, save_baseline
    from cxrbench.leaderboards.collect import load_results

    out = Path(args.out)
    if out.exists() and not args.force:
        raise FileExistsError(f"{out} exists; pass --force to replace the baseline")
    tolerance = None
    if out.exists():
        old = load_baseline(out)
        tolerance = old.get("tolerance")
    loaded = load_results(args.results)
    if not loaded.results:
        raise ValueError(f"no Result files under {args.results}; run a suite first")
    doc = make_baseline(loaded.results, metrics=args.metrics, per_label=args.per_label,
                        tolerance=tolerance)
    save_baseline(doc, out, force=args.force)
    n_metrics = sum(len(e["metrics"]) for e in doc["entries"])
    console.print(f"wrote {out}: {len(doc['entries'])} run(s), {n_metrics} metric(s)"
                  + (f"; kept tolerances {tolerance}" if tolerance else ""), highlight=False)
    return 0
