"""Metric interface: pure functions of a neighbour table and the labels.

:class:`EvalData` holds everything a metric may read. Neighbours are dataset
row indices (``-1`` pads rows with fewer than k neighbours after exclusions);
labels are the dataset's full (N, L) int8 matrix (1 / 0 / -1 unknown).
Nothing here ever builds a queries x gallery matrix.

A metric family implements :meth:`Metric.compute`. Built-in families also
implement :meth:`Metric.summarize`, which returns a :class:`Summary`: the
point values plus per-query *additive* statistics. Every built-in metric is a
function of weighted sums over queries (means, sums, histograms, confusion
counts), so a bootstrap replicate, which is a multiset of queries, is just a
re-weighting of those sums; :func:`cxrbench.metrics.evaluate.evaluate` uses this
to draw hundreds of patient-level replicates in seconds at 551k queries.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace
from typing import Any, Callable, ClassVar, Sequence

import numpy as np


@dataclass(frozen=True)
class EvalData:
    queries: np.ndarray  # (Q,) int64 dataset rows
    neighbors: np.ndarray  # (Q, k) int64 dataset rows, -1 = none
    distances: np.ndarray  # (Q, k) float32, ascending per row
    labels: np.ndarray  # (N, L) int8 over label_names
    label_names: tuple[str, ...]
    patient_ids: np.ndarray  # (N,) str
    single_label: bool = False
    irma_codes: np.ndarray | None = None  # (N,) str
    irma_tree: Any | None = None
    #: labels of the queries when they do not come from the dataset rows
    #: (text queries); (Q, L). None: use labels[queries].
    query_labels: np.ndarray | None = None
    query_irma_codes: np.ndarray | None = None
    #: the dataset rows searched (the gallery), when known; ndcg@K needs it
    #: for the ideal ranking. None: metrics that need it are reported absent.
    #: With several galleries (k-fold), a tuple of row arrays plus ``query_gallery``.
    gallery: np.ndarray | tuple[np.ndarray, ...] | None = None
    #: (Q,) index into the ``gallery`` tuple: which gallery each query searched
    query_gallery: np.ndarray | None = None

    @property
    def k_max(self) -> int:
        return int(self.neighbors.shape[1])

    @property
    def n_queries(self) -> int:
        return int(self.queries.shape[0])

    def qlabels(self) -> np.ndarray:
        return self.labels[self.queries] if self.query_labels is None else self.query_labels

    def qcodes(self) -> np.ndarray | None:
        if self.query_irma_codes is not None:
            return self.query_irma_codes
        return None if self.irma_codes is None else self.irma_codes[self.queries]

    def take(self, rows: np.ndarray) -> "EvalData":
        """The same evaluation restricted to (possibly repeated) query rows."""
        return replace(
            self,
            queries=self.queries[rows],
            neighbors=self.neighbors[rows],
            distances=self.distances[rows],
            query_labels=None if self.query_labels is None else self.query_labels[rows],
            query_irma_codes=None if self.query_irma_codes is None else self.query_irma_codes[rows],
            query_gallery=None if self.query_gallery is None else self.query_gallery[rows],
        )

    def galleries(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """[(query positions, gallery rows)]: one entry per gallery; [] if unknown."""
        if self.gallery is None:
            return []
        if self.query_gallery is None:
            return [(np.arange(self.n_queries), np.asarray(self.gallery))]
        groups = np.asarray(self.query_gallery)
        return [(np.flatnonzero(groups == g), np.asarray(rows))
                for g, rows in enumerate(self.gallery) if (groups == g).any()]

    def query_patients(self) -> np.ndarray:
        return self.patient_ids[self.queries]


#: finish(dense_sums (R, M), hist_sums (R, n_bins)) -> {key: (R,) values}
Finisher = Callable[[np.ndarray, np.ndarray], "dict[str, np.ndarray]"]


@dataclass
class Summary:
    """A metric family's values plus the per-query statistics they are made of.

    With per-query weights ``w`` (a bootstrap replicate's multiplicities), the
    family's values are ``finish(w @ dense, histogram)``, where ``histogram``
    adds ``w[q]`` to bin ``bins[q, h]`` for every query ``q`` and column ``h``
    (``-1`` adds nothing). With ``w = 1`` this reproduces ``values`` (a test
    checks it for every built-in family).

    Attributes:
        values: the point estimates, keyed ``<metric>@<k>[<label>]``.
        dense: (Q, M) float64 per-query statistics, or None.
        bins: (Q, H) integer histogram bin per query and column, or None.
        n_bins: histogram length.
        finish: maps (R, M) weighted sums and (R, n_bins) weighted histograms
            to ``{key: (R,) array}``; NaN marks a key undefined in a replicate.
        absent: keys not reported and why (e.g. a label with one class only).
        notes: facts about how the values were computed (e.g. how many
            queries were excluded), keyed by metric family or key.
    """

    values: dict[str, float]
    dense: np.ndarray | None = None
    bins: np.ndarray | None = None
    n_bins: int = 0
    finish: Finisher | None = None
    absent: dict[str, str] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)


class Metric(ABC):
    """A family of metrics computed together (e.g. ``knn_auc`` gives ``knn_auc@k``
    and ``knn_auc@k[label]``). Registered with ``@METRICS.register(name)``."""

    name: ClassVar[str] = "metric"
    #: keys starting with these prefixes are "lower is better"
    lower_is_better_prefixes: ClassVar[tuple[str, ...]] = ()

    def applicable(self, data: EvalData) -> str | None:
        """None if the metric can be computed on ``data``, else the reason why not."""
        return None

    @abstractmethod
    def compute(self, data: EvalData, ks: Sequence[int]) -> dict[str, float]:
        """Values keyed ``<metric>@<k>`` and ``<metric>@<k>[<label>]``."""

    def summarize(self, data: EvalData, ks: Sequence[int]) -> Summary | None:
        """Values plus additive per-query statistics for a fast bootstrap.

        The default (None) makes the bootstrap call :meth:`compute` on each
        resampled table instead: correct, only slower. Plugins may ignore it.
        """
        return None

    def higher_is_better(self, key: str) -> bool:
        return not key.startswith(self.lower_is_better_prefixes)


class LabelMetric(Metric):
    """A metric family over the label matrix, computed through :meth:`summarize`."""

    def applicable(self, data: EvalData) -> str | None:
        if data.labels.ndim != 2 or data.labels.shape[1] == 0:
            return "the dataset has no labels"
        return None

    def compute(self, data: EvalData, ks: Sequence[int]) -> dict[str, float]:
        summary = self.summarize(data, ks)
        assert summary is not None
        return summary.values
