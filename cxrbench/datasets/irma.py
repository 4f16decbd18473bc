"""IRMA / ImageCLEF 2009 medical image annotation: 12,677 train + 1,733 test radiographs.

Every image has an IRMA code ``TTTT-DDD-AAA-BBB`` (technical, directional,
anatomical, biological axes); retrieval is scored by IRMA error against the
code hierarchy. Layout read::

    <root>/.../<image_id>.png                    images anywhere under the root
    <root>/...train...(.csv|.txt)                code files: columns image_id and irma_code,
    <root>/...test...(.csv|.txt)                 ';' or ',' separated, header optional
    <root>/code-2008-04-14.txt                   optional hierarchy: the official file
    <root>/hierarchy/{A,B,C,D}.csv               ... or per-axis "prefix;label" files

Code files are found by name: a ``.csv``/``.txt`` file whose name contains
``train`` (``test``), preferring names that also contain ``code``; or pass
``train_codes`` / ``test_codes``. A single code file without a split in its
name (e.g. ``codes.csv``) is split patient-level by hash (``test_fraction``,
``split_seed``), recorded in ``info["split"]``.

Labels: one class per distinct IRMA code (``single_label``: P@K counts a
neighbour relevant when its code is identical). ImageCLEF ships no patient
ids: each image is its own patient, so same-patient exclusion does nothing.

The hierarchy (``hierarchy`` = file or folder; found automatically in the
root otherwise) is handed to :class:`cxrbench.metrics.irma.IrmaCodeTree`.
Codes used by the images but absent from it, and malformed hierarchy lines,
are reported in ``info["irma_hierarchy"]``; the IRMA metric then refuses to
give numbers it cannot weigh exactly (it is skipped, with the gaps as the
reason) unless ``extend_hierarchy=true`` adds the observed nodes to the tree
(an approximation, flagged). Without any hierarchy a tree is derived from the
observed codes, also flagged as an approximation.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from cxrbench.datasets import DATASETS
from cxrbench.datasets._files import FileDataset, hash_split, read_csv
from cxrbench.datasets.base import Index

AXES = ("technical", "directional", "anatomical", "biological")
#: per-axis file names of the hierarchy folder, in code order T, D, A, B
AXIS_FILES = ("A.csv", "B.csv", "C.csv", "D.csv")
CODE_RE = re.compile(r"^[0-9a-z]{4}-[0-9a-z]{3}-[0-9a-z]{3}-[0-9a-z]{3}$")
_OFFICIAL_LINE = re.compile(r"^\[\s*([0-9a-zA-Z]+)\s*\]\s*(.*)$")
_SUFFIXES = (".csv", ".txt")
#: an axis code: 1-4 characters 0-9 or a-z (IRMA counts on past 9 with letters, e.g. 12f)
_PREFIX = re.compile(r"[0-9a-z]{1,4}")


@DATASETS.register("irma")
class IRMA(FileDataset):
    """IRMA / ImageCLEF 2009 annotation set (IRMA codes TTTT-DDD-AAA-BBB, IRMA error)."""

    name = "irma"
    single_label = True

    def __init__(self, root: str | None = None, hierarchy: str | None = None,
                 train_codes: str | None = None, test_codes: str | None = None,
                 test_fraction: float = 0.2, split_seed: int = 0, extend_hierarchy: bool = False,
                 strict: bool = False, on_error: str = "raise", check_files: bool = True) -> None:
        super().__init__(root, on_error=on_error, hierarchy=hierarchy, train_codes=train_codes,
                         test_codes=test_codes, test_fraction=float(test_fraction),
                         split_seed=int(split_seed), extend_hierarchy=bool(extend_hierarchy),
                         strict=bool(strict), check_files=bool(check_files))
        self.hierarchy = hierarchy
        self.extend_hierarchy = bool(extend_hierarchy)
        self.train_codes, self.test_codes = train_codes, test_codes
        self.test_fraction, self.split_seed = float(test_fraction), int(split_seed)
        self.strict, self.check_files = bool(strict), bool(check_files)
        self._label_names: tuple[str, ...] = ()
        self._tree: Any = None

    @property
    def label_names(self) -> tuple[str, ...]:  # type: ignore[override]
        """One class per distinct IRMA code in the data (known once the index is built)."""
        self.index  # noqa: B018
        return self._label_names

    # -- layout -------------------------------------------------------------------------
    def code_files(self) -> dict[str, Path]:
        """The code file per split (``{"train": ..., "test": ...}`` or ``{"all": ...}``)."""
        root = self.root_path
        if not root.is_dir():
            raise FileNotFoundError(f"irma: root folder {root} does not exist")
        given = {s: Path(p) for s, p in (("train", self.train_codes), ("test", self.test_codes)) if p}
        for s, p in given.items():
            if not p.is_file():
                raise FileNotFoundError(f"irma: {s}_codes file {p} not found")
        if given:
            return given
        cands = [p for p in _walk_files(root, max_depth=2) if p.suffix.lower() in _SUFFIXES
                 and p.name not in AXIS_FILES and not _is_official_hierarchy(p)]
        out: dict[str, Path] = {}
        for split in ("train", "test"):
            hits = [p for p in cands if split in p.name.lower()]
            if len(hits) > 1:
                coded = [p for p in hits if "code" in p.name.lower()]
                hits = coded or hits
            if len(hits) > 1:
                raise ValueError(f"irma: several {split} code files: {', '.join(map(str, hits))}; "
                                 f"pass {split}_codes=PATH")
            if hits:
                out[split] = hits[0]
        if out:
            return out
        single = [p for p in cands if "code" in p.name.lower()]
        if len(single) == 1:
            return {"all": single[0]}
        raise FileNotFoundError(
            f"irma: no code files in {root}; expected e.g. {root / 'ImageCLEFmed2009_train_codes.csv'} "
            f"and {root / 'ImageCLEFmed2009_test_codes.csv'} (columns image_id;irma_code), "
            "or pass train_codes=PATH test_codes=PATH"
        )

    def hierarchy_path(self) -> Path | None:
        """The hierarchy file or per-axis folder, if any."""
        if self.hierarchy:
            p = Path(self.hierarchy)
            if not p.exists():
                raise FileNotFoundError(f"irma: hierarchy {p} not found")
            return p
        root = self.root_path
        for p in sorted(_walk_files(root, max_depth=2)):
            if p.suffix.lower() == ".txt" and _is_official_hierarchy(p):
                return p
        for d in [root, *sorted(x for x in root.iterdir() if x.is_dir())]:
            if all((d / f).is_file() for f in AXIS_FILES):
                return d
        return None

    # -- index --------------------------------------------------------------------------
    def _build_index(self) -> Index:
        files = self.code_files()
        self.info["code_files"] = {s: str(p) for s, p in files.items()}
        ids: list[str] = []
        codes: list[str] = []
        splits: list[str] = []
        seen: set[str] = set()
        n_bad = n_dup = 0
        for split, path in files.items():
            for image_id, code in _read_codes(path):
                if not CODE_RE.match(code):
                    n_bad += 1
                    continue
                if image_id in seen:
                    n_dup += 1
                    continue
                seen.add(image_id)
                ids.append(image_id)
                codes.append(code)
                splits.append(split)
        if n_bad:
            self.warn(f"{n_bad} rows with malformed IRMA codes (expected TTTT-DDD-AAA-BBB) left out")
        if n_dup:
            self.warn(f"{n_dup} duplicate image ids in the code files left out (first kept)")
        split_arr = np.asarray(splits, dtype=object)
        if "all" in files:
            split_arr = hash_split(ids, self.split_seed, self.test_fraction)
            self.info["split"] = {"source": "generated", "method": "image-level hash",
                                  "seed": self.split_seed, "test_fraction": self.test_fraction}
        else:
            self.info["split"] = {"source": "code files"}

        where = _png_index(self.root_path)
        paths = [where.get(i, str(self.root_path / f"{i}.png")) for i in ids]
        keep = np.ones(len(ids), dtype=bool)
        if self.check_files:
            keep = np.asarray([i in where for i in ids], dtype=bool)
            n_missing = int((~keep).sum())
            if n_missing:
                msg = (f"{n_missing} of {len(ids)} images in the code files have no <image_id>.png "
                       f"under {self.root_path}; they are left out")
                self.info["missing_files"] = n_missing
                self.info["missing_examples"] = [f"{ids[j]}.png" for j in np.flatnonzero(~keep)[:10]]
                if self.strict or n_missing == len(ids):
                    raise FileNotFoundError(f"irma: {msg}")
                self.warn(msg)
        sel = np.flatnonzero(keep)
        codes_sel = [codes[j] for j in sel]
        self._label_names = tuple(sorted(set(codes_sel)))
        col = {c: j for j, c in enumerate(self._label_names)}
        labels = np.zeros((len(sel), len(self._label_names)), dtype=np.int8)
        labels[np.arange(len(sel)), [col[c] for c in codes_sel]] = 1
        self._set_paths([paths[j] for j in sel])
        self._report_hierarchy(codes_sel)
        return Index(
            ids=[ids[j] for j in sel], patient_ids=[ids[j] for j in sel], splits=split_arr[sel],
            labels=labels, irma_codes=codes_sel,
        )

    def _report_hierarchy(self, codes: list[str]) -> None:
        path = self.hierarchy_path()
        if path is None:
            self.info["irma_hierarchy"] = {
                "source": "derived from the observed codes", "approximation": True}
            self.warn("no IRMA hierarchy found (code-2008-04-14.txt or A-D.csv): IRMA error uses "
                      "a tree derived from the observed codes, an approximation")
            return
        known, malformed = read_hierarchy(path)
        gaps = hierarchy_gaps(codes, known)
        n_codes = sum(1 for c in set(codes) if _code_gaps(c, known))
        self.info["irma_hierarchy"] = {
            "source": str(path), "approximation": False,
            "missing_codes": {ax: sorted(v) for ax, v in gaps.items()},
            "codes_with_gaps": n_codes,
            "malformed_lines": malformed,
        }
        if gaps:
            listed = "; ".join(f"{ax} {', '.join(sorted(v))}" for ax, v in gaps.items())
            self.warn(f"{n_codes} distinct image codes use axis codes missing from the hierarchy "
                      f"{path}: {listed}")
        if malformed:
            self.warn(f"{len(malformed)} malformed hierarchy lines ignored, e.g. {malformed[0]}")

    def irma_tree(self) -> Any | None:
        """The :class:`~cxrbench.metrics.irma.IrmaCodeTree` for IRMA error (built once)."""
        if self._tree is not None:
            return self._tree
        try:
            from cxrbench.metrics.irma import IrmaCodeTree
        except ImportError as exc:
            self.warn(f"IRMA code tree unavailable ({exc}); IRMA error cannot be computed")
            return None
        path = self.hierarchy_path()
        codes = list(self.index.irma_codes)
        if path is None:
            tree = IrmaCodeTree.from_codes(codes)
        else:
            tree = IrmaCodeTree.load(path)
            if self.extend_hierarchy and self.info.get("irma_hierarchy", {}).get("missing_codes"):
                tree = tree.extended(codes)  # opt-in: nodes seen in the codes, approximate
                self.info["irma_hierarchy"]["approximation"] = True
                self.info["irma_hierarchy"]["extended_with_observed_codes"] = True
        describe = getattr(tree, "describe", None)
        if describe is not None:
            self.info["irma_tree"] = describe()
        self._tree = tree
        return tree

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d["n_classes"] = len(self.label_names)
        return d


# -- code files ----------------------------------------------------------------------------
def _read_codes(path: Path) -> list[tuple[str, str]]:
    header, rows = read_csv(path)
    low = [h.lower() for h in header]
    if "image_id" in low or "irma_code" in low:
        if "image_id" not in low or "irma_code" not in low:
            raise ValueError(f"irma: {path} header {header} needs both image_id and irma_code")
        a, b = low.index("image_id"), low.index("irma_code")
    else:  # no header: id, code
        rows = [header, *rows]
        a, b = 0, 1
    out = []
    for r in rows:
        if len(r) > max(a, b):
            out.append((r[a].strip(), r[b].strip().lower()))
    return out


def _walk_files(root: Path, max_depth: int) -> list[Path]:
    out = []
    base = len(root.parts)
    for d, dirs, files in os.walk(root):
        depth = len(Path(d).parts) - base
        if depth >= max_depth:
            dirs[:] = []
        out.extend(Path(d) / f for f in files if not f.lower().endswith(".png"))
    return out


def _png_index(root: Path) -> dict[str, str]:
    """``image_id -> path`` for every ``<image_id>.png`` under the root."""
    out: dict[str, str] = {}
    for d, _, files in os.walk(root):
        for f in files:
            if f.lower().endswith(".png"):
                out.setdefault(f[:-4], os.path.join(d, f))
    return out


# -- hierarchy -------------------------------------------------------------------------------
def _is_official_hierarchy(path: Path) -> bool:
    try:
        with open(path, encoding="latin-1") as fh:
            head = fh.read(4096)
    except OSError:
        return False
    return any(line.startswith("**") for line in head.splitlines())


def read_hierarchy(path: str | os.PathLike) -> tuple[dict[str, set[str]], list[str]]:
    """Known codes per axis and malformed lines, from either hierarchy format.

    Only what is needed to check coverage; the metric's own tree is
    :class:`cxrbench.metrics.irma.IrmaCodeTree`.
    """
    path = Path(path)
    known: dict[str, set[str]] = {ax: set() for ax in AXES}
    malformed: list[str] = []
    if path.is_dir():
        for ax, fname in zip(AXES, AXIS_FILES):
            p = path / fname
            if not p.is_file():
                malformed.append(f"{p}: missing axis file")
                continue
            with open(p, encoding="latin-1") as fh:
                for n, line in enumerate(fh, 1):
                    line = line.strip()
                    if not line or line == ";":
                        continue
                    prefix, sep, label = line.partition(";")
                    prefix = prefix.strip().lower()
                    if not sep or not _PREFIX.fullmatch(prefix):
                        malformed.append(f"{p.name}:{n}: {line}")
                        continue
                    if prefix in known[ax]:
                        malformed.append(f"{p.name}:{n}: duplicate code {prefix}: {line}")
                    known[ax].add(prefix)
        return known, malformed
    axis_i = -1
    with open(path, encoding="latin-1") as fh:
        for n, line in enumerate(fh, 1):
            line = line.strip()
            if not line:
                continue
            if line.startswith("**"):
                axis_i = _axis_from_header(line[2:], axis_i)
                continue
            m = _OFFICIAL_LINE.match(line)
            if not m or axis_i < 0:
                malformed.append(f"{path.name}:{n}: {line}")
                continue
            code = m.group(1).lower()
            known[AXES[axis_i]].add(code.replace("-", ""))
    return known, malformed


def _axis_from_header(text: str, previous: int) -> int:
    t = text.lower()
    for i, words in enumerate((("techn", "modal"), ("direct", "orient"), ("anatom",), ("biolog", "system"))):
        if any(w in t for w in words):
            return i
    return min(previous + 1, len(AXES) - 1)


def _code_gaps(code: str, known: dict[str, set[str]]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for ax, part in zip(AXES, code.split("-")):
        q = part.rstrip("0")
        for i in range(1, len(q) + 1):
            prefix = q[:i]
            # a child named 0 means "unspecified": implicitly known
            if not prefix.endswith("0") and prefix not in known[ax]:
                out.setdefault(ax, set()).add(prefix)
    return out


def hierarchy_gaps(codes: list[str], known: dict[str, set[str]]) -> dict[str, set[str]]:
    """Axis codes (prefixes) used by ``codes`` but absent from the hierarchy, per axis."""
    out: dict[str, set[str]] = {}
    for c in set(codes):
        for ax, v in _code_gaps(c, known).items():
            out.setdefault(ax, set()).update(v)
    return out
