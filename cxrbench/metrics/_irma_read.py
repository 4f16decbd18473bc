"""Readers for the IRMA code hierarchy files (not a metric module).

Both formats are read leniently: problems are collected as ``issues``
(malformed lines, wrapped labels, duplicates, orphans) and child counts they
make uncertain are returned as ``suspect`` nodes, which
:class:`cxrbench.metrics.irma.IrmaCodeTree` refuses to use without an opt-in.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

AXES = ("technical", "directional", "anatomical", "biological")
#: the per-axis files of the folder format, in axis order T, D, A, B
FOLDER_FILES = ("A.csv", "B.csv", "C.csv", "D.csv")
#: digits per axis in TTTT-DDD-AAA-BBB
AXIS_LEN = (4, 3, 3, 3)
CODE = re.compile(r"[0-9a-z]+")
_BRACKET = re.compile(r"\[([^\]]*)\]\s?(.*)")
_NEWLINES = re.compile(r"\r*\n|\r")  # "\r\r\n" (as in the real B.csv) is one line end


def _lines(path: Path) -> list[str]:
    raw = path.read_bytes().decode("utf-8", errors="replace")
    return _NEWLINES.split(raw)


class _AxisReader:
    """Collects (line, code, label) entries of one axis and resolves their problems."""

    def __init__(self, ax: int, where: str) -> None:
        self.ax, self.where = ax, where
        self.entries: list[list] = []  # [line_no, code, label]
        self.issues: list[str] = []

    def add(self, line_no: int, code: str, label: str, raw: str) -> None:
        code = code.strip()
        if CODE.fullmatch(code) and len(code) <= AXIS_LEN[self.ax]:
            self.entries.append([line_no, code, label.strip()])
        elif self.entries:  # text where a code should be: a label wrapped onto a new line
            prev = self.entries[-1]
            prev[2] = f"{prev[2]} {raw.replace(';', ' ').strip()}".strip()
            self.issues.append(
                f"{self.where} line {line_no}: {raw.strip()!r} is not 'code;label'; read as the "
                f"continuation of the label of {prev[1]} (line {prev[0]})")
        else:
            self.issues.append(f"{self.where} line {line_no}: {raw.strip()!r} ignored (no code)")

    def finish(self) -> tuple[dict[str, str], dict[str, str]]:
        labels: dict[str, str] = {}
        suspect: dict[str, str] = {}
        occ: dict[str, list[int]] = defaultdict(list)
        for i, (_, code, _) in enumerate(self.entries):
            occ[code].append(i)
        drop: set[int] = set()
        for code, idxs in occ.items():
            if len(idxs) == 1:
                continue
            lines = ", ".join(f"line {self.entries[i][0]} {self.entries[i][2]!r}" for i in idxs)
            if len({self.entries[i][2] for i in idxs}) == 1:
                self.issues.append(f"{self.where}: code {code} repeated ({lines}); kept once")
                drop.update(idxs[1:])
                continue
            fits = [i for i in idxs if self._fits(i)]
            keep = fits[0] if len(fits) == 1 else idxs[0]
            for i in idxs:
                if i == keep:
                    continue
                drop.add(i)
                ctx = self.entries[i - 1][1][: len(code) - 1] if i > 0 else ""
                if len(fits) == 1 and ctx and ctx != code[:-1]:
                    suspect[ctx] = (f"{self.where} line {self.entries[i][0]} "
                                    f"'{code};{self.entries[i][2]}' sits among the children of "
                                    f"{ctx} but repeats code {code}: {ctx} probably lacks a child")
                else:
                    suspect[code[:-1]] = f"{self.where}: code {code} defined twice ({lines})"
            self.issues.append(f"{self.where}: code {code} defined twice with different labels "
                               f"({lines}); kept line {self.entries[keep][0]}")
        for i, (line_no, code, label) in enumerate(self.entries):
            if i not in drop:
                labels[code] = label
        for code in sorted(labels, key=len):
            if len(code) > 1 and code[:-1] not in labels:
                anc = code[:-1]
                while anc and anc not in labels:
                    anc = anc[:-1]
                suspect.setdefault(anc, f"{self.where}: {code} is listed but its parent "
                                        f"{code[:-1]} is not")
                self.issues.append(f"{self.where}: {code} listed without its parent {code[:-1]}")
        for node, why in suspect.items():
            self.issues.append(f"{AXES[self.ax]} {node or '(root)'}: child count suspect: {why}")
        return labels, suspect

    def _fits(self, i: int) -> bool:
        """Does entry i follow its predecessor in depth-first order of its own parent?"""
        code = self.entries[i][1]
        if i == 0:
            return len(code) == 1
        return self.entries[i - 1][1].startswith(code[:-1])


def read_folder(folder: Path):
    """(labels, suspects, issues) per axis from A.csv..D.csv."""
    labels, suspects, issues = [], [], []
    for ax, name in enumerate(FOLDER_FILES):
        f = folder / name
        if not f.is_file():
            raise FileNotFoundError(
                f"IRMA hierarchy folder {folder} lacks {name} (the {AXES[ax]} axis); expected "
                f"{', '.join(FOLDER_FILES)} with lines 'prefix;label'")
        rd = _AxisReader(ax, name)
        for no, line in enumerate(_lines(f), start=1):
            s = line.strip()
            if not s or s == ";":
                continue
            code, sep, label = s.partition(";")
            rd.add(no, code if sep else "", label, s)
        lab, sus = rd.finish()
        labels.append(lab)
        suspects.append(sus)
        issues += rd.issues
    return labels, suspects, issues


def read_official(path: Path):
    """(labels, suspects, issues) per axis from the official ``** axis`` file."""
    readers: list[_AxisReader] = []
    issues: list[str] = []
    for no, line in enumerate(_lines(path), start=1):
        s = line.strip()
        if not s:
            continue
        if s.startswith("**"):
            if len(readers) == 4:
                raise ValueError(f"{path} line {no}: a fifth axis header {s!r}; an IRMA "
                                 "hierarchy has four axes (T, D, A, B)")
            readers.append(_AxisReader(len(readers), f"{path.name} [{s[2:].strip()}]"))
            continue
        if not readers:
            issues.append(f"{path.name} line {no}: {s!r} before the first '** axis' header; ignored")
            continue
        m = _BRACKET.match(s)
        readers[-1].add(no, m.group(1) if m else "", m.group(2) if m else "", s)
    if len(readers) != 4:
        raise ValueError(
            f"{path}: found {len(readers)} '** <axis>' headers; the official IRMA hierarchy "
            "has four (technical, directional, anatomical, biological) followed by "
            "'[code] label' lines. For the per-axis CSV format pass the folder instead.")
    labels, suspects = [], []
    for rd in readers:
        lab, sus = rd.finish()
        labels.append(lab)
        suspects.append(sus)
        issues += rd.issues
    return labels, suspects, issues
