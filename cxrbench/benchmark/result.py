"""The Result of one run: a versioned JSON document, written atomically, never overwritten."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1

_PACKAGES = (
    "cxrbench", "numpy", "torch", "torchvision", "faiss-cpu", "scikit-learn", "timm",
    "open-clip-torch", "transformers", "pillow", "pydicom",
)


@dataclass
class Result:
    """Everything about one run. ``metrics`` keys follow ``<metric>@<k>[<label>]``."""

    run_id: str
    run_fingerprint: str
    created: str
    config: dict[str, Any]
    encoder: dict[str, Any]
    dataset: dict[str, Any]
    protocol: dict[str, Any]
    metrics: dict[str, float]
    ci: dict[str, list[float]] = field(default_factory=dict)
    higher_is_better: dict[str, bool] = field(default_factory=dict)
    skipped_metrics: dict[str, str] = field(default_factory=dict)
    exclusions: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    throughput: dict[str, float] = field(default_factory=dict)
    cache: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION
    path: str | None = field(default=None, compare=False)

    # -- serialisation --------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("path", None)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True, default=_json_default)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Result":
        v = d.get("schema_version")
        if v != SCHEMA_VERSION:
            raise ValueError(
                f"Result schema_version {v!r} is not supported (this cxrbench reads {SCHEMA_VERSION})"
            )
        known = {f for f in cls.__dataclass_fields__ if f != "path"}
        return cls(**{k: v for k, v in d.items() if k in known})

    @classmethod
    def load(cls, path: str | Path) -> "Result":
        path = Path(path)
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not a valid Result JSON ({exc})") from None
        r = cls.from_dict(d)
        r.path = str(path)
        return r

    def save(self, out_dir: str | Path) -> Path:
        """Write ``<out_dir>/<dataset>/<run_id>.json`` atomically; never overwrite."""
        folder = Path(out_dir) / self.dataset.get("name", "dataset")
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{self.run_id}.json"
        atomic_create(path, self.to_json() + "\n")
        self.path = str(path)
        return path

    # -- convenience ------------------------------------------------------------
    def metric(self, key: str) -> float | None:
        return self.metrics.get(key)


def _json_default(o: Any) -> Any:
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "value"):
        return o.value
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def atomic_create(path: Path, text: str) -> None:
    """Create ``path`` with ``text`` atomically; FileExistsError if it exists.

    The content goes to a temporary file in the same folder, which is then
    hard-linked to the final name (link fails if the name exists, so an earlier
    result is never overwritten) and removed.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise FileExistsError(f"{path} exists; results are never overwritten") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def new_run_id(encoder: str, dataset: str, fingerprint: str) -> str:
    now = datetime.now(timezone.utc)
    safe = lambda s: "".join(c if c.isalnum() or c in "-_." else "_" for c in s)  # noqa: E731
    return f"{now:%Y%m%dT%H%M%S}{now.microsecond:06d}Z-{safe(encoder)}-{safe(dataset)}-{fingerprint[:8]}"


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def package_versions() -> dict[str, str]:
    out = {}
    for p in _PACKAGES:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            pass
    return out


def git_commit() -> str | None:
    try:
        here = Path(__file__).resolve().parent
        r = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5
        )
        if r.returncode == 0:
            dirty = subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=here, capture_output=True, text=True, timeout=5,
            ).stdout.strip()
            return r.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return None


def host_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
    }
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        info["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:  # pragma: no cover - torch is a dependency
        pass
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return info
