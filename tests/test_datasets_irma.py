"""IRMA / ImageCLEF 2009: fixture trees, both hierarchy formats, the real codes and hierarchy."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
from conftest import shared_path
from dataset_fixtures import grey, save_png

from cxrbench.datasets import DATASETS
from cxrbench.datasets.irma import AXES, hierarchy_gaps, read_hierarchy

TRAIN = [("1001", "1121-120-200-700"), ("1002", "1121-120-200-700"), ("1003", "1123-127-500-000"),
         ("1004", "1121-110-414-700"), ("1005", "1121-4a0-914-700")]
TEST = [("2001", "1121-120-200-700"), ("2002", "1123-127-500-000")]

OFFICIAL = """** T (technical code: imaging modality)
[1] x-ray
[11] plain radiography
[112] analog
[1121] overview image
[1123] high beam energy
** D (directional code)
[1] coronal
[12] anteroposterior (AP, coronal)
[127] supine
[11] posteroanterior (PA)
this line is broken
** A (anatomical code)
[2] cranium
[5] chest
[4] upper extremity
[41] hand
** B (biological code)
[7] musculoskeletal system
"""


def irma_tree(root, *, sep=";", header=True, with_images=True, official=True, drop=()):
    root.mkdir(parents=True, exist_ok=True)
    for name, rows, folder in (("ImageCLEFmed2009_train_codes.02.csv", TRAIN, "ImageCLEFmed2009_train.02"),
                               ("ImageCLEFmed2009_test_codes.03.csv", TEST, "ImageCLEFmed2009_test.03")):
        lines = [f"image_id{sep}irma_code{sep}05_class"] if header else []
        lines += [f"{i}{sep}{c}{sep}x" for i, c in rows]
        (root / name).write_text("\n".join(lines) + "\n")
        if with_images:
            for k, (i, _c) in enumerate(rows):
                if i not in drop:
                    save_png(root / folder / f"{i}.png", grey(int(i), 16))
    if official:
        (root / "code-2008-04-14.txt").write_text(OFFICIAL)
    return root


def make(root, **params):
    return DATASETS.create("irma", root=str(root), **params)


def test_codes_splits_and_one_class_per_code(tmp_path):
    ds = make(irma_tree(tmp_path / "irma"))
    ix = ds.index
    assert len(ds) == 7 and ds.single_label
    assert dict(zip(ix.ids, ix.irma_codes)) == dict(TRAIN + TEST)
    assert [ix.splits[list(ix.ids).index(i)] for i, _ in TRAIN + TEST] == ["train"] * 5 + ["test"] * 2
    assert ds.label_names == tuple(sorted({c for _, c in TRAIN + TEST}))
    assert (ix.labels.sum(1) == 1).all()
    for j in range(len(ds)):
        assert ds.label_names[int(np.argmax(ix.labels[j]))] == ix.irma_codes[j]
    assert list(ix.patient_ids) == list(ix.ids)  # ImageCLEF has no patient ids
    assert ds.load_image(0).shape == (16, 16)


@pytest.mark.parametrize("sep,header", [(",", True), (";", False), (",", False)])
def test_comma_and_headerless_code_files(tmp_path, sep, header):
    ds = make(irma_tree(tmp_path / "irma", sep=sep, header=header))
    assert dict(zip(ds.index.ids, ds.index.irma_codes)) == dict(TRAIN + TEST)


def test_missing_images_and_missing_code_files(tmp_path):
    ds = make(irma_tree(tmp_path / "irma", drop={"1002"}))
    assert "1002" not in set(ds.index.ids) and ds.info["missing_files"] == 1
    with pytest.raises(FileNotFoundError, match="strict|1 of 7"):
        make(tmp_path / "irma", strict=True).index
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="ImageCLEFmed2009_train_codes.csv"):
        make(tmp_path / "empty").index


def test_official_hierarchy_format_gaps_and_malformed_lines(tmp_path):
    root = irma_tree(tmp_path / "irma")
    ds = make(root)
    ds.index
    h = ds.info["irma_hierarchy"]
    assert h["source"].endswith("code-2008-04-14.txt") and h["approximation"] is False
    known, malformed = read_hierarchy(root / "code-2008-04-14.txt")
    assert known["technical"] == {"1", "11", "112", "1121", "1123"}
    assert known["directional"] == {"1", "12", "127", "11"}
    assert malformed == ["code-2008-04-14.txt:12: this line is broken"]
    want = {"directional": {"4", "4a"}, "anatomical": {"414", "9", "91", "914"}}
    assert hierarchy_gaps([c for _, c in TRAIN + TEST], known) == want
    assert h["missing_codes"] == {k: sorted(v) for k, v in want.items()}
    assert h["malformed_lines"] == malformed
    assert any("missing from the hierarchy" in w for w in ds.info["warnings"])


def test_irma_tree_uses_hierarchy_or_flags_derived(tmp_path, monkeypatch):
    calls = []

    class FakeTree:
        @classmethod
        def load(cls, path):
            calls.append(("load", str(path)))
            return cls()

        @classmethod
        def from_codes(cls, codes):
            calls.append(("from_codes", sorted(codes)))
            return cls()

        def extended(self, codes):
            calls.append(("extended", sorted(codes)))
            return self

        def describe(self):
            return {"source": "fake"}

    fake = types.ModuleType("cxrbench.metrics.irma")
    fake.IrmaCodeTree = FakeTree
    monkeypatch.setitem(sys.modules, "cxrbench.metrics.irma", fake)
    ds = make(irma_tree(tmp_path / "a"))
    assert isinstance(ds.irma_tree(), FakeTree) and ds.irma_tree() is ds.irma_tree()
    assert calls == [("load", str(tmp_path / "a" / "code-2008-04-14.txt"))]
    calls.clear()
    ds = make(irma_tree(tmp_path / "b", official=False))
    ds.irma_tree()
    assert calls == [("from_codes", sorted(c for _, c in TRAIN + TEST))]
    assert ds.info["irma_hierarchy"] == {"source": "derived from the observed codes", "approximation": True}
    assert ds.info["irma_tree"] == {"source": "fake"}
    # gaps: the exact tree by default (the metric then refuses), extended on request
    calls.clear()
    make(irma_tree(tmp_path / "c")).irma_tree()
    assert [c[0] for c in calls] == ["load"]
    calls.clear()
    ds = make(tmp_path / "c", extend_hierarchy=True)
    ds.irma_tree()
    assert [c[0] for c in calls] == ["load", "extended"]
    assert ds.info["irma_hierarchy"]["approximation"] is True
    assert ds.info["irma_hierarchy"]["extended_with_observed_codes"] is True


# -- real data -----------------------------------------------------------------------------------------
@pytest.fixture
def real_tree(tmp_path):
    codes_dir = shared_path("irma-codes")
    rows = [line.strip().split(",") for line in (codes_dir / "codes.csv").read_text().splitlines() if line.strip()]
    root = tmp_path / "imageclef"
    (root / "hierarchy").mkdir(parents=True)
    for f in ("A.csv", "B.csv", "C.csv", "D.csv"):
        (root / "hierarchy" / f).symlink_to(codes_dir / f)
    (root / "codes.csv").symlink_to(codes_dir / "codes.csv")  # one file, no split in its name
    for k, (i, _c) in enumerate(rows):
        save_png(root / "images" / f"{i}.png", np.full((4, 4), k % 251, np.uint8))
    return root, rows


def test_real_codes_and_hierarchy_report_gaps(real_tree):
    root, rows = real_tree
    ds = make(root)
    ix = ds.index
    assert len(rows) == 1000 and len(ds) == 1000
    assert dict(zip(ix.ids, ix.irma_codes)) == dict(rows)
    assert ds.info["split"]["source"] == "generated"
    assert 150 < (ix.splits == "test").sum() < 250
    h = ds.info["irma_hierarchy"]
    assert h["source"] == str(root / "hierarchy")
    # the README's known gaps of this older hierarchy are all reported ...
    for code in ("414", "415", "421", "422", "433", "434", "437", "438"):
        assert code in h["missing_codes"]["anatomical"]
    assert h["missing_codes"]["directional"] == ["12f", "4b"]
    # ... and exactly what an independent reading finds
    known = {ax: set() for ax in AXES}
    for ax, f in zip(AXES, ("A.csv", "B.csv", "C.csv", "D.csv")):
        for line in (root / "hierarchy" / f).read_text(encoding="latin-1").splitlines():
            p = line.strip().split(";")[0]
            if p and len(p) <= 4:
                known[ax].add(p)
    indep: dict[str, set] = {}
    for _i, c in rows:
        for ax, part in zip(AXES, c.split("-")):
            q = part.rstrip("0")
            for n in range(1, len(q) + 1):
                if q[n - 1] != "0" and q[:n] not in known[ax]:
                    indep.setdefault(ax, set()).add(q[:n])
    assert h["missing_codes"] == {ax: sorted(v) for ax, v in indep.items()}
    # the malformed lines are reported, not fatal
    assert any("computed;tomography (SPECT)" in m for m in h["malformed_lines"])
    assert any("duplicate code 221" in m for m in h["malformed_lines"])


def test_real_hierarchy_loads_in_the_metric_tree(real_tree):
    irma_metric = pytest.importorskip("cxrbench.metrics.irma")
    root, _rows = real_tree
    tree = make(root).irma_tree()
    assert isinstance(tree, irma_metric.IrmaCodeTree) and not tree.approximate
    ext = make(root, extend_hierarchy=True).irma_tree()
    assert ext.approximate and not ext.check(list(make(root).index.irma_codes))
