"""``supervised-cnn``: a ResNet-18 trained on the train split's labels (seed 003).

Following the seed's recipe: per-image min-max normalisation (x-rays have no
fixed white level, so not /255); chest-safe augmentation only (horizontal
flip, small rotation and translation, brightness/contrast; never a vertical
flip, never a centre crop); class weighting for rare labels; early stopping on
a validation split. The penultimate layer (512 features after global average
pooling) is the embedding.

Targets: multi-label datasets train one sigmoid per label with binary
cross-entropy, unknown labels (-1) masked out and ``pos_weight = negatives /
positives`` per label (capped by ``max_pos_weight``); single-label datasets
(e.g. a two-class folder dataset) train a softmax with inverse-frequency class
weights. The network is torchvision's ``resnet18`` (random init: hubs are
offline) with a 1-channel first convolution.

Validation: ``fit`` sees the train split only, so the validation rows are the
subset's own ``val`` rows when it has any, otherwise a seeded ``val_fraction``
of its patients. :meth:`SupervisedCNN.report` gives the classifier's AUC,
precision and recall per label on that validation split (which also chose the
epoch, so it is mildly optimistic); :meth:`SupervisedCNN.evaluate_classifier`
scores any other rows, e.g. the test split after training.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import torch
import torchvision
from torch import nn
from torch.nn import functional as F

from cxrbench.encoders import ENCODERS
from cxrbench.encoders._training import (
    Progress,
    TrainedEncoder,
    autocast,
    batches,
    load_images,
    patient_holdout,
)
from cxrbench.encoders.base import Distance, EmbeddingSpec, InputSpec

log = logging.getLogger(__name__)

FEATURES = 512  # resnet18's penultimate width


def minmax(x: torch.Tensor) -> torch.Tensor:
    """Per-image min-max to [0, 1] (a constant image becomes all zeros)."""
    flat = x.reshape(x.shape[0], -1)
    lo = flat.min(1).values.reshape(-1, *([1] * (x.ndim - 1)))
    hi = flat.max(1).values.reshape(-1, *([1] * (x.ndim - 1)))
    span = hi - lo
    return torch.where(span > 0, (x - lo) / torch.where(span > 0, span, torch.ones_like(span)),
                       torch.zeros_like(x))


def augment(x: torch.Tensor, generator: torch.Generator, *, max_rotate: float = 7.0,
            max_translate: float = 0.06, brightness: float = 0.1,
            contrast: float = 0.1) -> torch.Tensor:
    """Chest-safe augmentation of an N x C x H x W batch in [0, 1].

    Horizontal flip (p = 0.5), rotation within +-``max_rotate`` degrees,
    translation within +-``max_translate`` of the image size (uncovered
    border filled with 0), brightness shift and contrast scale within +-10 %.
    The output keeps the full field of view at the same size: no crop, and
    never a vertical flip (chest films have a natural up-down orientation).
    """
    n = x.shape[0]
    u = torch.rand(n, 6, generator=generator).to(x.device)
    flip = u[:, 0] < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    ang = (u[:, 1] * 2 - 1) * math.radians(max_rotate)
    # affine_grid coordinates span [-1, 1]: a shift of f * size is 2 f
    tx = (u[:, 2] * 2 - 1) * 2 * max_translate
    ty = (u[:, 3] * 2 - 1) * 2 * max_translate
    cos, sin = torch.cos(ang), torch.sin(ang)
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros",
                      align_corners=False)
    b = ((u[:, 4] * 2 - 1) * brightness)[:, None, None, None]
    c = (1 + (u[:, 5] * 2 - 1) * contrast)[:, None, None, None]
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return ((x - mean) * c + mean + b).clamp(0.0, 1.0)


def make_resnet18() -> nn.Module:
    """torchvision resnet18, random init, 1-channel input, no classifier (512 features)."""
    net = torchvision.models.resnet18(weights=None)
    net.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    net.fc = nn.Identity()
    return net


def classification_metrics(probs: np.ndarray, labels: np.ndarray, label_names: list[str],
                           single_label: bool, threshold: float = 0.5) -> dict[str, Any]:
    """Per-label AUC, precision and recall (unknown labels ignored).

    Multi-label: a label is predicted when its sigmoid >= ``threshold``.
    Single-label: the argmax class is predicted; AUC is one-vs-rest on the
    softmax probability. Undefined values (one class only) are None.
    """
    from sklearn.metrics import precision_score, recall_score, roc_auc_score

    out: dict[str, Any] = {"auc": {}, "precision": {}, "recall": {}, "n": int(len(labels))}
    pred_cls = probs.argmax(1) if single_label and len(probs) else None
    for j, name in enumerate(label_names):
        known = labels[:, j] >= 0
        y = (labels[known, j] == 1).astype(int)
        p = probs[known, j]
        pred = (pred_cls[known] == j).astype(int) if single_label else (p >= threshold).astype(int)
        both = 0 < y.sum() < len(y)
        out["auc"][name] = float(roc_auc_score(y, p)) if both else None
        out["precision"][name] = float(precision_score(y, pred, zero_division=0)) if pred.any() else None
        out["recall"][name] = float(recall_score(y, pred, zero_division=0)) if y.any() else None
    aucs = [v for v in out["auc"].values() if v is not None]
    out["macro_auc"] = float(np.mean(aucs)) if aucs else None
    return out


@ENCODERS.register("supervised-cnn")
class SupervisedCNN(TrainedEncoder):
    """Supervised ResNet-18 (seed 003) trained on the train split's labels; penultimate layer."""

    name = "supervised-cnn"
    DEFAULTS = {
        "size": 128,             # input size x size; small so CPU training takes minutes
        "epochs": 15,            # at most; early stopping usually ends sooner
        "patience": 3,           # epochs without a better validation loss before stopping
        "batch_size": 32,
        "lr": 1e-3,              # Adam
        "weight_decay": 1e-4,
        "val_fraction": 0.15,    # of train-split patients, when the rows have no val split
        "augment": True,
        "max_pos_weight": 50.0,  # cap on class weights for very rare labels
        "distance": "cosine",
        "precision": "fp32",
    }
    EMBED_ONLY = frozenset({"distance"})

    @classmethod
    def _normalize(cls, p: dict[str, Any]) -> dict[str, Any]:
        for k in ("size", "epochs", "patience", "batch_size"):
            p[k] = int(p[k])
        for k in ("lr", "weight_decay", "val_fraction", "max_pos_weight"):
            p[k] = float(p[k])
        p["augment"] = bool(p["augment"])
        p["distance"] = Distance.parse(p["distance"]).value
        if p["distance"] == "hamming":
            raise ValueError("supervised-cnn: distance must be l2 or cosine")
        if p["size"] < 16 or p["epochs"] < 1 or p["batch_size"] < 2:
            raise ValueError("supervised-cnn: need size >= 16, epochs >= 1, batch_size >= 2")
        if not 0 <= p["val_fraction"] < 1:
            raise ValueError("supervised-cnn: val_fraction must be in [0, 1)")
        return p

    def _build(self) -> None:
        s = self._params["size"]
        self.input_spec = InputSpec(size=(s, s), channels=1, value_range=(0.0, 1.0))
        self.embedding_spec = EmbeddingSpec(dim=FEATURES, distance=self._params["distance"])
        self.net = make_resnet18().to(self.device)
        self.head: nn.Linear | None = None
        self.label_names: list[str] = []
        self.single_label = False

    def _checkpoint_extra(self) -> dict[str, Any]:
        return {"label_names": self.label_names, "single_label": self.single_label}

    # -- training ----------------------------------------------------------------------
    def _split(self, train: Any, seed: int) -> tuple[np.ndarray, np.ndarray, str]:
        splits = train.dataset.index.splits[train.indices]
        is_val = splits == "val"
        if is_val.any() and (~is_val).any():
            return np.flatnonzero(~is_val), np.flatnonzero(is_val), "val rows of the fit subset"
        hold = patient_holdout(train.patient_ids, self._params["val_fraction"], seed)
        how = (f"{self._params['val_fraction']:.0%} of train-split patients (seed {seed})"
               if hold.any() else "none")
        return np.flatnonzero(~hold), np.flatnonzero(hold), how

    def _loss_fn(self, labels: np.ndarray):
        """Weighted loss for these training labels: (logits, label rows) -> scalar."""
        cap = self._params["max_pos_weight"]
        if self.single_label:
            target = np.where((labels == 1).any(1), (labels == 1).argmax(1), -100)
            counts = np.bincount(target[target >= 0], minlength=labels.shape[1]).astype(float)
            w = np.where(counts > 0, counts.sum() / (len(counts) * np.maximum(counts, 1)), 1.0)
            weight = torch.tensor(np.clip(w, 1.0 / cap, cap), dtype=torch.float32, device=self.device)

            def loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
                t = torch.where((y == 1).any(1), (y == 1).int().argmax(1), -100)
                return F.cross_entropy(logits.float(), t.long(), weight=weight, ignore_index=-100)

            return loss, {"class_weight": weight.tolist()}
        known = labels >= 0
        pos = ((labels == 1) & known).sum(0).astype(float)
        neg = ((labels == 0) & known).sum(0).astype(float)
        pw = np.clip(np.where(pos > 0, neg / np.maximum(pos, 1), cap), 1.0, cap)
        pos_weight = torch.tensor(pw, dtype=torch.float32, device=self.device)

        def loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            mask = (y >= 0).float()
            per = F.binary_cross_entropy_with_logits(logits.float(), (y == 1).float(),
                                                     pos_weight=pos_weight, reduction="none")
            return (per * mask).sum() / mask.sum().clamp(min=1.0)

        return loss, {"pos_weight": pw.tolist()}

    def _train(self, train: Any, progress: Progress | None, seed: int) -> dict[str, Any]:
        p = self._params
        self.label_names = list(train.label_names)
        self.single_label = bool(getattr(train, "single_label", False))
        if not self.label_names:
            raise ValueError("supervised-cnn needs a labelled dataset (it has no labels)")
        tr_pos, va_pos, how = self._split(train, seed)
        labels = np.asarray(train.labels)
        if not ((labels[tr_pos] == 1).any()):
            raise ValueError("supervised-cnn: the training rows have no positive labels")
        torch.manual_seed(int(seed))
        self.net = make_resnet18().to(self.device)
        self.head = nn.Linear(FEATURES, len(self.label_names)).to(self.device)
        loss_fn, weights = self._loss_fn(labels[tr_pos])
        # images once, min-max normalised, float16 to halve memory
        x_all = load_images(train, self.preprocess, progress=progress, stage="load train images")
        x_all = minmax(x_all).to(torch.float16)
        y_all = torch.from_numpy(labels.astype(np.int64))
        x_tr, y_tr = x_all[tr_pos], y_all[tr_pos]
        x_va, y_va = x_all[va_pos], y_all[va_pos]
        gen = torch.Generator().manual_seed(int(seed))
        params = [*self.net.parameters(), *self.head.parameters()]
        opt = torch.optim.Adam(params, lr=p["lr"], weight_decay=p["weight_decay"])
        n_batches = math.ceil(len(x_tr) / p["batch_size"])
        stage = f"{self.name} train"
        total_steps = p["epochs"] * n_batches
        steps_done = 0
        best = (math.inf, -1, None)
        epochs_log = []
        for epoch in range(p["epochs"]):
            self.net.train()
            self.head.train()
            tot, seen = 0.0, 0
            for idx in batches(len(x_tr), p["batch_size"], gen):
                if len(idx) < 2:  # BatchNorm cannot train on one image
                    continue
                xb = x_tr[idx].float().to(self.device)
                if p["augment"]:
                    xb = augment(xb, gen)
                yb = y_tr[idx].to(self.device)
                with autocast(self.device, p["precision"]):
                    logits = self.head(self.net(xb))
                loss = loss_fn(logits, yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                tot += float(loss.detach()) * len(idx)
                seen += len(idx)
                steps_done += 1
                if progress:
                    progress(stage, 1, total_steps)
            entry: dict[str, Any] = {"epoch": epoch + 1, "loss": tot / max(1, seen)}
            if len(x_va):
                probs, vloss = self._predict(x_va, y_va, loss_fn)
                entry["val_loss"] = vloss
                entry["val_macro_auc"] = classification_metrics(
                    probs, labels[va_pos], self.label_names, self.single_label)["macro_auc"]
                if vloss < best[0]:
                    best = (vloss, epoch + 1, self._snapshot())
            epochs_log.append(entry)
            log.info("%s: epoch %d/%d loss %.4f%s", self.name, epoch + 1, p["epochs"],
                     entry["loss"], "" if "val_loss" not in entry else
                     f" val_loss {entry['val_loss']:.4f} val_auc {entry['val_macro_auc']}")
            if len(x_va) and epoch + 1 - best[1] >= p["patience"]:
                log.info("%s: early stop (best epoch %d)", self.name, best[1])
                break
        if progress and steps_done < total_steps:
            progress(stage, total_steps - steps_done, total_steps)
        if best[2] is not None:
            self._restore(best[2])
        out: dict[str, Any] = {"epochs": epochs_log, "best_epoch": best[1] if best[2] is not None else len(epochs_log),
                               "validation": how, "n_train": int(len(tr_pos)),
                               "n_val": int(len(va_pos)), **weights}
        if len(x_va):
            probs, _ = self._predict(x_va, y_va, loss_fn)
            out["val_metrics"] = classification_metrics(probs, labels[va_pos], self.label_names,
                                                        self.single_label)
        return out

    def _snapshot(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self._state().items()}

    def _restore(self, state: dict[str, torch.Tensor]) -> None:
        self.net.load_state_dict({k[4:]: v for k, v in state.items() if k.startswith("net.")})
        self.head.load_state_dict({k[5:]: v for k, v in state.items() if k.startswith("head.")})

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        self.net.eval()
        self.head.eval()
        with torch.no_grad(), autocast(self.device, self._params["precision"]):
            return self.head(self.net(x.float().to(self.device))).float()

    def _probs(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.softmax(1) if self.single_label else logits.sigmoid()

    def _predict(self, x: torch.Tensor, y: torch.Tensor, loss_fn, step: int = 64):
        probs, tot = [], 0.0
        for s in range(0, len(x), step):
            logits = self._logits(x[s:s + step])
            tot += float(loss_fn(logits, y[s:s + step].to(self.device))) * len(logits)
            probs.append(self._probs(logits).cpu())
        return torch.cat(probs).numpy(), tot / max(1, len(x))

    def _state(self) -> dict[str, torch.Tensor]:
        out = {f"net.{k}": v for k, v in self.net.state_dict().items()}
        if self.head is not None:
            out.update({f"head.{k}": v for k, v in self.head.state_dict().items()})
        return out

    def _load_state(self, tensors: dict[str, torch.Tensor], config: dict[str, Any],
                    training_log: dict[str, Any]) -> None:
        extra = config.get("extra", {})
        self.label_names = list(extra.get("label_names", []))
        self.single_label = bool(extra.get("single_label", False))
        n_out = tensors["head.weight"].shape[0]
        self.head = nn.Linear(FEATURES, n_out).to(self.device)
        self._restore(tensors)
        self.net.to(self.device).eval()
        self.head.eval()

    # -- embedding and classification -----------------------------------------------------
    def embed(self, batch: torch.Tensor) -> np.ndarray:
        self._require_trained()
        self.net.eval()
        with torch.no_grad(), autocast(self.device, self._params["precision"]):
            f = self.net(minmax(batch.float()).to(self.device))
        return f.float().cpu().numpy()

    def predict_proba(self, batch: torch.Tensor) -> np.ndarray:
        """Class probabilities (sigmoid per label, or softmax) of a preprocessed batch."""
        self._require_trained()
        return self._probs(self._logits(minmax(batch.float()))).cpu().numpy()

    def evaluate_classifier(self, rows: Any, step: int = 64) -> dict[str, Any]:
        """AUC, precision, recall per label on a Subset (e.g. the test split, after fit)."""
        probs = []
        for s in range(0, len(rows), step):
            b = torch.stack([self.preprocess(rows.load_image(j))
                             for j in range(s, min(s + step, len(rows)))])
            probs.append(self.predict_proba(b))
        return classification_metrics(np.concatenate(probs), np.asarray(rows.labels),
                                      self.label_names, self.single_label)

    def report(self) -> dict[str, Any]:
        out = super().report()
        tl = self.training_log or {}
        if "val_metrics" in tl:
            out["classifier"] = {
                "split": f"validation: {tl.get('validation')} (also chose the stopping epoch)",
                "best_epoch": tl.get("best_epoch"),
                **tl["val_metrics"],
            }
        return out


__all__ = ["SupervisedCNN", "augment", "classification_metrics", "minmax", "make_resnet18"]
