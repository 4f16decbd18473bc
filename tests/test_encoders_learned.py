"""Learned encoders (stacked-ae, autothorax, supervised-cnn): training, checkpoints, reuse.

Every encoder is trained once per module on a small set (the phantom when it
is registered, else TinyDataset) with fast settings; the tests check the loss
falls, that checkpoints round-trip bit for bit, are found again instead of
retrained, and that fit only ever reads train-split images.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from _learned_helpers import FAST, RecordingDataset, small_dataset, tiny_batch
from _learned_helpers import one_torch_thread  # noqa: F401  (autouse fixture)

import cxrbench
from cxrbench.benchmark.harness import RunConfig
from cxrbench.benchmark.search import knn_search
from cxrbench.datasets import Subset
from cxrbench.encoders import ENCODERS
from cxrbench.encoders._training import (
    CONFIG,
    TRAINING_LOG,
    WEIGHTS,
    TrainedEncoder,
    checkpoint_key,
    patient_holdout,
)
from cxrbench.encoders.stacked_ae import StackedAutoencoder, parse_layers

REPO = Path(__file__).resolve().parents[1]
LEARNED = sorted(FAST)


@pytest.fixture(scope="module")
def ds():
    """A small dataset that records which rows had their image loaded."""
    return RecordingDataset(small_dataset(48))


@pytest.fixture(scope="module")
def trained(ds, tmp_path_factory):
    """name -> encoder trained once on the train split (its own cache dir)."""
    out = {}
    for name in LEARNED:
        enc = ENCODERS.create(name, **FAST[name])
        enc.cache_dir = tmp_path_factory.mktemp(f"ckpt-{name}")
        start = len(ds.loaded)
        enc.fit(Subset(ds, ds.split_indices("train")), seed=0)
        enc.rows_loaded_by_fit = set(ds.loaded[start:])
        out[name] = enc
    return out


def _first_last_losses(enc: TrainedEncoder) -> list[tuple[float, float]]:
    """(first, last) epoch loss per training stage (per layer for stacked-ae)."""
    epochs = enc.training_log["epochs"]
    groups: dict[int, list[float]] = {}
    for e in epochs:
        groups.setdefault(e.get("layer", 1), []).append(e["loss"])
    return [(v[0], v[-1]) for v in groups.values()]


# -- training and checkpoints ------------------------------------------------------------
@pytest.mark.parametrize("name", LEARNED)
def test_loss_decreases(trained, name):
    enc = trained[name]
    for first, last in _first_last_losses(enc):
        assert np.isfinite(last)
        assert last < first, f"{name}: loss went {first} -> {last}"


@pytest.mark.parametrize("name", LEARNED)
def test_checkpoint_folder_contents(trained, ds, name):
    enc = trained[name]
    folder = enc.checkpoint_path
    assert folder.parent == Path(enc.cache_dir) / "checkpoints"
    for f in (WEIGHTS, CONFIG, TRAINING_LOG):
        assert (folder / f).is_file()
    cfg = json.loads((folder / CONFIG).read_text())
    assert cfg["encoder"] == name and cfg["key"] == folder.name == enc.state_key()
    assert cfg["dataset"]["fingerprint"] == ds.fingerprint()
    assert cfg["dataset"]["n_train"] == len(ds.split_indices("train"))
    assert cfg["seed"] == 0
    log = json.loads((folder / TRAINING_LOG).read_text())
    assert len(log["epochs"]) >= 1 and all("loss" in e for e in log["epochs"])
    # the key is reproducible from its inputs
    rows = ds.split_indices("train")
    assert enc.state_key() == checkpoint_key(name, enc.train_config(), ds.fingerprint(), rows, 0)


@pytest.mark.parametrize("name", LEARNED)
def test_saved_then_loaded_checkpoint_embeds_bit_identically(trained, ds, name):
    enc = trained[name]
    batch = tiny_batch(enc, ds, range(len(ds)))
    a = enc.embed(batch)
    loaded = ENCODERS.create(name, checkpoint=str(enc.checkpoint_path))
    b = loaded.embed(batch)
    assert a.dtype == b.dtype and a.shape == b.shape == (len(ds), enc.embedding_spec.dim)
    assert a.tobytes() == b.tobytes()
    assert loaded.fingerprint() == enc.fingerprint()
    assert loaded.weights_sha256() == enc.weights_sha256()
    # a fresh encoder with the same config finds the checkpoint instead of training
    again = ENCODERS.create(name, **FAST[name])
    again.cache_dir = enc.cache_dir

    def boom(*a, **k):
        raise AssertionError("retrained although a matching checkpoint exists")

    again._train = boom
    again.fit(Subset(ds, ds.split_indices("train")), seed=0)
    assert again.report()["training"]["reused"] is True
    assert again.embed(batch).tobytes() == a.tobytes()


@pytest.mark.parametrize("name", LEARNED)
def test_fit_reads_only_train_split_images(trained, ds, name):
    loaded = trained[name].rows_loaded_by_fit
    assert loaded == set(ds.split_indices("train").tolist())  # the train split, nothing else
    assert not loaded & set(ds.split_indices("test").tolist())


def test_untrained_encoder_refuses_to_embed(ds):
    enc = ENCODERS.create("stacked-ae", **FAST["stacked-ae"])
    with pytest.raises(RuntimeError, match="not trained"):
        enc.embed(tiny_batch(enc, ds, [0, 1]))
    assert enc.state_key() == ""


def test_training_is_deterministic_per_seed(trained, ds, tmp_path):
    rows = ds.split_indices("train")

    def train(seed, where):
        enc = ENCODERS.create("stacked-ae", **FAST["stacked-ae"])
        enc.cache_dir = tmp_path / where
        enc.fit(Subset(ds, rows), seed=seed)
        return enc

    a, b, c = trained["stacked-ae"], train(0, "b"), train(1, "c")
    assert a.checkpoint_path.parent != b.checkpoint_path.parent  # really trained twice
    assert a.weights_sha256() == b.weights_sha256()
    assert a.state_key() == b.state_key()
    assert c.state_key() != a.state_key() and c.weights_sha256() != a.weights_sha256()


def test_checkpoint_key_depends_on_config_data_rows_seed(ds):
    fp, rows = ds.fingerprint(), ds.split_indices("train")
    cfg = ENCODERS.create("stacked-ae").train_config()
    base = checkpoint_key("stacked-ae", cfg, fp, rows, 0)
    assert base.startswith("stacked-ae-")
    assert checkpoint_key("stacked-ae", cfg, fp, rows, 1) != base
    assert checkpoint_key("stacked-ae", cfg, fp, rows[:-1], 0) != base
    assert checkpoint_key("stacked-ae", cfg, "0" * 16, rows, 0) != base
    other = ENCODERS.create("stacked-ae", epochs=29).train_config()
    assert checkpoint_key("stacked-ae", other, fp, rows, 0) != base
    # equivalent spellings and embedding-only parameters share the trained model
    same = ENCODERS.create("stacked-ae", layers="1024-600-500-260", binary=True).train_config()
    assert checkpoint_key("stacked-ae", same, fp, rows, 0) == base


def test_checkpoint_errors_say_what_is_wrong(trained, tmp_path):
    sae = trained["stacked-ae"]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ENCODERS.create("stacked-ae", checkpoint=str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="weights.safetensors"):
        ENCODERS.create("stacked-ae", checkpoint=str(tmp_path / "empty"))
    with pytest.raises(ValueError, match="trained for encoder 'stacked-ae'"):
        ENCODERS.create("supervised-cnn", checkpoint=str(sae.checkpoint_path))
    with pytest.raises(ValueError, match="epochs=30 but the checkpoint has 4"):
        ENCODERS.create("stacked-ae", checkpoint=str(sae.checkpoint_path), epochs=30)
    with pytest.raises(ValueError, match="unknown parameter"):
        ENCODERS.create("stacked-ae", lyers=[3])
    # the checkpoint's parameters define the model; agreeing ones are fine
    ok = ENCODERS.create("stacked-ae", checkpoint=str(sae.checkpoint_path), layers=[48, 16])
    assert ok.params()["layers"] == [48, 16] and ok.params()["epochs"] == 4


def test_patient_holdout_is_by_patient_and_seeded():
    pids = np.repeat([f"p{i}" for i in range(20)], 3)
    m = patient_holdout(pids, 0.25, seed=3)
    assert m.sum() == 15  # 5 of 20 patients, 3 images each
    for p in np.unique(pids):
        assert len(set(m[pids == p])) == 1  # a patient is wholly in or out
    assert (patient_holdout(pids, 0.25, seed=3) == m).all()
    assert not patient_holdout(pids, 0.0, seed=3).any()


# -- stacked-ae ------------------------------------------------------------------------
def test_parse_layers():
    assert parse_layers("1024-600-500-260", 1024) == [600, 500, 260]
    assert parse_layers("1024/225", 1024) == [225]
    assert parse_layers([600, 500, 260], 1024) == [600, 500, 260]
    assert parse_layers(275, 1024) == [275]
    for bad in ("600-500-260", "1024", "1024-x", [], [0]):
        with pytest.raises(ValueError):
            parse_layers(bad, 1024)
    enc = ENCODERS.create("stacked-ae")
    assert enc.architecture == "1024-600-500-260"
    assert enc.embedding_spec.dim == 260 and enc.input_spec.size == (32, 32)
    b = ENCODERS.create("stacked-ae", binary=True)
    assert b.embedding_spec.distance.value == "hamming" and b.embedding_spec.dim == 264


def test_tied_weights_and_sigmoid_codes(trained):
    sae = trained["stacked-ae"]
    names = sorted(sae._state())
    # one weight matrix per layer (tied: the decoder reuses it), two biases
    assert names == ["layer0.W", "layer0.b_hidden", "layer0.b_visible",
                     "layer1.W", "layer1.b_hidden", "layer1.b_visible"]
    assert tuple(sae.aes[0].W.shape) == (1024, 48) and tuple(sae.aes[1].W.shape) == (48, 16)
    x = torch.rand(3, 1, 32, 32)
    code = sae.codes(x)
    assert code.shape == (3, 16) and float(code.min()) > 0 and float(code.max()) < 1
    ref = x.reshape(3, -1)
    for ae in sae.aes:
        ref = torch.sigmoid(ref @ ae.W + ae.b_hidden)
    assert torch.allclose(code, ref.detach())


def test_tied_autoencoder_cost_is_cross_entropy():
    from cxrbench.encoders.stacked_ae import TiedAutoencoder

    ae = TiedAutoencoder(4, 2, generator=torch.Generator().manual_seed(0))
    x = torch.tensor([[0.0, 0.5, 1.0, 0.25], [1.0, 1.0, 0.0, 0.0]])
    h = torch.sigmoid(x @ ae.W + ae.b_hidden)
    z = torch.sigmoid(h @ ae.W.t() + ae.b_visible)
    ref = -(x * torch.log(z) + (1 - x) * torch.log(1 - z)).sum(1).mean()
    assert torch.allclose(ae.cost(x), ref, atol=1e-5)
    bound = 4 * np.sqrt(6 / 6)
    assert float(ae.W.detach().abs().max()) <= bound


def test_binary_codes_rank_like_squared_euclidean_on_bits(trained, ds):
    sae = trained["stacked-ae"]
    binary = ENCODERS.create("stacked-ae", checkpoint=str(sae.checkpoint_path), binary=True)
    batch = tiny_batch(sae, ds, range(len(ds)))
    packed = binary.embed(batch)
    assert packed.dtype == np.uint8 and packed.shape == (len(ds), 2)
    bits = np.unpackbits(packed, axis=1)
    assert (bits == (sae.embed(batch) >= 0.5)).all()  # bit = code >= 0.5
    n = len(ds)
    rows = np.arange(n)
    kw = dict(query_rows=rows, gallery_rows=rows, exclude_same_patient=False)
    ham = knn_search(packed, packed, n - 1, "hamming", **kw)
    l2 = knn_search(bits.astype(np.float32), bits.astype(np.float32), n - 1, "l2", **kw)
    assert np.array_equal(ham.distances, l2.distances)
    for q in range(n):  # same neighbours at each distance (ties may swap order)
        for d in np.unique(ham.distances[q]):
            assert set(ham.neighbors[q][ham.distances[q] == d]) == set(
                l2.neighbors[q][l2.distances[q] == d])
    # brute force: Hamming distance = number of differing bits
    brute = (bits[:, None, :] != bits[None, :, :]).sum(-1)
    assert ham.distances[0, 0] == np.sort(brute[0][1:])[0]


def test_bf16_precision_option_runs(ds, tmp_path):
    """bf16 autocast is offered (fp32 is the default: slower on AVX2 CPUs)."""
    enc = ENCODERS.create("stacked-ae", **{**FAST["stacked-ae"], "precision": "bf16"})
    enc.cache_dir = tmp_path
    enc.fit(Subset(ds, ds.split_indices("train")), seed=0)
    assert enc.params()["precision"] == "bf16"
    assert np.isfinite(enc.embed(tiny_batch(enc, ds, [0, 1]))).all()
    with pytest.raises(ValueError, match="valid: fp32, bf16"):
        ENCODERS.create("stacked-ae", precision="fp16")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("name", LEARNED)
def test_cuda_training_embeds_like_cpu_checkpoint(trained, ds, tmp_path, name):
    cpu = trained[name]
    gpu = ENCODERS.create(name, device="cuda", **FAST[name])
    gpu.cache_dir = tmp_path
    gpu.fit(Subset(ds, ds.split_indices("train")), seed=0)
    assert gpu.checkpoint_config["trained_on"]["device"].startswith("cuda")
    # the CPU checkpoint loads onto the GPU and embeds (nearly) as on the CPU
    moved = ENCODERS.create(name, device="cuda", checkpoint=str(cpu.checkpoint_path))
    batch = tiny_batch(cpu, ds, range(8))
    np.testing.assert_allclose(moved.embed(batch), cpu.embed(batch), atol=1e-3, rtol=1e-3)


def test_cuda_without_gpu_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(RuntimeError, match="no GPU"):
        ENCODERS.create("stacked-ae", device="cuda")


# -- supervised-cnn (the rest is in test_encoders_learned_models.py) ----------------------
def test_supervised_multilabel_reports_validation_metrics(trained, ds):
    enc = trained["supervised-cnn"]
    train = Subset(ds, ds.split_indices("train"))
    rep = enc.report()["classifier"]
    assert set(rep["auc"]) == set(ds.label_names)
    log = enc.training_log
    assert rep["n"] == log["n_val"] > 0 and log["n_train"] + log["n_val"] == len(train)
    # validation rows are whole patients carved from the train split
    tr_p, va_p = set(), set()
    hold = set(enc._split(train, 0)[1].tolist())
    for j, p in enumerate(train.patient_ids):
        (va_p if j in hold else tr_p).add(p)
    assert not tr_p & va_p
    assert len(log["pos_weight"]) == len(ds.label_names)
    # the classifier can be scored on the test split after training
    test = Subset(ds, ds.split_indices("test"))
    m = enc.evaluate_classifier(test)
    assert m["n"] == len(test) and set(m["recall"]) == set(ds.label_names)
    assert enc.embed(tiny_batch(enc, ds, [0, 1])).shape == (2, 512)


# -- harness and CLI -------------------------------------------------------------------
def test_harness_run_trains_once_then_reuses(ds, tmp_path, monkeypatch):
    calls = []
    orig = StackedAutoencoder._train

    def counting(self, *a, **k):
        calls.append(1)
        return orig(self, *a, **k)

    monkeypatch.setattr(StackedAutoencoder, "_train", counting)
    kw = dict(encoder_params=FAST["stacked-ae"], out=None, n_boot=0, k=[1, 5],
              cache_dir=str(tmp_path))
    r1 = cxrbench.run("stacked-ae", ds, **kw)
    r2 = cxrbench.run("stacked-ae", ds, **kw)
    assert len(calls) == 1
    assert r1.extra["training"]["reused"] is False and r2.extra["training"]["reused"] is True
    assert r1.encoder["fingerprint"] == r2.encoder["fingerprint"]
    assert r2.cache["embeddings"][0]["hit"] is True  # same trained model: embeddings reused
    assert r1.encoder["checkpoint"]["key"] == r1.extra["training"]["key"]
    assert np.array_equal(r1._table.neighbors, r2._table.neighbors)
    assert (tmp_path / "checkpoints" / r1.extra["training"]["key"]).is_dir()


def test_harness_fit_sees_no_test_images(ds, tmp_path, monkeypatch):
    rec = RecordingDataset(ds.inner)
    during_fit: list[int] = []
    orig_fit = TrainedEncoder.fit

    def fit(self, train, **kw):
        start = len(rec.loaded)
        try:
            return orig_fit(self, train, **kw)
        finally:
            during_fit.extend(rec.loaded[start:])

    monkeypatch.setattr(TrainedEncoder, "fit", fit)
    cxrbench.run("stacked-ae", rec, encoder_params=FAST["stacked-ae"], out=None, n_boot=0,
                 k=[1], cache_dir=str(tmp_path))
    assert during_fit and set(during_fit) <= set(rec.split_indices("train").tolist())


def test_cli_train_then_run_with_checkpoint(tmp_path, capsys):
    from cxrbench.cli import main

    args = ["train", "-e", "stacked-ae", "-d", "tiny", "--set", "layers=1024-32-8", "epochs=2",
            "dataset.n=30", "--cache-dir", str(tmp_path), "-q"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "trained stacked-ae on tiny" in out
    folders = list((tmp_path / "checkpoints").iterdir())
    assert len(folders) == 1 and folders[0].name.startswith("stacked-ae-")
    cfg = json.loads((folders[0] / CONFIG).read_text())
    assert cfg["params"]["layers"] == [32, 8] and cfg["params"]["epochs"] == 2
    assert main(args) == 0
    assert "found existing" in capsys.readouterr().out
    assert len(list((tmp_path / "checkpoints").iterdir())) == 1
    assert main(["run", "-e", "stacked-ae", "-d", "tiny", "--set", f"checkpoint={folders[0]}",
                 "dataset.n=30", "--n-boot", "0", "--out", str(tmp_path / "res"), "-q",
                 "--cache-dir", str(tmp_path)]) == 0
    res = json.loads(next((tmp_path / "res").rglob("*.json")).read_text())
    assert res["extra"]["training"]["given"] is True
    assert res["encoder"]["checkpoint"]["key"] == folders[0].name
    assert main(["train", "-e", "raw", "-d", "tiny", "-q"]) == 2  # not trainable: clear error


# -- configs ---------------------------------------------------------------------------
PAPER_TABLES = {  # architecture -> % reduction, seed 002 tables 2-4
    (225,): 78.03, (512,): 50.0, (150,): 85.35, (275,): 73.14,
    (600, 250): 75.59, (400, 250): 75.59, (512, 250): 75.59,
    (600, 400, 200): 80.47, (600, 500, 260): 74.61,
}


def test_irma_suite_lists_every_architecture_of_tables_2_to_4():
    suite = yaml.safe_load((REPO / "configs" / "suites" / "stacked_ae_irma.yaml").read_text())
    assert set(suite) == {"name", "runs"} and suite["name"] == "stacked_ae_irma"
    archs = []
    for run in suite["runs"]:
        cfg = RunConfig.from_dict(run)
        assert cfg.encoder == "stacked-ae" and cfg.dataset == "irma" and cfg.protocol == "holdout"
        assert 1 in cfg.k and cfg.metrics == ["irma"]
        enc = ENCODERS.create(cfg.encoder, **cfg.encoder_params)
        p = enc.params()
        assert (p["lr"], p["batch_size"], p["epochs"], p["size"]) == (0.1, 20, 30, 32)
        arch = tuple(p["layers"])
        archs.append(arch)
        assert round(100 * (1 - arch[-1] / 1024), 2) == PAPER_TABLES[arch]
    assert sorted(archs) == sorted(PAPER_TABLES)
    for single in ("irma_best.yaml", "irma_best_binary.yaml"):
        cfg = RunConfig.from_dict(yaml.safe_load((REPO / "configs" / "stacked_ae" / single).read_text()))
        assert ENCODERS.create(cfg.encoder, **cfg.encoder_params).architecture == "1024-600-500-260"
