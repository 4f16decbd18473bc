"""CLIP (open_clip) and Hugging Face encoders: tiny random models saved in their real
on-disk formats, loaded through the encoders, checked against the original modules."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from PIL import Image

from cxrbench.encoders import ENCODERS
from cxrbench.encoders._runtime import normalize
from cxrbench.encoders._weights import MissingWeightsError, WeightsMismatchError

open_clip = pytest.importorskip("open_clip")
transformers = pytest.importorskip("transformers")

CLIP_NAME = "cxrbench-tiny-clip"
CLIP_CFG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def _grey(seed: int = 0, shape=(48, 40)) -> np.ndarray:
    """A smooth greyscale image on 8-bit levels (so uint8 pipelines see the same pixels)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    img = 0.5 + 0.3 * np.sin(xx / 5.0 + rng.random() * 6) * np.cos(yy / 7.0)
    img = img + 0.1 * rng.random(shape)
    return (np.round(np.clip(img, 0, 1) * 255) / 255).astype(np.float32)


# -- open_clip ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    d = tmp_path_factory.mktemp("clip")
    cfg_file = d / f"{CLIP_NAME}.json"
    cfg_file.write_text(json.dumps(CLIP_CFG))
    open_clip.add_model_config(cfg_file)
    torch.manual_seed(0)
    model = open_clip.create_model(CLIP_NAME).eval()
    return d, cfg_file, model


def _clip_ref(model, x: torch.Tensor, enc) -> np.ndarray:
    with torch.no_grad():
        return model.encode_image(normalize(x, enc.mean, enc.std), normalize=True).numpy()


@pytest.mark.parametrize("fmt", ["pt", "safetensors", "state_dict_key"])
def test_clip_local_checkpoint_matches_original(tiny_clip, fmt):
    d, cfg_file, model = tiny_clip
    sd = model.state_dict()
    if fmt == "safetensors":
        from safetensors.torch import save_file

        path = d / "tiny.safetensors"
        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    else:
        path = d / f"tiny-{fmt}.pt"
        torch.save(sd if fmt == "pt" else {"epoch": 1, "state_dict": sd}, path)
    enc = ENCODERS.create("clip", model_config=str(cfg_file), pretrained=str(path))
    assert enc.model_name == CLIP_NAME
    assert enc.input_spec.size == (32, 32) and enc.input_spec.channels == 3
    assert enc.embedding_spec.dim == 16 and enc.embedding_spec.distance.value == "cosine"
    assert enc.weights_sha256() == hashlib.sha256(path.read_bytes()).hexdigest()
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    got = enc.embed(x)
    np.testing.assert_allclose(got, _clip_ref(model, x, enc), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_clip_local_dir_layout_and_preprocess_cfg(tiny_clip, tmp_path):
    """The hf-hub / local-dir layout: open_clip_config.json (model_cfg + preprocess_cfg)."""
    _, _, model = tiny_clip
    from safetensors.torch import save_file

    pp = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "interpolation": "bilinear",
          "resize_mode": "squash"}
    (tmp_path / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": CLIP_CFG, "preprocess_cfg": pp}))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              str(tmp_path / "open_clip_model.safetensors"))
    enc = ENCODERS.create("clip", pretrained=f"local-dir:{tmp_path}")
    assert enc.mean == (0.5, 0.5, 0.5) and enc.std == (0.25, 0.25, 0.25)
    assert enc.resize_mode == "squash" and enc.interpolation == "bilinear"
    digest = hashlib.sha256((tmp_path / "open_clip_model.safetensors").read_bytes()).hexdigest()
    assert enc.weights_sha256() == digest
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    np.testing.assert_allclose(enc.embed(x), _clip_ref(model, x, enc), rtol=1e-4, atol=1e-5)


def test_clip_preprocess_matches_open_clip_transform(tiny_clip, tmp_path):
    d, cfg_file, model = tiny_clip
    path = d / "pp.pt"
    torch.save(model.state_dict(), path)
    enc = ENCODERS.create("clip", model_config=str(cfg_file), pretrained=str(path))
    pp = model.visual.preprocess_cfg
    tf = open_clip.image_transform(pp["size"], is_train=False, mean=pp["mean"], std=pp["std"],
                                   resize_mode=pp["resize_mode"], interpolation=pp["interpolation"])
    for seed, shape in ((0, (48, 40)), (1, (64, 64))):
        img = _grey(seed, shape)
        pil = Image.fromarray((img * 255).round().astype(np.uint8)).convert("RGB")
        theirs = tf(pil)  # normalised C x H x W
        ours = normalize(enc.preprocess(img)[None], enc.mean, enc.std)[0]
        assert ours.shape == theirs.shape
        # float bicubic vs 8-bit bicubic: within a couple of grey levels
        diff = (ours - theirs) * torch.tensor(enc.std).view(3, 1, 1)
        assert float(diff.abs().mean()) < 1.5 / 255 and float(diff.abs().max()) < 8 / 255


def test_clip_text_embeddings_match_original(tiny_clip):
    d, cfg_file, model = tiny_clip
    path = d / "text.pt"
    torch.save(model.state_dict(), path)
    enc = ENCODERS.create("clip", model_config=str(cfg_file), pretrained=str(path))
    texts = ["pleural effusion", "no finding"]
    got = enc.embed_text(texts)
    tok = open_clip.get_tokenizer(CLIP_NAME)
    with torch.no_grad():
        ref = model.encode_text(tok(texts), normalize=True).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)
    assert got.shape == (2, enc.embedding_spec.dim)


def test_clip_weight_errors(tiny_clip, tmp_path):
    _, cfg_file, _ = tiny_clip
    with pytest.raises(MissingWeightsError, match="tags for ViT-B-16: openai"):
        ENCODERS.create("clip", model="ViT-B-16")
    with pytest.raises(MissingWeightsError, match="HF_HUB_OFFLINE=1"):
        ENCODERS.create("clip", model="ViT-B-16", pretrained="openai")
    with pytest.raises(MissingWeightsError, match="does not exist"):
        ENCODERS.create("clip", model_config=str(cfg_file), pretrained=str(tmp_path / "x.pt"))
    with pytest.raises(MissingWeightsError, match="open_clip_config.json"):
        ENCODERS.create("clip", pretrained=f"local-dir:{tmp_path}")
    with pytest.raises(MissingWeightsError, match="hf-hub:nobody/nothing"):
        ENCODERS.create("clip", model="hf-hub:nobody/nothing")
    with pytest.raises(ValueError, match="neither a file nor an open_clip tag"):
        ENCODERS.create("clip", model="ViT-B-16", pretrained="imaginary_tag")
    enc = ENCODERS.create("clip", model_config=str(cfg_file), pretrained="none")
    assert enc.weights_sha256() is None


# -- transformers -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_dinov2(tmp_path_factory):
    d = tmp_path_factory.mktemp("dinov2")
    cfg = transformers.Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                    intermediate_size=64, image_size=56, patch_size=14)
    torch.manual_seed(0)
    model = transformers.Dinov2Model(cfg).eval()
    model.save_pretrained(d)
    transformers.BitImageProcessor(
        size={"shortest_edge": 64}, crop_size={"height": 56, "width": 56}, resample=3,
        image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225],
    ).save_pretrained(d)
    return d, model


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_hf_dinov2_folder_matches_original(tiny_dinov2, pooling):
    d, model = tiny_dinov2
    enc = ENCODERS.create("hf", model=str(d), pooling=pooling)
    assert enc.input_spec.size == (56, 56) and enc.embedding_spec.dim == 32
    digest = hashlib.sha256((d / "model.safetensors").read_bytes()).hexdigest()
    assert enc.weights_sha256() == digest
    x = torch.rand(3, 3, 56, 56, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        h = model(pixel_values=normalize(x, enc.mean, enc.std)).last_hidden_state
    ref = h[:, 0] if pooling == "cls" else h[:, 1:].mean(1)
    np.testing.assert_allclose(enc.embed(x), ref.numpy(), rtol=1e-4, atol=1e-5)


def test_hf_preprocess_matches_image_processor(tiny_dinov2):
    d, _ = tiny_dinov2
    enc = ENCODERS.create("hf", model=str(d))
    proc = transformers.AutoImageProcessor.from_pretrained(str(d))
    for seed, shape in ((0, (64, 64)), (1, (90, 90))):
        img = _grey(seed, shape)
        rgb = np.repeat((img * 255).round().astype(np.uint8)[..., None], 3, axis=2)
        pix = proc(images=rgb, return_tensors="pt")["pixel_values"][0]
        theirs = torch.as_tensor(np.asarray(pix))
        ours = normalize(enc.preprocess(img)[None], enc.mean, enc.std)[0]
        assert ours.shape == theirs.shape
        diff = (ours - theirs) * torch.tensor(enc.std).view(3, 1, 1)
        assert float(diff.abs().mean()) < 1.5 / 255 and float(diff.abs().max()) < 8 / 255


def test_hf_vit_with_register_free_mean_pooling(tmp_path):
    cfg = transformers.ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                 intermediate_size=64, image_size=32, patch_size=8)
    torch.manual_seed(1)
    model = transformers.ViTModel(cfg, add_pooling_layer=False).eval()
    model.save_pretrained(tmp_path)
    transformers.ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=[0.5] * 3,
                                   image_std=[0.5] * 3).save_pretrained(tmp_path)
    enc = ENCODERS.create("hf", model=str(tmp_path), pooling="mean")
    assert enc.input_spec.size == (32, 32) and enc.mean == (0.5, 0.5, 0.5)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        ref = model(pixel_values=(x - 0.5) / 0.5).last_hidden_state[:, 1:].mean(1)
    np.testing.assert_allclose(enc.embed(x), ref.numpy(), rtol=1e-4, atol=1e-5)


def test_hf_refuses_partial_checkpoints_and_missing_files(tiny_dinov2, tmp_path):
    d, _ = tiny_dinov2
    from safetensors.torch import load_file, save_file

    for name in ("config.json", "preprocessor_config.json"):
        (tmp_path / name).write_bytes((d / name).read_bytes())
    with pytest.raises(MissingWeightsError, match="no weights"):
        ENCODERS.create("hf", model=str(tmp_path))
    sd = load_file(str(d / "model.safetensors"))
    sd.pop("embeddings.patch_embeddings.projection.weight")
    save_file(sd, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(WeightsMismatchError, match="refusing random weights"):
        ENCODERS.create("hf", model=str(tmp_path))
    with pytest.raises(MissingWeightsError, match="does not exist"):
        ENCODERS.create("hf", model=str(tmp_path / "absent"))
    with pytest.raises(MissingWeightsError, match="HF_HUB_OFFLINE=1"):
        ENCODERS.create("hf", model="nobody/no-such-model")
    with pytest.raises(MissingWeightsError, match="microsoft/rad-dino"):
        ENCODERS.create("hf")
    with pytest.raises(ValueError, match="valid: cls, mean"):
        ENCODERS.create("hf", model=str(d), pooling="max")


def test_hf_dinov2_registers_excluded_from_mean(tmp_path):
    cfg = transformers.Dinov2WithRegistersConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
        image_size=28, patch_size=14, num_register_tokens=4)
    torch.manual_seed(2)
    model = transformers.Dinov2WithRegistersModel(cfg).eval()
    model.save_pretrained(tmp_path)
    enc = ENCODERS.create("hf", model=str(tmp_path), pooling="mean")  # no processor config
    assert enc.processor_name is None and enc.input_spec.size == (28, 28)
    x = torch.rand(2, 3, 28, 28, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        h = model(pixel_values=normalize(x, enc.mean, enc.std)).last_hidden_state
    assert h.shape[1] == 1 + 4 + 4  # class, registers, 2 x 2 patches
    np.testing.assert_allclose(enc.embed(x), h[:, 5:].mean(1).numpy(), rtol=1e-4, atol=1e-5)


def test_hf_convnet_needs_mean_pooling(tmp_path):
    cfg = transformers.ResNetConfig(num_channels=3, embedding_size=8, hidden_sizes=[8, 16],
                                    depths=[1, 1], layer_type="basic", image_size=32)
    torch.manual_seed(3)
    model = transformers.ResNetModel(cfg).eval()
    model.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="no class token"):
        ENCODERS.create("hf", model=str(tmp_path), pooling="cls")
    enc = ENCODERS.create("hf", model=str(tmp_path), pooling="mean")
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        ref = model(pixel_values=normalize(x, enc.mean, enc.std)).last_hidden_state.mean((2, 3))
    np.testing.assert_allclose(enc.embed(x), ref.numpy(), rtol=1e-4, atol=1e-5)


def test_clip_text_to_image_retrieval_matches_brute_force(tiny_clip, tiny):
    from cxrbench.encoders.clip import default_prompts, text_retrieval

    d, cfg_file, model = tiny_clip
    path = d / "tr.pt"
    torch.save(model.state_dict(), path)
    enc = ENCODERS.create("clip", model_config=str(cfg_file), pretrained=str(path))
    from cxrbench.benchmark.harness import RunConfig

    from cxrbench.datasets.imagecache import uncached_source

    # no decoded-image cache; the brute force reads the same 8-bit pixels the harness does
    ev, table, prompts = text_retrieval(enc, tiny, ks=(1, 5), cfg=RunConfig(use_cache=False))
    pixels = uncached_source(tiny, enc.input_spec.size)
    assert prompts == default_prompts(tiny.label_names)
    assert prompts["bright_top"] == "a chest x-ray showing bright top"
    # brute force: cosine of every image with every prompt, top 5, relevance by label
    imgs = torch.stack([enc.preprocess(pixels.load_image(i)) for i in range(len(tiny))])
    img_emb, txt_emb = enc.embed(imgs), enc.embed_text(list(prompts.values()))
    sims = txt_emb @ img_emb.T
    labels = tiny.index.labels
    p5, hit1 = [], []
    for j, lab in enumerate(prompts):
        col = list(tiny.label_names).index(lab)
        top = np.argsort(-sims[j], kind="stable")[:5]
        np.testing.assert_array_equal(np.sort(table.neighbors[j]), np.sort(top))
        rel = labels[top, col] == 1
        p5.append(rel.mean())
        hit1.append(float(rel[0]))
    assert ev.values["p@5"] == pytest.approx(np.mean(p5))
    assert ev.values["recall@1"] == pytest.approx(np.mean(hit1))
    with pytest.raises(ValueError, match="unknown labels"):
        text_retrieval(enc, tiny, {"Effusion": "pleural effusion"})


def test_cli_query_text(tiny_clip, tmp_path):
    """``cxrbench run --encoder clip --query-text LABEL=TEXT`` prints text-to-image metrics."""
    import os
    import subprocess
    import sys

    d, cfg_file, model = tiny_clip
    path = d / "cli.pt"
    torch.save(model.state_dict(), path)
    env = {**os.environ, "COLUMNS": "200", "CXRBENCH_CACHE": str(tmp_path)}
    p = subprocess.run(
        [sys.executable, "-m", "cxrbench.cli", "run", "--encoder", "clip", "--dataset", "tiny",
         "--set", f"model_config={cfg_file}", f"pretrained={path}", "--k", "1", "5",
         "--query-text", "ring=a bright ring", "bright_top=bright band at the top", "-q"],
        capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "text-to-image: clip on tiny (2 prompts)" in " ".join(p.stdout.split())
    assert "p@5" in p.stdout and "avg@5" in p.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "cxrbench.cli", "run", "--encoder", "raw", "--dataset", "tiny",
         "--query-text", "default", "-q"], capture_output=True, text=True, env=env, timeout=300)
    assert bad.returncode == 2 and "needs a text tower" in bad.stderr

