"""``cxrbench train``: train a learned encoder on a dataset's train split and save a checkpoint."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

HELP = "train a learned encoder on a dataset's train split and save (or find) its checkpoint"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--encoder", "-e", required=True,
                   help="a trainable encoder, e.g. stacked-ae, autothorax, supervised-cnn")
    p.add_argument("--dataset", "-d", default="phantom", help="dataset name (default: phantom)")
    p.add_argument("--root", help="dataset root folder")
    p.add_argument("--set", nargs="+", action="extend", metavar="KEY=VALUE",
                   help="encoder parameter (dataset.KEY=VALUE for the dataset)")
    p.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="torch device")
    p.add_argument("--cache-dir", help="cache folder; checkpoints go to <cache-dir>/checkpoints")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars")


def main(args: argparse.Namespace) -> int:
    from rich.table import Table

    from cxrbench.benchmark.harness import create_dataset, create_encoder
    from cxrbench.cli import console
    from cxrbench.commands.run import parse_sets
    from cxrbench.datasets import Subset

    enc_params, ds_params = parse_sets(args.set)
    if "checkpoint" in enc_params:
        raise ValueError("cxrbench train makes checkpoints; to use one, run "
                         "`cxrbench run ... --set checkpoint=PATH`")
    ds = create_dataset(args.dataset, args.root, **ds_params)
    enc = create_encoder(args.encoder, device=args.device, **enc_params)
    if not enc.trainable:
        raise ValueError(f"encoder {args.encoder!r} is not trainable: nothing to train "
                         "(cxrbench list encoders)")
    rows = ds.split_indices("train")
    if len(rows) == 0:
        raise ValueError(f"dataset {args.dataset!r} has no train split to train on")
    if args.cache_dir:
        enc.cache_dir = Path(args.cache_dir)
    progress = None
    if not args.quiet:
        from cxrbench.progress import RichProgress

        progress = RichProgress()
    t0 = time.perf_counter()
    try:
        enc.fit(Subset(ds, rows), progress=progress.update if progress else None, seed=args.seed)
    finally:
        if progress:
            progress.close()
    seconds = time.perf_counter() - t0
    rep = enc.report()
    tr = rep.get("training", {})
    verb = "found existing" if tr.get("reused") else "trained"
    console.print(f"[bold green]{verb}[/bold green] {args.encoder} on {args.dataset} "
                  f"({len(rows)} train images, seed {args.seed}) in {seconds:.1f} s")
    console.print(f"checkpoint: [bold]{getattr(enc, 'checkpoint_path', None)}[/bold]", highlight=False)
    log = getattr(enc, "training_log", None) or {}
    epochs = log.get("epochs", [])
    if epochs:
        t = Table(title="training log", show_lines=False)
        cols = [c for c in epochs[0] if c != "loss"] + ["loss"]
        extra = [c for c in epochs[-1] if c not in cols]
        for c in cols + extra:
            t.add_column(c, justify="right")
        shown = epochs if len(epochs) <= 40 else epochs[:5] + epochs[-35:]
        for e in shown:
            t.add_row(*[_fmt(e.get(c)) for c in cols + extra])
        console.print(t)
    clf = rep.get("classifier")
    if clf:
        t = Table(title=f"classifier on {clf['split']}")
        for c in ("label", "AUC", "precision", "recall"):
            t.add_column(c, justify="right" if c != "label" else "left")
        for name, auc in clf["auc"].items():
            t.add_row(name, _fmt(auc), _fmt(clf["precision"].get(name)), _fmt(clf["recall"].get(name)))
        t.add_row("macro", _fmt(clf.get("macro_auc")), "", "")
        console.print(t)
    sets = " ".join(args.set or [])
    again = f"cxrbench run --encoder {args.encoder} --dataset {args.dataset} --seed {args.seed}"
    if args.root:
        again += f" --root {args.root}"
    if sets:
        again += f" --set {sets}"
    console.print(f"use it: `{again}` finds it again (same cache dir); or pass "
                  f"--set checkpoint={getattr(enc, 'checkpoint_path', '')}", highlight=False)
    return 0


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4f}"
    return str(v)
