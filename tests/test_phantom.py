"""The phantom dataset: determinism, prevalence, labels match pixels, split, IRMA, export, learnability."""

from __future__ import annotations

import copy
import csv
import re
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import roc_auc_score

from cxrbench.datasets import DATASETS
from cxrbench.datasets.phantom import (
    DEFAULT_PREVALENCE,
    FINDINGS,
    LABELS,
    NIH_HEADER,
    PhantomDataset,
    export_nih,
    irma_tree_path,
)

CODE_RE = re.compile(r"^[0-9a-z]{4}-[0-9a-z]{3}-[0-9a-z]{3}-[0-9a-z]{3}$")


def one_row_per_kind(ds: PhantomDataset) -> dict[tuple[str, str], int]:
    """First row of every (region, view) present."""
    out: dict[tuple[str, str], int] = {}
    for i, (region, view) in enumerate(zip(ds.regions, ds.index.views)):
        out.setdefault((str(region), str(view)), i)
    return out


def first_row(ds: PhantomDataset, finding: str, view: str = "PA") -> int:
    ix = ds.index
    j = LABELS.index(finding)
    ok = (ix.labels[:, j] == 1) & (ix.views == view)
    rows = np.flatnonzero(ok)
    assert len(rows), f"no {finding} row"
    return int(rows[0])


# -- registry and contract ------------------------------------------------------
def test_registered_and_created_by_name():
    ds = DATASETS.create("phantom", root=None, n=12, size=32)
    assert isinstance(ds, PhantomDataset)
    assert len(ds) == 12
    assert tuple(ds.label_names) == LABELS
    assert "phantom" in DATASETS.names()


@pytest.mark.parametrize("size", [64, 33])
def test_every_region_and_view_gives_a_valid_image(size):
    ds = PhantomDataset(n=3000, size=size, seed=3, non_chest_fraction=0.3)
    kinds = one_row_per_kind(ds)
    # chest PA/AP/LL and all 11 non-chest (region, view) pairs
    assert len(kinds) == 12, sorted(kinds)
    for (region, view), i in kinds.items():
        img = ds.load_image(i)
        assert img.shape == (size, size) and img.dtype == np.float32, (region, view)
        assert np.isfinite(img).all() and img.min() >= 0.0 and img.max() <= 1.0
        assert img.std() > 0.05, f"{region}/{view} is nearly flat"


# -- determinism ---------------------------------------------------------------
def test_same_seed_same_images_and_labels():
    a, b = PhantomDataset(n=400, size=48, seed=5), PhantomDataset(n=400, size=48, seed=5)
    for col in ("ids", "patient_ids", "splits", "views", "irma_codes"):
        assert np.array_equal(getattr(a.index, col), getattr(b.index, col)), col
    assert np.array_equal(a.index.labels, b.index.labels)
    assert a.fingerprint() == b.fingerprint()
    for i in (0, 7, 123, 399):
        assert np.array_equal(a.load_image(i), b.load_image(i))
    # and the same image twice from one instance (no hidden state)
    assert np.array_equal(a.load_image(7), a.load_image(7))


def test_different_seeds_differ():
    a, b = PhantomDataset(n=400, size=48, seed=1), PhantomDataset(n=400, size=48, seed=2)
    assert not np.array_equal(a.index.labels, b.index.labels)
    assert a.fingerprint() != b.fingerprint()
    diffs = [np.abs(a.load_image(i) - b.load_image(i)).mean() for i in range(5)]
    assert min(diffs) > 0.01


def test_index_is_prefix_stable_in_n():
    # 30000 rows span more than one block of 4096 patients
    small, big = PhantomDataset(n=300, size=32, seed=4), PhantomDataset(n=30_000, size=32, seed=4)
    assert len(set(big.index.ids)) == 30_000 and len(set(big.index.patient_ids)) > 4096
    for col in ("ids", "patient_ids", "splits", "views", "irma_codes"):
        assert np.array_equal(getattr(small.index, col), getattr(big.index, col)[:300]), col
    assert np.array_equal(small.index.labels, big.index.labels[:300])
    assert np.array_equal(small.load_image(299), big.load_image(299))


# -- prevalence and labels -------------------------------------------------------
def test_prevalence_matches_configuration():
    ds = PhantomDataset(n=40_000, seed=11)
    lab = ds.index.labels
    chest = lab[:, 0] >= 0
    for j, name in enumerate(FINDINGS):
        rate = (lab[chest, j] == 1).mean()
        assert abs(rate - DEFAULT_PREVALENCE[name]) < 0.015, (name, rate)
    # No Finding is the complement of all findings
    none = ~(lab[chest, : len(FINDINGS)] == 1).any(axis=1)
    assert np.array_equal(lab[chest, -1] == 1, none)
    nc = (~chest).mean()
    assert abs(nc - 0.1) < 0.02, nc


def test_prevalence_overrides_all_forms():
    for kw in ({"prevalence": {"Effusion": 0.3, "nodule": 0.0}},
               {"prevalence": "Effusion=0.3,Nodule=0"},
               {"prevalence.Effusion": 0.3, "prevalence.Nodule": 0.0}):
        ds = PhantomDataset(n=20_000, seed=2, non_chest_fraction=0.0, **kw)
        lab = ds.index.labels
        assert (lab >= 0).all()
        assert abs((lab[:, LABELS.index("Effusion")] == 1).mean() - 0.3) < 0.02, kw
        assert (lab[:, LABELS.index("Nodule")] == 0).all(), kw
        assert ds.params()["prevalence"]["Effusion"] == 0.3


def test_bad_parameters_say_what_is_valid():
    with pytest.raises(ValueError, match="Did you mean 'Effusion'"):
        PhantomDataset(prevalence={"Efusion": 0.2})
    with pytest.raises(ValueError, match="unknown parameter 'non_chest'"):
        PhantomDataset(non_chest=0.2)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        PhantomDataset(prevalence={"Mass": 1.5})


def test_non_chest_labels_are_unknown_and_codes_differ():
    ds = PhantomDataset(n=3000, seed=8, non_chest_fraction=0.3)
    lab, codes = ds.index.labels, ds.index.irma_codes
    chest = ds.regions == "chest"
    assert (lab[~chest] == -1).all()
    assert set(np.unique(lab[chest])) <= {0, 1}
    anatomy = np.array([c.split("-")[2] for c in codes])
    assert all(a.startswith("5") for a in anatomy[chest])
    assert not any(a.startswith("5") for a in anatomy[~chest])
    assert abs((~chest).mean() - 0.3) < 0.05


# -- labels match what is drawn ----------------------------------------------------
def test_ctr_above_threshold_exactly_when_cardiomegaly():
    ds = PhantomDataset(n=20_000, seed=6)
    ctr = ds.ctr_values()
    chest = ds.regions == "chest"
    cm = ds.index.labels[:, LABELS.index("Cardiomegaly")]
    assert np.isnan(ctr[~chest]).all()
    assert np.array_equal(ctr[chest] > 0.5, cm[chest] == 1)
    assert 0.38 < np.median(ctr[chest & (cm == 0)]) < 0.5
    # some subtle cases (CTR just above 0.5) and some clear ones
    pos = ctr[cm == 1]
    assert (pos < 0.53).mean() > 0.1 and (pos > 0.6).mean() > 0.2


def test_drawn_heart_width_is_the_labelled_ctr():
    """Measure the heart and lungs on the rendered layers: CTR from pixels == label."""
    ds = PhantomDataset(n=2000, seed=7, size=512)
    ctr = ds.ctr_values()
    cm = ds.index.labels[:, LABELS.index("Cardiomegaly")]
    frontal = np.isin(ds.index.views, ["PA", "AP"])
    rows = list(np.flatnonzero(frontal & (cm == 1))[:4]) + list(np.flatnonzero(frontal & (cm == 0))[:4])
    # and the borderline ones, closest to 0.5 from either side
    near = np.flatnonzero(frontal & np.isfinite(ctr))
    rows += list(near[np.argsort(np.abs(ctr[near] - 0.5))[:4]])
    for i in rows:
        sc = ds.scene(int(i))
        sc["canvas"]["angle"] = 0.0  # widths along image rows = widths along the patient's x
        layers: dict = {}
        ds.render(sc, 512, layers)
        heart_cols = np.flatnonzero((layers["heart"] > 0).any(axis=0))
        lung_cols = np.flatnonzero((layers["lungs_raw"] > 0).any(axis=0))
        measured = (np.ptp(heart_cols) + 1) / (np.ptp(lung_cols) + 1)
        assert abs(measured - sc["ctr"]) < 0.012, (i, measured, sc["ctr"])
        if abs(sc["ctr"] - 0.5) > 0.012:
            assert (measured > 0.5) == (cm[i] == 1), (i, measured)


def test_scene_findings_are_the_positive_labels():
    ds = PhantomDataset(n=600, seed=9)
    lab = ds.index.labels
    for i in range(0, 600, 7):
        sc = ds.scene(i)
        if lab[i, 0] < 0:
            assert sc["region"] != "chest" and sc["findings"] == {}
            continue
        pos = {n for n, v in zip(FINDINGS, lab[i]) if v == 1}
        drawn = set(sc["findings"]) | ({"Cardiomegaly"} if sc["ctr"] > 0.5 else set())
        assert drawn == pos, (i, drawn, pos)
        for g in sc["findings"].values():
            assert 0.0 < g["sev"] <= 1.0


def _without(ds: PhantomDataset, i: int, name: str) -> tuple[np.ndarray, np.ndarray, dict]:
    sc = ds.scene(i)
    sc["canvas"]["angle"] = 0.0
    plain = copy.deepcopy(sc)
    del plain["findings"][name]
    return ds.render(sc), ds.render(plain), sc


@pytest.mark.parametrize("name", ["Effusion", "Pneumothorax", "Nodule", "Mass", "Consolidation",
                                  "Atelectasis"])
def test_each_finding_changes_the_image_where_it_should(name):
    ds = PhantomDataset(n=4000, seed=12, size=128)
    i = first_row(ds, name)
    with_f, without, sc = _without(ds, i, name)
    d = with_f - without
    changed = np.abs(d) > 0.01
    assert changed.any(), f"{name} is not visible"
    w = np.abs(d)
    rr, cc = np.mgrid[:128, :128]
    # where the change is, weighted by its size, in [-1, 1] image coordinates
    cy, cx = (w * rr).sum() / w.sum() / 128 * 2 - 1, (w * cc).sum() / w.sum() / 128 * 2 - 1
    g = sc["findings"][name]
    if name == "Effusion":
        assert d.sum() > 0 and cy > 0.0  # brighter, at the bases
        if len(g["sides"]) == 1:
            assert np.sign(cx) == g["sides"][0]
    elif name == "Pneumothorax":
        assert d.sum() < 0 and cy < 0.4  # darker (pleural gas), not at the bases
        assert np.sign(cx) == g["side"]
    elif name == "Nodule":
        assert d.sum() > 0 and changed.mean() < 0.02  # small bright spots
    elif name == "Mass":
        assert d.sum() > 0 and changed.mean() < 0.06
    else:
        assert d.sum() > 0


def test_severity_makes_findings_larger():
    ds = PhantomDataset(n=4000, seed=12, size=128)
    i = first_row(ds, "Effusion")
    areas = []
    for sev in (0.05, 0.5, 1.0):
        sc = ds.scene(i)
        sc["findings"]["Effusion"]["sev"] = sev
        plain = copy.deepcopy(sc)
        del plain["findings"]["Effusion"]
        areas.append((np.abs(ds.render(sc) - ds.render(plain)) > 0.02).mean())
    assert 0 < areas[0] < areas[1] < areas[2]


# -- patients, follow-ups, split ------------------------------------------------------
def test_split_is_by_patient():
    ds = PhantomDataset(n=5000, seed=3, test_fraction=0.25, val_fraction=0.1)
    ix = ds.index
    per_patient: dict[str, set] = {}
    for p, s in zip(ix.patient_ids, ix.splits):
        per_patient.setdefault(p, set()).add(s)
    assert all(len(v) == 1 for v in per_patient.values())
    share = {s: np.mean([v == {s} for v in per_patient.values()]) for s in ("train", "val", "test")}
    assert abs(share["test"] - 0.25) < 0.03 and abs(share["val"] - 0.1) < 0.03


def test_patients_have_follow_ups_that_resemble_each_other():
    ds = PhantomDataset(n=600, seed=10, size=32, non_chest_fraction=0.0, lateral_fraction=0.0)
    ix = ds.index
    counts = np.unique(ix.patient_ids, return_counts=True)[1]
    assert counts.max() >= 3 and (counts > 1).mean() > 0.4
    imgs = np.stack([ds.load_image(i).ravel() for i in range(200)])
    pid = ix.patient_ids[:200]
    d = ((imgs[:, None, :] - imgs[None, :, :]) ** 2).sum(-1)
    same = (pid[:, None] == pid[None, :]) & ~np.eye(200, dtype=bool)
    diff = pid[:, None] != pid[None, :]
    assert np.median(d[same]) < 0.8 * np.median(d[diff])
    # NIH-style ids: <patient:08d>_<follow-up:03d>.png
    assert ix.ids[0] == "00000001_000.png" and ix.patient_ids[0] == "1"


# -- IRMA codes and tree ---------------------------------------------------------
def _read_tree(folder: Path) -> dict[str, set[str]]:
    out = {}
    for axis in "ABCD":
        codes = set()
        for line in (folder / f"{axis}.csv").read_text(encoding="utf-8").splitlines():
            code = line.split(";", 1)[0].strip()
            if code:
                codes.add(code)
        out[axis] = codes
    return out


def test_every_code_has_all_its_nodes_in_the_packaged_tree():
    tree = _read_tree(irma_tree_path())
    ds = PhantomDataset(n=3000, seed=1, non_chest_fraction=0.4)
    codes = set(ds.index.irma_codes.tolist())
    assert len(codes) == 12
    for code in codes:
        assert CODE_RE.match(code), code
        for axis, part in zip("ABCD", code.split("-")):
            for k in range(1, len(part) + 1):
                assert part[:k] in tree[axis], f"{code}: node {part[:k]} missing from {axis}.csv"


def test_irma_tree_loads_with_the_metric_when_available():
    irma = pytest.importorskip("cxrbench.metrics.irma", reason="IRMA metric not merged yet")
    ds = PhantomDataset(n=200, seed=1, non_chest_fraction=0.5)
    tree = ds.irma_tree()
    assert tree is not None
    c = ds.index.irma_codes
    assert irma.irma_error(c[0], c[0], tree) == 0.0
    other = next(x for x in c if x.split("-")[2] != c[0].split("-")[2])
    assert irma.irma_error(c[0], other, tree) > 0.0


# -- export --------------------------------------------------------------------
def test_export_round_trip(tmp_path):
    ds = PhantomDataset(n=40, size=32, seed=2, non_chest_fraction=0.2)
    out = export_nih(ds, tmp_path / "nih")
    text = (out / "Data_Entry_2017_v2020.csv").read_text(encoding="utf-8").splitlines()
    assert text[0] == NIH_HEADER
    rows = list(csv.reader(text[1:]))
    chest = np.flatnonzero(ds.regions == "chest")
    assert len(rows) == len(chest) and len(chest) < 40
    for r, i in zip(rows, chest):
        assert len(r) == 11
        assert r[0] == ds.index.ids[i] and r[3] == ds.index.patient_ids[i] and r[6] == ds.index.views[i]
        pos = [n for n, v in zip(FINDINGS, ds.index.labels[i]) if v == 1]
        assert r[1] == ("|".join(pos) or "No Finding")
        assert r[7:9] == ["32", "32"]
        png = np.asarray(Image.open(out / "images" / r[0]))
        assert png.shape == (32, 32) and png.dtype == np.uint8
        assert np.abs(png / 255.0 - ds.load_image(int(i))).max() <= 0.5 / 255 + 1e-6
    train = (out / "train_val_list.txt").read_text().split()
    test = (out / "test_list.txt").read_text().split()
    assert sorted(train + test) == sorted(r[0] for r in rows) and not set(train) & set(test)
    with pytest.raises(FileExistsError, match="overwrite"):
        export_nih(ds, tmp_path / "nih")


def test_cli_export_and_preview(tmp_path):
    from cxrbench.cli import main

    assert main(["phantom", "export", "--out", str(tmp_path / "e"), "--n", "12", "--size", "32",
                 "-q", "--frontal-only", "--set", "non_chest_fraction=0"]) == 0
    rows = (tmp_path / "e" / "Data_Entry_2017_v2020.csv").read_text().splitlines()[1:]
    assert rows and all(r.split(",")[6] in ("PA", "AP") for r in rows)
    assert main(["phantom", "preview", "--out", str(tmp_path / "p.png"), "--n", "4", "--size", "32"]) == 0
    assert Image.open(tmp_path / "p.png").size == (64, 64)


# -- scale ---------------------------------------------------------------------
def test_index_of_100k_rows_is_fast_and_lazy():
    t = time.perf_counter()
    ds = PhantomDataset(n=100_000, seed=0)
    assert len(ds.index) == 100_000
    assert time.perf_counter() - t < 5.0  # ~0.3 s on one idle core
    assert ds.load_image(99_999).shape == (256, 256)


@pytest.mark.slow
def test_index_of_a_million_rows():
    t = time.perf_counter()
    ds = PhantomDataset(n=1_000_000, seed=0)
    assert len(ds.index) == 1_000_000
    assert time.perf_counter() - t < 15.0  # ~3 s on one idle core
    assert len(np.unique(ds.index.patient_ids)) > 200_000


# -- learnability ----------------------------------------------------------------
def knn_vote_auc(result, dataset, k: int) -> dict[str, float]:
    """Per-label ROC-AUC of the fraction of a query's top-k neighbours positive for the label."""
    tab = result._table
    lab = dataset.index.labels
    nb = tab.neighbors[:, :k]
    out = {}
    for j, name in enumerate(dataset.label_names):
        y = lab[tab.queries, j]
        known = y >= 0
        score = np.where(nb >= 0, lab[np.maximum(nb, 0), j] == 1, False).mean(axis=1)
        if len(np.unique(y[known])) == 2:
            out[name] = float(roc_auc_score(y[known], score[known]))
    return out


def test_oracle_reaches_auc_one():
    import cxrbench
    from cxrbench.metrics import METRICS
    from cxrbench.testing import OracleEncoder

    ds = PhantomDataset(n=1000, size=32, seed=0)
    r = cxrbench.run(OracleEncoder(ds), ds, out=None, n_boot=0, k=[5])
    aucs = knn_vote_auc(r, ds, 5)
    assert set(aucs) == set(LABELS)  # every label has positive and negative queries
    assert all(v == 1.0 for v in aucs.values()), aucs
    if "knn_auc" in METRICS:  # the metric family, once merged, must agree
        assert r.metrics["knn_auc@5"] == pytest.approx(1.0)


def _raw_aucs(n: int, seed: int) -> dict[str, float]:
    import cxrbench

    ds = PhantomDataset(n=n, size=64, seed=seed)
    r = cxrbench.run("raw", ds, out=None, n_boot=0, k=[10])
    return knn_vote_auc(r, ds, 10)


def test_raw_pixels_learn_the_big_findings_but_not_the_subtle_ones():
    aucs = _raw_aucs(2000, seed=0)
    assert aucs["Cardiomegaly"] > 0.6 and aucs["Effusion"] > 0.6, aucs
    for subtle in ("Nodule", "Pneumothorax"):
        assert aucs[subtle] < 0.75, aucs


@pytest.mark.slow
def test_raw_pixels_auc_over_several_seeds():
    """Averaged over seeds (n=2000 each): stable numbers for the docs."""
    runs = [_raw_aucs(2000, seed) for seed in range(4)]
    mean = {k: float(np.mean([r[k] for r in runs])) for k in runs[0]}
    assert mean["Cardiomegaly"] > 0.62 and mean["Effusion"] > 0.62, mean
    assert mean["Nodule"] < 0.65 and mean["Pneumothorax"] < 0.65, mean
