"""``stacked-ae``: the stacked autoencoder of seed 002 (IRMA retrieval with autoencoders).

Method as the paper states it: each image greyscale, downscaled to 32x32, in
[0, 1], flattened to 1024 values; single-hidden-layer autoencoders with tied
weights (decoder = encoder transposed) and sigmoid units, trained to minimise
the cross-entropy reconstruction error by plain minibatch SGD (learning rate
0.1, batch 20, 30 epochs); deeper models are trained greedily, each layer on
the codes of the one before; the deepest code is the feature vector, compared
by Euclidean distance. The paper's best model is 1024-600-500-260 (74.61 %
compression, IRMA score 376 on 1,733 test images).

Details the paper leaves open follow the Theano deep-learning tutorial it
cites (its settings match that tutorial's ``dA``): weights drawn uniformly
from +-4*sqrt(6/(n_in+n_hidden)), zero biases, the cost is the per-image sum
of unit cross-entropies averaged over the minibatch. We shuffle the training
images each epoch (seeded); ``shuffle=false`` keeps the tutorial's fixed order.

``binary=true`` thresholds the deepest code at 0.5 (bit = code >= 0.5) and
searches by Hamming distance. Packed codes are padded with zero bits to a
multiple of 8 (260 bits -> 264), which changes no distance.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from cxrbench.encoders import ENCODERS
from cxrbench.encoders._training import Progress, TrainedEncoder, autocast, batches, load_images
from cxrbench.encoders.base import EmbeddingSpec, InputSpec

log = logging.getLogger(__name__)


def parse_layers(value: Any, n_inputs: int) -> list[int]:
    """Hidden layer sizes from ``[600, 500, 260]`` or ``"1024-600-500-260"``.

    A string names the whole architecture, input first, so its first number
    must be ``n_inputs`` (size*size); a list names the hidden layers only.
    """
    if isinstance(value, str):
        parts = [p for p in value.replace("/", "-").split("-") if p.strip()]
        try:
            sizes = [int(p) for p in parts]
        except ValueError:
            raise ValueError(f"layers {value!r}: expected numbers like '1024-600-500-260'") from None
        if len(sizes) < 2 or sizes[0] != n_inputs:
            raise ValueError(
                f"layers {value!r}: a layer string starts with the input size {n_inputs} "
                f"(size*size), e.g. '{n_inputs}-600-500-260'; or pass hidden sizes as a list"
            )
        sizes = sizes[1:]
    elif isinstance(value, int):
        sizes = [value]
    else:
        try:
            sizes = [int(v) for v in value]
        except (TypeError, ValueError):
            raise ValueError(f"layers {value!r}: expected a list of hidden sizes") from None
    if not sizes or any(s < 1 for s in sizes):
        raise ValueError(f"layers {value!r}: need at least one positive hidden size")
    return sizes


class TiedAutoencoder(nn.Module):
    """One n_in/n_hidden/n_in autoencoder with tied weights and sigmoid units."""

    def __init__(self, n_in: int, n_hidden: int, generator: torch.Generator | None = None) -> None:
        super().__init__()
        bound = 4.0 * math.sqrt(6.0 / (n_in + n_hidden))
        w = (torch.rand(n_in, n_hidden, generator=generator) * 2 - 1) * bound
        self.W = nn.Parameter(w)
        self.b_hidden = nn.Parameter(torch.zeros(n_hidden))
        self.b_visible = nn.Parameter(torch.zeros(n_in))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(x @ self.W + self.b_hidden)

    def decode_logits(self, h: torch.Tensor) -> torch.Tensor:
        return h @ self.W.t() + self.b_visible

    def cost(self, x: torch.Tensor) -> torch.Tensor:
        """Cross-entropy reconstruction cost: sum over units, mean over the batch."""
        logits = self.decode_logits(self.encode(x)).float()
        return F.binary_cross_entropy_with_logits(logits, x.float(), reduction="sum") / x.shape[0]


@ENCODERS.register("stacked-ae")
class StackedAutoencoder(TrainedEncoder):
    """Stacked autoencoder (seed 002): greedy tied-weight sigmoid AEs on 32x32 pixels; deepest code."""

    name = "stacked-ae"
    DEFAULTS = {
        "layers": [600, 500, 260],  # hidden sizes; 1024-600-500-260 is the paper's best
        "size": 32,                 # input is size x size greyscale
        "lr": 0.1,                  # plain SGD, as in the paper
        "batch_size": 20,
        "epochs": 30,               # per layer
        "shuffle": True,
        "binary": False,            # threshold the code at 0.5, Hamming search
        "precision": "fp32",
    }
    EMBED_ONLY = frozenset({"binary"})

    @classmethod
    def _normalize(cls, p: dict[str, Any]) -> dict[str, Any]:
        p["size"] = int(p["size"])
        p["layers"] = parse_layers(p["layers"], p["size"] * p["size"])
        p["lr"] = float(p["lr"])
        p["batch_size"] = int(p["batch_size"])
        p["epochs"] = int(p["epochs"])
        p["shuffle"] = bool(p["shuffle"])
        p["binary"] = bool(p["binary"])
        if p["batch_size"] < 1 or p["epochs"] < 1:
            raise ValueError("stacked-ae: batch_size and epochs must be >= 1")
        return p

    # -- structure --------------------------------------------------------------------
    @property
    def architecture(self) -> str:
        """E.g. ``"1024-600-500-260"``."""
        p = self._params
        return "-".join(str(s) for s in [p["size"] ** 2, *p["layers"]])

    @property
    def code_bits(self) -> int:
        """Bits of a binary code once padded to whole bytes."""
        return -(-self._params["layers"][-1] // 8) * 8

    def _build(self) -> None:
        p = self._params
        size = p["size"]
        self.input_spec = InputSpec(size=(size, size), channels=1, value_range=(0.0, 1.0))
        if p["binary"]:
            self.embedding_spec = EmbeddingSpec(dim=self.code_bits, distance="hamming")
        else:
            self.embedding_spec = EmbeddingSpec(dim=p["layers"][-1], distance="l2")
        sizes = [size * size, *p["layers"]]
        self.aes = nn.ModuleList(TiedAutoencoder(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.aes.to(self.device)

    # -- training ----------------------------------------------------------------------
    def _train(self, train: Any, progress: Progress | None, seed: int) -> dict[str, Any]:
        p = self._params
        gen = torch.Generator().manual_seed(int(seed))
        sizes = [p["size"] ** 2, *p["layers"]]
        self.aes = nn.ModuleList(TiedAutoencoder(a, b, generator=gen)
                                 for a, b in zip(sizes[:-1], sizes[1:])).to(self.device)
        x = load_images(train, self.preprocess, progress=progress, stage="load train images")
        h = x.reshape(len(x), -1).to(self.device)
        epochs_log: list[dict[str, Any]] = []
        rms: list[float] = []
        n_layers = len(self.aes)
        for li, ae in enumerate(self.aes):
            stage = f"{self.name} layer {li + 1}/{n_layers} ({sizes[li]}-{sizes[li + 1]})"
            opt = torch.optim.SGD(ae.parameters(), lr=p["lr"])
            ae.train()
            for epoch in range(p["epochs"]):
                total, n_batches = 0.0, 0
                for idx in batches(len(h), p["batch_size"], gen if p["shuffle"] else None):
                    xb = h[idx.to(h.device)]
                    with autocast(self.device, p["precision"]):
                        cost = ae.cost(xb)
                    opt.zero_grad(set_to_none=True)
                    cost.backward()
                    opt.step()
                    total += float(cost.detach())
                    n_batches += 1
                loss = total / max(1, n_batches)
                epochs_log.append({"layer": li + 1, "epoch": epoch + 1, "loss": loss})
                log.info("%s: layer %d/%d epoch %d/%d loss %.4f", self.name, li + 1, n_layers,
                         epoch + 1, p["epochs"], loss)
                if progress:
                    progress(stage, 1, p["epochs"])
            ae.eval()
            with torch.no_grad():
                code = ae.encode(h)
                recon = torch.sigmoid(ae.decode_logits(code))
                rms.append(float(torch.sqrt(torch.mean((recon - h) ** 2))))
            h = code  # the next layer trains on this layer's codes
        return {"epochs": epochs_log, "train_rms_per_layer": rms,
                "architecture": self.architecture, "n_train": int(len(x))}

    def _state(self) -> dict[str, torch.Tensor]:
        out = {}
        for i, ae in enumerate(self.aes):
            for k, v in ae.state_dict().items():
                out[f"layer{i}.{k}"] = v
        return out

    def _load_state(self, tensors: dict[str, torch.Tensor], config: dict[str, Any],
                    training_log: dict[str, Any]) -> None:
        for i, ae in enumerate(self.aes):
            ae.load_state_dict({k.split(".", 1)[1]: v for k, v in tensors.items()
                                if k.startswith(f"layer{i}.")})
        self.aes.to(self.device).eval()

    # -- embedding ----------------------------------------------------------------------
    def codes(self, batch: torch.Tensor) -> torch.Tensor:
        """The deepest code (float, in (0, 1)) of an N x 1 x size x size batch."""
        self._require_trained()
        h = batch.reshape(batch.shape[0], -1).to(self.device, torch.float32)
        with torch.no_grad(), autocast(self.device, self._params["precision"]):
            for ae in self.aes:
                h = ae.encode(h)
        return h.float().cpu()

    def embed(self, batch: torch.Tensor) -> np.ndarray:
        code = self.codes(batch).numpy()
        if not self._params["binary"]:
            return code.astype(np.float32, copy=False)
        bits = np.zeros((code.shape[0], self.code_bits), dtype=np.uint8)
        bits[:, : code.shape[1]] = code >= 0.5
        return np.packbits(bits, axis=1)

    def report(self) -> dict[str, Any]:
        out = super().report()
        if self.training_log is not None:
            inputs = self._params["size"] ** 2
            out["stacked_ae"] = {
                "architecture": self.architecture,
                "reduction": 1.0 - self._params["layers"][-1] / inputs,
                "train_rms_per_layer": self.training_log.get("train_rms_per_layer"),
                "binary": self._params["binary"],
            }
        return out


__all__ = ["StackedAutoencoder", "TiedAutoencoder", "parse_layers"]
