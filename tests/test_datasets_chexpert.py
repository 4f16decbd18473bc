"""CheXpert: fixture trees in the official layout, and the real 223,414-row train.csv."""

from __future__ import annotations

import csv
import gzip
import time
from collections import Counter

import numpy as np
import pytest
from conftest import shared_path
from dataset_fixtures import CHEXPERT_TRAIN, CHEXPERT_VALID, chexpert_tree, corrupt

from cxrbench.datasets import DATASETS
from cxrbench.datasets.chexpert import OBSERVATIONS


def make(root, **params):
    return DATASETS.create("chexpert", root=str(root), **params)


def row_of(ds, rel):
    return list(ds.index.ids).index(rel)


def test_uncertainty_policies_and_blanks(tmp_path):
    root = chexpert_tree(tmp_path)
    rel = "train/patient00002/study2/view1_frontal.jpg"
    cells = next(r[3] for r in CHEXPERT_TRAIN if r[0] == rel)
    for policy, unc in (("ignore", -1), ("zeros", 0), ("ones", 1)):
        ds = make(root, uncertain=policy)
        lab = ds.index.labels[row_of(ds, rel)]
        want = [{"1.0": 1, "0.0": 0, "": -1, "-1.0": unc}[c] for c in cells]
        assert lab.tolist() == want, policy
        assert ds.info["uncertain_policy"] == policy
    # 11 uncertain cells in the fixture, counted over every row and file
    n_unc = sum(c == "-1.0" for r in CHEXPERT_TRAIN + CHEXPERT_VALID for c in r[3])
    ds = make(root)
    ds.index  # info is filled when the index is read
    assert ds.info["uncertain_labels"] == n_unc
    with pytest.raises(ValueError, match="ignore, zeros, ones"):
        make(root, uncertain="maybe")


def test_view_filter_patients_studies_and_valid_as_test(tmp_path):
    root = chexpert_tree(tmp_path)
    ds = make(root)  # frontal = AP or PA
    ids = set(ds.index.ids)
    assert ids == {r[0] for r in CHEXPERT_TRAIN + CHEXPERT_VALID if r[1] == "Frontal" and r[2] in ("AP", "PA")}
    assert "train/patient00004/study1/view1_frontal.jpg" not in ids  # Frontal but "LL"
    j = row_of(ds, "train/patient00002/study2/view1_frontal.jpg")
    assert ds.index.patient_ids[j] == "patient00002"
    assert ds.study_ids[j] == "patient00002/study2"
    assert ds.index.views[j] == "AP"
    assert ds.index.splits[row_of(ds, "valid/patient64541/study1/view1_frontal.jpg")] == "test"
    assert make(root, valid_split="val").index.splits.tolist().count("val") == 1
    lat = make(root, view="lateral")
    assert sorted(lat.index.ids) == sorted(r[0] for r in CHEXPERT_TRAIN + CHEXPERT_VALID if r[1] == "Lateral")
    assert set(lat.index.views) == {"LAT"}
    assert len(make(root, view="all")) == len(CHEXPERT_TRAIN) + len(CHEXPERT_VALID)
    assert len(make(root, view="pa")) == 1
    assert ds.load_image(0).shape == (32, 32)


def test_renamed_root_and_gz_csv_and_parent_root(tmp_path):
    root = chexpert_tree(tmp_path, name="my-chexpert", gz=True)
    ds = make(root)
    assert (root / "train.csv.gz").exists() and not (root / "train.csv").exists()
    assert len(ds) == 5
    assert ds.image_path(0).startswith(str(root))
    # pointing at the folder above CheXpert-v1.0-small works too
    chexpert_tree(tmp_path / "up")
    assert len(make(tmp_path / "up")) == 5


def test_missing_csv_names_expected_file(tmp_path):
    (tmp_path / "CheXpert-v1.0-small").mkdir()
    with pytest.raises(FileNotFoundError, match="CheXpert-v1.0-small/train.csv"):
        make(tmp_path / "CheXpert-v1.0-small").index


def test_partial_images_and_corrupt_jpeg(tmp_path):
    gone = "train/patient00003/study1/view1_frontal.jpg"
    root = chexpert_tree(tmp_path, skip={gone})
    ds = make(root)
    assert gone not in set(ds.index.ids) and ds.info["missing_files"] == 1
    with pytest.raises(FileNotFoundError, match="strict"):
        make(root, strict=True).index
    meta_only = chexpert_tree(tmp_path / "meta", images=False)
    with pytest.raises(FileNotFoundError, match="check_files=false"):
        make(meta_only).index
    assert len(make(meta_only, check_files=False)) == 5  # frontal AP/PA rows
    bad = "train/patient00001/study1/view1_frontal.jpg"
    corrupt(root / bad)
    with pytest.raises(ValueError, match="view1_frontal.jpg"):
        make(root).load_image(row_of(make(root), bad))
    sk = make(root, on_error="skip")
    assert sk.load_image(row_of(sk, bad)).max() == 0
    assert sk.failed_rows().tolist() == [row_of(sk, bad)]


def test_bad_label_value_is_reported(tmp_path):
    root = chexpert_tree(tmp_path)
    text = (root / "valid.csv").read_text().replace(",1.0\n", ",yes\n", 1)
    (root / "valid.csv").write_text(text)
    with pytest.raises(ValueError, match="unexpected values.*yes"):
        make(root).index


# -- real data ------------------------------------------------------------------------------------
def _expected(path):
    """Independent count: per label, positives / negatives / unknown under each policy."""
    with gzip.open(path, "rt", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        rows = list(reader)
    cells = {name: Counter(r[header.index(name)] for r in rows) for name in OBSERVATIONS}
    out = {}
    for policy in ("ignore", "zeros", "ones"):
        out[policy] = {}
        for name, c in cells.items():
            pos, neg, unc, blank = c["1.0"], c["0.0"], c["-1.0"], c[""]
            assert pos + neg + unc + blank == len(rows)
            out[policy][name] = {"ignore": (pos, neg, unc + blank), "zeros": (pos, neg + unc, blank),
                                 "ones": (pos + unc, neg, blank)}[policy]
    fl, appa = header.index("Frontal/Lateral"), header.index("AP/PA")
    frontal = sum(1 for r in rows if r[fl] == "Frontal" and r[appa] in ("AP", "PA"))
    patients = {r[0].split("/")[2] for r in rows}
    return len(rows), out, frontal, patients


@pytest.fixture(scope="module")
def real_root(tmp_path_factory):
    src = shared_path("chexpert", "train.csv.gz")
    root = tmp_path_factory.mktemp("cx") / "CheXpert-v1.0-small"
    root.mkdir()
    (root / "train.csv.gz").symlink_to(src)
    return root, _expected(src)


@pytest.mark.parametrize("policy", ["ignore", "zeros", "ones"])
def test_real_train_csv_counts_per_label_and_policy(real_root, policy):
    root, (n, expected, _frontal, patients) = real_root
    t0 = time.perf_counter()
    ds = make(root, uncertain=policy, view="all", check_files=False)
    ix = ds.index
    elapsed = time.perf_counter() - t0
    assert n == 223414 and len(ds) == n
    assert elapsed < 30, f"parsing train.csv took {elapsed:.1f}s"
    got = {name: tuple(int((ix.labels[:, j] == v).sum()) for v in (1, 0, -1))
           for j, name in enumerate(OBSERVATIONS)}
    assert got == expected[policy]
    assert set(ix.patient_ids) == patients and len(patients) == 64540


def test_real_train_csv_frontal_filter(real_root):
    root, (_n, expected, frontal, _p) = real_root
    ds = make(root, check_files=False)
    assert len(ds) == frontal == 191010
    assert set(np.unique(ds.index.views)) == {"AP", "PA"}
    assert ds.info["view_filter"] == {"view": "frontal", "kept": 191010, "of": 223414}
