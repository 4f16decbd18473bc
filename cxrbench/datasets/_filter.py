"""Dataset subsets: the generic ``subset`` dataset parameter.

Any dataset accepts ``subset`` in its parameters; the harness builds the
dataset without it and wraps it in a :class:`SubsetDataset`. Example (the
semi-automated AutoThorax-Net setting: pneumothorax and normal images only,
scored on pneumothorax)::

    dataset: nih14
    dataset_params:
      subset:
        require_any: [Pneumothorax, No Finding]   # keep rows positive for >= 1 of these
        label_names: [Pneumothorax]               # the label columns that are scored

Keys (all optional, applied in this order):

* ``views``: keep rows whose view is one of these (e.g. ``[PA, AP]``).
* ``splits``: keep rows in these splits (``train``, ``val``, ``test``).
* ``require_any``: keep rows positive (1) for at least one of these labels.
* ``exclude_any``: drop rows positive for any of these labels.
* ``label_names``: keep only these label columns, in this order.

The subset is part of the dataset's parameters, so it enters the dataset
fingerprint and every Result that used it; the wrapper keeps the wrapped
dataset's name, so results land beside the full dataset's and the
leaderboard tells them apart by fingerprint and parameters.
"""

from __future__ import annotations

import difflib
from typing import Any

import numpy as np

from cxrbench.datasets.base import SPLITS, Dataset, Index

SUBSET_KEYS = ("views", "splits", "require_any", "exclude_any", "label_names")


def _as_list(value: Any, key: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"subset.{key} must be a list of strings, got {value!r}")
    return list(value)


def parse_subset(spec: Any) -> dict[str, list[str]]:
    """Validate a ``subset`` mapping; unknown keys raise with the valid ones."""
    if not isinstance(spec, dict):
        raise ValueError(
            f"dataset parameter 'subset' must be a mapping with keys {', '.join(SUBSET_KEYS)}; "
            f"got {spec!r}"
        )
    unknown = sorted(set(spec) - set(SUBSET_KEYS))
    if unknown:
        raise ValueError(f"unknown subset keys {unknown}; valid: {', '.join(SUBSET_KEYS)}")
    out = {k: _as_list(spec[k], k) for k in SUBSET_KEYS if spec.get(k) is not None}
    bad = sorted(set(out.get("splits", [])) - set(SPLITS))
    if bad:
        raise ValueError(f"subset.splits: unknown splits {bad}; valid: {', '.join(SPLITS)}")
    return out


class SubsetDataset(Dataset):
    """Some rows (and optionally some label columns) of another dataset."""

    def __init__(self, base: Dataset, subset: dict[str, Any]) -> None:
        spec = parse_subset(subset)
        super().__init__(base.root, **base.params(), subset=spec)
        self.base = base
        self.spec = spec
        self.name = base.name  # type: ignore[misc]  # results stay under the base name
        self.single_label = base.single_label
        names = list(base.label_names)
        for key in ("require_any", "exclude_any", "label_names"):
            for label in spec.get(key, []):
                if label not in names:
                    close = difflib.get_close_matches(label, names, n=1)
                    hint = f" Did you mean {close[0]!r}?" if close else ""
                    raise ValueError(
                        f"subset.{key}: dataset {base.name!r} has no label {label!r}.{hint} "
                        f"Labels: {', '.join(names)}"
                    )
        self.label_names = tuple(spec.get("label_names", names))
        self._cols = np.array([names.index(n) for n in self.label_names], dtype=np.int64)
        self.rows = np.zeros(0, dtype=np.int64)

    def _build_index(self) -> Index:
        ix = self.base.index
        keep = np.ones(len(ix), dtype=bool)
        names = list(self.base.label_names)
        counts = {"base_images": len(ix)}
        if "views" in self.spec:
            keep &= np.isin(ix.views.astype(str), self.spec["views"])
        if "splits" in self.spec:
            keep &= np.isin(ix.splits.astype(str), self.spec["splits"])
        if "require_any" in self.spec:
            cols = [names.index(n) for n in self.spec["require_any"]]
            keep &= (ix.labels[:, cols] == 1).any(axis=1)
        if "exclude_any" in self.spec:
            cols = [names.index(n) for n in self.spec["exclude_any"]]
            keep &= ~(ix.labels[:, cols] == 1).any(axis=1)
        self.rows = np.flatnonzero(keep)
        counts["kept_images"] = int(len(self.rows))
        self.info = {**self.base.info, "subset": {**self.spec, **counts}}
        r = self.rows
        return Index(
            ids=ix.ids[r],
            patient_ids=ix.patient_ids[r],
            splits=ix.splits[r],
            labels=ix.labels[r][:, self._cols],
            views=ix.views[r],
            irma_codes=None if ix.irma_codes is None else ix.irma_codes[r],
        )

    def load_image(self, i: int) -> np.ndarray:
        _ = self.index  # make sure rows are known
        return self.base.load_image(int(self.rows[i]))

    @property
    def cache_images(self) -> bool:
        """Whether the harness should cache decoded images (as the wrapped dataset says)."""
        return bool(getattr(self.base, "cache_images", True))

    def failed_rows(self) -> np.ndarray:
        """The wrapped dataset's unreadable rows (``on_error: skip``), in subset rows."""
        fn = getattr(self.base, "failed_rows", None)
        bad = np.asarray(fn() if fn is not None else [], dtype=np.int64)
        _ = self.index
        return np.flatnonzero(np.isin(self.rows, bad)).astype(np.int64)

    def irma_tree(self) -> Any | None:
        return self.base.irma_tree()

    def content_key(self) -> str:
        return f"subset-of:{self.base.fingerprint()}"


def apply_subset(dataset: Dataset, subset: dict[str, Any] | None) -> Dataset:
    """``dataset`` restricted by a ``subset`` spec (unchanged when the spec is empty)."""
    if not subset:
        return dataset
    return SubsetDataset(dataset, subset)
