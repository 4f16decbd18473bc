"""Any image collection laid out as one sub-folder per class (e.g. ``effusion/``, ``nofinding/``).

Layouts read::

    <root>/effusion/img001.png            one folder per class (any depth below it)
    <root>/nofinding/img002.png

    <root>/train/effusion/img001.png      ... or already split: train/, val/ (or valid/),
    <root>/test/nofinding/img002.png          test/ at the top, classes below

Without split folders a deterministic patient-level split is made
(``test_fraction``, ``val_fraction``, ``split_seed``; recorded in
``info["split"]``). Each image is its own patient unless a CSV says otherwise.

Optional ``csv`` (path, or a file name inside the root) with a header and the
columns:

* ``path`` (or ``image`` / ``filename`` / ``file``): relative to the root, or
  just the file name when names are unique: required;
* ``patient_id``: optional; ``labels``: optional, ``|``-separated class names
  (overrides the folder's class and allows several labels per image);
* ``split`` (train/val/test) and ``view``: optional.

Labels are the sorted folder names (plus any CSV-only names). Without CSV
labels every image has exactly one class, so the dataset is ``single_label``
(P@K counts a neighbour relevant only for the same class).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from cxrbench.datasets import DATASETS
from cxrbench.datasets._files import FileDataset, hash_split, read_csv
from cxrbench.datasets.base import Index
from cxrbench.datasets.imageio import IMAGE_SUFFIXES

_SPLIT_DIRS = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
_PATH_COLS = ("path", "image", "filename", "file", "image_id")


@DATASETS.register("folder")
class ImageFolder(FileDataset):
    """Images in one sub-folder per class (optionally train/val/test above), optional CSV."""

    name = "folder"

    def __init__(self, root: str | None = None, csv: str | None = None, test_fraction: float = 0.2,
                 val_fraction: float = 0.0, split_seed: int = 0, on_error: str = "raise") -> None:
        super().__init__(root, on_error=on_error, csv=csv, test_fraction=float(test_fraction),
                         val_fraction=float(val_fraction), split_seed=int(split_seed))
        self.csv = csv
        self.test_fraction, self.val_fraction = float(test_fraction), float(val_fraction)
        self.split_seed = int(split_seed)
        self._label_names: tuple[str, ...] = ()
        self._single = True

    @property
    def label_names(self) -> tuple[str, ...]:  # type: ignore[override]
        """The class folder names (plus CSV-only names), sorted."""
        self.index  # noqa: B018
        return self._label_names

    @property
    def single_label(self) -> bool:  # type: ignore[override]
        self.index  # noqa: B018
        return self._single

    def _build_index(self) -> Index:
        root = self.root_path
        if not root.is_dir():
            raise FileNotFoundError(f"folder: root folder {root} does not exist")
        subdirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
        split_dirs = [d for d in subdirs if d.name.lower() in _SPLIT_DIRS]
        pre_split = bool(split_dirs) and len(split_dirs) == len(subdirs)
        files: list[tuple[str, str, str | None]] = []  # (relative path, class, split)
        if pre_split:
            for sd in split_dirs:
                for cls_dir in sorted(d for d in sd.iterdir() if d.is_dir()):
                    files += [(f, cls_dir.name, _SPLIT_DIRS[sd.name.lower()]) for f in _images(root, cls_dir)]
        else:
            for cls_dir in subdirs:
                files += [(f, cls_dir.name, None) for f in _images(root, cls_dir)]
        if not files:
            raise FileNotFoundError(
                f"folder: no images ({', '.join(IMAGE_SUFFIXES)}) in class sub-folders of {root}; "
                f"expected e.g. {root / 'effusion' / 'img001.png'} and {root / 'nofinding' / 'img002.png'}"
            )
        rels = [f for f, _, _ in files]
        classes = [c for _, c, _ in files]
        splits: list[str | None] = [s for _, _, s in files]
        ids = [r.replace(os.sep, "/") for r in rels]
        patients = list(ids)
        views = [""] * len(rels)
        multi: list[list[str] | None] = [None] * len(rels)
        if self.csv:
            self._apply_csv(rels, patients, splits, views, multi)
        names = set(classes)
        for m in multi:
            if m is not None:
                names.update(m)
        self._label_names = tuple(sorted(names))
        col = {n: j for j, n in enumerate(self._label_names)}
        labels = np.zeros((len(rels), len(self._label_names)), dtype=np.int8)
        for i, (c, m) in enumerate(zip(classes, multi)):
            for n in (m if m is not None else [c]):
                labels[i, col[n]] = 1
        self._single = bool((labels.sum(1) == 1).all()) and all(m is None for m in multi)
        self.info["classes"] = {n: int(labels[:, j].sum()) for n, j in col.items()}
        if pre_split:
            self.info["split"] = {"source": "folders", "folders": [d.name for d in split_dirs]}
            if any(s is None for s in splits):
                raise ValueError("folder: internal error, a file outside the split folders")
            split_arr = np.asarray(splits, dtype=object)
        else:
            generated = hash_split(patients, self.split_seed, self.test_fraction, self.val_fraction)
            split_arr = np.asarray([s or g for s, g in zip(splits, generated)], dtype=object)
            self.info["split"] = {
                "source": "csv" if all(s is not None for s in splits) else "generated",
                "method": "patient-level hash", "seed": self.split_seed,
                "test_fraction": self.test_fraction, "val_fraction": self.val_fraction,
            }
        self._set_paths([str(root / r) for r in rels])
        return Index(ids=ids, patient_ids=patients, splits=split_arr, labels=labels, views=views)

    def _apply_csv(self, rels: list[str], patients: list[str], splits: list[str | None],
                   views: list[str], multi: list[list[str] | None]) -> None:
        path = Path(self.csv)  # type: ignore[arg-type]
        if not path.is_absolute() and not path.exists():
            path = self.root_path / path
        if not path.is_file():
            raise FileNotFoundError(f"folder: labels CSV {path} not found")
        header, rows = read_csv(path)
        low = [h.lower() for h in header]
        pc = next((low.index(c) for c in _PATH_COLS if c in low), None)
        if pc is None:
            raise ValueError(f"folder: {path} needs a column named one of {_PATH_COLS}; header is {header}")
        opt = {c: (low.index(c) if c in low else None) for c in ("patient_id", "labels", "split", "view")}
        by_rel = {r.replace(os.sep, "/"): i for i, r in enumerate(rels)}
        by_name: dict[str, int] = {}  # file name or stem -> row; -1 when ambiguous
        for i, r in enumerate(rels):
            name = os.path.basename(r)
            for k in {name, os.path.splitext(name)[0]}:
                by_name[k] = -1 if k in by_name else i
        unmatched = 0
        for row in rows:
            key = row[pc].strip().replace("\\", "/") if pc < len(row) else ""
            i = by_rel.get(key, by_name.get(key, by_name.get(os.path.basename(key))))
            if i is None or i < 0:
                unmatched += 1
                continue

            def get(c: str) -> str:
                j = opt[c]
                return row[j].strip() if j is not None and j < len(row) else ""

            if get("patient_id"):
                patients[i] = get("patient_id")
            if opt["labels"] is not None:
                multi[i] = [x.strip() for x in get("labels").split("|") if x.strip()]
            if get("split"):
                s = _SPLIT_DIRS.get(get("split").lower())
                if s is None:
                    raise ValueError(f"folder: {path}: split {get('split')!r} is not train/val/test")
                splits[i] = s
            if get("view"):
                views[i] = get("view")
        if unmatched:
            self.warn(f"{unmatched} rows of {path.name} match no image file (or an ambiguous name); ignored")
        self.info["csv"] = str(path)

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d["classes"] = self.info.get("classes")
        return d


def _images(root: Path, folder: Path) -> list[str]:
    out = []
    for d, dirs, files in os.walk(folder):
        dirs.sort()
        for f in sorted(files):
            if f.lower().endswith(IMAGE_SUFFIXES) and not f.startswith("."):
                out.append(os.path.relpath(os.path.join(d, f), root))
    return out
