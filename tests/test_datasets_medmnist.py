"""MedMNIST (ChestMNIST, PneumoniaMNIST): npz layout, sizes, errors, the real PneumoniaMNIST file."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from conftest import shared_path

import cxrbench.datasets.medmnist as mm
from cxrbench.datasets import DATASETS

COUNTS = {"train": 7, "val": 3, "test": 4}


def write_npz(path, size=28, n_labels=1, compressed=True, rgb=False, seed=0):
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in COUNTS.items():
        shape = (n, size, size, 3) if rgb else (n, size, size)
        arrays[f"{split}_images"] = rng.integers(0, 256, shape).astype(np.uint8)
        arrays[f"{split}_labels"] = rng.integers(0, 2, (n, n_labels)).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    (np.savez_compressed if compressed else np.savez)(path, **arrays)
    return arrays


def test_pneumonia_npz_file_or_folder_splits_labels_pixels(tmp_path):
    arrays = write_npz(tmp_path / "pneumoniamnist.npz")
    for root in (tmp_path, tmp_path / "pneumoniamnist.npz"):
        ds = DATASETS.create("pneumoniamnist", root=str(root))
        ix = ds.index
        assert {s: int((ix.splits == s).sum()) for s in COUNTS} == COUNTS
        assert ds.single_label and ds.label_names == ("Normal", "Pneumonia")
        cls = np.concatenate([arrays[f"{s}_labels"][:, 0] for s in COUNTS])
        np.testing.assert_array_equal(ix.labels[:, 1], cls)
        np.testing.assert_array_equal(ix.labels.sum(1), 1)  # one-hot: one class per image
        assert list(ix.patient_ids) == list(ix.ids)
        j = 7 + 3 + 2  # third test image
        assert ix.ids[j] == "test-000002"
        np.testing.assert_allclose(ds.load_image(j), arrays["test_images"][2] / 255.0, atol=1e-7)


@pytest.mark.parametrize("size", [64, 128])
def test_size_variants_by_name_and_mismatch(tmp_path, size):
    arrays = write_npz(tmp_path / f"chestmnist_{size}.npz", size=size, n_labels=14)
    ds = DATASETS.create("chestmnist", root=str(tmp_path), size=size)
    assert ds.load_image(0).shape == (size, size)
    assert not ds.single_label and len(ds.label_names) == 14
    np.testing.assert_array_equal(ds.index.labels[:7], arrays["train_labels"])
    with pytest.raises(FileNotFoundError, match="chestmnist.npz"):
        DATASETS.create("chestmnist", root=str(tmp_path)).index  # 28 asked, only 64 there
    with pytest.raises(ValueError, match="size=28"):
        DATASETS.create("chestmnist", root=str(tmp_path / f"chestmnist_{size}.npz"), size=28).index
    with pytest.raises(ValueError, match="one of"):
        DATASETS.create("chestmnist", root=str(tmp_path), size=32)


def test_no_local_file_says_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDMNIST_ROOT", str(tmp_path / "nowhere"))
    monkeypatch.setitem(__import__("sys").modules, "medmnist", None)  # package absent
    with pytest.raises(FileNotFoundError) as ei:
        DATASETS.create("pneumoniamnist").index
    msg = str(ei.value)
    assert "pneumoniamnist.npz" in msg and str(tmp_path / "nowhere") in msg and "pip install medmnist" in msg


def test_default_folder_is_used_without_root(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDMNIST_ROOT", str(tmp_path))
    write_npz(tmp_path / "pneumoniamnist.npz")
    assert len(DATASETS.create("pneumoniamnist")) == 14


def test_stored_compressed_and_unpacked_arrays_agree_and_pickle_small(tmp_path, monkeypatch):
    arrays = write_npz(tmp_path / "c" / "chestmnist.npz", n_labels=14, compressed=True)
    write_npz(tmp_path / "s" / "chestmnist.npz", n_labels=14, compressed=False)
    comp = DATASETS.create("chestmnist", root=str(tmp_path / "c"))
    stored = DATASETS.create("chestmnist", root=str(tmp_path / "s"))
    assert isinstance(stored.npz.array("val_images"), np.memmap)  # mapped in place
    monkeypatch.setattr(mm, "_IN_MEMORY_BYTES", 0)  # force the unpack-to-cache path
    big = DATASETS.create("chestmnist", root=str(tmp_path / "c"))
    assert isinstance(big.npz.array("val_images"), np.memmap)
    for i in range(len(comp)):
        want = np.concatenate([arrays[f"{s}_images"] for s in COUNTS])[i] / 255.0
        for ds in (comp, stored, big):
            np.testing.assert_allclose(ds.load_image(i), want, atol=1e-7)
    clone = pickle.loads(pickle.dumps(comp))
    assert clone._npz is None  # workers reopen the file instead of receiving arrays
    np.testing.assert_array_equal(clone.load_image(5), comp.load_image(5))


def test_rgb_images_become_grey(tmp_path):
    arrays = write_npz(tmp_path / "pneumoniamnist.npz", rgb=True)
    ds = DATASETS.create("pneumoniamnist", root=str(tmp_path))
    rgb = arrays["train_images"][0].astype(np.float32)
    want = (0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]) / 255
    np.testing.assert_allclose(ds.load_image(0), want, atol=1e-5)


def test_real_pneumoniamnist_all_three_splits():
    ds = DATASETS.create("pneumoniamnist", root=str(shared_path("pneumoniamnist")))
    ix = ds.index
    assert {s: int((ix.splits == s).sum()) for s in ("train", "val", "test")} == \
        {"train": 3882, "val": 524, "test": 624}
    raw = np.load(shared_path("pneumoniamnist", "pneumoniamnist.npz"))
    for s in ("train", "val", "test"):
        np.testing.assert_array_equal(ix.labels[ix.splits == s][:, 1], raw[f"{s}_labels"][:, 0])
    j = int(np.flatnonzero(ix.splits == "val")[10])
    np.testing.assert_allclose(ds.load_image(j), raw["val_images"][10] / 255.0, atol=1e-7)
    assert ds.load_image(j).shape == (28, 28)
