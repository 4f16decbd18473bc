"""Reading Result files and deciding which of them are the same measurement.

Three identities, from strictest to loosest:

* ``run_fingerprint`` (set by the harness): encoder fingerprint (params,
  weights hash, trained state) + dataset fingerprint + protocol, k, metrics,
  exclusions, seed, bootstrap size. Same fingerprint, same numbers.
* :func:`config_fingerprint`: the resolved run config without the settings
  that do not change numbers (output and cache folders, device, batch size,
  workers, dataset root) plus the dataset fingerprint. It is known *before* a
  run (a trainable encoder's run fingerprint is not: it depends on training),
  so suites use it to skip finished runs.
* :func:`run_key`: what a baseline entry is matched on (see
  :mod:`cxrbench.leaderboards.check`): encoder, encoder params, dataset,
  dataset params, protocol (+ folds), same-patient exclusion and seed.

When several Results share an identity, the newest (``created``, then
``run_id``) wins.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable

from cxrbench.benchmark.harness import RunConfig
from cxrbench.benchmark.result import Result

log = logging.getLogger(__name__)

#: RunConfig fields that do not change what a run measures
NON_IDENTITY = ("out", "cache_dir", "use_cache", "save_neighbors", "device", "batch_size",
                "num_workers", "root")
_DEFAULTS = {f.name: getattr(RunConfig(), f.name) for f in fields(RunConfig)}


def canonical(obj: Any) -> str:
    """Stable JSON text (sorted keys, no whitespace) used in keys and hashes."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def config_fingerprint(config: dict[str, Any] | RunConfig, dataset_fingerprint: str) -> str:
    """Identity of a run config on a given dataset content (see module docstring).

    Fields equal to their RunConfig default are left out, so adding a field
    with a default to RunConfig later does not change existing fingerprints.
    """
    d = config.to_dict() if isinstance(config, RunConfig) else dict(config)
    if isinstance(d.get("k"), int):
        d["k"] = [d["k"]]
    if d.get("k") is not None:
        d["k"] = sorted({int(x) for x in d["k"]})
    key = {
        k: v for k, v in d.items()
        if k not in NON_IDENTITY and not (k in _DEFAULTS and v == _DEFAULTS[k])
    }
    key["dataset_fingerprint"] = dataset_fingerprint
    return hashlib.sha256(canonical(key).encode()).hexdigest()[:16]


def result_config_fingerprints(res: Result) -> set[str]:
    """Config fingerprints a Result answers to: the one a suite recorded (before
    name resolution) and the one recomputed from its resolved config."""
    out = set()
    recorded = (res.extra or {}).get("config_fingerprint")
    if recorded:
        out.add(str(recorded))
    fp = res.dataset.get("fingerprint")
    if fp and res.config:
        try:
            out.add(config_fingerprint(res.config, fp))
        except (TypeError, ValueError):  # pragma: no cover - malformed config
            pass
    return out


def _order(res: Result) -> tuple[str, str]:
    return (res.created or "", res.run_id or "")


def newest(results: Iterable[Result]) -> Result:
    return max(results, key=_order)


@dataclass
class Loaded:
    """Results read from a folder, and the files that could not be read."""

    results: list[Result] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    superseded: list[Result] = field(default_factory=list)


def _looks_like_result(d: Any) -> bool:
    return isinstance(d, dict) and "run_fingerprint" in d and "metrics" in d


def load_results(folder: str | Path, *, dedupe: bool = True) -> Loaded:
    """Every Result JSON under ``folder`` (recursively), newest per run fingerprint.

    Other JSON files (e.g. a baseline) are ignored; Result files that cannot be
    read are listed in ``problems`` instead of raising.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"results folder {folder} not found (run a suite with --out {folder})")
    out = Loaded()
    for path in sorted(folder.rglob("*.json")):
        if path.name.startswith(".tmp-"):
            continue
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            out.problems.append((str(path), f"not readable JSON: {exc}"))
            continue
        if not _looks_like_result(d):
            continue
        try:
            r = Result.from_dict(d)
        except (TypeError, ValueError) as exc:
            out.problems.append((str(path), str(exc)))
            continue
        r.path = str(path)
        out.results.append(r)
    if dedupe:
        out.results, out.superseded = dedupe_by(out.results, lambda r: r.run_fingerprint)
    return out


def dedupe_by(results: Iterable[Result], key) -> tuple[list[Result], list[Result]]:
    """Keep the newest Result per ``key(result)``; returns (kept, superseded), kept sorted."""
    groups: dict[Any, list[Result]] = {}
    for r in results:
        groups.setdefault(key(r), []).append(r)
    kept, dropped = [], []
    for rs in groups.values():
        best = newest(rs)
        kept.append(best)
        dropped.extend(r for r in rs if r is not best)
    kept.sort(key=lambda r: (r.dataset.get("name", ""), r.encoder.get("name", ""), _order(r)))
    return kept, dropped


# -- keys ---------------------------------------------------------------------
def protocol_of(res: Result) -> dict[str, Any]:
    """Protocol identity: name, folds for kfold, same-patient exclusion."""
    cfg = res.config or {}
    name = res.protocol.get("name") or cfg.get("protocol", "holdout")
    p: dict[str, Any] = {"name": name}
    if name == "kfold":
        p["folds"] = res.protocol.get("folds", cfg.get("folds"))
    p["exclude_same_patient"] = bool(
        res.exclusions.get("same_patient", cfg.get("exclude_same_patient", True)))
    return p


def run_key(res: Result) -> dict[str, Any]:
    """The baseline matching key of a Result (see module docstring)."""
    cfg = res.config or {}
    return {
        "encoder": res.encoder.get("name") or cfg.get("encoder"),
        "encoder_params": res.encoder.get("params", cfg.get("encoder_params", {})) or {},
        "dataset": res.dataset.get("name") or cfg.get("dataset"),
        "dataset_params": res.dataset.get("params", cfg.get("dataset_params", {})) or {},
        "protocol": protocol_of(res),
        "seed": cfg.get("seed", 0),
    }


def describe_params(params: dict[str, Any]) -> str:
    """``{"size": 32, "layers": [1, 2]}`` -> ``size=32, layers=[1, 2]`` (sorted keys)."""
    return ", ".join(f"{k}={_short(params[k])}" for k in sorted(params))


def _short(v: Any) -> str:
    if isinstance(v, dict):
        return "{" + describe_params(v) + "}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_short(x) for x in v) + "]"
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def describe_key(key: dict[str, Any]) -> str:
    """One line for a run key: ``raw(size=32) · phantom(n=300) · holdout · seed 0``."""
    enc = key["encoder"] + (f"({describe_params(key['encoder_params'])})" if key["encoder_params"] else "")
    ds = key["dataset"] + (f"({describe_params(key['dataset_params'])})" if key["dataset_params"] else "")
    p = dict(key["protocol"])
    prot = p.pop("name")
    if "folds" in p:
        prot += f"-{p.pop('folds')}"
    if not p.get("exclude_same_patient", True):
        prot += ", same patient allowed"
    return f"{enc} · {ds} · {prot} · seed {key.get('seed', 0)}"


def run_label(res: Result) -> str:
    """A short name for a Result's run key, from the params as the user wrote them
    (the key itself holds the resolved params, defaults included)."""
    cfg = res.config or {}
    key = run_key(res)
    return describe_key({**key, "encoder_params": cfg.get("encoder_params", key["encoder_params"]),
                         "dataset_params": cfg.get("dataset_params", key["dataset_params"])})
