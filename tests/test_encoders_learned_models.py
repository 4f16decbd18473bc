"""AutoThorax-Net and the supervised CNN: views, backbone plumbing, augmentation, labels."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from _learned_helpers import FAST, SingleLabelTiny, small_dataset, tiny_batch
from _learned_helpers import one_torch_thread  # noqa: F401  (autouse fixture)

from cxrbench._registry import RegistryError
from cxrbench.datasets import Subset
from cxrbench.encoders import ENCODERS
from cxrbench.encoders.autothorax import three_views
from cxrbench.encoders.base import EmbeddingSpec, Encoder, InputSpec
from cxrbench.encoders.supervised_cnn import (
    augment,
    classification_metrics,
    minmax,
)


# -- a tiny 3-channel "pretrained CNN" backbone, registered for these tests only -----------
class _TestBackbone(Encoder):
    """Test backbone: 3-channel 8x8 input, features = channel-weighted 2x2 block means."""

    name = "test-backbone"

    def __init__(self, scale: float = 1.0, **params: Any) -> None:
        super().__init__(scale=float(scale), **params)
        self.input_spec = InputSpec(size=(8, 8), channels=3, value_range=(-1.0, 1.0))
        self.embedding_spec = EmbeddingSpec(dim=12, distance="l2")
        self.scale = float(scale)

    def embed(self, batch: torch.Tensor) -> np.ndarray:
        assert batch.shape[1:] == (3, 8, 8)
        w = torch.tensor([1.0, 2.0, 3.0])[None, :, None, None]
        f = torch.nn.functional.avg_pool2d(batch * w, 4).reshape(len(batch), -1)
        return (f * self.scale).numpy()


@pytest.fixture
def tiny_backbone():
    ENCODERS.add("test-backbone", _TestBackbone)
    yield "test-backbone"
    ENCODERS.unregister("test-backbone")


def test_three_views_by_hand():
    img = np.arange(12, dtype=np.float32).reshape(2, 6)
    whole, left, right = three_views(img)
    assert np.array_equal(whole, img)
    assert np.array_equal(left, [[0, 1, 2], [6, 7, 8]])
    assert np.array_equal(right, [[5, 4, 3], [11, 10, 9]])  # right half, mirrored
    odd = np.arange(10, dtype=np.float32).reshape(2, 5)
    _, left, right = three_views(odd)
    assert np.array_equal(left, [[0, 1], [5, 6]]) and np.array_equal(right, [[4, 3], [9, 8]])
    # a left-right symmetric image has identical half views
    sym = np.array([[1, 2, 2, 1], [3, 4, 4, 3]], dtype=np.float32)
    _, l, r = three_views(sym)
    assert np.array_equal(l, r)


def test_autothorax_feeds_each_view_through_the_backbone(tiny_backbone, tmp_path):
    ds = small_dataset(40)
    enc = ENCODERS.create("autothorax", backbone=tiny_backbone, backbone_params={"scale": 2.0},
                          hidden=[16], bottleneck=8, epochs=3, batch_size=8)
    assert enc.input_spec == InputSpec(size=(8, 8), channels=9, value_range=(-1.0, 1.0))
    img = ds.load_image(0)
    x = enc.preprocess(img)
    bb = enc.backbone
    assert bb.params()["scale"] == 2.0
    views = three_views(img)
    for i, v in enumerate(views):
        assert torch.equal(x[3 * i:3 * i + 3], bb.preprocess(v))
    feats = enc.backbone_features(x[None])
    ref = np.concatenate([bb.embed(bb.preprocess(v)[None]) for v in views], axis=1)
    assert np.allclose(feats.numpy(), ref)
    enc.cache_dir = tmp_path
    enc.fit(Subset(ds, ds.split_indices("train")), seed=0)
    emb = enc.embed(tiny_batch(enc, ds, range(6)))
    assert emb.shape == (6, 8) and emb.dtype == np.float32
    # standardisation statistics come from the train split's backbone features
    train = Subset(ds, ds.split_indices("train"))
    allf = torch.cat([enc.backbone_features(tiny_batch(enc, ds, [r])) for r in train.indices])
    assert torch.allclose(enc.feature_mean, allf.mean(0), atol=1e-5)
    # the backbone takes part in the checkpoint key
    other = ENCODERS.create("autothorax", backbone=tiny_backbone, backbone_params={"scale": 3.0},
                            hidden=[16], bottleneck=8, epochs=3, batch_size=8)
    assert other.checkpoint_key_for(train, 0) != enc.checkpoint_key_for(train, 0)


def test_autothorax_default_backbone_and_bad_backbones():
    if "efficientnet-lite0" not in ENCODERS:
        with pytest.raises(RegistryError, match="backbone 'efficientnet-lite0' is not available"):
            ENCODERS.create("autothorax")
    else:  # after the merge with the pretrained encoders
        enc = ENCODERS.create("autothorax")
        assert enc.input_spec.channels == 3 * enc.backbone.input_spec.channels
        assert enc.embedding_spec.dim == 256
    with pytest.raises(ValueError, match="trainable"):
        ENCODERS.create("autothorax", backbone="stacked-ae")
    with pytest.raises(RegistryError, match="not available"):
        ENCODERS.create("autothorax", backbone="no-such-net")


# -- supervised CNN ----------------------------------------------------------------------
def test_minmax_per_image():
    x = torch.tensor([[[[2.0, 4.0], [6.0, 10.0]]], [[[0.5, 0.5], [0.5, 0.5]]]])
    y = minmax(x)
    assert torch.allclose(y[0, 0], torch.tensor([[0.0, 0.25], [0.5, 1.0]]))
    assert torch.equal(y[1], torch.zeros(1, 2, 2))  # constant image: zeros, no NaN


def test_augment_is_chest_safe_and_seeded():
    s = 32
    img = torch.zeros(1, 1, s, s)
    img[..., : s // 2, :] = 0.9  # bright top half
    img[..., :, : s // 4] += 0.05  # a left-side marker so flips are visible
    batch = img.repeat(200, 1, 1, 1)
    out = augment(batch, torch.Generator().manual_seed(0))
    assert out.shape == batch.shape and float(out.min()) >= 0 and float(out.max()) <= 1
    top = out[..., : s // 2 - 3, :].mean((1, 2, 3))
    bottom = out[..., s // 2 + 3:, :].mean((1, 2, 3))
    assert (top > bottom + 0.5).all()  # never flipped vertically
    left = out[..., s // 2 + 3:, : s // 4].mean((1, 2, 3))
    right = out[..., s // 2 + 3:, -s // 4:].mean((1, 2, 3))
    flipped = (right > left).float().mean()
    assert 0.3 < float(flipped) < 0.7  # horizontal flips happen about half the time
    # no crop or zoom: the bright top still spans (nearly) the full width
    cols = (out[..., 2: s // 2 - 4, :] > 0.5).float().mean((1, 2))
    assert float(cols.mean()) > 0.85
    again = augment(batch, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)


def test_classification_metrics_by_hand():
    probs = np.array([[0.9, 0.2], [0.6, 0.7], [0.3, 0.1], [0.1, 0.8]])
    labels = np.array([[1, 0], [0, 1], [1, -1], [0, 1]], dtype=np.int8)
    m = classification_metrics(probs, labels, ["a", "b"], single_label=False)
    # label a: positives scores {0.9, 0.3}, negatives {0.6, 0.1}: 3 of 4 pairs ordered
    assert m["auc"]["a"] == pytest.approx(0.75)
    # predicted a at >= 0.5: rows 0, 1 -> TP 1, FP 1; positives rows 0, 2 -> recall 1/2
    assert m["precision"]["a"] == pytest.approx(0.5) and m["recall"]["a"] == pytest.approx(0.5)
    # label b (row 2 unknown): positives {0.7, 0.8}, negative {0.2}: AUC 1, P 1, R 1
    assert m["auc"]["b"] == 1.0 and m["precision"]["b"] == 1.0 and m["recall"]["b"] == 1.0
    assert m["macro_auc"] == pytest.approx(0.875)
    one_class = classification_metrics(probs[:2], np.array([[1, 1], [1, 1]]), ["a", "b"], False)
    assert one_class["auc"]["a"] is None and one_class["macro_auc"] is None


def test_pos_weight_is_negatives_over_positives_capped():
    enc = ENCODERS.create("supervised-cnn", size=32, max_pos_weight=4.0)
    labels = np.array([[1, 0, -1], [0, 0, 0], [0, 1, 0], [0, 0, 0], [1, 0, 0], [0, 0, 0]])
    _, w = enc._loss_fn(labels)
    # label 0: 2 pos, 4 neg -> 2; label 1: 1 pos, 5 neg -> 5 capped to 4; label 2: none -> cap
    assert w["pos_weight"] == [2.0, 4.0, 4.0]


def test_supervised_single_label_two_classes(tmp_path):
    ds = SingleLabelTiny(n=48)
    enc = ENCODERS.create("supervised-cnn", **{**FAST["supervised-cnn"], "val_fraction": 0.25})
    enc.cache_dir = tmp_path
    enc.fit(Subset(ds, ds.split_indices("train")), seed=0)
    assert enc.single_label and enc.label_names == ["plain", "ring"]
    assert "class_weight" in enc.training_log and enc.head.out_features == 2
    losses = [e["loss"] for e in enc.training_log["epochs"]]
    assert losses[-1] < losses[0]
    p = enc.predict_proba(tiny_batch(enc, ds, range(8)))
    assert p.shape == (8, 2) and np.allclose(p.sum(1), 1, atol=1e-5)  # softmax
    loaded = ENCODERS.create("supervised-cnn", checkpoint=str(enc.checkpoint_path))
    assert loaded.single_label and loaded.label_names == ["plain", "ring"]
    b = tiny_batch(enc, ds, range(8))
    assert loaded.embed(b).tobytes() == enc.embed(b).tobytes()
