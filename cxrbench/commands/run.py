"""``cxrbench run``: one benchmark run, or the default demo suite with no --encoder."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import yaml

HELP = "run a retrieval benchmark (no --encoder: the default offline demo)"


class _ValueLoader(yaml.SafeLoader):
    """SafeLoader without timestamps: ``layers=1024-64-16`` is a string, not a date."""


_ValueLoader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in rs if tag != "tag:yaml.org,2002:timestamp"]
    for ch, rs in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def parse_sets(items: list[str] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """``key=value`` -> encoder params; ``dataset.key=value`` -> dataset params.

    Values are parsed as YAML scalars (``3`` -> int, ``true`` -> bool, ``a,b`` stays str,
    ``1024-64-16`` stays str: no dates).
    """
    enc: dict[str, Any] = {}
    ds: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"--set expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        parsed = yaml.load(value, Loader=_ValueLoader) if value != "" else ""
        if key.startswith("dataset."):
            ds[key[len("dataset."):]] = parsed
        else:
            enc[key.removeprefix("encoder.")] = parsed
    return enc, ds


def load_config(path: str | None) -> dict[str, Any]:
    if not path:
        return {}
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"config file {p} not found")
    with open(p, encoding="utf-8") as fh:
        d = yaml.safe_load(fh) or {}
    if not isinstance(d, dict):
        raise ValueError(f"{p}: a run config is a YAML mapping (encoder:, dataset:, ...)")
    return d


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--encoder", "-e", help="encoder name (cxrbench list encoders)")
    p.add_argument("--dataset", "-d", help="dataset name (default: phantom)")
    p.add_argument("--root", help="dataset root folder")
    p.add_argument("--config", help="YAML run config; command-line options override it")
    p.add_argument("--set", nargs="+", action="extend", metavar="KEY=VALUE",
                   help="encoder parameter (dataset.KEY=VALUE for the dataset)")
    p.add_argument("--metrics", nargs="+", help="metric families (default: all that apply)")
    p.add_argument("--k", nargs="+", type=int, help="cut-offs, e.g. --k 1 5 10")
    p.add_argument("--protocol", choices=["holdout", "leave-one-out", "kfold"])
    p.add_argument("--folds", type=int, help="folds for --protocol kfold")
    p.add_argument("--include-same-patient", action="store_true",
                   help="let queries retrieve other images of their own patient")
    p.add_argument("--out", help="results folder (default: results)")
    p.add_argument("--device", choices=["cpu", "cuda"], help="torch device")
    p.add_argument("--seed", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--workers", type=int, dest="num_workers", help="DataLoader workers")
    p.add_argument("--n-boot", type=int, help="bootstrap replicates for CIs (0: none)")
    p.add_argument("--cache-dir", help="embedding cache folder")
    p.add_argument("--no-cache", action="store_true", help="do not read or write caches")
    p.add_argument("--save-neighbors", action="store_true",
                   help="write the neighbour table next to the Result")
    p.add_argument("--query-text", nargs="+", action="extend", metavar="LABEL=TEXT",
                   help="CLIP encoders: text-to-image retrieval, one prompt per label "
                        "(e.g. Effusion='pleural effusion'); 'default' = one prompt per label")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars")


def build_config(args: argparse.Namespace) -> dict[str, Any]:
    d = load_config(args.config)
    enc_sets, ds_sets = parse_sets(args.set)
    for kind in ("encoder", "dataset"):  # nested form -> flat
        v = d.get(kind)
        if isinstance(v, dict):
            v = dict(v)
            d[kind] = v.pop("name")
            d[f"{kind}_params"] = {**v, **d.get(f"{kind}_params", {})}
    if args.encoder:
        if d.get("encoder") not in (None, args.encoder):
            d["encoder_params"] = {}
        d["encoder"] = args.encoder
    if args.dataset:
        if d.get("dataset") not in (None, args.dataset):
            d["dataset_params"] = {}
        d["dataset"] = args.dataset
    d["encoder_params"] = {**d.get("encoder_params", {}), **enc_sets}
    d["dataset_params"] = {**d.get("dataset_params", {}), **ds_sets}
    simple = {
        "root": args.root, "metrics": args.metrics, "k": args.k, "protocol": args.protocol,
        "folds": args.folds, "out": args.out, "device": args.device, "seed": args.seed,
        "batch_size": args.batch_size, "num_workers": args.num_workers, "n_boot": args.n_boot,
        "cache_dir": args.cache_dir,
    }
    d.update({k: v for k, v in simple.items() if v is not None})
    if args.include_same_patient:
        d["exclude_same_patient"] = False
    if args.no_cache:
        d["use_cache"] = False
    if args.save_neighbors:
        d["save_neighbors"] = True
    return d


def main(args: argparse.Namespace) -> int:
    from cxrbench.benchmark.defaults import default_suite
    from cxrbench.benchmark.harness import RunConfig, run
    from cxrbench.cli import console
    from cxrbench.report import print_leaderboard, print_result

    d = build_config(args)
    if not d.get("encoder"):
        # no encoder: the default demo suite (offline, built-in data)
        results = []
        for base in default_suite():
            merged = {**base, **{k: v for k, v in d.items()
                                 if k not in ("encoder", "encoder_params") and v not in ({}, None)}}
            cfg = RunConfig.from_dict(merged)
            console.print(f"[bold]run[/bold] {cfg.encoder} on {cfg.dataset}")
            results.append(run(config=cfg, progress=not args.quiet))
        print_leaderboard(results, console)
        return 0
    cfg = RunConfig.from_dict(d)
    if args.query_text:
        return text_to_image(cfg, args.query_text, console)
    res = run(config=cfg, progress=not args.quiet)
    print_result(res, console)
    return 0


def text_to_image(cfg: Any, items: list[str], console: Any) -> int:
    """``--query-text``: prompts query the dataset's images; same ranking/AvG metrics."""
    from rich.table import Table

    from cxrbench.benchmark.harness import create_dataset, create_encoder
    from cxrbench.encoders.clip import text_retrieval

    enc = create_encoder(cfg.encoder, device=cfg.device, **cfg.encoder_params)
    if not hasattr(enc, "embed_text"):
        raise ValueError(f"--query-text needs a text tower (e.g. --encoder clip); "
                         f"{cfg.encoder!r} has none")
    prompts = None
    if items != ["default"]:
        prompts = {}
        for item in items:
            if "=" not in item:
                raise ValueError(f"--query-text expects LABEL=TEXT, got {item!r}")
            label, text = item.split("=", 1)
            prompts[label] = text
    ds = create_dataset(cfg.dataset, cfg.root, **cfg.dataset_params)
    ev, _, used = text_retrieval(enc, ds, prompts, ks=cfg.k, metrics=("ranking", "avg"), cfg=cfg)
    t = Table(title=f"text-to-image: {cfg.encoder} on {cfg.dataset} ({len(used)} prompts)")
    t.add_column("metric", style="bold")
    t.add_column("value", justify="right")
    for key in sorted(ev.values):
        t.add_row(key, f"{ev.values[key]:.3f}")
    console.print(t)
    return 0
