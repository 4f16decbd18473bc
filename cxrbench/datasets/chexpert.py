"""CheXpert v1.0 (full and small): 224,316 chest films of 65,240 patients, 14 observations.

Layout read, as published by the Stanford ML Group::

    <root> = CheXpert-v1.0-small/   (or CheXpert-v1.0/)
        train.csv   (train.csv.gz is read too)
        valid.csv
        train/patient00001/study1/view1_frontal.jpg
        valid/patient64541/study1/view1_frontal.jpg

``Path`` in the CSVs is relative to the folder *above* the root
(``CheXpert-v1.0-small/train/patient00001/...``); its first component is
replaced by the root, so a renamed root folder still works.

Splits: ``train.csv`` -> ``train``; ``valid.csv`` (234 radiologist-labelled
images) -> ``test`` by default (``valid_split="val"`` makes it ``val``).

Labels (``uncertain`` policy, as in the CheXpert paper): ``1.0`` positive,
``0.0`` negative, blank -> unknown (left out of that label's scoring),
``-1.0`` uncertain -> unknown (``ignore``, default), 0 (``zeros``) or 1
(``ones``).

Views (``view``): ``frontal`` (default: Frontal with AP/PA ``AP`` or ``PA``),
``lateral``, ``pa``, ``ap`` or ``all``. The view column holds ``AP``/``PA``
for frontal films, ``LAT`` for laterals (and the odd ``LL``/``RL`` the CSV
gives 17 frontal rows). Patient id (``patient00001``) and study id
(``patient00001/study1``, in :attr:`CheXpert.study_ids`) come from the path.
"""

from __future__ import annotations

import csv
import os
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np

from cxrbench.datasets import DATASETS
from cxrbench.datasets._files import FileDataset, existing, find_file, no_gc, open_text
from cxrbench.datasets.base import UNKNOWN, Index

OBSERVATIONS = (
    "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion",
    "Edema", "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion",
    "Pleural Other", "Fracture", "Support Devices",
)


class Uncertain(str, Enum):
    """What an uncertain (-1) CheXpert label becomes."""

    IGNORE = "ignore"  # unknown: left out of that label's scoring
    ZEROS = "zeros"  # negative (U-Zeros)
    ONES = "ones"  # positive (U-Ones)

    @classmethod
    def parse(cls, value: "str | Uncertain") -> "Uncertain":
        try:
            return cls(str(value).lower())
        except ValueError:
            raise ValueError(
                f"unknown uncertainty policy {value!r}; valid: {', '.join(v.value for v in cls)}"
            ) from None


class View(str, Enum):
    """Which films to keep."""

    FRONTAL = "frontal"
    LATERAL = "lateral"
    PA = "pa"
    AP = "ap"
    ALL = "all"

    @classmethod
    def parse(cls, value: "str | View") -> "View":
        try:
            return cls(str(value).lower())
        except ValueError:
            raise ValueError(
                f"unknown view filter {value!r}; valid: {', '.join(v.value for v in cls)}"
            ) from None


_UNCERTAIN = 2  # internal code of "-1.0" before the policy maps it
_CODES = {"1.0": 1, "1": 1, "0.0": 0, "0": 0, "-1.0": _UNCERTAIN, "-1": _UNCERTAIN, "": UNKNOWN}


@DATASETS.register("chexpert")
class CheXpert(FileDataset):
    """CheXpert v1.0 / v1.0-small (14 observations, uncertainty policy, frontal/lateral filter)."""

    name = "chexpert"
    label_names = OBSERVATIONS

    def __init__(self, root: str | None = None, uncertain: str = "ignore", view: str = "frontal",
                 valid_split: str = "test", strict: bool = False, on_error: str = "raise",
                 check_files: bool = True) -> None:
        self.uncertain = Uncertain.parse(uncertain)
        self.view = View.parse(view)
        if valid_split not in ("test", "val"):
            raise ValueError(f"valid_split must be 'test' or 'val', got {valid_split!r}")
        super().__init__(root, on_error=on_error, uncertain=self.uncertain.value,
                         view=self.view.value, valid_split=valid_split, strict=bool(strict),
                         check_files=bool(check_files))
        self.valid_split, self.strict, self.check_files = valid_split, bool(strict), bool(check_files)
        self.study_ids: np.ndarray | None = None

    def _root(self) -> Path:
        root = self.root_path
        if not root.is_dir():
            raise FileNotFoundError(f"chexpert: root folder {root} does not exist")
        if find_file(root, ("train.csv", "train.csv.gz")) is None:
            inner = sorted(p for p in root.glob("CheXpert-v1.0*") if p.is_dir()
                           and find_file(p, ("train.csv", "train.csv.gz")))
            if inner:
                self.info["root_used"] = str(inner[0])
                return inner[0]
        return root

    def _build_index(self) -> Index:
        with no_gc():
            return self._parse()

    def _parse(self) -> Index:
        root = self._root()
        train_csv = find_file(root, ("train.csv", "train.csv.gz"))
        if train_csv is None:
            raise FileNotFoundError(
                f"chexpert: {root / 'train.csv'} not found; the root must be the "
                "CheXpert-v1.0-small (or CheXpert-v1.0) folder that holds train.csv and valid.csv"
            )
        parts = [(train_csv, "train")]
        valid_csv = find_file(root, ("valid.csv", "valid.csv.gz"))
        if valid_csv is None:
            self.warn(f"{root / 'valid.csv'} not found: no {self.valid_split} split")
        else:
            parts.append((valid_csv, self.valid_split))

        need = ("Path", "Frontal/Lateral", "AP/PA", *OBSERVATIONS)
        columns: list[list[str]] = [[] for _ in need]
        splits: list[str] = []
        self.info["csv_rows"] = {}
        for path, split in parts:
            header, rows = _read(path)
            ci = _columns(header, path, need)
            width = len(header)
            if any(len(r) != width for r in rows):
                rows = [(r + [""] * width)[:width] for r in rows]
            table = list(zip(*rows)) if rows else [()] * width
            for out, c in zip(columns, ci):
                out.extend(table[c])
            splits.extend([split] * len(rows))
            self.info["csv_rows"][path.name] = len(rows)
        paths = columns[0]
        n = len(paths)
        fl = np.asarray(columns[1], dtype=object)
        appa = np.asarray(columns[2], dtype=object)
        labels = np.empty((n, len(OBSERVATIONS)), dtype=np.int8)
        policy = {Uncertain.IGNORE: UNKNOWN, Uncertain.ZEROS: 0, Uncertain.ONES: 1}[self.uncertain]
        n_uncertain = 0
        for j, name in enumerate(OBSERVATIONS):
            col = columns[3 + j]
            try:
                codes = np.fromiter(map(_CODES.__getitem__, col), dtype=np.int8, count=n)
            except KeyError:
                bad = sorted({v for v in col if v not in _CODES})
                raise ValueError(f"chexpert: column {name!r} has unexpected values {bad[:5]}; "
                                 "expected 1.0, 0.0, -1.0 or blank") from None
            unc = codes == _UNCERTAIN
            n_uncertain += int(unc.sum())
            codes[unc] = policy
            labels[:, j] = codes
        self.info["uncertain_labels"] = n_uncertain
        self.info["uncertain_policy"] = self.uncertain.value

        frontal = (fl == "Frontal")
        views = np.where(frontal, appa, np.where(fl == "Lateral", "LAT", appa))
        keep = {
            View.FRONTAL: frontal & np.isin(appa, ["AP", "PA"]),
            View.LATERAL: fl == "Lateral",
            View.PA: frontal & (appa == "PA"),
            View.AP: frontal & (appa == "AP"),
            View.ALL: np.ones(n, dtype=bool),
        }[self.view]
        self.info["view_filter"] = {"view": self.view.value, "kept": int(keep.sum()), "of": n}

        pieces = [p.split("/") for p in paths]
        if any(len(x) != 5 for x in pieces):
            j = next(i for i, x in enumerate(pieces) if len(x) != 5)
            raise ValueError(f"chexpert: unexpected Path {paths[j]!r}; expected "
                             "CheXpert-v1.0-small/<split>/patientNNNNN/studyN/viewN_<view>.jpg")
        rel = ["/".join(x[1:]) for x in pieces]
        patient = np.asarray([x[2] for x in pieces], dtype=object)
        study = np.asarray([x[2] + "/" + x[3] for x in pieces], dtype=object)
        prefix = str(root) + os.sep
        full = np.asarray([prefix + r for r in rel], dtype=object)

        sel = np.flatnonzero(keep)
        if self.check_files and len(sel):
            present = np.zeros(n, dtype=bool)
            present[sel] = existing(full[sel].tolist())
            n_missing = int(len(sel) - present[sel].sum())
            if n_missing:
                msg = (f"{n_missing} of {len(sel)} selected images listed in the CSVs are not "
                       f"under {root}; they are left out")
                self.info["missing_files"] = n_missing
                self.info["missing_examples"] = [rel[j] for j in sel[~present[sel]][:10]]
                if self.strict:
                    raise FileNotFoundError(f"chexpert (strict): {msg}. First missing: "
                                            f"{', '.join(self.info['missing_examples'][:5])}")
                self.warn(msg)
            sel = sel[present[sel]]
            if not len(sel):
                raise FileNotFoundError(
                    f"chexpert: none of the {n_missing} selected images listed in the CSVs is under "
                    f"{root} (e.g. {root / self.info['missing_examples'][0]}). Unpack the images "
                    "beside train.csv, or pass check_files=false to read the labels only"
                )
        self._set_paths(full[sel].tolist())
        self.study_ids = study[sel]
        return Index(
            ids=[rel[j] for j in sel], patient_ids=patient[sel], splits=np.asarray(splits, dtype=object)[sel],
            labels=labels[sel], views=views[sel],
        )

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        self.index  # noqa: B018 - study ids come with the index
        studies = self.study_ids if self.study_ids is not None else []
        d["n_studies"] = len(set(studies))
        return d


def _read(path: Path) -> tuple[list[str], list[list[str]]]:
    with open_text(path) as fh:
        reader = csv.reader(fh)
        header = [h.strip() for h in next(reader, [])]
        rows = [r for r in reader if r]
    return header, rows


def _columns(header: list[str], path: Path, need: tuple[str, ...]) -> list[int]:
    missing = [c for c in need if c not in header]
    if missing:
        raise ValueError(f"chexpert: {path} lacks columns {missing}; header is {header}")
    return [header.index(c) for c in need]
