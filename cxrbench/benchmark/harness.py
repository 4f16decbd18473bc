"""The retrieval harness: fit -> embed (cached) -> exact k-NN -> metrics -> Result."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

from cxrbench import __version__
from cxrbench.benchmark.result import (
    Result,
    git_commit,
    host_info,
    new_run_id,
    package_versions,
    utc_now,
)
from cxrbench.benchmark.search import NeighborTable, knn_search
from cxrbench.benchmark.store import EmbeddingStore, default_cache_dir, store_key
from cxrbench.datasets import DATASETS, Dataset, Subset
from cxrbench.encoders import ENCODERS, Encoder
from cxrbench.encoders.base import check_batch
from cxrbench.metrics.base import EvalData
from cxrbench.metrics.evaluate import evaluate

log = logging.getLogger(__name__)

#: progress(stage, advance_by, total): stage is a short label; total is set on
#: the first call of a stage. One callback for all reporting (library never prints).
ProgressFn = Callable[[str, int, int], None]


class Protocol(str, Enum):
    """Which images query which gallery."""

    HOLDOUT = "holdout"  # gallery = train split, queries = test split
    LEAVE_ONE_OUT = "leave-one-out"  # every image queries all others
    KFOLD = "kfold"  # patient-level folds; each fold queries the rest

    @classmethod
    def parse(cls, value: "str | Protocol") -> "Protocol":
        try:
            return cls(value)
        except ValueError:
            raise ValueError(
                f"unknown protocol {value!r}; valid: {', '.join(p.value for p in cls)}"
            ) from None


@dataclass
class RunConfig:
    """Everything that defines a run; YAML configs and the CLI fill this."""

    encoder: str = "raw"
    dataset: str = "phantom"
    root: str | None = None
    encoder_params: dict[str, Any] = field(default_factory=dict)
    dataset_params: dict[str, Any] = field(default_factory=dict)
    protocol: str = "holdout"
    folds: int = 5
    k: list[int] = field(default_factory=lambda: [1, 5, 10])
    metrics: list[str] | None = None
    exclude_same_patient: bool = True
    seed: int = 0
    device: str = "cpu"
    batch_size: int = 64
    num_workers: int = 0
    n_boot: int = 200
    out: str | None = "results"
    cache_dir: str | None = None
    use_cache: bool = True
    save_neighbors: bool = False

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunConfig":
        known = set(cls.__dataclass_fields__)
        d = dict(d)
        # accept nested `encoder: {name: raw, size: 32}` as well as flat params
        for kind in ("encoder", "dataset"):
            v = d.get(kind)
            if isinstance(v, dict):
                v = dict(v)
                d[kind] = v.pop("name")
                d[f"{kind}_params"] = {**v, **d.get(f"{kind}_params", {})}
        unknown = set(d) - known
        if unknown:
            raise ValueError(
                f"unknown run config keys {sorted(unknown)}; valid keys: {', '.join(sorted(known))}"
            )
        cfg = cls(**d)
        if isinstance(cfg.k, int):
            cfg.k = [cfg.k]
        cfg.k = sorted({int(x) for x in cfg.k})
        return cfg

    def to_dict(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in self.__dataclass_fields__}


class _Images(TorchDataset):
    """Rows of a dataset, preprocessed for an encoder (runs in DataLoader workers)."""

    def __init__(self, source: Any, rows: np.ndarray, preprocess: Callable) -> None:
        self.source, self.rows, self.preprocess = source, rows, preprocess

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, j: int) -> torch.Tensor:
        return self.preprocess(self.source.load_image(int(self.rows[j])))


def create_encoder(name: str, **params: Any) -> Encoder:
    return ENCODERS.create(name, **params)


def create_dataset(name: str, root: str | None = None, **params: Any) -> Dataset:
    """Build a registered dataset; the generic ``subset`` parameter (any dataset)
    restricts rows/labels (see :mod:`cxrbench.datasets._filter`)."""
    subset = params.pop("subset", None)
    ds = DATASETS.create(name, root=root, **params)
    if subset:
        from cxrbench.datasets._filter import apply_subset

        ds = apply_subset(ds, subset)
    return ds


def image_source(dataset: Dataset, encoder: Encoder, cfg: RunConfig) -> Any:
    """Where the harness reads images: decoded, resized and 8-bit quantised once
    (the on-disk decoded-image cache; without the cache, the same pixels each time)."""
    from cxrbench.datasets.imagecache import cached_source, uncached_source

    if not cfg.use_cache:
        return uncached_source(dataset, encoder.input_spec.size)
    return cached_source(dataset, encoder.input_spec.size, _cache_dir(cfg))


def unreadable_rows(dataset: Dataset, encoder: Encoder, cfg: RunConfig) -> np.ndarray:
    """Rows the dataset skipped as unreadable (``on_error: skip``), found in any process or run."""
    source = image_source(dataset, encoder, cfg)
    fn = getattr(source, "failed_rows", None)
    return np.asarray(fn() if fn is not None else [], dtype=np.int64)


def _cache_dir(cfg: RunConfig) -> Path:
    return Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir()


def embed_rows(
    encoder: Encoder,
    source: Any,
    rows: np.ndarray,
    *,
    batch_size: int = 64,
    num_workers: int = 0,
    progress: ProgressFn | None = None,
    stage: str = "embed",
    check_first: bool = True,
) -> np.ndarray:
    """Embed the given dataset rows in order (no caching)."""
    loader = DataLoader(
        _Images(source, rows, encoder.preprocess),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
    )
    out = []
    checked = not check_first
    with torch.inference_mode():
        for batch in loader:
            if not checked:
                check_batch(batch, encoder.input_spec, encoder.name)
                checked = True
            emb = np.asarray(encoder.embed(batch))
            if emb.ndim != 2 or emb.shape[0] != batch.shape[0]:
                raise ValueError(
                    f"encoder {encoder.name!r} returned shape {emb.shape} for a batch of {batch.shape[0]}"
                )
            out.append(emb)
            if progress:
                progress(stage, batch.shape[0], len(rows))
    if not out:
        dim = encoder.embedding_spec.dim if encoder.embedding_spec else 0
        return np.zeros((0, dim), dtype=np.float32)
    return np.concatenate(out)


def embed_dataset(
    encoder: Encoder,
    dataset: Dataset,
    cfg: RunConfig,
    progress: ProgressFn | None = None,
    stage: str = "embed",
) -> tuple[np.ndarray, dict[str, Any]]:
    """Embeddings of every row of ``dataset`` through the on-disk store."""
    n = len(dataset)
    source = image_source(dataset, encoder, cfg)
    preprocessing = {"input": encoder.describe()["input"],
                     "loader": getattr(source, "loader_key", "dataset")}
    info: dict[str, Any] = {}
    t0 = time.perf_counter()
    if not cfg.use_cache:
        emb = embed_rows(encoder, source, np.arange(n), batch_size=cfg.batch_size,
                         num_workers=cfg.num_workers, progress=progress, stage=stage)
        info.update(hit=False, rows_computed=n)
    else:
        key = store_key(encoder.fingerprint(), dataset.fingerprint(), preprocessing)
        store = EmbeddingStore(_cache_dir(cfg), key, meta={
            "encoder": encoder.describe(), "dataset": dataset.describe(),
            "dataset_fingerprint": dataset.fingerprint(), "preprocessing": preprocessing,
        })
        info["key"] = key
        if store.complete():
            emb = np.asarray(store.load(mmap=False))
            info.update(hit=True, rows_computed=0)
            timing = store.timing()  # how fast it was when it was computed
            if timing:
                info["timed_rows"], info["timed_seconds"] = timing["rows"], timing["seconds"]
            if progress:
                progress(stage, n, n)
        else:
            chunk = max(cfg.batch_size, 32 * cfg.batch_size)
            emb, computed = store.compute(
                n, chunk,
                lambda a, b: embed_rows(encoder, source, np.arange(a, b), batch_size=cfg.batch_size,
                                        num_workers=cfg.num_workers, progress=progress, stage=stage,
                                        check_first=(a == 0)),
                on_chunk_done=(lambda m: progress(stage, m, n)) if progress else None,
            )
            info.update(hit=False, rows_computed=computed, resumed_rows=n - computed)
            store.record_timing(computed, time.perf_counter() - t0)
    info["seconds"] = time.perf_counter() - t0
    if encoder.embedding_spec is not None and emb.shape[1] != _row_width(encoder):
        raise ValueError(
            f"encoder {encoder.name!r} declares dim {encoder.embedding_spec.dim} "
            f"but produced {emb.shape[1]} columns"
        )
    return emb, info


def _row_width(encoder: Encoder) -> int:
    spec = encoder.embedding_spec
    return spec.dim // 8 if spec.distance.value == "hamming" else spec.dim


def patient_folds(patient_ids: np.ndarray, n_folds: int, seed: int) -> np.ndarray:
    """Fold number per row; all images of one patient share a fold."""
    uniq, inv = np.unique(np.asarray(patient_ids).astype(str), return_inverse=True)
    perm = np.random.default_rng(seed).permutation(len(uniq))
    fold_of_patient = np.empty(len(uniq), dtype=np.int64)
    fold_of_patient[perm] = np.arange(len(uniq)) % n_folds
    return fold_of_patient[inv]


def _fit(encoder: Encoder, dataset: Dataset, rows: np.ndarray, cfg: RunConfig,
         progress: ProgressFn | None) -> float:
    t0 = time.perf_counter()
    if len(rows) == 0:
        raise ValueError(
            f"encoder {encoder.name!r} needs training images but dataset {dataset.name!r} "
            "has no train split"
        )

    def fit_progress(stage: str, done: float, total: float) -> None:
        if progress:
            progress(f"fit {stage}", int(done), int(total))

    if encoder.cache_dir is None:
        encoder.cache_dir = _cache_dir(cfg)
    source = image_source(dataset, encoder, cfg)  # decoded once, reused every epoch
    encoder.fit(Subset(dataset, rows, source), progress=fit_progress, seed=cfg.seed)
    return time.perf_counter() - t0


def _merge(tables: list[NeighborTable]) -> NeighborTable:
    t = NeighborTable(
        np.concatenate([x.queries for x in tables]),
        np.concatenate([x.neighbors for x in tables]),
        np.concatenate([x.distances for x in tables]),
    )
    t.excluded_self = sum(x.excluded_self for x in tables)
    t.excluded_same_patient = sum(x.excluded_same_patient for x in tables)
    order = np.argsort(t.queries, kind="stable")
    t.queries, t.neighbors, t.distances = t.queries[order], t.neighbors[order], t.distances[order]
    return t


def run(
    encoder: str | Encoder | None = None,
    dataset: str | Dataset | None = None,
    *,
    config: RunConfig | dict[str, Any] | None = None,
    progress: ProgressFn | bool | None = None,
    **overrides: Any,
) -> Result:
    """Run one retrieval benchmark and return (and, with ``out``, save) its Result.

    Example:
        >>> import cxrbench
        >>> r = cxrbench.run("raw", "phantom", dataset_params={"n": 200}, out=None)
        >>> r.metrics["knn_auc@10"]  # doctest: +SKIP
    """
    if isinstance(config, dict):
        cfg = RunConfig.from_dict(config)
    else:
        cfg = config or RunConfig()
    cfg = RunConfig.from_dict({**cfg.to_dict(), **overrides})
    if isinstance(encoder, str):
        cfg.encoder = encoder
    if isinstance(dataset, str):
        cfg.dataset = dataset
    protocol = Protocol.parse(cfg.protocol)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed % 2**32)

    own_progress = None
    if progress is True:
        from cxrbench.progress import RichProgress

        own_progress = RichProgress()
        progress = own_progress.update
    elif progress is False:
        progress = None
    try:
        return _run(encoder, dataset, cfg, protocol, progress)
    finally:
        if own_progress is not None:
            own_progress.close()


def _run(encoder_arg, dataset_arg, cfg: RunConfig, protocol: Protocol,
         progress: ProgressFn | None) -> Result:
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    ds = dataset_arg if isinstance(dataset_arg, Dataset) else create_dataset(
        cfg.dataset, cfg.root, **cfg.dataset_params)
    cfg.dataset = getattr(ds, "name", cfg.dataset)
    ix = ds.index
    timings["load_index"] = time.perf_counter() - t0
    if len(ix) < 2:
        raise ValueError(f"dataset {cfg.dataset!r} has {len(ix)} images; retrieval needs at least 2")

    def make_encoder() -> Encoder:
        if isinstance(encoder_arg, Encoder):
            return encoder_arg
        return create_encoder(cfg.encoder, device=cfg.device, **cfg.encoder_params)

    enc = make_encoder()
    cfg.encoder = getattr(enc, "name", cfg.encoder)
    k_max = max(cfg.k)
    all_rows = np.arange(len(ix))
    train_rows = ds.split_indices("train")
    fit_s = embed_s = search_s = 0.0
    embed_info: list[dict[str, Any]] = []
    tables: list[NeighborTable] = []
    protocol_info: dict[str, Any] = {"name": protocol.value}
    searched: list[np.ndarray] = []  # gallery rows of each search (ndcg's ideal needs them)

    def search(emb, q_rows, g_rows) -> NeighborTable:
        # images skipped as unreadable (on_error: skip) are neither queried nor retrieved
        bad = unreadable_rows(ds, enc, cfg)
        if len(bad):
            q_rows, g_rows = np.setdiff1d(q_rows, bad), np.setdiff1d(g_rows, bad)
            protocol_info["skipped_unreadable"] = int(len(bad))
        searched.append(g_rows)
        return knn_search(
            emb[q_rows], emb[g_rows], k_max, enc.embedding_spec.distance,
            query_rows=q_rows, gallery_rows=g_rows, patient_ids=ix.patient_ids,
            exclude_same_patient=cfg.exclude_same_patient,
        )

    if protocol is Protocol.KFOLD:
        folds = patient_folds(ix.patient_ids, cfg.folds, cfg.seed)
        protocol_info.update(folds=cfg.folds, fold_seed=cfg.seed)
        emb = None
        for f in range(cfg.folds):
            q_rows, g_rows = np.flatnonzero(folds == f), np.flatnonzero(folds != f)
            if enc.trainable:
                if f > 0:
                    enc = make_encoder()
                fit_s += _fit(enc, ds, g_rows, cfg, progress)
            if emb is None or enc.trainable:
                emb, info = embed_dataset(enc, ds, cfg, progress, stage=f"embed fold {f + 1}")
                embed_info.append(info)
                embed_s += info["seconds"]
            t0 = time.perf_counter()
            tables.append(search(emb, q_rows, g_rows))
            search_s += time.perf_counter() - t0
        table = _merge(tables)
        protocol_info["fit_per_fold"] = enc.trainable
    else:
        if enc.trainable:
            fit_s += _fit(enc, ds, train_rows, cfg, progress)
        emb, info = embed_dataset(enc, ds, cfg, progress)
        embed_info.append(info)
        embed_s += info["seconds"]
        if protocol is Protocol.HOLDOUT:
            q_rows = ds.split_indices("test")
            g_rows = train_rows
            if len(q_rows) == 0 or len(g_rows) == 0:
                raise ValueError(
                    f"holdout needs train and test images; dataset {cfg.dataset!r} has "
                    f"{len(g_rows)} train and {len(q_rows)} test. Use --protocol leave-one-out or kfold."
                )
        else:
            g_rows = all_rows
            # a trainable encoder has seen the train split: score only the others
            q_rows = np.setdiff1d(all_rows, train_rows) if enc.trainable else all_rows
            protocol_info["queries"] = "non-train rows" if enc.trainable else "all rows"
        t0 = time.perf_counter()
        table = search(emb, q_rows, g_rows)
        search_s = time.perf_counter() - t0
    timings.update(fit=fit_s, embed=embed_s, search=search_s)
    if progress:
        progress("search", len(table.queries), len(table.queries))

    t0 = time.perf_counter()
    data = EvalData(
        queries=table.queries, neighbors=table.neighbors, distances=table.distances,
        labels=ix.labels, label_names=tuple(ds.label_names), patient_ids=ix.patient_ids,
        single_label=ds.single_label, irma_codes=ix.irma_codes,
        irma_tree=ds.irma_tree() if ix.irma_codes is not None else None,
        gallery=searched[0] if len(searched) == 1 else tuple(searched),
        query_gallery=folds[table.queries] if protocol is Protocol.KFOLD else None,
    )
    ev = evaluate(data, cfg.metrics, cfg.k, n_boot=cfg.n_boot, seed=cfg.seed)
    timings["metrics"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - t_start

    computed = sum(i.get("rows_computed", 0) for i in embed_info)
    # embedding speed: of this run, or as recorded when cached embeddings were computed
    timed_rows = computed or sum(i.get("timed_rows", 0) for i in embed_info)
    timed_s = embed_s if computed else sum(i.get("timed_seconds", 0.0) for i in embed_info)
    enc_desc = enc.describe()
    ds_desc = ds.describe()
    ds_desc["fingerprint"] = ds.fingerprint()
    ds_desc["info"] = dict(ds.info)
    protocol_info.update(n_queries=int(len(table.queries)), k_max=k_max)
    if ev.notes:  # e.g. queries excluded from a metric, an approximate IRMA hierarchy
        protocol_info["metric_notes"] = dict(ev.notes)
    run_fp = _run_fingerprint(enc_desc["fingerprint"], ds_desc["fingerprint"], cfg)
    res = Result(
        run_id=new_run_id(cfg.encoder, cfg.dataset, run_fp),
        run_fingerprint=run_fp,
        created=utc_now(),
        config=cfg.to_dict(),
        encoder=enc_desc,
        dataset=ds_desc,
        protocol=protocol_info,
        metrics=ev.values,
        ci={k: list(v) for k, v in ev.ci.items()},
        higher_is_better=ev.higher_is_better,
        skipped_metrics=ev.skipped,
        exclusions={
            "self": True,
            "same_patient": cfg.exclude_same_patient,
            "excluded_self": table.excluded_self,
            "excluded_same_patient": table.excluded_same_patient,
        },
        timings=timings,
        throughput={
            "images_per_s": (timed_rows / timed_s) if timed_rows and timed_s > 0 else None,
            "seconds_per_image": (timed_s / timed_rows) if timed_rows else None,
            "from_cache": not computed,
        },
        cache={"embeddings": embed_info},
        environment={
            "cxrbench": __version__, "packages": package_versions(),
            "git_commit": git_commit(), "host": host_info(), "n_boot": ev.n_boot,
        },
        extra=enc.report(),
    )
    if cfg.out:
        path = res.save(cfg.out)
        if cfg.save_neighbors:
            table.save_tsv(path.with_suffix(".neighbors.tsv"), ix.ids)
    res._table = table  # type: ignore[attr-defined]  # in-memory only, for callers
    return res


def _run_fingerprint(enc_fp: str, ds_fp: str, cfg: RunConfig) -> str:
    """Identity of what a run measures: same fingerprint, same numbers."""
    key = {
        "encoder": enc_fp, "dataset": ds_fp, "protocol": cfg.protocol, "folds": cfg.folds,
        "k": cfg.k, "metrics": cfg.metrics, "exclude_same_patient": cfg.exclude_same_patient,
        "seed": cfg.seed, "n_boot": cfg.n_boot,
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
