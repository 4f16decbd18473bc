"""Hugging Face vision backbones (RAD-DINO, DINOv2, ViT ...) through transformers.

``--set model=<local folder>|<hub id> pooling=cls|mean``. The folder (or the
cached hub repo) holds ``config.json``, the weights (``model.safetensors``,
sharded safetensors or ``pytorch_model.bin``) and, normally,
``preprocessor_config.json``. ``AutoModel`` builds the backbone and
``AutoImageProcessor``'s settings (resize, centre crop, resample, mean/std)
define the preprocessing; it is re-implemented on the greyscale float image
(no 8-bit rounding), grey replicated to 3 channels, and mean/std applied in
:meth:`HfEncoder.embed`.

Pooling of ``last_hidden_state``: ``cls`` takes the class token, as RAD-DINO
and DINOv2 recommend (models without one, e.g. Swin or ConvNeXt, need
``mean``); ``mean`` averages the patch tokens (class and register tokens
excluded) or, for convolutional backbones, the final feature map. A checkpoint
that leaves any model tensor uninitialised is refused: nothing is silently random.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

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
    WeightsMismatchError,
    hf_cache_hint,
    hf_offline,
    sha256_files,
)
from cxrbench.encoders.base import EmbeddingSpec, Encoder, InputSpec

log = logging.getLogger(__name__)

POOLINGS = ("cls", "mean")
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
_INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
_IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def _transformers():
    try:
        import transformers
    except ImportError:
        raise ImportError("the hf encoder needs transformers: pip install 'cxrbench[hf]'") from None
    return transformers


def _get(obj: Any, key: str) -> Any:
    """A field of a size dict (plain dict or transformers' SizeDict)."""
    if obj is None:
        return None
    if isinstance(obj, dict):
        return obj.get(key)
    return getattr(obj, key, None)


class _Pooled(torch.nn.Module):
    def __init__(self, model: torch.nn.Module, pooling: str, n_prefix: int) -> None:
        super().__init__()
        self.model, self.pooling, self.n_prefix = model, pooling, n_prefix

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(pixel_values=x)
        h = out.last_hidden_state
        if h.ndim == 4:  # convolutional backbones: N x C x H x W (mean pooling only)
            return h.mean(dim=(2, 3))
        if self.pooling == "cls":
            return h[:, 0]
        return h[:, self.n_prefix:].mean(dim=1)


@ENCODERS.register("hf")
class HfEncoder(Encoder):
    """Hugging Face vision backbone (model=DIR|hub id, pooling=cls|mean), e.g. RAD-DINO."""

    name = "hf"

    def __init__(self, model: str | None = None, pooling: str = "cls", precision: str = "fp32",
                 distance: str = "cosine", **params: Any) -> None:
        if not model:
            raise MissingWeightsError(
                "hf: pass --set model=<folder with config.json and model.safetensors> or a "
                "hub id such as microsoft/rad-dino or facebook/dinov2-small (cached, or online)"
            )
        pooling = str(pooling).lower()
        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {pooling!r}; valid: {', '.join(POOLINGS)}")
        super().__init__(model=str(model), pooling=pooling, precision=str(precision),
                         distance=str(distance), **params)
        self.precision = Precision.parse(precision, self.device)
        tf = _transformers()
        self.source = str(model)
        local = Path(os.path.expanduser(self.source))
        self.local_dir = local if local.is_dir() else None
        if self.local_dir is None and (self.source.startswith((".", "/", "~")) or local.exists()):
            raise MissingWeightsError(f"hf: model folder {local} does not exist")
        if self.local_dir is not None:
            self._check_folder(self.local_dir)
        ident = str(self.local_dir) if self.local_dir else self.source

        tf.utils.logging.disable_progress_bar()
        try:
            net, info = tf.AutoModel.from_pretrained(ident, output_loading_info=True)
        except OSError as exc:
            raise MissingWeightsError(
                f"hf: {self.source} is not a folder and not in the Hugging Face cache "
                f"{hf_cache_hint()}"
                + (" (downloads are off: HF_HUB_OFFLINE=1)" if hf_offline() else "")
                + ". Run once online, or download the repo (config.json, model.safetensors, "
                f"preprocessor_config.json) to a folder and pass model=/path/to/folder ({exc})"
            ) from exc
        # a pooler head (ViT's tanh dense layer) is absent from many checkpoints and
        # unused here: the embedding is pooled from last_hidden_state
        missing = sorted(k for k in info.get("missing_keys") or () if not k.startswith("pooler."))
        mismatched = sorted(map(str, info.get("mismatched_keys") or ()))
        if missing or mismatched:
            raise WeightsMismatchError(
                f"hf: the checkpoint of {self.source} leaves {len(missing)} tensors of "
                f"{type(net).__name__} uninitialised (e.g. {missing[:4]}) and {len(mismatched)} "
                f"with other shapes (e.g. {mismatched[:2]}); refusing random weights"
            )
        self.weight_files = self._weight_files(ident)
        self._sha = sha256_files(self.weight_files)
        self._setup_preprocessing(tf, ident, net)
        n_reg = int(getattr(net.config, "num_register_tokens", 0) or 0)
        self.model_type = str(getattr(net.config, "model_type", type(net).__name__))
        emb = getattr(net, "embeddings", None)
        has_cls = any(hasattr(emb, a) for a in ("cls_token", "class_embedding"))
        if pooling == "cls" and not has_cls:
            raise ValueError(
                f"hf: {self.source} ({self.model_type}) has no class token; use pooling=mean"
            )
        tower = _Pooled(net, pooling, int(has_cls) + n_reg)
        with torch.no_grad():
            dim = int(tower.eval()(torch.zeros(1, 3, *self.input_spec.size)).shape[-1])
        self.embedding_spec = EmbeddingSpec(dim=dim, distance=distance)
        self.runner = Runner(tower, self.device, self.precision, channels_last=False)

    # -- files --------------------------------------------------------------------
    @staticmethod
    def _check_folder(folder: Path) -> None:
        if not (folder / "config.json").is_file():
            raise MissingWeightsError(
                f"hf: {folder} has no config.json; a transformers model folder holds config.json, "
                "model.safetensors (or pytorch_model.bin) and preprocessor_config.json"
            )
        if not any((folder / f).is_file() for f in (*_WEIGHT_FILES, *_INDEX_FILES)):
            raise MissingWeightsError(
                f"hf: {folder} has config.json but no weights: put model.safetensors (or "
                "pytorch_model.bin, or sharded files with their index.json) next to it"
            )

    def _weight_files(self, ident: str) -> list[Path]:
        """The weights files the model was read from (for the sha256)."""

        def resolve(name: str) -> Path | None:
            if self.local_dir is not None:
                p = self.local_dir / name
                return p if p.is_file() else None
            from huggingface_hub import try_to_load_from_cache

            c = try_to_load_from_cache(ident, name)
            return Path(c) if isinstance(c, str) and os.path.isfile(c) else None

        for name in _WEIGHT_FILES:
            p = resolve(name)
            if p is not None:
                return [p]
        for name in _INDEX_FILES:
            idx = resolve(name)
            if idx is not None:
                shards = sorted(set(json.loads(idx.read_text())["weight_map"].values()))
                found = [resolve(s) for s in shards]
                return [p for p in found if p is not None]
        return []

    def _setup_preprocessing(self, tf, ident: str, net: torch.nn.Module) -> None:
        try:
            proc = tf.AutoImageProcessor.from_pretrained(ident)
        except (OSError, ValueError) as exc:
            proc = None
            log.warning("hf: %s has no image processor config (%s); using ImageNet mean/std "
                        "and the config's image_size", self.source, exc)
        self.processor_name = type(proc).__name__ if proc is not None else None
        cfg_size = getattr(net.config, "image_size", 224)
        cfg_size = cfg_size if isinstance(cfg_size, int) else int(cfg_size[0])
        do_resize = bool(getattr(proc, "do_resize", True)) if proc is not None else True
        size = getattr(proc, "size", None)
        crop = getattr(proc, "crop_size", None)
        do_crop = bool(getattr(proc, "do_center_crop", False)) and crop is not None
        shortest = _get(size, "shortest_edge")
        if do_crop:
            out = (int(_get(crop, "height")), int(_get(crop, "width")))
        elif _get(size, "height"):
            out = (int(_get(size, "height")), int(_get(size, "width")))
        elif shortest:
            out = (int(shortest), int(shortest))  # square for square inputs
        else:
            out = (cfg_size, cfg_size)
        self.resize_mode = "shortest" if (shortest and do_resize) else "squash"
        self.shortest_edge = int(shortest) if shortest else None
        resample = getattr(proc, "resample", 3) if proc is not None else 3
        self.interpolation = int(resample) if resample is not None else 3
        do_norm = bool(getattr(proc, "do_normalize", True)) if proc is not None else True
        mean = getattr(proc, "image_mean", None) if proc is not None else None
        std = getattr(proc, "image_std", None) if proc is not None else None
        if not do_norm:
            mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
        self.mean = tuple(float(v) for v in (mean if mean is not None else _IMAGENET[0]))
        self.std = tuple(float(v) for v in (std if std is not None else _IMAGENET[1]))
        self.input_spec = InputSpec(size=out, channels=3, value_range=(0.0, 1.0))

    # -- encoder interface --------------------------------------------------------
    def weights_sha256(self) -> str | None:
        return self._sha

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        x = resize_crop(image, self.input_spec.size, mode=self.resize_mode,
                        interpolation=self.interpolation, shortest_edge=self.shortest_edge)
        return grey_to_channels(x, 3)

    def embed(self, batch: torch.Tensor) -> np.ndarray:
        return to_numpy32(self.runner(normalize(batch.float(), self.mean, self.std)))

    def report(self) -> dict[str, Any]:
        return {"hf": {
            "model": self.source, "model_type": self.model_type,
            "weights_files": [str(p) for p in self.weight_files],
            "image_processor": self.processor_name, "precision": self.precision.value,
            "mean": list(self.mean), "std": list(self.std), "resize_mode": self.resize_mode,
        }}
