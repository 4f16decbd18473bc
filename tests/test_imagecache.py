"""Decoded-image cache: exact contents, resume, DataLoader workers, concurrent fills, skips."""

from __future__ import annotations

import multiprocessing as mp
import pickle
import time

import numpy as np
import pytest
import torch
from dataset_fixtures import NIH_ROWS, corrupt, nih_tree, save_png
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

import cxrbench
from cxrbench.datasets import DATASETS
from cxrbench.datasets.imagecache import DONE, FAILED, CachedImages, cached_source, failed_rows
from cxrbench.encoders.base import resize_grey

SIZE = (16, 12)


def reference(ds, i, size=SIZE):
    u8 = np.clip(np.rint(resize_grey(ds.load_image(i), size) * 255), 0, 255).astype(np.uint8)
    return u8.astype(np.float32) / 255


@pytest.fixture
def nih(tmp_path):
    return DATASETS.create("nih14", root=str(nih_tree(tmp_path / "nih", size=40)))


def test_contents_equal_resize_then_quantise(nih, tmp_path):
    src = cached_source(nih, SIZE, tmp_path / "c")
    assert isinstance(src, CachedImages) and len(src) == len(nih)
    for i in range(len(nih)):
        img = src.load_image(i)
        assert img.dtype == np.float32 and img.shape == SIZE
        np.testing.assert_array_equal(img, reference(nih, i))
        np.testing.assert_array_equal(src.load_image(i), img)  # second read: from the store
    # the uint8 store is within half a level of the float resize
    assert np.abs(src.load_image(3) - resize_grey(nih.load_image(3), SIZE)).max() <= 0.5 / 255 + 1e-6
    assert src.data_path.name == f"{nih.fingerprint()}-16x12.u8"
    assert src.data_path.stat().st_size == len(nih) * 16 * 12


def test_resumes_without_decoding_again(nih, tmp_path, monkeypatch):
    src = cached_source(nih, SIZE, tmp_path / "c")
    for i in range(5):
        src.load_image(i)
    src.flush()
    again = cached_source(DATASETS.create("nih14", root=nih.root), SIZE, tmp_path / "c")
    assert again.stats() == {"rows": len(nih), "done": 5, "failed": 0, "todo": len(nih) - 5}
    want = reference(nih, 2)
    monkeypatch.setattr(type(again.dataset), "read", lambda *a, **k: pytest.fail("decoded again"))
    np.testing.assert_array_equal(again.load_image(2), want)
    # another size is another store
    other = cached_source(nih, (8, 8), tmp_path / "c")
    assert other.stats()["done"] == 0


class _Rows(TorchDataset):
    def __init__(self, src, n):
        self.src, self.n = src, n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return torch.from_numpy(self.src.load_image(i))


def test_dataloader_workers_fill_the_shared_store(nih, tmp_path):
    src = cached_source(nih, SIZE, tmp_path / "c")
    src.load_image(0)  # mapped in the parent before workers start
    blob = pickle.dumps(src)
    assert len(blob) < 50_000  # paths and index, not pixel arrays
    loader = DataLoader(_Rows(src, len(nih)), batch_size=3, num_workers=2)
    got = torch.cat(list(loader)).numpy()
    for i in range(len(nih)):
        np.testing.assert_array_equal(got[i], reference(nih, i))
    assert src.stats()["done"] == len(nih)  # rows decoded in workers are visible here


def _fill(args):
    root, cache = args
    ds = DATASETS.create("nih14", root=root)
    src = cached_source(ds, SIZE, cache)
    return src.fill()


def test_concurrent_fills_agree(nih, tmp_path):
    cache = tmp_path / "c"
    with mp.get_context("fork").Pool(2) as pool:  # two processes race over every row
        stats = pool.map(_fill, [(nih.root, str(cache))] * 2)
    assert all(s["done"] == len(nih) for s in stats)
    src = cached_source(nih, SIZE, cache)
    for i in range(len(nih)):
        np.testing.assert_array_equal(src.load_image(i), reference(nih, i))


def test_threaded_fill(nih, tmp_path):
    src = cached_source(nih, SIZE, tmp_path / "c")
    seen = []
    assert src.fill(threads=2, progress=lambda k, n: seen.append((k, n)))["done"] == len(nih)
    assert seen[-1] == (len(nih), len(nih))


def test_unreadable_rows_in_workers_reach_the_main_process_and_later_runs(tmp_path):
    root = nih_tree(tmp_path / "nih", size=40)
    corrupt(root / "images" / "00000003_000.png")
    ds = DATASETS.create("nih14", root=str(root), on_error="skip")
    bad = list(ds.index.ids).index("00000003_000.png")
    src = cached_source(ds, SIZE, tmp_path / "c")
    got = torch.cat(list(DataLoader(_Rows(src, len(ds)), batch_size=4, num_workers=2))).numpy()
    assert got[bad].max() == 0  # blank stand-in, batching went on
    assert failed_rows(src).tolist() == [bad]
    assert [d["id"] for d in ds.info["skipped_files"]] == ["00000003_000.png"]
    # a later run knows it from the cache without decoding
    ds2 = DATASETS.create("nih14", root=str(root), on_error="skip")
    src2 = cached_source(ds2, SIZE, tmp_path / "c")
    assert src2.stats()["failed"] == 1 and src2._state[bad] == FAILED
    assert failed_rows(src2).tolist() == [bad]
    assert "remembered by the image cache" in ds2.info["skipped_files"][0]["error"]


def test_on_error_raise_propagates_and_marks_nothing(tmp_path):
    root = nih_tree(tmp_path / "nih")
    corrupt(root / "images" / "00000003_000.png")
    ds = DATASETS.create("nih14", root=str(root))
    bad = list(ds.index.ids).index("00000003_000.png")
    src = cached_source(ds, SIZE, tmp_path / "c")
    with pytest.raises(ValueError, match="00000003_000.png"):
        src.load_image(bad)
    assert src._state[bad] != FAILED and src._state[bad] != DONE


def test_array_datasets_bypass_the_cache(tmp_path):
    arrays = {f"{s}_{k}": np.zeros((2, 28, 28) if k == "images" else (2, 1), np.uint8)
              for s in ("train", "val", "test") for k in ("images", "labels")}
    np.savez(tmp_path / "pneumoniamnist.npz", **arrays)
    ds = DATASETS.create("pneumoniamnist", root=str(tmp_path))
    assert cached_source(ds, SIZE, tmp_path / "c") is ds
    assert failed_rows(ds).tolist() == []


def test_harness_leaves_skipped_images_out_of_scoring(tmp_path):
    root = nih_tree(tmp_path / "nih", size=40)
    corrupt(root / "images" / "00000002_000.png")
    params = dict(dataset_params={"on_error": "skip"}, root=str(root), protocol="leave-one-out",
                  out=None, n_boot=0, cache_dir=str(tmp_path / "cache"), encoder_params={"size": 8})
    for _ in range(2):  # second run: embeddings come from the store, no image is decoded
        res = cxrbench.run("raw", "nih14", **params)
        assert res.protocol["n_queries"] == len(NIH_ROWS) - 1
        assert res.protocol["skipped_unreadable"] == 1
        assert [d["id"] for d in res.dataset["info"]["skipped_files"]] == ["00000002_000.png"]
        table = res._table
        ids = DATASETS.create("nih14", root=str(root), on_error="skip").index.ids
        bad_row = list(ids).index("00000002_000.png")
        assert bad_row not in set(table.queries.tolist())
        assert bad_row not in set(table.neighbors.ravel().tolist())


def test_cache_is_much_faster_than_decoding(tmp_path):
    root = tmp_path / "big"
    for k in range(12):
        yy, xx = np.mgrid[:768, :768]
        save_png(root / "x" / f"{k:03d}.png", ((xx * (k + 1) + yy) % 256).astype(np.uint8))
    ds = DATASETS.create("folder", root=str(root), test_fraction=0.0)
    src = cached_source(ds, (32, 32), tmp_path / "c")
    src.fill()
    t0 = time.perf_counter()
    for i in range(len(ds)):
        resize_grey(ds.load_image(i), (32, 32))
    decode = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(len(ds)):
        src.load_image(i)
    cached = time.perf_counter() - t0
    assert cached * 5 < decode, (cached, decode)


@pytest.mark.slow
def test_spawned_workers_reopen_the_store(nih, tmp_path):
    src = cached_source(nih, SIZE, tmp_path / "c")
    loader = DataLoader(_Rows(src, len(nih)), batch_size=4, num_workers=2,
                        multiprocessing_context="spawn")
    got = torch.cat(list(loader)).numpy()
    for i in range(len(nih)):
        np.testing.assert_array_equal(got[i], reference(nih, i))
    assert src.stats()["done"] == len(nih)
