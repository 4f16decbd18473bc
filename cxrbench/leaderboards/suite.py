"""Suites: a YAML file that lists many runs, run resumably in one go.

Format (every key but ``runs``/``grid`` optional; see configs/suites/README.md)::

    name: demo                       # default: the file name
    description: the offline demo
    vars:                            # ${NAME} / ${NAME:-default} in any string;
      DATA: ${CXRBENCH_DATA:-../../../shared/data}   # env vars work too
    defaults:                        # merged under every run
      dataset: phantom
      dataset_params: {n: 1200}
      k: [1, 5, 10]
    runs:                            # explicit runs (RunConfig keys, plus `label`/`tag`)
      - encoder: raw
      - {encoder: stacked-ae, encoder_params: {layers: [1024, 600, 500, 260]}}
    grid:                            # cartesian product, one run per combination
      encoder: [raw, random]         # each value is a list of alternatives
      dataset: [{name: nih14, root: "${DATA}/nih14-mini"}, phantom]

Labels: a run is named by ``label`` if given, else by its encoder, dataset and
protocol (``raw(size=16) @ phantom(n=300) holdout``), prefixed with ``tag: ``
when it has a ``tag``; ``--only`` matches these names.

Merging: a run (or grid combination) overrides ``defaults`` key by key;
``encoder_params`` / ``dataset_params`` merge key by key, unless the run names
another encoder / dataset than ``defaults``, whose params (and ``root``) then
do not apply. Encoders and datasets may use the nested form
``{name: ..., <param>: ...}``; a nested dataset may carry its ``root``.

Paths: ``root`` values that are relative are relative to the suite file's
folder (``${SUITE_DIR}`` names it in other strings). A run whose root does not
exist is *skipped* (not failed) and the reason reported.

Resuming: before a run, its :func:`config_fingerprint` (resolved config minus
output/cache/device settings, plus the dataset fingerprint) is looked up among
the Results already in the output folder; a match is not run again. Runs that
raise are reported as failed and the suite carries on; ``KeyboardInterrupt``
stops it (finished Results stay, the next invocation resumes).
"""

from __future__ import annotations

import fnmatch
import itertools
import logging
import os
import re
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from cxrbench.benchmark.harness import ProgressFn, RunConfig, create_dataset, run
from cxrbench.benchmark.result import Result
from cxrbench.leaderboards.collect import (
    canonical,
    config_fingerprint,
    describe_params,
    load_results,
    result_config_fingerprints,
)

log = logging.getLogger(__name__)

TOP_KEYS = ("name", "description", "vars", "defaults", "runs", "grid")
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^${}]*))?\}")


class SuiteError(ValueError):
    """A suite file that cannot be understood; the message names the file."""


# -- loading -------------------------------------------------------------------------
def expand(value: Any, variables: dict[str, str], where: str) -> Any:
    """Expand ``${NAME}`` / ``${NAME:-default}`` in every string of ``value``.

    ``NAME`` is looked up in the suite's ``vars``, then the environment; the
    innermost reference expands first, so defaults may nest.
    """
    if isinstance(value, dict):
        return {k: expand(v, variables, where) for k, v in value.items()}
    if isinstance(value, list):
        return [expand(v, variables, where) for v in value]
    if not isinstance(value, str):
        return value

    def sub(m: re.Match) -> str:
        name, default = m.group(1), m.group(2)
        if name in variables:
            return variables[name]
        env = os.environ.get(name)
        if env not in (None, ""):
            return env
        if default is not None:
            return default
        raise SuiteError(f"{where}: ${{{name}}} is not set (define it under vars: or in the "
                         f"environment, or write ${{{name}:-default}})")

    for _ in range(20):
        new = _VAR.sub(sub, value)
        if new == value:
            break
        value = new
    return value


def _normalize(m: Any, where: str) -> dict[str, Any]:
    """Nested encoder/dataset forms -> flat RunConfig keys (root lifted out)."""
    if not isinstance(m, dict):
        raise SuiteError(f"{where}: a run is a mapping of run-config keys, got {m!r}")
    d = dict(m)
    for kind in ("encoder", "dataset"):
        v = d.get(kind)
        if isinstance(v, dict):
            v = dict(v)
            if "name" not in v:
                raise SuiteError(f"{where}: nested {kind} needs a 'name'")
            d[kind] = v.pop("name")
            if kind == "dataset" and "root" in v:
                d["root"] = v.pop("root")
            d[f"{kind}_params"] = {**v, **(d.get(f"{kind}_params") or {})}
    return d


def merge(defaults: dict[str, Any], run_map: dict[str, Any]) -> dict[str, Any]:
    """Run over defaults (rules in the module docstring)."""
    out = {k: v for k, v in defaults.items()}
    for kind in ("encoder", "dataset"):
        if kind in run_map and run_map[kind] != defaults.get(kind):
            out.pop(f"{kind}_params", None)
            if kind == "dataset":
                out.pop("root", None)
    for k, v in run_map.items():
        if k in ("encoder_params", "dataset_params") and isinstance(out.get(k), dict):
            out[k] = {**out[k], **(v or {})}
        else:
            out[k] = v
    return out


def expand_grid(grid: Any, where: str) -> list[dict[str, Any]]:
    grids = grid if isinstance(grid, list) else [grid]
    out = []
    for g in grids:
        if not isinstance(g, dict) or not g:
            raise SuiteError(f"{where}: grid is a mapping of key -> list of alternatives")
        for k, v in g.items():
            if not isinstance(v, list) or not v:
                raise SuiteError(
                    f"{where}: grid.{k} must be a non-empty list of alternatives "
                    f"(for a list-valued setting write a list of lists, e.g. k: [[1, 5, 10]])")
        keys = list(g)
        for combo in itertools.product(*(g[k] for k in keys)):
            d: dict[str, Any] = {}
            for k, v in zip(keys, combo):
                piece = _normalize({k: v}, where)
                for pk, pv in piece.items():
                    if pk.endswith("_params") and isinstance(d.get(pk), dict):
                        d[pk] = {**d[pk], **pv}
                    else:
                        d[pk] = pv
            out.append(d)
    return out


@dataclass
class SuiteRun:
    """One run of a suite: its label (for --only and the report) and config."""

    index: int
    label: str
    config: RunConfig


@dataclass
class Suite:
    name: str
    path: Path
    runs: list[SuiteRun]
    description: str = ""


def auto_label(cfg: RunConfig) -> str:
    enc = cfg.encoder + (f"({describe_params(cfg.encoder_params)})" if cfg.encoder_params else "")
    ds_params = {k: v for k, v in cfg.dataset_params.items() if k != "subset"}
    ds = cfg.dataset + (f"({describe_params(ds_params)})" if ds_params else "")
    if "subset" in cfg.dataset_params:
        ds += "[subset]"
    return f"{enc} @ {ds} {cfg.protocol}"


def load_suite(path: str | Path) -> Suite:
    """Read and expand a suite file into its list of runs (no data touched)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"suite file {path} not found (shipped suites: configs/suites/)")
    where = str(path)
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise SuiteError(f"{where}: not valid YAML ({exc})") from None
    if not isinstance(doc, dict):
        raise SuiteError(f"{where}: a suite is a mapping with keys {', '.join(TOP_KEYS)}")
    unknown = sorted(set(doc) - set(TOP_KEYS))
    if unknown:
        raise SuiteError(f"{where}: unknown top-level keys {unknown}; valid: {', '.join(TOP_KEYS)}")
    if "runs" not in doc and "grid" not in doc:
        raise SuiteError(f"{where}: a suite needs 'runs:' and/or 'grid:'")
    suite_dir = path.resolve().parent
    variables: dict[str, str] = {"SUITE_DIR": str(suite_dir)}
    for k, v in (doc.get("vars") or {}).items():
        variables[str(k)] = str(expand(str(v), variables, f"{where}: vars.{k}"))
    defaults = _normalize(expand(doc.get("defaults") or {}, variables, where), f"{where}: defaults")
    runs_raw = doc.get("runs") or []
    if not isinstance(runs_raw, list):
        raise SuiteError(f"{where}: 'runs' is a list of run mappings")
    maps = [_normalize(expand(r, variables, where), f"{where}: runs[{i}]")
            for i, r in enumerate(runs_raw)]
    if doc.get("grid") is not None:
        maps += expand_grid(expand(doc["grid"], variables, where), f"{where}: grid")
    runs: list[SuiteRun] = []
    labels: dict[str, int] = {}
    for i, m in enumerate(maps):
        merged = merge(defaults, m)
        label = merged.pop("label", None)
        tag = merged.pop("tag", None)
        root = merged.get("root")
        if root is not None:
            root = str(root)
            merged["root"] = root if os.path.isabs(root) else os.path.normpath(suite_dir / root)
        try:
            cfg = RunConfig.from_dict(merged)
        except (TypeError, ValueError) as exc:
            raise SuiteError(f"{where}: run {i + 1}: {exc}") from None
        label = str(label) if label else auto_label(cfg)
        if tag:
            label = f"{tag}: {label}"
        labels[label] = labels.get(label, 0) + 1
        if labels[label] > 1:
            label = f"{label} #{labels[label]}"
        runs.append(SuiteRun(i + 1, label, cfg))
    return Suite(str(doc.get("name") or path.stem), path, runs, str(doc.get("description") or ""))


def select(runs: list[SuiteRun], only: list[str] | None) -> list[SuiteRun]:
    """Runs whose label matches any pattern (glob with * ? [..], else substring)."""
    if not only:
        return list(runs)

    def hit(label: str, pat: str) -> bool:
        if any(c in pat for c in "*?["):
            return fnmatch.fnmatchcase(label, pat)
        return pat in label

    return [r for r in runs if any(hit(r.label, p) for p in only)]


# -- running -------------------------------------------------------------------------
@dataclass
class Outcome:
    """What happened to one run: ``done``, ``exists``, ``skipped`` or ``failed``."""

    run: SuiteRun
    status: str
    reason: str = ""
    result_path: str | None = None
    config_fingerprint: str | None = None
    seconds: float = 0.0
    traceback: str = ""
    result: Result | None = field(default=None, repr=False)


@dataclass
class SuiteReport:
    suite: Suite
    outcomes: list[Outcome] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(1 for o in self.outcomes if o.status == status)

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == "failed"]


#: on_event(kind, run, outcome): kind is "start" (outcome None) or "end"
EventFn = Callable[[str, SuiteRun, "Outcome | None"], None]


def existing_fingerprints(out_dir: Path) -> dict[str, str]:
    """config fingerprint -> Result path, for every Result already in ``out_dir``."""
    if not out_dir.is_dir():
        return {}
    found: dict[str, tuple[str, str]] = {}
    for r in load_results(out_dir, dedupe=False).results:
        for fp in result_config_fingerprints(r):
            prev = found.get(fp)
            if prev is None or (r.created or "") > prev[0]:
                found[fp] = (r.created or "", str(r.path))
    return {fp: p for fp, (_, p) in found.items()}


def run_suite(
    suite: Suite,
    out_dir: str | Path,
    *,
    only: list[str] | None = None,
    overrides: dict[str, Any] | None = None,
    progress: ProgressFn | None = None,
    on_event: EventFn | None = None,
    dry_run: bool = False,
) -> SuiteReport:
    """Run the suite's (selected) runs, skipping those whose Result already exists.

    Args:
        overrides: settings applied to every run that do not change its identity
            (``device``, ``batch_size``, ``num_workers``, ``cache_dir``, ``use_cache``).
        dry_run: decide every run's status (exists / skipped / to run) without running.
    """
    from cxrbench.encoders import ENCODERS

    out = Path(out_dir)
    done = existing_fingerprints(out)
    report = SuiteReport(suite)
    datasets: dict[str, Any] = {}
    for sr in select(suite.runs, only):
        if on_event:
            on_event("start", sr, None)
        oc = _one(sr, suite, out, done, datasets, overrides or {}, progress, dry_run, ENCODERS)
        report.outcomes.append(oc)
        if on_event:
            on_event("end", sr, oc)
    return report


def _dataset(cfg: RunConfig, cache: dict[str, Any]) -> Any:
    key = canonical([cfg.dataset, cfg.root, cfg.dataset_params])
    if key not in cache:
        try:
            ds = create_dataset(cfg.dataset, cfg.root, **dict(cfg.dataset_params))
            ds.fingerprint()  # builds the index: errors surface here, once
            cache[key] = ds
        except Exception as exc:  # noqa: BLE001 - reported per run
            cache[key] = exc
    return cache[key]


def _one(sr: SuiteRun, suite: Suite, out: Path, done: dict[str, str], datasets: dict[str, Any],
         overrides: dict[str, Any], progress: ProgressFn | None, dry_run: bool,
         encoders: Any) -> Outcome:
    cfg = RunConfig.from_dict({**sr.config.to_dict(), **overrides})
    t0 = time.perf_counter()
    if cfg.root is not None and not Path(cfg.root).exists():
        return Outcome(sr, "skipped", f"dataset root {cfg.root} not found")
    try:
        encoders.get(cfg.encoder)
        ds = _dataset(cfg, datasets)
        if isinstance(ds, Exception):
            raise ds
        fp = config_fingerprint(cfg, ds.fingerprint())
        if fp in done:
            return Outcome(sr, "exists", "Result already in the output folder", done[fp], fp)
        if dry_run:
            return Outcome(sr, "todo", "", None, fp)
        res = run(dataset=ds, config=RunConfig.from_dict({**cfg.to_dict(), "out": None}),
                  progress=progress)
        res.config["out"] = str(out)
        res.extra = {**res.extra, "config_fingerprint": fp, "suite": suite.name}
        path = res.save(out)
        table = getattr(res, "_table", None)
        if cfg.save_neighbors and table is not None:
            table.save_tsv(path.with_suffix(".neighbors.tsv"), ds.index.ids)
        done[fp] = str(path)
        return Outcome(sr, "done", "", str(path), fp, time.perf_counter() - t0, result=res)
    except Exception as exc:  # noqa: BLE001 - a failed run must not stop the suite
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        if not isinstance(exc, (ValueError, KeyError, OSError, ImportError)):
            msg = f"{type(exc).__name__}: {msg}"  # unexpected: name the exception type
        log.debug("run %s failed", sr.label, exc_info=True)
        return Outcome(sr, "failed", msg, seconds=time.perf_counter() - t0,
                       traceback=traceback.format_exc())
