"""Compute a set of metrics with patient-level bootstrap confidence intervals."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from cxrbench.metrics import METRICS
from cxrbench.metrics.base import EvalData, Metric

log = logging.getLogger(__name__)


@dataclass
class Evaluation:
    values: dict[str, float] = field(default_factory=dict)
    ci: dict[str, tuple[float, float]] = field(default_factory=dict)
    higher_is_better: dict[str, bool] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # metric -> reason
    n_boot: int = 0


def default_metrics(data: EvalData) -> list[str]:
    """Every registered metric that applies to ``data``."""
    return [n for n in METRICS.names() if METRICS.create(n).applicable(data) is None]


def patient_bootstrap_rows(patients: np.ndarray, n_boot: int, seed: int):
    """Yield query-row index arrays, resampling *patients* with replacement.

    Each replicate draws as many patients as there are (with replacement) and
    takes all query rows of each drawn patient as often as it was drawn.
    """
    _, inverse = np.unique(patients, return_inverse=True)
    n_pat = int(inverse.max()) + 1 if len(inverse) else 0
    rng = np.random.default_rng(seed)
    qrows = np.arange(len(patients))
    for _ in range(n_boot):
        counts = np.bincount(rng.integers(0, n_pat, n_pat), minlength=n_pat)
        yield np.repeat(qrows, counts[inverse])


def evaluate(
    data: EvalData,
    metrics: Sequence[str] | None,
    ks: Sequence[int],
    *,
    n_boot: int = 200,
    seed: int = 0,
    ci_level: float = 0.95,
) -> Evaluation:
    """Compute ``metrics`` at ``ks``; 95% CIs by resampling query patients.

    Args:
        metrics: registered metric names, or None for all applicable ones.
        n_boot: bootstrap replicates; 0 disables confidence intervals.
    """
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise ValueError(f"k values must be >= 1, got {list(ks)}")
    if ks[-1] > data.k_max:
        raise ValueError(f"k={ks[-1]} exceeds the neighbour table's {data.k_max} columns")
    names = list(metrics) if metrics else default_metrics(data)
    out = Evaluation(n_boot=n_boot)
    fams: list[Metric] = []
    for name in names:
        m: Metric = METRICS.create(name)
        why = m.applicable(data)
        if why is not None:
            if metrics:  # explicitly requested: say why it was skipped
                log.warning("metric %s skipped: %s", name, why)
            out.skipped[name] = why
            continue
        vals = m.compute(data, ks)
        out.values.update(vals)
        out.higher_is_better.update({key: m.higher_is_better(key) for key in vals})
        fams.append(m)
    if n_boot > 0 and data.n_queries > 1 and fams:
        samples: dict[str, list[float]] = {key: [] for key in out.values}
        for rows in patient_bootstrap_rows(data.query_patients(), n_boot, seed):
            sub = data.take(rows)
            for m in fams:
                for key, v in m.compute(sub, ks).items():
                    if key in samples:
                        samples[key].append(v)
        alpha = (1.0 - ci_level) / 2
        for key, vs in samples.items():
            arr = np.asarray([v for v in vs if v is not None and np.isfinite(v)], dtype=float)
            if len(arr) >= max(10, n_boot // 2):
                lo, hi = np.quantile(arr, [alpha, 1 - alpha])
                out.ci[key] = (float(lo), float(hi))
    return out
