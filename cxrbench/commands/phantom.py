"""``cxrbench phantom export|preview``: write phantom images to files."""

from __future__ import annotations

import argparse
from typing import Any

HELP = "export the synthetic phantom dataset (NIH ChestX-ray14 layout) or a preview sheet"


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    ex = sub.add_parser("export", help="write PNGs + Data_Entry_2017_v2020.csv (NIH layout)")
    pv = sub.add_parser("preview", help="write a contact sheet of phantom images (one PNG)")
    for q in (ex, pv):
        q.add_argument("--out", required=True, help="output folder (export) or PNG file (preview)")
        q.add_argument("--n", type=int, default=None, help="number of images (export: 2000, preview: 16)")
        q.add_argument("--size", type=int, default=256, help="image side in pixels (default 256)")
        q.add_argument("--seed", type=int, default=0)
        q.add_argument("--set", nargs="+", action="extend", metavar="KEY=VALUE", default=[],
                       help="other phantom parameters, e.g. prevalence.Effusion=0.3 non_chest_fraction=0")
    ex.add_argument("--frontal-only", action="store_true", help="PA/AP images only (no laterals)")
    ex.add_argument("--overwrite", action="store_true", help="replace an existing export in --out")
    ex.add_argument("--quiet", "-q", action="store_true", help="no progress bar")


def _params(args: argparse.Namespace, n_default: int) -> dict[str, Any]:
    from cxrbench.commands.run import parse_sets

    _, ds = parse_sets([f"dataset.{s}" for s in args.set])
    return {"n": args.n if args.n is not None else n_default, "size": args.size, "seed": args.seed, **ds}


def main(args: argparse.Namespace) -> int:
    import numpy as np

    from cxrbench.cli import console
    from cxrbench.datasets.phantom import PhantomDataset, export_nih

    if args.action == "export":
        ds = PhantomDataset(**_params(args, 2000))
        if args.quiet:
            out = export_nih(ds, args.out, frontal_only=args.frontal_only, overwrite=args.overwrite)
        else:
            from cxrbench.progress import RichProgress

            prog = RichProgress()
            try:
                out = export_nih(ds, args.out, frontal_only=args.frontal_only,
                                 overwrite=args.overwrite, progress=prog.update)
            finally:
                prog.close()
        n_rows = sum(1 for _ in open(out / "Data_Entry_2017_v2020.csv", encoding="utf-8")) - 1
        console.print(f"wrote {n_rows} chest images of {len(ds)} phantom rows to [bold]{out}[/bold] "
                      "(synthetic: not clinical data)")
        return 0
    from PIL import Image

    ds = PhantomDataset(**_params(args, 16))
    n = len(ds)
    cols = int(np.ceil(np.sqrt(n))) if n else 1
    rows = -(-n // cols) if n else 1
    sheet = np.zeros((rows * ds.size, cols * ds.size), dtype=np.float32)
    for i in range(n):
        r, c = divmod(i, cols)
        sheet[r * ds.size:(r + 1) * ds.size, c * ds.size:(c + 1) * ds.size] = ds.load_image(i)
    Image.fromarray(np.round(sheet * 255).astype(np.uint8)).save(args.out)
    console.print(f"wrote a {rows}x{cols} sheet of phantom images to [bold]{args.out}[/bold]")
    return 0
