"""Decoded-image cache: decode and resize each image once, reuse it in every encoder run.

Decoding a 1024x1024 PNG costs more than running many encoders on it, and
every encoder run on a dataset needs the same pixels at one of a few sizes.
:func:`cached_source` wraps a dataset so that ``load_image(i)`` returns the
image resized to ``size``, read from a uint8 store::

    <cache_dir>/images/<dataset fingerprint>-<H>x<W>.u8     N x H x W uint8 (np.memmap)
    <cache_dir>/images/<dataset fingerprint>-<H>x<W>.state  N bytes: 0 to do, 1 done, 2 unreadable
    <cache_dir>/images/<dataset fingerprint>-<H>x<W>.json   what the store holds

The store fills lazily, row by row, as images are requested, so an
interrupted run keeps what it decoded and the next one resumes. It is safe
with DataLoader workers (each process maps the files itself; a pickled
source carries paths, not arrays) and with several runs filling it at once:
a row's pixels are written before its state byte, a reader decodes any row
whose state is not yet 1, and two processes decoding the same row write the
same bytes. Space is reserved when the store is created (``posix_fallocate``)
so a full disk is an error at creation, not a crash in the middle of a run.

Pixels are quantised to 8 bits after resizing (at most 1/510 off the float
resize; 16-bit sources lose their extra precision). The resize is the one
encoders use by default (:func:`cxrbench.encoders.base.resize_grey`), so an
encoder's own ``preprocess`` sees an image that is already the right size.

Size on disk: N x H x W bytes (NIH ChestX-ray14 at 224 x 224: 5.6 GB; at
32 x 32: 115 MB).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from cxrbench.datasets.imageio import ImageReadError

log = logging.getLogger(__name__)

TODO, DONE, FAILED = 0, 1, 2
#: identifies how the harness's images were produced (goes into preprocessing keys)
LOADER_KEY = "imagecache-u8-v1"


def cached_source(dataset: Any, size: tuple[int, int] | int, cache_dir: str | os.PathLike) -> Any:
    """The dataset's images at ``size`` (H, W), through the on-disk uint8 cache.

    Datasets whose images are arrays already (``cache_images = False``, e.g.
    MedMNIST) are returned unchanged.
    """
    if not getattr(dataset, "cache_images", True):
        return dataset
    return CachedImages(dataset, size, cache_dir)


def failed_rows(source: Any) -> np.ndarray:
    """Rows a source skipped as unreadable (``on_error="skip"``); empty if none or unsupported."""
    fn = getattr(source, "failed_rows", None)
    return np.asarray(fn() if fn is not None else [], dtype=np.int64)


def decode_u8(ds: Any, i: int, size: tuple[int, int]) -> np.ndarray | None:
    """Row ``i`` decoded, resized to ``size`` and quantised to uint8.

    Returns None when the file is unreadable and the dataset skips such files
    (``on_error="skip"``; the failure is recorded by the dataset).
    """
    from cxrbench.encoders.base import resize_grey

    try:
        if hasattr(ds, "read"):  # file datasets: decode JPEGs at a reduced scale
            img = ds.read(i, size_hint=size)
        else:
            img = ds.load_image(i)
    except ImageReadError as exc:
        if getattr(getattr(ds, "on_error", None), "value", "raise") != "skip":
            raise
        ds.record_failure(i, exc.path, exc.reason)
        return None
    img = np.asarray(img, dtype=np.float32)
    if img.ndim != 2:
        raise ValueError(f"dataset {getattr(ds, 'name', '?')!r} row {i}: expected a 2-D image, "
                         f"got shape {img.shape}")
    return np.clip(np.rint(resize_grey(img, size) * 255.0), 0, 255).astype(np.uint8)


def uncached_source(dataset: Any, size: tuple[int, int] | int) -> Any:
    """The same pixels as :func:`cached_source`, decoded every time (``--no-cache``).

    Results must not depend on whether a cache was used, so both paths share
    :func:`decode_u8` (resize, then 8-bit quantisation).
    """
    if not getattr(dataset, "cache_images", True):
        return dataset
    return ResizedImages(dataset, size)


class ResizedImages:
    """``load_image(i)`` of a dataset through :func:`decode_u8`, with no store."""

    loader_key = LOADER_KEY

    def __init__(self, dataset: Any, size: tuple[int, int] | int) -> None:
        self.dataset = dataset
        self.size = (int(size), int(size)) if isinstance(size, int) else tuple(int(x) for x in size)

    def __len__(self) -> int:
        return len(self.dataset)

    def load_image(self, i: int) -> np.ndarray:
        u8 = decode_u8(self.dataset, int(i), self.size)
        if u8 is None:
            u8 = np.zeros(self.size, dtype=np.uint8)
        return u8.astype(np.float32) / np.float32(255.0)

    def failed_rows(self) -> np.ndarray:
        return failed_rows(self.dataset)


class CachedImages:
    """``load_image(i)`` of a dataset, resized to ``size`` and cached as uint8 (see module doc)."""

    loader_key = LOADER_KEY

    def __init__(self, dataset: Any, size: tuple[int, int] | int, cache_dir: str | os.PathLike):
        h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
        if h <= 0 or w <= 0:
            raise ValueError(f"image cache size must be positive, got {size}")
        self.dataset = dataset
        self.size = (h, w)
        self.n = len(dataset)
        self.fingerprint = dataset.fingerprint()
        self.dir = Path(cache_dir) / "images"
        stem = f"{self.fingerprint}-{h}x{w}"
        self.data_path = self.dir / f"{stem}.u8"
        self.state_path = self.dir / f"{stem}.state"
        self.meta_path = self.dir / f"{stem}.json"
        self._pid: int | None = None
        self._data: np.ndarray | None = None
        self._state: np.ndarray | None = None
        self._create()

    # -- files ------------------------------------------------------------------------------
    def _create(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        h, w = self.size
        _create_sized(self.data_path, self.n * h * w)
        _create_sized(self.state_path, self.n)
        if not self.meta_path.exists():
            meta = {"version": 1, "dataset": getattr(self.dataset, "name", "?"),
                    "fingerprint": self.fingerprint, "n": self.n, "size": [h, w], "dtype": "uint8",
                    "loader": LOADER_KEY}
            _atomic_text(self.meta_path, json.dumps(meta, indent=2))
        for p, want in ((self.data_path, self.n * h * w), (self.state_path, self.n)):
            have = p.stat().st_size
            if have != want:
                raise RuntimeError(f"image cache file {p} has {have} bytes, expected {want}: "
                                   "it is damaged; delete it and rerun")

    def _open(self) -> None:
        """Map the files in this process (again after a fork or in a spawned worker)."""
        if self._pid == os.getpid() and self._data is not None:
            return
        h, w = self.size
        if self.n:
            self._data = np.memmap(self.data_path, dtype=np.uint8, mode="r+", shape=(self.n, h, w))
            self._state = np.memmap(self.state_path, dtype=np.uint8, mode="r+", shape=(self.n,))
        else:
            self._data = np.zeros((0, h, w), np.uint8)
            self._state = np.zeros(0, np.uint8)
        self._pid = os.getpid()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.update(_pid=None, _data=None, _state=None)  # never pickle the mapped arrays
        return state

    # -- reading -----------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.n

    def load_image(self, i: int) -> np.ndarray:
        """Row ``i`` at the cache size: 2-D float32 in [0, 1]."""
        return self.load_u8(i).astype(np.float32) / np.float32(255.0)

    def load_u8(self, i: int) -> np.ndarray:
        """Row ``i`` as stored (uint8, H x W), decoding it first if needed."""
        self._open()
        assert self._data is not None and self._state is not None
        i = int(i)
        st = self._state[i]
        if st == DONE:
            return np.array(self._data[i])
        if st == FAILED:
            return np.zeros(self.size, dtype=np.uint8)
        return self._decode(i)

    def _decode(self, i: int) -> np.ndarray:
        assert self._data is not None and self._state is not None
        u8 = decode_u8(self.dataset, i, self.size)
        if u8 is None:
            self._state[i] = FAILED
            return np.zeros(self.size, dtype=np.uint8)
        self._data[i] = u8
        self._state[i] = DONE  # after the pixels: a reader never sees a half-written row as done
        return u8

    # -- bookkeeping --------------------------------------------------------------------------
    def fill(self, rows: np.ndarray | None = None, progress: Callable[[int, int], None] | None = None,
             threads: int = 0) -> dict[str, int]:
        """Decode every row not yet cached (Pillow releases the GIL: ``threads`` > 1 helps)."""
        self._open()
        assert self._state is not None
        rows = np.arange(self.n) if rows is None else np.asarray(rows, dtype=np.int64)
        todo = rows[self._state[rows] == TODO]
        if threads and threads > 1 and len(todo):
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(threads) as ex:
                for k, _ in enumerate(ex.map(self.load_u8, todo.tolist()), 1):
                    if progress:
                        progress(k, len(todo))
        else:
            for k, i in enumerate(todo.tolist(), 1):
                self.load_u8(i)
                if progress:
                    progress(k, len(todo))
        self.flush()
        return self.stats()

    def flush(self) -> None:
        for arr in (self._data, self._state):
            if isinstance(arr, np.memmap):
                arr.flush()

    def stats(self) -> dict[str, int]:
        self._open()
        assert self._state is not None
        counts = np.bincount(np.asarray(self._state), minlength=3)
        return {"rows": self.n, "done": int(counts[DONE]), "failed": int(counts[FAILED]),
                "todo": int(counts[TODO])}

    def failed_rows(self) -> np.ndarray:
        """Rows unreadable in this run or remembered as unreadable by the cache.

        Also records them in the dataset's ``info["skipped_files"]`` (main process).
        """
        self._open()
        assert self._state is not None
        rows = set(np.flatnonzero(np.asarray(self._state) == FAILED).tolist())
        ds_fn = getattr(self.dataset, "failed_rows", None)
        seen = set(ds_fn().tolist()) if ds_fn is not None else set()
        remembered = sorted(rows - seen)
        if remembered and hasattr(self.dataset, "_merge_failures"):
            note = f"unreadable (remembered by the image cache {self.state_path.name})"
            self.dataset._merge_failures(
                {i: (self.dataset.image_path(i), note) for i in remembered})
        return np.asarray(sorted(rows | seen), dtype=np.int64)

    def describe(self) -> dict[str, Any]:
        return {"path": str(self.data_path), "size": list(self.size), "loader": LOADER_KEY,
                **self.stats()}


def _create_sized(path: Path, nbytes: int) -> None:
    """Create ``path`` with ``nbytes`` reserved, atomically; keep it if it exists."""
    if path.exists():
        return
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes 0600; a shared cache should be readable
        if nbytes:
            try:
                os.posix_fallocate(fd, 0, nbytes)
            except OSError as exc:
                if exc.errno == errno.ENOSPC:
                    raise RuntimeError(
                        f"not enough disk space for the image cache {path} ({nbytes / 2**30:.2f} GiB); "
                        "use --cache-dir elsewhere or --no-cache"
                    ) from exc
                os.ftruncate(fd, nbytes)  # file system without fallocate: sparse file
        os.close(fd)
        fd = -1
        try:
            os.link(tmp, path)  # atomic and never replaces: the first creator wins
        except FileExistsError:
            pass
        except OSError:  # no hard links on this file system
            if not path.exists():
                os.replace(tmp, path)
    finally:
        if fd >= 0:
            os.close(fd)
        if os.path.exists(tmp):
            os.unlink(tmp)


def _atomic_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)
