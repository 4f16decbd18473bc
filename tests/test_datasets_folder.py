"""Image folders: one sub-folder per class (seed 003's effusion/ and nofinding/), CSV, splits."""

from __future__ import annotations

import numpy as np
import pytest
from dataset_fixtures import grey, save_dicom, save_png

from cxrbench.datasets import DATASETS


def seed003_tree(root, n_eff=3, n_no=6):
    for k in range(n_eff):
        save_png(root / "effusion" / f"eff{k:03d}.png", grey(k))
    for k in range(n_no):
        save_png(root / "nofinding" / f"nf{k:03d}.png", grey(50 + k))
    return root


def make(root, **params):
    return DATASETS.create("folder", root=str(root), **params)


def test_class_folders_give_single_label_one_hot(tmp_path):
    ds = make(seed003_tree(tmp_path / "d"))
    ix = ds.index
    assert ds.label_names == ("effusion", "nofinding") and ds.single_label
    assert len(ds) == 9 and (ix.labels.sum(1) == 1).all()
    eff = {i for i in ix.ids if i.startswith("effusion/")}
    assert {ix.ids[j] for j in np.flatnonzero(ix.labels[:, 0] == 1)} == eff
    assert ds.info["classes"] == {"effusion": 3, "nofinding": 6}
    assert list(ix.patient_ids) == list(ix.ids)
    j = list(ix.ids).index("effusion/eff001.png")
    np.testing.assert_allclose(ds.load_image(j), grey(1) / 255.0, atol=1e-7)


def test_split_ratio_and_seed(tmp_path):
    root = seed003_tree(tmp_path / "d", n_eff=20, n_no=40)
    a = make(root, test_fraction=0.25, split_seed=1)
    b = make(root, test_fraction=0.25, split_seed=1)
    c = make(root, test_fraction=0.25, split_seed=2)
    assert list(a.index.splits) == list(b.index.splits)
    assert list(a.index.splits) != list(c.index.splits)
    assert 5 <= (a.index.splits == "test").sum() <= 25
    assert a.info["split"]["seed"] == 1 and a.info["split"]["source"] == "generated"
    with pytest.raises(ValueError, match="fractions"):
        make(root, test_fraction=0.7, val_fraction=0.4).index


def test_pre_split_folders(tmp_path):
    root = tmp_path / "chest_xray"
    save_png(root / "train" / "NORMAL" / "a.png", grey(1))
    save_png(root / "train" / "PNEUMONIA" / "b.png", grey(2))
    save_png(root / "val" / "NORMAL" / "c.jpeg", grey(3))
    save_png(root / "test" / "PNEUMONIA" / "d.png", grey(4))
    ds = make(root)
    assert dict(zip(ds.index.ids, ds.index.splits)) == {
        "train/NORMAL/a.png": "train", "train/PNEUMONIA/b.png": "train",
        "val/NORMAL/c.jpeg": "val", "test/PNEUMONIA/d.png": "test"}
    assert ds.label_names == ("NORMAL", "PNEUMONIA")
    assert ds.info["split"]["source"] == "folders"


def test_csv_patients_multilabels_splits_and_dicom(tmp_path):
    root = seed003_tree(tmp_path / "d", n_eff=2, n_no=2)
    save_dicom(root / "effusion" / "scan.dcm", np.array([[0, 10], [20, 40]], dtype=np.uint16),
               photometric="MONOCHROME1")
    (root / "labels.csv").write_text(
        "path,patient_id,labels,split,view\n"
        "effusion/eff000.png,P1,effusion|cardiomegaly,train,PA\n"
        "eff001.png,P1,,train,AP\n"          # bare file name; empty labels = no finding
        "nf000,P2,nofinding,test,\n"         # stem only
        "nofinding/missing.png,P9,effusion,train,\n"
    )
    ds = make(root, csv="labels.csv")
    ix = ds.index
    row = {i: j for j, i in enumerate(ix.ids)}
    assert ds.label_names == ("cardiomegaly", "effusion", "nofinding") and not ds.single_label
    e0, e1, n0 = row["effusion/eff000.png"], row["effusion/eff001.png"], row["nofinding/nf000.png"]
    assert ix.labels[e0].tolist() == [1, 1, 0] and ix.labels[e1].tolist() == [0, 0, 0]
    assert ix.patient_ids[e0] == ix.patient_ids[e1] == "P1" and ix.patient_ids[n0] == "P2"
    assert ix.splits[e0] == "train" and ix.splits[n0] == "test" and ix.views[e1] == "AP"
    assert any("1 rows of labels.csv match no image" in w for w in ds.info["warnings"])
    # MONOCHROME1: inverted after scaling, so high stored values come out dark
    np.testing.assert_allclose(ds.load_image(row["effusion/scan.dcm"]), [[1, .75], [.5, 0]])
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        make(root, csv="nope.csv").index


def test_empty_folder_error_shows_expected_layout(tmp_path):
    (tmp_path / "x").mkdir()
    with pytest.raises(FileNotFoundError, match="effusion.*img001.png"):
        make(tmp_path / "x").index
