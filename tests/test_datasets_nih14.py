"""NIH ChestX-ray14: fixture trees in the official layout, and the real 112,120-row CSV."""

from __future__ import annotations

import csv
import time

import numpy as np
import pytest
from conftest import shared_path
from dataset_fixtures import NIH_ROWS, corrupt, nih_tree

from cxrbench.datasets import DATASETS
from cxrbench.datasets.imageio import ImageReadError
from cxrbench.datasets.nih14 import LABELS


def make(root, **params):
    return DATASETS.create("nih14", root=str(root), **params)


def test_labels_patients_views_from_the_csv(tmp_path):
    ds = make(nih_tree(tmp_path / "nih"))
    ix = ds.index
    assert len(ds) == len(NIH_ROWS)
    assert ds.label_names == LABELS and len(LABELS) == 15
    for i, (name, findings, _fu, pid, view) in enumerate(NIH_ROWS):
        j = list(ix.ids).index(name)
        assert ix.patient_ids[j] == str(pid)
        assert ix.views[j] == view
        assert set(ds[j].positive_labels) == set(findings.split("|"))
        assert (ix.labels[j] >= 0).all()  # NIH labels are never unknown
    assert ds.load_image(0).dtype == np.float32


def test_archive_layout_and_old_csv_name(tmp_path):
    root = nih_tree(tmp_path / "nih", archives=True, old_csv=True)
    assert (root / "images_001" / "images").is_dir() and not (root / "images").exists()
    ds = make(root)
    assert len(ds) == len(NIH_ROWS)
    assert ds.info["csv"] == "Data_Entry_2017.csv"
    # each id maps to the file in its own archive folder
    i = list(ds.index.ids).index("00000001_001.png")
    assert ds.image_path(i).endswith("images_002/images/00000001_001.png")
    assert ds.load_image(i).shape == (24, 24)


def test_partial_download_warns_with_count_and_strict_fails(tmp_path, caplog):
    present = {r[0] for r in NIH_ROWS[:4]}
    root = nih_tree(tmp_path / "nih", present=present)
    ds = make(root)
    with caplog.at_level("WARNING"):
        assert sorted(ds.index.ids) == sorted(present)
    missing = len(NIH_ROWS) - 4
    assert ds.info["missing_files"] == missing
    assert any(f"{missing} of {len(NIH_ROWS)} images" in w for w in ds.info["warnings"])
    assert f"{missing} of {len(NIH_ROWS)} images" in caplog.text
    with pytest.raises(FileNotFoundError, match=f"strict.*{missing} of {len(NIH_ROWS)}"):
        make(root, strict=True).index


def test_missing_csv_names_the_expected_file(tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(FileNotFoundError, match="Data_Entry_2017_v2020.csv"):
        make(tmp_path).index


def test_no_images_at_all_is_an_error(tmp_path):
    root = nih_tree(tmp_path / "nih", present=set())
    with pytest.raises(FileNotFoundError, match="none of the 11 images"):
        make(root).index


def test_official_split_lists(tmp_path):
    ds = make(nih_tree(tmp_path / "nih", split_lists=True))
    ix = ds.index
    test = {ix.ids[i] for i in ds.split_indices("test")}
    assert test == {"00000004_000.png", "00000005_000.png"}
    assert len(ds.split_indices("train")) == len(NIH_ROWS) - 2
    assert ds.info["split"]["source"] == "official"


def test_one_split_list_without_the_other_is_an_error(tmp_path):
    root = nih_tree(tmp_path / "nih", split_lists=True)
    (root / "test_list.txt").unlink()
    with pytest.raises(FileNotFoundError, match="test_list.txt"):
        make(root).index


def test_generated_split_is_patient_level_deterministic_and_recorded(tmp_path):
    root = nih_tree(tmp_path / "nih")
    a, b = make(root, split_seed=3, test_fraction=0.5), make(root, split_seed=3, test_fraction=0.5)
    assert list(a.index.splits) == list(b.index.splits)
    assert a.info["split"] == {"source": "generated", "method": "patient-level hash", "seed": 3,
                               "test_fraction": 0.5, "val_fraction": 0.0}
    for p in set(a.index.patient_ids):
        assert len(set(a.index.splits[a.index.patient_ids == p])) == 1
    # a patient keeps its split when other images are missing (hash, not permutation)
    part = make(nih_tree(tmp_path / "part", present={r[0] for r in NIH_ROWS[:5]}),
                split_seed=3, test_fraction=0.5)
    full = dict(zip(a.index.ids, a.index.splits))
    assert all(full[i] == s for i, s in zip(part.index.ids, part.index.splits))
    # different seeds give different splits (over many patients)
    from cxrbench.datasets._files import hash_split

    pats = [str(k) for k in range(2000)]
    s0, s1 = hash_split(pats, 0, 0.2), hash_split(pats, 1, 0.2)
    assert (s0 != s1).any() and abs((s0 == "test").mean() - 0.2) < 0.03


def test_corrupt_image_raise_and_skip(tmp_path):
    root = nih_tree(tmp_path / "nih")
    bad = root / "images" / "00000002_000.png"
    corrupt(bad)
    ds = make(root)
    i = list(ds.index.ids).index("00000002_000.png")
    with pytest.raises(ImageReadError, match="00000002_000.png"):
        ds.load_image(i)
    sk = make(root, on_error="skip")
    assert sk.load_image(i).max() == 0.0  # blank stand-in
    assert sk.load_image(0).max() > 0
    assert sk.failed_rows().tolist() == [i]
    (rec,) = sk.info["skipped_files"]
    assert rec["id"] == "00000002_000.png" and rec["path"] == str(bad) and rec["error"]
    with pytest.raises(ValueError, match="on_error.*raise, skip"):
        make(root, on_error="ignore")


# -- real data ---------------------------------------------------------------------------------
def test_real_nih14_mini_gives_308_records_with_csv_labels():
    root = shared_path("nih14-mini")
    t0 = time.perf_counter()
    ds = make(root)
    ix = ds.index
    elapsed = time.perf_counter() - t0
    assert len(ds) == 308
    assert ds.info["csv_rows"] == 112120
    assert ds.info["missing_files"] == 112120 - 308
    assert elapsed < 10, f"parsing the 112k-row CSV took {elapsed:.1f}s"
    counts = dict(zip(ds.label_names, (ix.labels == 1).sum(0).tolist()))
    assert counts == {  # README of shared/data
        "Infiltration": 57, "No Finding": 54, "Atelectasis": 46, "Consolidation": 45, "Nodule": 41,
        "Effusion": 35, "Mass": 33, "Fibrosis": 31, "Cardiomegaly": 30, "Pleural_Thickening": 24,
        "Emphysema": 20, "Pneumothorax": 20, "Pneumonia": 18, "Hernia": 11, "Edema": 10,
    }
    assert len(set(ix.patient_ids)) == 308
    # independent check of every record against the CSV
    with open(root / "Data_Entry_2017_v2020.csv", newline="") as fh:
        rows = {r["Image Index"]: r for r in csv.DictReader(fh)}
    on_disk = sorted(p.name for p in (root / "images").glob("*.png"))
    assert sorted(ix.ids) == on_disk
    for j in range(len(ds)):
        r = rows[ix.ids[j]]
        assert ix.patient_ids[j] == str(int(r["Patient ID"]))
        assert ix.views[j] == r["View Position"]
        assert set(ds[j].positive_labels) == set(r["Finding Labels"].split("|"))
    img = ds.load_image(0)
    assert img.shape == (256, 256) and 0 <= img.min() and img.max() <= 1


def test_behaviour_params_do_not_change_the_fingerprint(tmp_path):
    root = nih_tree(tmp_path / "nih")
    fp = make(root).fingerprint()
    assert make(root, on_error="skip").fingerprint() == fp  # same rows: caches are reused
    assert make(root, strict=True).fingerprint() == fp
    assert make(root, split_seed=1).fingerprint() != fp
    assert make(root, on_error="skip").describe()["on_error"] == "skip"


def test_rgba_and_16bit_pngs_inside_the_layout(tmp_path):
    # some real NIH PNGs are RGBA; 16-bit exports are common in re-distributions
    from PIL import Image

    root = nih_tree(tmp_path / "nih")
    rgba = np.zeros((24, 24, 4), np.uint8)
    rgba[..., :3], rgba[..., 3] = 200, 255
    Image.fromarray(rgba, mode="RGBA").save(root / "images" / "00000004_000.png")
    deep = np.full((24, 24), 40000, np.uint16)
    Image.fromarray(deep).save(root / "images" / "00000005_000.png")
    ds = make(root)
    ids = list(ds.index.ids)
    np.testing.assert_allclose(ds.load_image(ids.index("00000004_000.png")), 200 / 255, atol=1e-6)
    np.testing.assert_allclose(ds.load_image(ids.index("00000005_000.png")), 40000 / 65535, atol=1e-6)
