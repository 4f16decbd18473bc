"""Shared machinery of the file-based datasets (nih14, chexpert, irma, folder).

* :class:`FileDataset`: a :class:`~cxrbench.datasets.base.Dataset` whose rows
  are image files; ``load_image`` decodes through :mod:`.imageio` and applies
  the ``on_error`` policy.
* helpers: fast existence checks for 100k+ listed files, a deterministic
  patient-level split, CSV reading.

Unreadable images with ``on_error="skip"``
-------------------------------------------
A corrupt file is usually discovered only when its pixels are needed, which
may be inside a DataLoader worker process. The design:

1. ``load_image(i)`` returns a blank image (:data:`BLANK`, all zeros) instead
   of raising, so batching and embedding continue, and appends the row to a
   small append-only log file created with the dataset (so failures found in
   worker processes are seen by the main process; one ``O_APPEND`` write per
   failure is atomic).
2. ``failed_rows()`` (main process) reads that log, records every skipped
   file in ``info["skipped_files"]`` (row, id, path, error) -> the Result, and
   returns the rows. The decoded-image cache also remembers failures on disk,
   so a later run that never decodes again still knows them
   (``CachedImages.failed_rows()``).
3. The harness drops ``source.failed_rows()`` from the query and gallery rows
   after embedding, so a blank image is never scored.
"""

from __future__ import annotations

import atexit
import contextlib
import csv
import gc
import gzip
import hashlib
import io
import logging
import os
import tempfile
from collections import defaultdict
from enum import Enum
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from cxrbench.datasets.base import Dataset
from cxrbench.datasets.imageio import ImageReadError, read_image

log = logging.getLogger("cxrbench.datasets")

#: what ``load_image`` returns for a skipped file (encoders resize it like any image)
BLANK_SHAPE = (8, 8)


def blank_image() -> np.ndarray:
    return np.zeros(BLANK_SHAPE, dtype=np.float32)


class OnError(str, Enum):
    """What to do with an image that cannot be decoded."""

    RAISE = "raise"
    SKIP = "skip"

    @classmethod
    def parse(cls, value: "str | OnError") -> "OnError":
        try:
            return cls(value)
        except ValueError:
            raise ValueError(
                f"unknown on_error {value!r}; valid: {', '.join(v.value for v in cls)}"
            ) from None


class FileDataset(Dataset):
    """A dataset whose rows are image files on disk.

    Subclasses build their index in ``_build_index`` and call
    :meth:`_set_paths` with one absolute path per row.

    Args:
        root: dataset folder.
        on_error: ``"raise"`` (default) an unreadable image stops the run with
            an error naming the file; ``"skip"`` replaces it by a blank image,
            records it in ``info["skipped_files"]`` and the harness leaves the
            row out of scoring (see module docstring).
        params: the subclass's own parameters (enter the fingerprint).
    """

    def __init__(self, root: str | os.PathLike | None, on_error: str = "raise", **params: Any):
        if root is None:
            raise ValueError(f"dataset {self.name!r} needs --root (the folder that holds it)")
        self.on_error = OnError.parse(on_error)
        super().__init__(str(root), on_error=self.on_error.value, **params)
        self.root_path = Path(root).expanduser()
        self._paths: np.ndarray | None = None
        self._failure_log: str | None = None
        if self.on_error is OnError.SKIP:
            self._failure_log = _new_failure_log()

    #: parameters that change behaviour but never the rows: kept out of the
    #: fingerprint, so switching them reuses the image and embedding caches
    _BEHAVIOUR_PARAMS = ("on_error", "strict")

    def params(self) -> dict[str, Any]:
        return {k: v for k, v in self._params.items() if k not in self._BEHAVIOUR_PARAMS}

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d["on_error"] = self.on_error.value
        return d

    # -- index helpers ------------------------------------------------------------
    def _set_paths(self, paths: Sequence[str]) -> None:
        self._paths = np.asarray(list(paths), dtype=object)

    def warn(self, message: str) -> None:
        """Log a warning and keep it for the Result (``info["warnings"]``)."""
        log.warning("%s: %s", self.name, message)
        self.info.setdefault("warnings", []).append(message)

    # -- images ---------------------------------------------------------------------
    def image_path(self, i: int) -> str:
        if self._paths is None:
            self.index  # noqa: B018 - builds the index, which sets the paths
        assert self._paths is not None
        return str(self._paths[int(i)])

    def read(self, i: int, size_hint: tuple[int, int] | None = None) -> np.ndarray:
        """Decode row ``i`` ignoring ``on_error`` (raises :class:`ImageReadError`)."""
        return read_image(self.image_path(i), size_hint=size_hint)

    def load_image(self, i: int, size_hint: tuple[int, int] | None = None) -> np.ndarray:
        try:
            return self.read(i, size_hint)
        except ImageReadError as exc:
            if self.on_error is OnError.RAISE:
                raise
            self.record_failure(int(i), exc.path, exc.reason)
            return blank_image()

    def record_failure(self, i: int, path: str, reason: str) -> None:
        """Note that row ``i`` could not be read (any process may call this)."""
        log.warning("%s: skipping unreadable image %s (%s)", self.name, path, reason)
        clean = " ".join(str(reason).split())
        line = f"{i}\t{path}\t{clean}\n".encode("utf-8", "replace")
        if self._failure_log is not None:
            fd = os.open(self._failure_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line)
            finally:
                os.close(fd)
        self._merge_failures({i: (path, clean)})

    def failed_rows(self) -> np.ndarray:
        """Rows skipped as unreadable so far (from every process); updates ``info``."""
        found: dict[int, tuple[str, str]] = {}
        if self._failure_log is not None and os.path.exists(self._failure_log):
            with open(self._failure_log, encoding="utf-8", errors="replace") as fh:
                for line in fh:
                    parts = line.rstrip("\n").split("\t", 2)
                    if len(parts) == 3 and parts[0].isdigit():
                        found[int(parts[0])] = (parts[1], parts[2])
        self._merge_failures(found)
        rows = [d["row"] for d in self.info.get("skipped_files", [])]
        return np.asarray(sorted(rows), dtype=np.int64)

    def _merge_failures(self, found: dict[int, tuple[str, str]]) -> None:
        if not found:
            return
        have = {d["row"]: d for d in self.info.get("skipped_files", [])}
        ids = self.index.ids
        for i, (path, reason) in found.items():
            if i not in have:
                have[i] = {"row": i, "id": str(ids[i]), "path": path, "error": reason}
        self.info["skipped_files"] = [have[k] for k in sorted(have)]


def _new_failure_log() -> str:
    fd, path = tempfile.mkstemp(prefix="cxrbench-skipped-", suffix=".tsv")
    os.close(fd)
    owner = os.getpid()

    def _cleanup() -> None:  # only the creating process removes it, never a worker
        if os.getpid() == owner and os.path.exists(path):
            os.unlink(path)

    atexit.register(_cleanup)
    return path


@contextlib.contextmanager
def no_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector while parsing big CSVs.

    Building millions of small lists and strings triggers full collections
    over every live object again and again; with it paused, parsing the
    223k-row CheXpert CSV is several times faster. Nothing parsed is cyclic.
    """
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


# -- files ------------------------------------------------------------------------------
def existing(paths: Sequence[str]) -> np.ndarray:
    """Boolean mask: which of ``paths`` exist as files.

    Lists each parent folder once (one ``scandir`` for 112k files in one
    folder instead of 112k ``stat`` calls).
    """
    by_dir: dict[str, list[int]] = defaultdict(list)
    names: list[str] = []
    for j, p in enumerate(paths):
        d, _, name = str(p).rpartition(os.sep)
        by_dir[d].append(j)
        names.append(name)
    mask = np.zeros(len(names), dtype=bool)
    gone: set[str] = set()  # folders known to be absent: their subfolders are not listed
    for d, js in by_dir.items():
        if _under_gone(d, gone):
            continue
        try:
            with os.scandir(d or os.sep) as it:
                present = {e.name for e in it if not e.is_dir()}
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            _mark_gone(d, gone)
            continue
        for j in js:
            mask[j] = names[j] in present
    return mask


def _under_gone(d: str, gone: set[str]) -> bool:
    while d:
        if d in gone:
            return True
        parent = d.rpartition(os.sep)[0]
        if parent == d:
            break
        d = parent
    return False


def _mark_gone(d: str, gone: set[str]) -> None:
    """Record the highest missing ancestor of ``d`` (so a whole absent tree costs a few calls)."""
    while True:
        parent = d.rpartition(os.sep)[0]
        if not parent or os.path.isdir(parent):
            gone.add(d)
            return
        d = parent


def find_file(folder: Path, names: Iterable[str]) -> Path | None:
    """The first of ``names`` present in ``folder`` (exact names, in order)."""
    for n in names:
        p = folder / n
        if p.is_file():
            return p
    return None


def open_text(path: Path) -> io.TextIOBase:
    """Open a text file, transparently gunzipping ``*.gz``; ``utf-8-sig`` drops a BOM."""
    if str(path).endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8-sig", newline="")
    return open(path, encoding="utf-8-sig", newline="")


def read_csv(path: Path, delimiter: str | None = None) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a CSV (``,`` or ``;`` sniffed from the first line)."""
    with open_text(path) as fh:
        text = fh.read()
    if delimiter is None:
        first = text.split("\n", 1)[0]
        delimiter = ";" if first.count(";") > first.count(",") else ","
    rows = [r for r in csv.reader(io.StringIO(text), delimiter=delimiter) if r]
    if not rows:
        raise ValueError(f"{path} is empty")
    return [h.strip() for h in rows[0]], rows[1:]


# -- splits -------------------------------------------------------------------------------
def hash_split(
    patient_ids: Sequence[str], seed: int, test_fraction: float, val_fraction: float = 0.0
) -> np.ndarray:
    """A deterministic patient-level train/val/test split.

    Each patient's split is a function of (seed, patient id) alone, via a hash,
    so a patient keeps its split when other images are added or missing (e.g.
    after downloading more archives), and all images of a patient share it.
    """
    if not 0 <= test_fraction < 1 or not 0 <= val_fraction < 1 or test_fraction + val_fraction >= 1:
        raise ValueError(
            f"split fractions test={test_fraction}, val={val_fraction} must be in [0, 1) "
            "and sum to less than 1"
        )
    pats = np.asarray(patient_ids, dtype=object)
    uniq, inv = np.unique(pats.astype(str), return_inverse=True)
    u = np.empty(len(uniq), dtype=np.float64)
    for j, p in enumerate(uniq.tolist()):
        digest = hashlib.sha256(f"{seed}\x1f{p}".encode()).digest()
        u[j] = int.from_bytes(digest[:8], "big") / 2.0**64
    per_patient = np.where(u < test_fraction, "test",
                           np.where(u < test_fraction + val_fraction, "val", "train"))
    return per_patient.astype(object)[inv]
