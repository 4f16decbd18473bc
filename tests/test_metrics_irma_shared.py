"""IRMA hierarchy and codes from ../shared/data/irma-codes (real, partial hierarchy)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from conftest import shared_path
from cxrbench.metrics import METRICS, IrmaCodeTree, IrmaGapError, irma_error
from cxrbench.metrics.base import EvalData

pytestmark = pytest.mark.shared


@pytest.fixture(scope="module")
def folder():
    return shared_path("irma-codes")


@pytest.fixture(scope="module")
def tree(folder):
    return IrmaCodeTree.load(folder)


@pytest.fixture(scope="module")
def codes(folder):
    rows = [line.split(",") for line in (folder / "codes.csv").read_text().splitlines() if line]
    assert len(rows) == 1000 and all(len(r) == 2 for r in rows)
    return np.array([r[1] for r in rows], dtype=object)


def raw_nodes(path, max_len):
    """An independent reading: every 'prefix;label' line whose prefix looks like a code."""
    text = path.read_bytes().decode()
    return {ln.split(";")[0] for ln in re.split(r"[\r\n]+", text)
            if re.fullmatch(rf"[0-9a-z]{{1,{max_len}}};.*", ln)}


def test_loads_and_reports_the_file_problems(tree):
    assert [len(d) for d in tree.labels] == [309, 84, 142, 186]
    issues = "\n".join(tree.issues)
    # a label wrapped onto its own line, and a mistyped duplicate among 21's children
    assert "A.csv line 547" in issues and "continuation of the label of 43" in issues
    assert tree.labels[0]["43"] == "single photon emission computed tomography (SPECT)"
    assert "code 221 defined twice" in issues and tree.labels[0]["221"] == "sector scan"
    assert "line 129" in tree.suspect[0]["21"]
    assert not tree.approximate


@pytest.mark.parametrize("ax, name, length", [(0, "A.csv", 4), (1, "B.csv", 3), (2, "C.csv", 3),
                                              (3, "D.csv", 3)])
def test_child_counts_match_an_independent_count(tree, folder, ax, name, length):
    nodes = raw_nodes(folder / name, length)
    for part in ["1123", "1121", "1124"] if ax == 0 else ["127", "110", "211"] if ax == 1 else \
            ["500", "411", "310"] if ax == 2 else ["700", "000", "625"]:
        expect = []
        for i in range(len(part)):
            parent = part[:i]
            kids = {n for n in nodes if len(n) == i + 1 and n.startswith(parent)}
            real_parent = parent == "" or parent in nodes
            expect.append(len(kids) if real_parent and kids else 1)
        assert tree.branching(ax, part) == tuple(expect), part


def test_gaps_in_the_real_codes(tree, codes):
    gaps = tree.check(codes)
    missing = {(g.axis, g.node) for g in gaps if g.kind == "missing"}
    # the nodes the data README lists as missing from this older hierarchy
    readme = {(2, n) for n in ("414", "415", "421", "422", "433", "434", "437", "438")}
    assert readme | {(1, "12f"), (1, "4b")} <= missing
    # present codes whose weights the gaps would silently change are reported too
    inc = {g.node: g for g in gaps if g.kind == "incomplete" and g.axis == 2}
    assert "1121-110-411-700" in inc["41"].codes and "misses 414, 415" in str(inc["41"])
    with pytest.raises(IrmaGapError, match="anatomical code '414': node 414 is missing"):
        irma_error("1121-110-414-700", "1121-110-411-700", tree)


def metric_table(tree, codes, neighbors):
    n = len(codes)
    return EvalData(queries=np.arange(n), neighbors=neighbors,
                    distances=np.zeros(neighbors.shape, np.float32),
                    labels=np.zeros((n, 1), np.int8), label_names=("x",),
                    patient_ids=np.array([f"p{i}" for i in range(n)]),
                    irma_codes=codes, irma_tree=tree)


def test_metric_is_skipped_with_the_gaps_then_runs_on_the_opt_in_tree(tree, codes):
    rng = np.random.default_rng(0)
    nb = np.stack([rng.choice(np.setdiff1d(np.arange(1000), [i]), 5, replace=False)
                   for i in range(1000)])
    m = METRICS.create("irma")
    why = m.applicable(metric_table(tree, codes, nb))
    assert "anatomical 414" in why and "directional 12f" in why and "tree.extended" in why
    ext = tree.extended(codes)
    assert ext.approximate and ext.check(codes) == []
    data = metric_table(ext, codes, nb)
    assert m.applicable(data) is None
    s = m.summarize(data, [1, 5])
    assert "approximate" in s.notes["irma"]
    pairs = [(codes[i], codes[nb[i, r]]) for i in range(1000) for r in range(5)]
    ref = np.array([irma_error(c, p, ext) for c, p in pairs]).reshape(1000, 5)
    assert s.values["irma_error@1"] == pytest.approx(ref[:, 0].mean(), abs=1e-12)
    assert s.values["irma_error_total@1"] == pytest.approx(ref[:, 0].sum(), abs=1e-9)
    assert s.values["irma_error@5"] == pytest.approx(ref.mean(), abs=1e-12)


def test_oracle_and_from_codes(codes):
    derived = IrmaCodeTree.from_codes(codes)
    assert derived.approximate and derived.check(codes) == []
    # oracle: each query's nearest neighbour has its exact code
    order = np.argsort(codes, kind="stable")
    sorted_codes = codes[order]
    nb = np.empty((1000, 1), dtype=np.int64)
    for pos, i in enumerate(order):
        same = order[sorted_codes == codes[i]]
        nb[i, 0] = same[same != i][0] if len(same) > 1 else -1
    keep = nb[:, 0] >= 0
    v = METRICS.create("irma").compute(
        metric_table(derived, codes[keep] if False else codes, nb).take(np.flatnonzero(keep)), [1])
    assert v["irma_error@1"] == 0.0 and v["irma_error_total@1"] == 0.0
