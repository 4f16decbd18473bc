"""On-disk embedding cache, resumable chunk by chunk.

Layout under ``<cache_dir>/embeddings/<key>/``:

* ``meta.json``            what was embedded (encoder, dataset, preprocessing)
* ``chunk-<start>-<stop>.npy``  finished row ranges, each written atomically
* ``embeddings.npy``       all rows, written once every chunk is done

``key`` hashes the encoder fingerprint, the dataset fingerprint and the
preprocessing, so changing metrics, k, protocol or exclusions reuses it. An
interrupted run leaves its finished chunks; the next run computes only the
missing ones.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

_CHUNK_RE = re.compile(r"^chunk-(\d+)-(\d+)\.npy$")


def default_cache_dir() -> Path:
    env = os.environ.get("CXRBENCH_CACHE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return Path(xdg) / "cxrbench" if xdg else Path.home() / ".cache" / "cxrbench"


def atomic_save_npy(path: Path, arr: np.ndarray) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".npy")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.save(fh, arr)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def store_key(encoder_fp: str, dataset_fp: str, preprocessing: dict[str, Any]) -> str:
    h = hashlib.sha256()
    h.update(encoder_fp.encode())
    h.update(dataset_fp.encode())
    h.update(json.dumps(preprocessing, sort_keys=True, default=str).encode())
    return h.hexdigest()[:20]


class EmbeddingStore:
    """The cached embeddings of one (encoder, dataset, preprocessing) triple."""

    def __init__(self, cache_dir: Path | str, key: str, meta: dict[str, Any] | None = None):
        self.dir = Path(cache_dir) / "embeddings" / key
        self.key = key
        self.meta = meta or {}

    @property
    def final_path(self) -> Path:
        return self.dir / "embeddings.npy"

    def complete(self) -> bool:
        return self.final_path.exists()

    @property
    def timing_path(self) -> Path:
        return self.dir / "timing.json"

    def record_timing(self, rows: int, seconds: float) -> None:
        """Remember how long embedding took (rows computed in one go), for cache hits."""
        if rows > 0 and seconds > 0:
            atomic_write_text(self.timing_path, json.dumps({"rows": rows, "seconds": seconds}))

    def timing(self) -> dict[str, float] | None:
        try:
            return json.loads(self.timing_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def load(self, mmap: bool = True) -> np.ndarray:
        return np.load(self.final_path, mmap_mode="r" if mmap else None)

    def chunks(self) -> dict[tuple[int, int], Path]:
        if not self.dir.exists():
            return {}
        out = {}
        for p in self.dir.iterdir():
            m = _CHUNK_RE.match(p.name)
            if m:
                out[(int(m.group(1)), int(m.group(2)))] = p
        return out

    def compute(
        self,
        n_rows: int,
        chunk_rows: int,
        embed_range: Callable[[int, int], np.ndarray],
        on_chunk_done: Callable[[int], None] | None = None,
    ) -> tuple[np.ndarray, int]:
        """Fill the store, computing only missing chunks.

        Args:
            embed_range: ``(start, stop) -> (stop - start, dim)`` embeddings.
            on_chunk_done: called with the number of rows of each chunk taken
                from disk (resumed), for progress reporting.

        Returns:
            (embeddings, rows_computed_now)
        """
        self.dir.mkdir(parents=True, exist_ok=True)
        meta_path = self.dir / "meta.json"
        if not meta_path.exists():
            atomic_write_text(meta_path, json.dumps(self.meta, indent=2, sort_keys=True, default=str))
        have = self.chunks()
        computed = 0
        parts: list[np.ndarray] = []
        for start in range(0, n_rows, chunk_rows):
            stop = min(start + chunk_rows, n_rows)
            path = self.dir / f"chunk-{start:09d}-{stop:09d}.npy"
            if (start, stop) in have:
                arr = np.load(path)
                if on_chunk_done:
                    on_chunk_done(stop - start)
            else:
                arr = np.asarray(embed_range(start, stop))
                if arr.shape[0] != stop - start:
                    raise RuntimeError(f"embedder returned {arr.shape[0]} rows for {stop - start}")
                atomic_save_npy(path, arr)
                computed += stop - start
            parts.append(arr)
        emb = np.concatenate(parts) if parts else np.zeros((0, 0), dtype=np.float32)
        atomic_save_npy(self.final_path, emb)
        for p in self.chunks().values():  # the final file supersedes the chunks
            p.unlink(missing_ok=True)
        return emb, computed
