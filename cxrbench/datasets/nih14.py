"""NIH ChestX-ray14: 112,120 frontal chest X-rays of 30,805 patients, 14 findings.

Layout read, as published by the NIH Clinical Center::

    <root>/Data_Entry_2017_v2020.csv   (or the original Data_Entry_2017.csv)
    <root>/train_val_list.txt          optional official split lists
    <root>/test_list.txt
    <root>/images/00000001_000.png     all images in one folder, or the
    <root>/images_001/images/...       extracted archives images_001 ... images_012

Rows of the CSV whose image is not on disk (a partial download) are left out
with a warning that states how many; ``strict=True`` makes that an error.
With the official split lists, ``train_val_list.txt`` -> ``train`` and
``test_list.txt`` -> ``test``. Without them, a deterministic patient-level split
(``test_fraction``, ``val_fraction``, ``split_seed``) is made and recorded in
``info["split"]``.

Labels: the 14 findings plus ``No Finding`` (``Finding Labels`` split on
``|``); every label is known (1 or 0) for every image. Patient id: the
``Patient ID`` column; view: ``View Position`` (PA or AP).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

import numpy as np

from cxrbench.datasets import DATASETS
from cxrbench.datasets._files import FileDataset, find_file, hash_split, no_gc, open_text
from cxrbench.datasets.base import Index

FINDINGS = (
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
    "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening",
    "Hernia",
)
NO_FINDING = "No Finding"
LABELS = (*FINDINGS, NO_FINDING)
CSV_NAMES = ("Data_Entry_2017_v2020.csv", "Data_Entry_2017.csv",
             "Data_Entry_2017_v2020.csv.gz", "Data_Entry_2017.csv.gz")
SPLIT_FILES = {"train": "train_val_list.txt", "test": "test_list.txt"}
_COLUMNS = ("Image Index", "Finding Labels", "Patient ID", "View Position")


def image_folders(root: Path) -> list[Path]:
    """Folders that may hold the PNGs: ``images/``, ``images_*/images/``, ``images_*/``."""
    out = []
    if (root / "images").is_dir():
        out.append(root / "images")
    for d in sorted(root.glob("images_*")):
        if (d / "images").is_dir():
            out.append(d / "images")
        elif d.is_dir():
            out.append(d)
    return out


@DATASETS.register("nih14")
class NIHChestXray14(FileDataset):
    """NIH ChestX-ray14 (112,120 PA/AP films, 14 findings + No Finding) from its official layout."""

    name = "nih14"
    label_names = LABELS

    def __init__(self, root: str | None = None, strict: bool = False, test_fraction: float = 0.2,
                 val_fraction: float = 0.0, split_seed: int = 0, on_error: str = "raise",
                 check_files: bool = True) -> None:
        super().__init__(root, on_error=on_error, strict=bool(strict),
                         test_fraction=float(test_fraction), val_fraction=float(val_fraction),
                         split_seed=int(split_seed), check_files=bool(check_files))
        self.strict, self.check_files = bool(strict), bool(check_files)
        self.test_fraction, self.val_fraction = float(test_fraction), float(val_fraction)
        self.split_seed = int(split_seed)

    def csv_path(self) -> Path:
        root = self.root_path
        if not root.is_dir():
            raise FileNotFoundError(f"nih14: root folder {root} does not exist")
        p = find_file(root, CSV_NAMES)
        if p is None:
            raise FileNotFoundError(
                f"nih14: no metadata CSV in {root}; expected {CSV_NAMES[0]} or {CSV_NAMES[1]} "
                "(download it with the images from the NIH Clinical Center box folder)"
            )
        return p

    def _build_index(self) -> Index:
        with no_gc():
            return self._parse()

    def _parse(self) -> Index:
        path = self.csv_path()
        with open_text(path) as fh:
            reader = csv.reader(fh)
            header = [h.strip() for h in next(reader, [])]
            missing_cols = [c for c in _COLUMNS if c not in header]
            if missing_cols:
                raise ValueError(f"nih14: {path} lacks columns {missing_cols}; header is {header}")
            ci = [header.index(c) for c in _COLUMNS]
            width = max(ci) + 1
            rows = [r for r in reader if len(r) >= width]
        self.info["csv"] = path.name
        self.info["csv_rows"] = len(rows)
        names = [r[ci[0]].strip() for r in rows]
        findings = [r[ci[1]] for r in rows]
        patients = [_patient(r[ci[2]]) for r in rows]
        views = [r[ci[3]].strip() for r in rows]

        folders = image_folders(self.root_path)
        if self.check_files:
            keep, paths = self._locate(names, folders)
        else:
            base = folders[0] if folders else self.root_path / "images"
            keep = np.ones(len(names), dtype=bool)
            paths = [os.path.join(base, n) for n in names]
        n_missing = int((~keep).sum())
        if n_missing:
            looked = (", ".join(str(f) for f in folders)
                      or f"no image folder: expected {self.root_path / 'images'}")
            msg = (f"{n_missing} of {len(names)} images listed in {path.name} are not on disk "
                   f"(looked in {looked}); they are left out")
            self.info["missing_files"] = n_missing
            self.info["missing_examples"] = [names[j] for j in np.flatnonzero(~keep)[:10]]
            if n_missing == len(names):
                raise FileNotFoundError(
                    f"nih14: none of the {len(names)} images listed in {path.name} is on disk; "
                    f"expected them in {self.root_path / 'images'} or "
                    f"{self.root_path / 'images_001' / 'images'} ... (the extracted archives)"
                )
            if self.strict:
                raise FileNotFoundError(f"nih14 (strict): {msg}. First missing: "
                                        f"{', '.join(self.info['missing_examples'][:5])}")
            self.warn(msg)
        sel = np.flatnonzero(keep)

        labels, unknown = _multi_hot([findings[j] for j in sel])
        if unknown:
            self.warn(f"unknown finding names ignored: {sorted(unknown)}")
        ids = [names[j] for j in sel]
        pats = [patients[j] for j in sel]
        splits = self._splits(ids, pats)
        keep2 = splits != ""
        if not keep2.all():
            self.warn(f"{int((~keep2).sum())} images are in neither {SPLIT_FILES['train']} nor "
                      f"{SPLIT_FILES['test']}; they are left out")
        k = np.flatnonzero(keep2)
        self._set_paths([paths[sel[j]] for j in k])
        return Index(
            ids=[ids[j] for j in k], patient_ids=[pats[j] for j in k], splits=splits[k],
            labels=labels[k], views=[views[sel[j]] for j in k],
        )

    def _locate(self, names: list[str], folders: list[Path]) -> tuple[np.ndarray, list[str]]:
        where: dict[str, str] = {}
        for folder in reversed(folders):  # images/ wins over images_*/ on duplicates
            with os.scandir(folder) as it:
                for e in it:
                    if e.name.endswith(".png"):
                        where[e.name] = str(folder)
        keep = np.fromiter((n in where for n in names), dtype=bool, count=len(names))
        paths = [os.path.join(where[n], n) if n in where else "" for n in names]
        return keep, paths

    def _splits(self, ids: list[str], patients: list[str]) -> np.ndarray:
        lists = {s: self.root_path / f for s, f in SPLIT_FILES.items()}
        have = {s: p.is_file() for s, p in lists.items()}
        if any(have.values()):
            if not all(have.values()):
                absent = [str(p) for s, p in lists.items() if not have[s]]
                raise FileNotFoundError(
                    f"nih14: found one official split list but not {', '.join(absent)}; "
                    "put both train_val_list.txt and test_list.txt in the root, or neither"
                )
            split_of: dict[str, str] = {}
            for s, p in lists.items():
                with open(p, encoding="utf-8") as fh:
                    for line in fh:
                        if line.strip():
                            split_of[line.strip()] = s
            self.info["split"] = {"source": "official", "files": list(SPLIT_FILES.values())}
            return np.asarray([split_of.get(i, "") for i in ids], dtype=object)
        self.info["split"] = {
            "source": "generated", "method": "patient-level hash", "seed": self.split_seed,
            "test_fraction": self.test_fraction, "val_fraction": self.val_fraction,
        }
        return hash_split(patients, self.split_seed, self.test_fraction, self.val_fraction)

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d["layout"] = "NIH ChestX-ray14"
        return d


def _patient(value: str) -> str:
    v = value.strip()
    return str(int(v)) if v.isdigit() else v


def _multi_hot(findings: list[str]) -> tuple[np.ndarray, set[str]]:
    col = {n: j for j, n in enumerate(LABELS)}
    out = np.zeros((len(findings), len(LABELS)), dtype=np.int8)
    unknown: set[str] = set()
    cache: dict[str, list[int]] = {}
    for i, text in enumerate(findings):
        js = cache.get(text)
        if js is None:
            js = []
            for part in text.split("|"):
                part = part.strip()
                if part in col:
                    js.append(col[part])
                elif part:
                    unknown.add(part)
            cache[text] = js
        out[i, js] = 1
    return out, unknown
