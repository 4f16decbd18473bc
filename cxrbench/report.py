"""Rich tables for the terminal (used by the CLI only)."""

from __future__ import annotations

import re
from typing import Sequence

from rich.console import Console
from rich.table import Table

from cxrbench.benchmark.result import Result

#: metric families shown in summaries, in order; the k used is the run's largest
HEADLINE = ("knn_auc", "avg", "p", "map", "mrr", "ndcg", "irma_error", "irma_error_total")
_KEY = re.compile(r"^(?P<fam>[a-z_]+)@(?P<k>\d+)(\[(?P<label>.*)\])?$")


def headline_keys(res: Result) -> list[str]:
    ks: dict[str, list[int]] = {}
    for key in res.metrics:
        m = _KEY.match(key)
        if m and not m.group("label"):
            ks.setdefault(m.group("fam"), []).append(int(m.group("k")))
    out = []
    for fam in HEADLINE:
        if fam in ks:
            k = 1 if fam.startswith("irma_error") and 1 in ks[fam] else max(ks[fam])
            out.append(f"{fam}@{k}")
    return out


def fmt(res: Result, key: str) -> str:
    v = res.metrics.get(key)
    if v is None:
        return ""
    s = f"{v:.1f}" if abs(v) >= 100 else f"{v:.3f}"
    ci = res.ci.get(key)
    if ci:
        s += f" [{ci[0]:.3f}, {ci[1]:.3f}]" if abs(v) < 100 else f" [{ci[0]:.1f}, {ci[1]:.1f}]"
    return s


def print_result(res: Result, console: Console) -> None:
    t = Table(title=f"{res.encoder['name']} on {res.dataset['name']} ({res.protocol['name']}, "
                    f"{res.protocol.get('n_queries')} queries)")
    t.add_column("metric", style="bold")
    t.add_column("value (95% CI)")
    for key in headline_keys(res):
        t.add_row(key, fmt(res, key))
    console.print(t)
    auc = [k for k in headline_keys(res) if k.startswith("knn_auc@")]
    per_label = sorted(k for k in res.metrics if auc and k.startswith(auc[0] + "["))
    if per_label:
        lt = Table(title=f"k-NN-vote AUC per label ({auc[0]})")
        lt.add_column("label")
        lt.add_column("AUC (95% CI)")
        for key in per_label:
            lt.add_row(key[key.index("[") + 1: -1], fmt(res, key))
        console.print(lt)
    ex = res.exclusions
    console.print(
        f"same-patient hits excluded: {ex.get('excluded_same_patient')}  |  "
        f"embed {res.timings.get('embed', 0):.1f}s  search {res.timings.get('search', 0):.2f}s  "
        f"metrics {res.timings.get('metrics', 0):.1f}s  |  result: {res.path or '(not saved)'}"
    )


def print_leaderboard(results: Sequence[Result], console: Console) -> None:
    keys: list[str] = []
    for r in results:
        for k in headline_keys(r):
            if k not in keys:
                keys.append(k)
    t = Table(title="leaderboard")
    t.add_column("encoder", style="bold")
    t.add_column("dataset")
    t.add_column("dim", justify="right")
    for k in keys:
        t.add_column(k, justify="right")
    for r in results:
        emb = r.encoder.get("embedding") or {}
        t.add_row(r.encoder["name"], r.dataset["name"], str(emb.get("dim", "")),
                  *[fmt(r, k) for k in keys])
    console.print(t)
