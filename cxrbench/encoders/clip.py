"""CLIP-family image encoders through open_clip: L2-normalised image embeddings, cosine search.

``--set model=ViT-B-16 pretrained=<tag>|<checkpoint file>|hf-hub:<repo>|local-dir:<dir>``.

- a tag (``openai``, ``laion2b_s34b_b88k``, ...) resolves through open_clip's
  pretrained table and the Hugging Face cache (downloaded when online);
- a file is loaded by open_clip with ``weights_only=True`` (or safetensors);
- ``hf-hub:<repo>`` (BiomedCLIP and other medical CLIPs) or ``local-dir:<dir>``
  take config, preprocessing and weights from the repo / folder; they may be
  given as ``model`` or as ``pretrained``;
- ``model_config=<file.json>`` registers a custom architecture (open_clip's
  ``add_model_config``) named after the file stem;
- ``pretrained=none`` builds a randomly initialised model, only when asked.

The model's own preprocessing is followed (its ``preprocess_cfg``: size,
resize mode, interpolation, mean/std), greyscale replicated to 3 channels;
mean/std normalisation happens inside :meth:`ClipEncoder.embed`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from cxrbench.encoders import ENCODERS
from cxrbench.encoders._runtime import (
    Precision,
    Runner,
    grey_to_channels,
    normalize,
    resize_crop,
    to_numpy32,
)
from cxrbench.encoders._weights import (
    MissingWeightsError,
    existing_file,
    hf_cache_hint,
    hf_offline,
    sha256_file,
)
from cxrbench.encoders.base import EmbeddingSpec, Encoder, InputSpec


_SCHEMAS = ("hf-hub:", "local-dir:")
_WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".tar", ".ckpt", ".npz")


def _open_clip():
    try:
        import open_clip
    except ImportError:
        raise ImportError(
            "the clip encoder needs open_clip: pip install 'cxrbench[clip]' (open-clip-torch)"
        ) from None
    return open_clip


class _ImageTower(torch.nn.Module):
    def __init__(self, clip: torch.nn.Module) -> None:
        super().__init__()
        self.clip = clip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.clip.encode_image(x, normalize=True)


@ENCODERS.register("clip")
class ClipEncoder(Encoder):
    """CLIP image tower via open_clip (model=, pretrained=tag|PATH|hf-hub:repo): cosine."""

    name = "clip"

    def __init__(self, model: str = "ViT-B-16", pretrained: str | None = None,
                 model_config: str | None = None, precision: str = "fp32",
                 **params: Any) -> None:
        oc = _open_clip()
        if model_config:
            cfg_path = Path(os.path.expanduser(str(model_config)))
            if not cfg_path.exists():
                raise FileNotFoundError(f"clip: model_config {cfg_path} does not exist")
            oc.add_model_config(cfg_path)
            if model == "ViT-B-16" and cfg_path.is_file():
                model = cfg_path.stem
        pretrained = None if pretrained is None else str(pretrained)
        if pretrained and pretrained.startswith(_SCHEMAS):
            model, pretrained = pretrained, None
        super().__init__(model=str(model), pretrained=pretrained, model_config=model_config,
                         precision=str(precision), **params)
        self.precision = Precision.parse(precision, self.device)
        self.model_name = str(model)
        clip, self.weights_path = self._create(oc, self.model_name, pretrained)
        self._sha = sha256_file(self.weights_path) if self.weights_path else None

        pp = dict(clip.visual.preprocess_cfg) if hasattr(clip.visual, "preprocess_cfg") else {}
        size = pp.get("size", getattr(clip.visual, "image_size", 224))
        h, w = (size, size) if isinstance(size, int) else tuple(size)
        self.mean = tuple(pp.get("mean", oc.OPENAI_DATASET_MEAN))
        self.std = tuple(pp.get("std", oc.OPENAI_DATASET_STD))
        self.interpolation = str(pp.get("interpolation", "bicubic"))
        self.resize_mode = str(pp.get("resize_mode", "shortest"))
        self.input_spec = InputSpec(size=(int(h), int(w)), channels=3, value_range=(0.0, 1.0))
        with torch.no_grad():
            dim = int(clip.encode_image(torch.zeros(1, 3, int(h), int(w))).shape[-1])
        self.embedding_spec = EmbeddingSpec(dim=dim, distance="cosine")
        self.clip = clip
        self.runner = Runner(_ImageTower(clip), self.device, self.precision, channels_last=False)
        self._tokenizer = None

    # -- weights ------------------------------------------------------------------
    def _create(self, oc, model: str,
                pretrained: str | None) -> tuple[torch.nn.Module, Path | None]:
        if model.startswith(_SCHEMAS):
            return self._create_schema(oc, model)
        if pretrained is None:
            tags = oc.list_pretrained_tags_by_model(model)
            raise MissingWeightsError(
                f"clip: say which weights with --set pretrained=<tag>|/path/to/checkpoint|"
                f"hf-hub:<repo> (pretrained=none for random weights); open_clip tags for "
                f"{model}: {', '.join(tags) or 'none'}"
            )
        if model not in oc.list_models():
            raise ValueError(
                f"clip: open_clip has no model config {model!r}; add one with "
                "--set model_config=/path/to/<name>.json, or use hf-hub:<repo>"
            )
        if pretrained.lower() == "none":
            return oc.create_model(model, pretrained=None), None
        looks_like_file = (os.sep in pretrained or pretrained.endswith(_WEIGHT_SUFFIXES)
                           or Path(pretrained).exists())
        if looks_like_file:
            path = existing_file(pretrained, "clip", "Pass pretrained=<tag>|PATH|hf-hub:<repo>")
            return oc.create_model(model, pretrained=str(path), require_pretrained=True), path
        tag_cfg = oc.get_pretrained_cfg(model, pretrained)
        if not tag_cfg:
            tags = oc.list_pretrained_tags_by_model(model)
            raise ValueError(
                f"clip: {pretrained!r} is neither a file nor an open_clip tag for {model}; "
                f"tags: {', '.join(tags) or 'none'}"
            )
        try:
            clip = oc.create_model(model, pretrained=pretrained, require_pretrained=True)
            path = Path(oc.download_pretrained(tag_cfg))  # cache hit now: the file's path
        except Exception as exc:
            where = tag_cfg.get("hf_hub") or tag_cfg.get("url")
            raise _not_cached(f"weights for {model} pretrained={pretrained} ({where}) are",
                              "download the checkpoint and pass pretrained=/path/to/file",
                              exc) from exc
        return clip, path

    def _create_schema(self, oc, model: str) -> tuple[torch.nn.Module, Path | None]:
        schema, ident = model.split(":", 1)
        if schema == "local-dir":
            folder = Path(os.path.expanduser(ident))
            if not (folder / "open_clip_config.json").is_file():
                raise MissingWeightsError(
                    f"clip: {folder} must hold open_clip_config.json and the weights "
                    "(open_clip_model.safetensors or open_clip_pytorch_model.bin)"
                )
            clip = oc.create_model(f"local-dir:{folder}", require_pretrained=True)
            from open_clip.factory import _find_checkpoint_in_dir  # same file open_clip picked

            found = _find_checkpoint_in_dir(folder)
            return clip, Path(found) if found else None
        try:
            clip = oc.create_model(model, require_pretrained=True)
            path = Path(oc.pretrained.download_pretrained_from_hf(ident))
        except Exception as exc:
            raise _not_cached(f"{model} (config open_clip_config.json and weights) is",
                              "download the repo to a folder and pass "
                              "model=local-dir:/path/to/folder", exc) from exc
        return clip, path

    # -- encoder interface --------------------------------------------------------
    def weights_sha256(self) -> str | None:
        return self._sha

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        x = resize_crop(image, self.input_spec.size, mode=self.resize_mode,
                        interpolation=self.interpolation)
        return grey_to_channels(x, 3)

    def embed(self, batch: torch.Tensor) -> np.ndarray:
        return to_numpy32(self.runner(normalize(batch.float(), self.mean, self.std)))

    def embed_text(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalised text embeddings, comparable with image embeddings by cosine.

        Example:
            >>> q = enc.embed_text(["pleural effusion"])  # doctest: +SKIP
            >>> scores = enc.embed(images) @ q.T  # doctest: +SKIP
        """
        if self._tokenizer is None:
            self._tokenizer = _open_clip().get_tokenizer(self.model_name)
        tokens = self._tokenizer(list(texts)).to(self.device)
        with torch.inference_mode(), self.runner.autocast():
            return to_numpy32(self.clip.encode_text(tokens, normalize=True))

    def report(self) -> dict[str, Any]:
        return {"clip": {
            "model": self.model_name, "weights_file": str(self.weights_path or ""),
            "precision": self.precision.value, "mean": list(self.mean), "std": list(self.std),
            "resize_mode": self.resize_mode, "interpolation": self.interpolation,
        }}


def _not_cached(what: str, fix: str, exc: Exception) -> MissingWeightsError:
    """The error for weights that are neither on disk nor in the Hugging Face cache."""
    offline = " and downloads are off (HF_HUB_OFFLINE=1)" if hf_offline() else ""
    return MissingWeightsError(
        f"clip: {what} not in the Hugging Face cache {hf_cache_hint()}{offline}. "
        f"Run once online, or {fix} ({type(exc).__name__}: {exc})"
    )


def default_prompts(label_names: Sequence[str]) -> dict[str, str]:
    """One plain-English prompt per label ("a chest x-ray showing pleural thickening")."""
    out = {}
    for lab in label_names:
        words = lab.replace("_", " ").lower()
        out[lab] = ("a chest x-ray with no finding" if words == "no finding"
                    else f"a chest x-ray showing {words}")
    return out


def text_retrieval(encoder: ClipEncoder, dataset: Any, prompts: Mapping[str, str] | None = None,
                   *, ks: Sequence[int] = (1, 5, 10), metrics: Sequence[str] = ("ranking",),
                   split: str | None = None, cfg: Any = None, progress: Any = None) -> Any:
    """Text-to-image retrieval scored with the image-retrieval metrics.

    Each prompt is a query; the gallery is the dataset's images (``split``
    only, if given); an image is relevant to a prompt when it is positive for
    the prompt's label (the metrics' ``EvalData.query_labels``). Image
    embeddings come through the harness's embedding cache.

    Args:
        prompts: label name -> text; default :func:`default_prompts`.
        cfg: a :class:`~cxrbench.benchmark.harness.RunConfig` (cache dir, batch size).

    Returns:
        ``(evaluation, neighbor_table, prompts)``; ``evaluation.values`` holds
        e.g. ``p@10`` averaged over the prompts (no bootstrap: few queries).

    Example:
        >>> ev, _, _ = text_retrieval(enc, ds, {"Effusion": "pleural effusion"})  # doctest: +SKIP
        >>> ev.values["p@10"]  # doctest: +SKIP
    """
    from cxrbench.benchmark.harness import RunConfig, embed_dataset
    from cxrbench.benchmark.search import knn_search
    from cxrbench.metrics.base import EvalData
    from cxrbench.metrics.evaluate import evaluate

    names = list(dataset.label_names)
    prompts = dict(prompts) if prompts else default_prompts(names)
    unknown = [lab for lab in prompts if lab not in names]
    if unknown:
        raise ValueError(f"prompts for unknown labels {unknown}; dataset labels: {names}")
    cfg = cfg or RunConfig(dataset=getattr(dataset, "name", "dataset"))
    emb, _ = embed_dataset(encoder, dataset, cfg, progress, stage="embed images")
    ix = dataset.index
    gallery = (np.arange(len(ix)) if split is None
               else np.asarray(dataset.split_indices(split), dtype=np.int64))
    labs = list(prompts)
    q_emb = encoder.embed_text([prompts[lab] for lab in labs])
    k_max = min(max(ks), len(gallery))
    table = knn_search(q_emb, emb[gallery], k_max, "cosine",
                       query_rows=np.full(len(labs), -1, dtype=np.int64), gallery_rows=gallery,
                       exclude_same_patient=False)
    qlab = np.zeros((len(labs), len(names)), dtype=np.int8)
    qlab[np.arange(len(labs)), [names.index(lab) for lab in labs]] = 1
    data = EvalData(
        queries=table.queries, neighbors=table.neighbors, distances=table.distances,
        labels=ix.labels, label_names=tuple(names), patient_ids=ix.patient_ids,
        single_label=getattr(dataset, "single_label", False), query_labels=qlab, gallery=gallery,
    )
    ev = evaluate(data, list(metrics), [k for k in ks if k <= k_max], n_boot=0)
    return ev, table, prompts
