"""Dataset interface: a columnar index of records plus lazy greyscale images.

A dataset is a table with one row per image. Columns are numpy arrays so that
551k-image datasets stay cheap (no per-record Python objects unless asked):

* ``ids``          unique image id (str)
* ``patient_ids``  patient id (str); same-patient exclusion and patient-level
                   bootstrap use it
* ``splits``       ``"train"``, ``"val"`` or ``"test"``
* ``views``        e.g. ``"PA"``, ``"AP"``, ``"LL"`` or ``""`` when unknown
* ``labels``       ``int8`` (N, L) multi-hot over :attr:`Dataset.label_names`:
                   1 positive, 0 negative, -1 unknown (missing or uncertain)
* ``irma_codes``   optional IRMA code per image (``TTTT-DDD-AAA-BBB``)

Images come from :meth:`Dataset.load_image`, which returns a 2-D ``float32``
array in [0, 1] at the image's native size.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterator, Sequence

import numpy as np

UNKNOWN = -1
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Record:
    """One image of a dataset, for convenience; the harness uses the columns."""

    index: int
    id: str
    patient_id: str
    split: str
    view: str
    labels: np.ndarray
    label_names: tuple[str, ...]
    irma_code: str | None
    _dataset: "Dataset" = field(repr=False, compare=False)

    @property
    def image(self) -> np.ndarray:
        """The greyscale image, loaded now (float32 in [0, 1])."""
        return self._dataset.load_image(self.index)

    @property
    def positive_labels(self) -> list[str]:
        return [n for n, v in zip(self.label_names, self.labels) if v == 1]


@dataclass
class Index:
    """The columns of a dataset (see module docstring)."""

    ids: np.ndarray
    patient_ids: np.ndarray
    splits: np.ndarray
    labels: np.ndarray
    views: np.ndarray | None = None
    irma_codes: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.ids)
        self.ids = np.asarray(self.ids, dtype=object)
        self.patient_ids = np.asarray(self.patient_ids, dtype=object)
        self.splits = np.asarray(self.splits, dtype=object)
        labels = np.asarray(self.labels, dtype=np.int8)
        self.labels = labels.reshape(n, labels.shape[-1] if labels.ndim > 1 else -1) if n else \
            labels.reshape(0, labels.shape[-1] if labels.ndim > 1 else 0)
        self.views = np.asarray(self.views if self.views is not None else [""] * n, dtype=object)
        if self.irma_codes is not None:
            self.irma_codes = np.asarray(self.irma_codes, dtype=object)
        for name in ("patient_ids", "splits", "labels", "views", "irma_codes"):
            col = getattr(self, name)
            if col is not None and len(col) != n:
                raise ValueError(f"index column {name} has {len(col)} rows, ids has {n}")
        bad = set(np.unique(self.splits)) - set(SPLITS) if n else set()
        if bad:
            raise ValueError(f"unknown split names {sorted(bad)}; use {SPLITS}")
        if n and len(set(self.ids.tolist())) != n:
            raise ValueError("image ids are not unique")

    def __len__(self) -> int:
        return len(self.ids)


class Dataset(ABC):
    """Base class of every dataset plugin.

    Subclasses set :attr:`label_names` (class attribute or in ``__init__``),
    implement :meth:`_build_index` and :meth:`load_image`, and register a
    factory with ``@DATASETS.register("name")``. Constructor keyword arguments
    are the dataset's parameters; :meth:`params` must return them so they enter
    the fingerprint.
    """

    name: ClassVar[str] = "dataset"
    label_names: Sequence[str] = ()
    #: True when every image has exactly one class (e.g. PneumoniaMNIST):
    #: P@K then counts a neighbour relevant only for the exact class.
    single_label: bool = False

    def __init__(self, root: str | None = None, **params: Any) -> None:
        self.root = root
        self._params = dict(params)
        self._index: Index | None = None
        #: facts for the Result: warnings, skipped files, generated split seed ...
        self.info: dict[str, Any] = {}

    # -- to implement -------------------------------------------------------
    @abstractmethod
    def _build_index(self) -> Index:
        """Read the metadata and return the index (no pixels)."""

    @abstractmethod
    def load_image(self, i: int) -> np.ndarray:
        """Row ``i``'s image: 2-D float32 in [0, 1], native size."""

    # -- optional -------------------------------------------------------------
    def irma_tree(self) -> Any | None:
        """The IRMA code hierarchy for IRMA error, if the dataset has codes."""
        return None

    def params(self) -> dict[str, Any]:
        return dict(self._params)

    def content_key(self) -> str:
        """Extra text hashed into the fingerprint (e.g. generator version)."""
        return ""

    # -- provided -------------------------------------------------------------
    @property
    def index(self) -> Index:
        if self._index is None:
            self._index = self._build_index()
        return self._index

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> Record:
        ix = self.index
        i = int(i)
        return Record(
            index=i,
            id=str(ix.ids[i]),
            patient_id=str(ix.patient_ids[i]),
            split=str(ix.splits[i]),
            view=str(ix.views[i]),
            labels=ix.labels[i],
            label_names=tuple(self.label_names),
            irma_code=None if ix.irma_codes is None else ix.irma_codes[i],
            _dataset=self,
        )

    def __iter__(self) -> Iterator[Record]:
        for i in range(len(self)):
            yield self[i]

    def split_indices(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.index.splits == split)

    def fingerprint(self) -> str:
        """Hash of the class, parameters and the index content (ids, labels, splits)."""
        ix = self.index
        h = hashlib.sha256()
        h.update(f"{type(self).__module__}.{type(self).__qualname__}".encode())
        h.update(json.dumps(self.params(), sort_keys=True, default=str).encode())
        h.update(self.content_key().encode())
        h.update("\x1f".join(map(str, self.label_names)).encode())
        for col in (ix.ids, ix.patient_ids, ix.splits, ix.views):
            h.update("\x1f".join(map(str, col.tolist())).encode())
        h.update(np.ascontiguousarray(ix.labels).tobytes())
        if ix.irma_codes is not None:
            h.update("\x1f".join(map(str, ix.irma_codes.tolist())).encode())
        return h.hexdigest()[:16]

    def describe(self) -> dict[str, Any]:
        ix = self.index
        return {
            "name": self.name,
            "root": None if self.root is None else str(self.root),
            "params": self.params(),
            "n_images": len(ix),
            "n_patients": int(len(np.unique(ix.patient_ids))) if len(ix) else 0,
            "splits": {s: int((ix.splits == s).sum()) for s in SPLITS},
            "label_names": list(self.label_names),
            "single_label": self.single_label,
            "has_irma_codes": ix.irma_codes is not None,
        }


class Subset:
    """A read-only view of some rows of a dataset (e.g. the train split).

    Encoders' ``fit`` receives one of these: it can only see the rows it was
    given, which is how the harness guarantees test images never reach ``fit``.
    """

    def __init__(self, dataset: Dataset, indices: np.ndarray, source: Any = None) -> None:
        self.dataset = dataset
        #: where images are read (the harness passes the decoded-image cache)
        self.source = source if source is not None else dataset
        self.indices = np.asarray(indices, dtype=np.int64)
        ix = dataset.index
        self.label_names = tuple(dataset.label_names)
        self.labels = ix.labels[self.indices]
        self.ids = ix.ids[self.indices]
        self.patient_ids = ix.patient_ids[self.indices]
        self.single_label = dataset.single_label

    def __len__(self) -> int:
        return len(self.indices)

    def load_image(self, j: int) -> np.ndarray:
        return self.source.load_image(int(self.indices[j]))

    def dataset_index(self, j: int) -> int:
        return int(self.indices[j])
