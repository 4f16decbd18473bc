"""Weights files for the pretrained encoders: safe loading, hashing, locating, key mapping.

Everything here is loaded safely: ``.safetensors`` through safetensors, anything
else through ``torch.load(weights_only=True)`` (tensors and plain containers
only, never pickled code). Checkpoints come in the shapes found in the wild:
a bare state dict, or a dict that keeps it under ``state_dict`` / ``model``,
keys prefixed with ``module.`` (``nn.DataParallel``) and so on;
:func:`load_state_dict` unwraps them.

A missing file raises :class:`MissingWeightsError`, whose message says where
the file is expected and where to get it. Encoders never substitute random
weights for a missing file; only an explicit ``weights=none`` builds a
randomly initialised model.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch

StateDict = dict[str, torch.Tensor]

#: keys under which training scripts keep the weights inside a checkpoint dict
_CONTAINER_KEYS = ("state_dict", "model_state_dict", "model", "net", "module")


class MissingWeightsError(FileNotFoundError):
    """A pretrained encoder's weights are not on disk (and cannot be downloaded)."""


class WeightsMismatchError(ValueError):
    """A weights file does not fit the model it is loaded into."""


# -- files --------------------------------------------------------------------
def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_files(paths: Iterable[str | os.PathLike]) -> str | None:
    """One digest for a set of files (sharded checkpoints): the file's own hash for one file."""
    paths = sorted(Path(p) for p in paths)
    if not paths:
        return None
    if len(paths) == 1:
        return sha256_file(paths[0])
    h = hashlib.sha256()
    for p in paths:
        h.update(f"{p.name}:{sha256_file(p)}\n".encode())
    return h.hexdigest()


def existing_file(path: str | os.PathLike, what: str, hint: str = "") -> Path:
    """``path`` as a Path, or a :class:`MissingWeightsError` that names it and the fix."""
    p = Path(os.path.expanduser(str(path)))
    if not p.is_file():
        msg = f"{what}: weights file {p} does not exist"
        if p.is_dir():
            msg = f"{what}: {p} is a folder; pass the weights file inside it"
        raise MissingWeightsError(msg + (f". {hint}" if hint else ""))
    return p


def read_checkpoint(path: str | os.PathLike) -> Any:
    """Load a checkpoint file safely (safetensors, or torch.load with weights_only=True)."""
    p = Path(path)
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(p), device="cpu")
    try:
        return torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as exc:  # pickled modules, corrupt files, ...
        raise WeightsMismatchError(
            f"could not load {p} with torch.load(weights_only=True): {exc}. cxrbench only "
            "loads tensors, never pickled code; if this file holds a whole pickled model "
            "(as torchxrayvision's released .pt files do), load it once with its own library "
            "and save `model.state_dict()` with torch.save or safetensors"
        ) from exc


def unwrap_state_dict(obj: Any, path: str | os.PathLike = "checkpoint") -> StateDict:
    """The tensor dict inside a loaded checkpoint (``state_dict``/``model`` keys, ``module.``)."""
    seen = 0
    while isinstance(obj, Mapping) and seen < 4:
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            break
        inner = next((obj[k] for k in _CONTAINER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj, seen = inner, seen + 1
    if not isinstance(obj, Mapping):
        raise WeightsMismatchError(f"{path}: expected a state dict, found {type(obj).__name__}")
    sd = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not sd:
        raise WeightsMismatchError(
            f"{path}: no tensors found (top-level keys: {sorted(map(str, obj))[:10]})"
        )
    if all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def load_state_dict(path: str | os.PathLike) -> StateDict:
    """Read and unwrap a checkpoint file into a flat ``name -> tensor`` dict."""
    return unwrap_state_dict(read_checkpoint(path), path)


# -- key mapping for known formats --------------------------------------------
_OLD_DENSENET = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\."
    r"((?:[12])\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$"
)


def rename_old_densenet(sd: Mapping[str, torch.Tensor]) -> StateDict:
    """Old torchvision DenseNet names (``norm.1``, ``conv.2``) -> current (``norm1``, ``conv2``)."""
    out = {}
    for k, v in sd.items():
        m = _OLD_DENSENET.match(k)
        out[m.group(1) + m.group(2) if m else k] = v
    return out


def is_chexnet(sd: Mapping[str, torch.Tensor]) -> bool:
    """The arroweng/CheXNet layout: ``densenet121.`` wrapper, old names, ``classifier.0`` head."""
    return any(k.startswith("densenet121.") for k in sd)


def from_chexnet(sd: Mapping[str, torch.Tensor]) -> StateDict:
    """CheXNet keys -> torchvision/timm DenseNet keys (the 14-way head becomes ``classifier``)."""
    out = {}
    for k, v in sd.items():
        k = k.removeprefix("densenet121.")
        k = k.replace("classifier.0.", "classifier.")
        out[k] = v
    return rename_old_densenet(out)


def first_conv_in_channels(sd: Mapping[str, torch.Tensor]) -> int | None:
    """Input channels of the stem convolution of a DenseNet/ResNet-like state dict."""
    for key in ("features.conv0.weight", "conv1.weight", "model.conv1.weight", "conv_stem.weight",
                "stem.conv.weight", "stem.0.weight"):
        w = sd.get(key)
        if w is not None and w.ndim == 4:
            return int(w.shape[1])
    return None


def is_torchxrayvision(sd: Mapping[str, torch.Tensor]) -> bool:
    """torchxrayvision DenseNet/ResNet: single-channel stem, optional ``op_threshs`` buffer."""
    return "op_threshs" in sd or (
        first_conv_in_channels(sd) == 1
        and ("features.conv0.weight" in sd or "conv1.weight" in sd or "model.conv1.weight" in sd)
    )


def from_torchxrayvision(sd: Mapping[str, torch.Tensor]) -> StateDict:
    """xrv keys -> timm keys: drop ``op_threshs``; the ResNet wrapper's ``model.`` prefix goes."""
    out = {k: v for k, v in sd.items() if k != "op_threshs"}
    if all(k.startswith("model.") for k in out):
        out = {k[len("model."):]: v for k, v in out.items()}
    return out


def is_efficientnet_pytorch(sd: Mapping[str, torch.Tensor]) -> bool:
    """lukemelas / ml-illustrated ``efficientnet_pytorch`` layout (``_conv_stem``, ``_blocks``)."""
    return "_conv_stem.weight" in sd and any(k.startswith("_blocks.") for k in sd)


_EP_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2",
           "_fc": "classifier"}
#: block parts in efficientnet_pytorch -> timm, for blocks with and without an expansion conv
_EP_EXPAND = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw",
              "_bn1": "bn2", "_project_conv": "conv_pwl", "_bn2": "bn3"}
_EP_NO_EXPAND = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw",
                 "_bn2": "bn2"}


def from_efficientnet_pytorch(sd: Mapping[str, torch.Tensor], model: torch.nn.Module) -> StateDict:
    """``efficientnet_pytorch`` keys -> a timm EfficientNet's keys.

    efficientnet_pytorch numbers blocks flatly (``_blocks.0`` ... ``_blocks.15``);
    timm groups them in stages (``blocks.0.0``, ``blocks.1.0``, ``blocks.1.1``, ...).
    The stage layout is read off the timm model itself, so any depth works.
    """
    flat: list[str] = []
    for s, stage in enumerate(model.blocks):  # type: ignore[attr-defined]
        flat.extend(f"blocks.{s}.{b}" for b in range(len(stage)))
    out: StateDict = {}
    for k, v in sd.items():
        parts = k.split(".")
        if parts[0] == "_blocks":
            i = int(parts[1])
            if i >= len(flat):
                raise WeightsMismatchError(
                    f"weights have block {i}, the timm model only {len(flat)} blocks"
                )
            expand = f"_blocks.{i}._expand_conv.weight" in sd
            table = _EP_EXPAND if expand else _EP_NO_EXPAND
            if parts[2] not in table:
                raise WeightsMismatchError(f"unexpected efficientnet_pytorch key {k!r}")
            out[".".join([flat[i], table[parts[2]], *parts[3:]])] = v
        elif parts[0] in _EP_TOP:
            out[".".join([_EP_TOP[parts[0]], *parts[1:]])] = v
        else:
            raise WeightsMismatchError(f"unexpected efficientnet_pytorch key {k!r}")
    return out


def load_into(model: torch.nn.Module, sd: Mapping[str, torch.Tensor], source: str,
              ignore_prefixes: tuple[str, ...] = ()) -> list[str]:
    """Load ``sd`` into ``model``: every model tensor must be filled, shapes must agree.

    Keys of ``sd`` under ``ignore_prefixes`` (a classifier head the encoder
    does not use) may be left over; any other unused key, missing key or
    shape mismatch raises :class:`WeightsMismatchError` naming them, so a
    model is never left partly random. Returns the ignored keys.
    """
    own = model.state_dict()
    bad_shape = [
        f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in sd.items() if k in own and tuple(v.shape) != tuple(own[k].shape)
    ]
    missing = [k for k in own if k not in sd and not k.endswith("num_batches_tracked")]
    unused = [k for k in sd if k not in own]
    ignored = [k for k in unused if k.startswith(ignore_prefixes)] if ignore_prefixes else []
    unexpected = [k for k in unused if k not in ignored]
    if bad_shape or missing or unexpected:
        lines = []
        if missing:
            lines.append(f"{len(missing)} model tensors absent from the file, e.g. {missing[:4]}")
        if unexpected:
            lines.append(f"{len(unexpected)} file tensors the model lacks, e.g. {unexpected[:4]}")
        if bad_shape:
            lines.append(f"{len(bad_shape)} shape mismatches, e.g. {bad_shape[:3]}")
        raise WeightsMismatchError(
            f"{source} does not fit {type(model).__name__}: " + "; ".join(lines)
            + ". Check the architecture (arch=...) and the checkpoint format (format=...)"
        )
    filtered = {k: v for k, v in sd.items() if k in own}
    model.load_state_dict(filtered, strict=False)
    return ignored


# -- Hugging Face hub files ------------------------------------------------------
def hf_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")


def hf_cache_hint() -> str:
    try:
        from huggingface_hub import constants

        return str(constants.HF_HUB_CACHE)
    except Exception:  # pragma: no cover - huggingface_hub is a dependency of timm
        return "~/.cache/huggingface/hub"


def hub_file(repo_id: str, filenames: tuple[str, ...]) -> Path | None:
    """The first of ``filenames`` available for ``repo_id`` (cache, else download when online)."""
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    for name in filenames:
        cached = try_to_load_from_cache(repo_id, name)
        if isinstance(cached, str) and os.path.isfile(cached):
            return Path(cached)
    if hf_offline():
        return None
    for name in filenames:
        try:
            return Path(hf_hub_download(repo_id, name))
        except Exception:
            continue
    return None
