"""Baselines and the retrieval-quality regression check.

A baseline is a JSON file of expected metric values with their 95% CIs::

    {
      "format": "cxrbench-baseline/1",
      "cxrbench": "0.1.0",
      "tolerance": {"knn_auc@*": 0.02},          # optional, fnmatch patterns -> absolute
      "entries": [
        {
          "key": {"encoder": "raw", "encoder_params": {"size": 32},
                  "dataset": "phantom", "dataset_params": {"n": 300},
                  "protocol": {"name": "holdout", "exclude_same_patient": true},
                  "seed": 0},
          "label": "raw · phantom(n=300) · holdout · seed 0",   # for display only
          "dataset_fingerprint": "0123456789abcdef",
          "run_fingerprint": "...", "created": "...",
          "metrics": {"knn_auc@10": {"value": 0.81, "ci": [0.78, 0.84],
                                     "higher_is_better": true}},
          "tolerance": {"p@10": 0.05}              # optional, per entry
        }
      ]
    }

**Matching.** A fresh Result matches an entry when its :func:`run_key` equals
the entry's ``key``: encoder name and params, dataset name and params (incl.
``subset``), protocol (name, folds for kfold, same-patient exclusion) and
seed. The dataset root is not part of the key (it differs between machines;
the dataset fingerprint says whether the content is the same). Among several
matching Results the newest wins.

**Verdict per metric** (worse = lower for higher-is-better metrics):

* explicit tolerance (entry ``tolerance``, else file ``tolerance``; the first
  matching pattern, patterns in file order): fail when worse than the
  baseline value by more than the tolerance;
* otherwise the baseline's bootstrap CI: fail when the value lies outside the
  CI on the bad side;
* no CI and no tolerance: fail on any worsening (beyond 1e-9).

A baseline entry with no matching Result, a metric the Result lacks, or a
different dataset fingerprint (the data changed: the numbers are not
comparable; regenerate the baseline) is a failure too. Results without a
baseline entry are listed as ``new`` and do not fail.
"""

from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Sequence

from cxrbench import __version__
from cxrbench.benchmark.result import Result, atomic_create
from cxrbench.benchmark.store import atomic_write_text
from cxrbench.leaderboards.collect import (
    canonical,
    dedupe_by,
    describe_key,
    load_results,
    run_key,
    run_label,
)

FORMAT = "cxrbench-baseline/1"
EPS = 1e-9


class Status(str, Enum):
    OK = "ok"
    IMPROVED = "improved"
    WORSE = "WORSE"
    MISSING = "MISSING"
    DATA_CHANGED = "DATA CHANGED"
    NEW = "new"

    @property
    def failed(self) -> bool:
        return self in (Status.WORSE, Status.MISSING, Status.DATA_CHANGED)


# -- writing --------------------------------------------------------------------
def select_metrics(res: Result, patterns: Sequence[str] | None, per_label: bool) -> list[str]:
    keys = sorted(res.metrics)
    if not per_label:
        keys = [k for k in keys if "[" not in k]
    if patterns:
        keys = [k for k in keys if any(fnmatch.fnmatchcase(k, p) for p in patterns)]
    return keys


def make_baseline(results: Sequence[Result], *, metrics: Sequence[str] | None = None,
                  per_label: bool = False, tolerance: dict[str, float] | None = None) -> dict:
    """A baseline document from Results (newest per run key)."""
    kept, _ = dedupe_by(results, lambda r: canonical(run_key(r)))
    entries = []
    for r in kept:
        m = {}
        for key in select_metrics(r, metrics, per_label):
            ci = r.ci.get(key)
            m[key] = {"value": float(r.metrics[key]),
                      "ci": None if not ci else [float(ci[0]), float(ci[1])],
                      "higher_is_better": bool(r.higher_is_better.get(key, True))}
        entries.append({
            "label": run_label(r),
            "key": run_key(r),
            "dataset_fingerprint": r.dataset.get("fingerprint"),
            "run_fingerprint": r.run_fingerprint,
            "created": r.created,
            "metrics": m,
        })
    entries.sort(key=lambda e: canonical(e["key"]))
    doc: dict[str, Any] = {"format": FORMAT, "cxrbench": __version__, "entries": entries}
    if tolerance:
        doc["tolerance"] = dict(tolerance)
    return doc


def save_baseline(doc: dict, path: str | Path, *, force: bool = False) -> Path:
    """Write atomically; refuse to replace an existing file unless ``force``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(doc, indent=2, sort_keys=True) + "\n"
    if not force:
        try:
            atomic_create(path, text)
        except FileExistsError:
            raise FileExistsError(f"{path} exists; pass --force to replace the baseline") from None
        return path
    atomic_write_text(path, text)
    return path


def load_baseline(path: str | Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"baseline {path} not found; write one with `cxrbench baseline RESULTS_DIR --out {path}`")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ValueError(f"{path}: not a cxrbench baseline (expected \"format\": \"{FORMAT}\")")
    for i, e in enumerate(doc.get("entries", [])):
        if not isinstance(e, dict) or "key" not in e or "metrics" not in e:
            raise ValueError(f"{path}: entry {i} needs 'key' and 'metrics'")
    for where, tol in [("file", doc.get("tolerance"))] + [
            (f"entry {i}", e.get("tolerance")) for i, e in enumerate(doc.get("entries", []))]:
        if tol is None:
            continue
        if not isinstance(tol, dict) or not all(
                isinstance(v, (int, float)) and v >= 0 for v in tol.values()):
            raise ValueError(f"{path}: {where} tolerance must map metric patterns to numbers >= 0")
    return doc


# -- checking -------------------------------------------------------------------
@dataclass
class Line:
    """One compared metric (or one whole entry when it is missing / new)."""

    run: str
    metric: str
    status: Status
    baseline: float | None = None
    ci: tuple[float, float] | None = None
    now: float | None = None
    tolerance: float | None = None
    note: str = ""
    higher_is_better: bool = True

    @property
    def limit(self) -> str:
        """The bound the value had to meet, e.g. ``≥ 0.790`` (CI low) or ``≤ 0.350``."""
        if self.baseline is None:
            return ""
        op = "≥" if self.higher_is_better else "≤"
        if self.tolerance is not None:
            b = self.baseline - self.tolerance if self.higher_is_better else self.baseline + self.tolerance
        elif self.ci is not None:
            b = self.ci[0] if self.higher_is_better else self.ci[1]
        else:
            b = self.baseline
        return f"{op} {b:.3f}" if abs(b) < 100 else f"{op} {b:.1f}"

    @property
    def delta(self) -> float | None:
        if self.baseline is None or self.now is None:
            return None
        return self.now - self.baseline


@dataclass
class Report:
    lines: list[Line] = field(default_factory=list)
    n_entries: int = 0
    n_results: int = 0

    @property
    def failed(self) -> list[Line]:
        return [ln for ln in self.lines if ln.status.failed]

    @property
    def ok(self) -> bool:
        return not self.failed

    def moved(self) -> list[Line]:
        """Lines worth showing: failures, new runs, and any value that changed."""
        return [ln for ln in self.lines if ln.status is not Status.OK
                or (ln.delta is not None and abs(ln.delta) > EPS)]


def _tolerance(metric: str, entry: dict, doc: dict) -> float | None:
    for tol in (entry.get("tolerance"), doc.get("tolerance")):
        for pattern, v in (tol or {}).items():
            if fnmatch.fnmatchcase(metric, pattern):
                return float(v)
    return None


def judge(now: float, spec: dict, tol: float | None) -> Status:
    """The verdict for one metric (rules in the module docstring). ``improved``
    means better by the same criterion that would have failed it the other way."""
    base = float(spec["value"])
    hib = bool(spec.get("higher_is_better", True))
    worse_by = (base - now) if hib else (now - base)
    ci = spec.get("ci")
    if tol is not None:
        bad, better = worse_by > tol + EPS, -worse_by > tol + EPS
    elif ci:
        lo, hi = float(ci[0]), float(ci[1])
        bad = (now < lo - EPS) if hib else (now > hi + EPS)
        better = (now > hi + EPS) if hib else (now < lo - EPS)
    else:
        bad, better = worse_by > EPS, -worse_by > EPS
    return Status.WORSE if bad else Status.IMPROVED if better else Status.OK


def compare(doc: dict, results: Sequence[Result]) -> Report:
    """Compare fresh Results with a baseline document."""
    by_key = {canonical(run_key(r)): r for r in dedupe_by(results, lambda r: canonical(run_key(r)))[0]}
    rep = Report(n_entries=len(doc.get("entries", [])), n_results=len(by_key))
    matched = set()
    for entry in doc.get("entries", []):
        ck = canonical(entry["key"])
        name = str(entry.get("label") or describe_key(entry["key"]))
        res = by_key.get(ck)
        if res is None:
            rep.lines.append(Line(name, "(all)", Status.MISSING, note="no fresh Result for this run"))
            continue
        matched.add(ck)
        base_fp, fp = entry.get("dataset_fingerprint"), res.dataset.get("fingerprint")
        if base_fp and fp and base_fp != fp:
            rep.lines.append(Line(name, "(all)", Status.DATA_CHANGED,
                                  note=f"dataset fingerprint {fp} != baseline {base_fp}; "
                                       "regenerate the baseline if the change is intended"))
            continue
        for metric in sorted(entry["metrics"]):
            spec = entry["metrics"][metric]
            ci = tuple(spec["ci"]) if spec.get("ci") else None
            tol = _tolerance(metric, entry, doc)
            now = res.metrics.get(metric)
            hib = bool(spec.get("higher_is_better", True))
            if now is None:
                why = res.skipped_metrics.get(metric.split("@")[0], "")
                rep.lines.append(Line(name, metric, Status.MISSING, float(spec["value"]), ci,
                                      None, tol, why or "metric absent from the Result", hib))
                continue
            st = judge(float(now), spec, tol)
            rep.lines.append(Line(name, metric, st, float(spec["value"]), ci, float(now), tol,
                                  higher_is_better=hib))
    for ck, res in sorted(by_key.items()):
        if ck not in matched:
            rep.lines.append(Line(run_label(res), "(all)", Status.NEW,
                                  note="no baseline entry"))
    return rep


def check(baseline: str | Path, results_dir: str | Path) -> Report:
    """Load a baseline file and the Results under ``results_dir`` and compare them."""
    doc = load_baseline(baseline)
    loaded = load_results(results_dir)
    return compare(doc, loaded.results)
