"""Shared machinery of the learned encoders: parameters, checkpoints, reuse, seeds.

A :class:`TrainedEncoder` is trained by :meth:`~TrainedEncoder.fit` on the
rows it is given (the harness gives the train split) and keeps what it learnt
in a checkpoint folder::

    <cache_dir>/checkpoints/<key>/
        weights.safetensors   # the tensors (safetensors, never pickle)
        config.json           # encoder name, parameters, dataset, rows, seed, versions
        training_log.json     # loss per epoch and whatever the encoder reports

``key`` hashes the encoder's training parameters, the dataset fingerprint, the
exact train rows and the seed, so ``fit`` on the same inputs loads the folder
instead of training again, and :meth:`~TrainedEncoder.state_key` (the key)
puts the trained model into the embedding-cache fingerprint. Passing
``checkpoint=PATH`` loads a given folder at construction; ``fit`` then does
nothing. Folders are written under a temporary name and renamed into place,
so a crash never leaves a half checkpoint that a later run would trust.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from abc import abstractmethod
from enum import Enum
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from cxrbench.encoders.base import Encoder

log = logging.getLogger(__name__)

#: bump when the folder layout changes
CHECKPOINT_FORMAT = 1
WEIGHTS = "weights.safetensors"
CONFIG = "config.json"
TRAINING_LOG = "training_log.json"

#: progress(stage, advance_by, total): the harness's callback (see harness.ProgressFn)
Progress = Callable[[str, float, float], None]


class Precision(str, Enum):
    """Arithmetic used while training and embedding.

    ``bf16`` wraps the forward passes in ``torch.autocast(dtype=bfloat16)``.
    On CPUs without native bf16 (AVX2 only, no AVX-512-BF16/AMX) it is much
    slower than fp32 (see docs/encoders.md), hence the fp32 default.
    """

    FP32 = "fp32"
    BF16 = "bf16"

    @classmethod
    def parse(cls, value: "str | Precision") -> "Precision":
        try:
            return cls(value)
        except ValueError:
            raise ValueError(
                f"unknown precision {value!r}; valid: {', '.join(p.value for p in cls)}"
            ) from None


def autocast(device: torch.device, precision: "str | Precision"):
    """The autocast context for ``precision`` (a no-op for fp32)."""
    if Precision.parse(precision) is Precision.FP32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


# -- checkpoint folders ---------------------------------------------------------
def checkpoint_root(cache_dir: Path | str | None) -> Path:
    """``<cache_dir>/checkpoints`` (``default_cache_dir()`` when None)."""
    from cxrbench.benchmark.store import default_cache_dir

    return Path(cache_dir or default_cache_dir()) / "checkpoints"


def checkpoint_key(name: str, train_config: dict[str, Any], dataset_fingerprint: str,
                   rows: np.ndarray, seed: int) -> str:
    """``<name>-<16 hex>`` from the training config, dataset, exact rows and seed."""
    h = hashlib.sha256()
    h.update(json.dumps({"encoder": name, "config": train_config, "seed": int(seed),
                         "dataset": dataset_fingerprint, "format": CHECKPOINT_FORMAT},
                        sort_keys=True, default=str).encode())
    h.update(np.ascontiguousarray(np.asarray(rows, dtype=np.int64)).tobytes())
    return f"{name}-{h.hexdigest()[:16]}"


def is_checkpoint(folder: Path | str) -> bool:
    folder = Path(folder)
    return (folder / WEIGHTS).is_file() and (folder / CONFIG).is_file()


def file_sha256(path: Path | str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_checkpoint_config(folder: Path | str) -> dict[str, Any]:
    """The ``config.json`` of a checkpoint folder, with errors that say what is wrong."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"checkpoint folder {folder} does not exist; `cxrbench train` prints the folder "
            "of each checkpoint it writes"
        )
    missing = [n for n in (WEIGHTS, CONFIG) if not (folder / n).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{folder} is not a cxrbench checkpoint: {', '.join(missing)} missing "
            f"(a checkpoint folder holds {WEIGHTS}, {CONFIG} and {TRAINING_LOG})"
        )
    try:
        cfg = json.loads((folder / CONFIG).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{folder / CONFIG} is not valid JSON: {exc}") from None
    if cfg.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(
            f"{folder / CONFIG} has checkpoint format {cfg.get('format')!r}; this cxrbench "
            f"reads format {CHECKPOINT_FORMAT}: retrain with `cxrbench train`"
        )
    return cfg


def save_checkpoint(folder: Path | str, tensors: dict[str, torch.Tensor],
                    config: dict[str, Any], training_log: dict[str, Any]) -> Path:
    """Write a checkpoint folder atomically; an existing complete one is kept."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".tmp-{folder.name}-"))
    try:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()},
                  str(tmp / WEIGHTS), metadata={"format": str(CHECKPOINT_FORMAT)})
        for name, obj in ((CONFIG, config), (TRAINING_LOG, training_log)):
            (tmp / name).write_text(json.dumps(obj, indent=2, sort_keys=True, default=_json),
                                    encoding="utf-8")
        try:
            os.rename(tmp, folder)
        except OSError:
            if not is_checkpoint(folder):
                raise
            log.info("checkpoint %s was written meanwhile by another process; keeping it", folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _json(obj: Any) -> Any:
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)


# -- data helpers ---------------------------------------------------------------------
def load_images(train: Any, preprocess: Callable[[np.ndarray], torch.Tensor], *,
                positions: np.ndarray | None = None, progress: Progress | None = None,
                stage: str = "load images", dtype: torch.dtype = torch.float32,
                step: int = 64) -> torch.Tensor:
    """Preprocess rows of a Subset once into one (N, C, H, W) tensor."""
    pos = np.arange(len(train)) if positions is None else np.asarray(positions)
    out: list[torch.Tensor] = []
    for j, p in enumerate(pos):
        out.append(preprocess(train.load_image(int(p))).to(dtype))
        if progress and ((j + 1) % step == 0 or j + 1 == len(pos)):
            progress(stage, (j % step) + 1, len(pos))
    if not out:
        raise ValueError("no training images")
    return torch.stack(out)


def batches(n: int, batch_size: int, generator: torch.Generator | None) -> Iterator[torch.Tensor]:
    """Index batches over ``range(n)``: shuffled with ``generator``, in order without."""
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    for start in range(0, n, batch_size):
        yield order[start:start + batch_size]


def patient_holdout(patient_ids: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of rows whose patient falls in a seeded ``fraction`` of patients."""
    uniq, inv = np.unique(np.asarray(patient_ids).astype(str), return_inverse=True)
    if fraction <= 0 or len(uniq) < 2:
        return np.zeros(len(inv), dtype=bool)
    n_val = min(len(uniq) - 1, max(1, int(round(fraction * len(uniq)))))
    chosen = np.random.default_rng(seed).permutation(len(uniq))[:n_val]
    return np.isin(inv, chosen)


# -- the base class --------------------------------------------------------------------
class TrainedEncoder(Encoder):
    """An encoder with weights learnt by :meth:`fit`, kept in a checkpoint folder.

    Subclasses define :attr:`DEFAULTS` (every parameter with its default),
    optionally :meth:`_normalize` (canonical values, so ``"1024-600"`` and
    ``[600]`` hash alike), and implement :meth:`_build` (untrained modules,
    input and embedding specs), :meth:`_train`, :meth:`_state`, :meth:`_load_state`
    and :meth:`embed`.

    Args:
        checkpoint: a checkpoint folder to load instead of training. Its saved
            parameters define the model; explicitly passed training
            parameters must agree with them.
        device: ``"cpu"`` or ``"cuda"``.
    """

    trainable: ClassVar[bool] = True
    #: every parameter and its default
    DEFAULTS: ClassVar[dict[str, Any]] = {}
    #: parameters that change the embedding but not the trained weights (kept
    #: out of the checkpoint key, e.g. binarising the code)
    EMBED_ONLY: ClassVar[frozenset[str]] = frozenset()
    #: bump when the training code changes what a given config learns
    TRAIN_VERSION: ClassVar[int] = 1

    def __init__(self, *, checkpoint: str | os.PathLike | None = None, device: str = "cpu",
                 **params: Any) -> None:
        full = self.normalize_params(params)
        saved_cfg = None
        if checkpoint is not None:
            saved_cfg = read_checkpoint_config(checkpoint)
            if saved_cfg.get("encoder") != self.name:
                raise ValueError(
                    f"checkpoint {checkpoint} was trained for encoder "
                    f"{saved_cfg.get('encoder')!r}, not {self.name!r}"
                )
            saved = self.normalize_params(saved_cfg.get("params", {}))
            clash = {k: (full[k], saved[k]) for k in params
                     if k not in self.EMBED_ONLY and full[k] != saved[k]}
            if clash:
                detail = "; ".join(f"{k}={a!r} but the checkpoint has {b!r}" for k, (a, b) in clash.items())
                raise ValueError(
                    f"checkpoint {checkpoint} does not match the parameters given ({detail}); "
                    "drop those parameters or train a new checkpoint"
                )
            full = {**saved, **{k: full[k] for k in params if k in self.EMBED_ONLY}}
        super().__init__(device=device, **full)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(
                f"{self.name}: device cuda requested but torch sees no GPU "
                f"(torch {torch.__version__}); use --device cpu"
            )
        if full.get("precision") == "bf16" and self.device.type == "cpu":
            log.warning("%s: bf16 on CPU is usually slower than fp32 and changes the "
                        "embeddings noticeably (docs/encoders.md)", self.name)
        self.checkpoint_path: Path | None = None
        self.checkpoint_config: dict[str, Any] | None = None
        self.training_log: dict[str, Any] | None = None
        self._weights_sha: str | None = None
        self._fixed = checkpoint is not None
        self._reused: bool | None = None
        self._fit_seconds: float | None = None
        self._build()
        if checkpoint is not None:
            self._adopt(Path(checkpoint))

    # -- parameters ------------------------------------------------------------------
    @classmethod
    def normalize_params(cls, params: dict[str, Any]) -> dict[str, Any]:
        """Every parameter, defaults filled, in canonical form; unknown names raise."""
        unknown = set(params) - set(cls.DEFAULTS)
        if unknown:
            raise ValueError(
                f"unknown parameter(s) {', '.join(sorted(map(repr, unknown)))} for encoder "
                f"{cls.name!r}; valid: {', '.join(sorted(cls.DEFAULTS))}, checkpoint, device"
            )
        full = {k: params.get(k, v) for k, v in cls.DEFAULTS.items()}
        full = cls._normalize(dict(full))
        if "precision" in full:
            full["precision"] = Precision.parse(full["precision"]).value
        return full

    @classmethod
    def _normalize(cls, p: dict[str, Any]) -> dict[str, Any]:
        return p

    def train_config(self) -> dict[str, Any]:
        """What the trained weights depend on (hashed into the checkpoint key)."""
        cfg = {k: v for k, v in self.params().items() if k not in self.EMBED_ONLY}
        return {"params": cfg, "train_version": self.TRAIN_VERSION, **self._key_extra()}

    def _key_extra(self) -> dict[str, Any]:
        """More facts the weights depend on (e.g. a backbone's fingerprint)."""
        return {}

    # -- to implement ------------------------------------------------------------------
    @abstractmethod
    def _build(self) -> None:
        """Create the untrained modules and set ``input_spec``/``embedding_spec``."""

    @abstractmethod
    def _train(self, train: Any, progress: Progress | None, seed: int) -> dict[str, Any]:
        """Build fresh seeded modules, train them on the Subset ``train``; return the log."""

    @abstractmethod
    def _state(self) -> dict[str, torch.Tensor]:
        """The tensors to save."""

    @abstractmethod
    def _load_state(self, tensors: dict[str, torch.Tensor], config: dict[str, Any],
                    training_log: dict[str, Any]) -> None:
        """Restore the model from saved tensors."""

    def _checkpoint_extra(self) -> dict[str, Any]:
        """Facts for config.json that ``_load_state`` needs (e.g. label names)."""
        return {}

    # -- fit / reuse --------------------------------------------------------------------
    def checkpoint_key_for(self, train: Any, seed: int) -> str:
        return checkpoint_key(self.name, self.train_config(), train.dataset.fingerprint(),
                              train.indices, seed)

    def fit(self, train: Any, *, progress: Progress | None = None, seed: int = 0) -> None:
        """Load the matching checkpoint, or train on ``train`` and save one.

        With ``checkpoint=PATH`` given at construction this does nothing
        (beyond a warning when the checkpoint was trained on another dataset).
        """
        if self._fixed:
            saved = (self.checkpoint_config or {}).get("dataset", {}).get("fingerprint")
            if saved != train.dataset.fingerprint():
                log.warning(
                    "%s: checkpoint %s was trained on another dataset (fingerprint %s, now %s): "
                    "its training images may be among the queries",
                    self.name, self.checkpoint_path, saved, train.dataset.fingerprint())
            return
        key = self.checkpoint_key_for(train, seed)
        folder = checkpoint_root(self.cache_dir) / key
        if is_checkpoint(folder):
            log.info("%s: reusing checkpoint %s", self.name, folder)
            self._adopt(folder)
            self._reused = True
            return
        torch.manual_seed(seed)  # _train builds fresh, seeded modules
        t0 = time.perf_counter()
        training_log = self._train(train, progress, seed)
        seconds = time.perf_counter() - t0
        from cxrbench import __version__

        ds = train.dataset
        config = {
            "format": CHECKPOINT_FORMAT,
            "encoder": self.name,
            "class": f"{type(self).__module__}.{type(self).__qualname__}",
            "key": key,
            "params": self.params(),
            "train_config": self.train_config(),
            "seed": int(seed),
            "dataset": {
                "name": getattr(ds, "name", type(ds).__name__),
                "fingerprint": ds.fingerprint(),
                "n_train": int(len(train)),
                "rows_sha256": hashlib.sha256(
                    np.ascontiguousarray(np.asarray(train.indices, dtype=np.int64)).tobytes()
                ).hexdigest(),
            },
            "trained_on": {"device": str(self.device), "torch": torch.__version__,
                           "cxrbench": __version__, "threads": torch.get_num_threads()},
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "train_seconds": seconds,
            "extra": self._checkpoint_extra(),
        }
        training_log = {**training_log, "train_seconds": seconds}
        save_checkpoint(folder, self._state(), config, training_log)
        log.info("%s: trained in %.1f s, checkpoint %s", self.name, seconds, folder)
        # reload from disk: a fresh fit and a reused checkpoint embed identically
        self._adopt(folder)
        self._reused = False
        self._fit_seconds = seconds

    def _adopt(self, folder: Path) -> None:
        cfg = read_checkpoint_config(folder)
        if cfg.get("encoder") != self.name:
            raise ValueError(f"checkpoint {folder} belongs to encoder {cfg.get('encoder')!r}")
        log_path = folder / TRAINING_LOG
        training_log = json.loads(log_path.read_text(encoding="utf-8")) if log_path.exists() else {}
        tensors = load_file(str(folder / WEIGHTS), device="cpu")
        self._load_state(tensors, cfg, training_log)
        self.checkpoint_path = folder
        self.checkpoint_config = cfg
        self.training_log = training_log
        self._weights_sha = file_sha256(folder / WEIGHTS)

    @property
    def is_trained(self) -> bool:
        return self.checkpoint_path is not None

    def _require_trained(self) -> None:
        if not self.is_trained:
            raise RuntimeError(
                f"encoder {self.name!r} is not trained: call fit() (cxrbench run does) "
                "or pass checkpoint=PATH (--set checkpoint=PATH)"
            )

    # -- identity and reporting ----------------------------------------------------------
    def state_key(self) -> str:
        return "" if self.checkpoint_config is None else str(self.checkpoint_config.get("key", ""))

    def weights_sha256(self) -> str | None:
        return self._weights_sha

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d["checkpoint"] = None if self.checkpoint_path is None else {
            "path": str(self.checkpoint_path), "key": self.state_key()}
        return d

    def report(self) -> dict[str, Any]:
        if self.checkpoint_config is None:
            return {}
        cfg = self.checkpoint_config
        losses = [e.get("loss") for e in (self.training_log or {}).get("epochs", [])]
        return {"training": {
            "checkpoint": str(self.checkpoint_path),
            "key": cfg.get("key"),
            "reused": self._reused if not self._fixed else True,
            "given": self._fixed,
            "train_seconds": cfg.get("train_seconds"),
            "trained_on": cfg.get("trained_on"),
            "dataset": cfg.get("dataset"),
            "seed": cfg.get("seed"),
            "epochs": len(losses),
            "final_loss": losses[-1] if losses else None,
        }}
