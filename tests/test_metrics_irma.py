"""IRMA code hierarchy and IRMA error (ImageCLEF 2007-2009), hand cases and references."""

from __future__ import annotations

from fractions import Fraction as F

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cxrbench.metrics import METRICS, IrmaCodeTree, IrmaGapError, irma_error
from cxrbench.metrics.base import EvalData

# A small hierarchy in the official format. Branching along the code 1110-110-210-700:
#   T: root {1, 2} = 2; 1 {10, 11, 12} = 3; 11 {110, 111, 112} = 3; 111 has none, so '0' -> 1
#   D: root {0, 1, 2} = 3; 1 {10, 11, 12} = 3; 11 none -> 1
#   A: root {0, 1, 2, 3} = 4; 2 {20, 21} = 2; 21 none -> 1
#   B: root {0, 7} = 2; 7 none -> 1, 1
OFFICIAL = """\
** technical
[1] x-ray
[10] unspecified
[11] plain radiography
[110] unspecified
[111] digital
[112] analog
[12] fluoroscopy
[2] sonography

** directional
[0] unspecified
[1] coronal
[10] unspecified
[11] posteroanterior (PA)
[12] anteroposterior (AP)
[2] sagittal

** anatomical
[0] unspecified
[1] whole body
[2] cranium
[20] unspecified
[21] facial cranium
[3] spine

** biological
[0] unspecified
[7] musculoskeletal system
"""

CORRECT = "1110-110-210-700"
# technical weights 1/(i b_i): 1/2, 1/6, 1/9, 1/4; all-wrong maximum 37/36
T_MAX = F(1, 2) + F(1, 6) + F(1, 9) + F(1, 4)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    p = tmp_path_factory.mktemp("irma") / "code-test.txt"
    p.write_text(OFFICIAL)
    return IrmaCodeTree.load(p)


def t_err(num: F) -> float:
    """Image error when only the technical axis has error ``num`` (before normalising)."""
    return float(F(1, 4) * num / T_MAX)


def test_branching_from_the_official_file(tree):
    assert tree.issues == []
    assert tree.branching(0, "1110") == (2, 3, 3, 1)
    assert tree.branching(1, "110") == (3, 3, 1)
    assert tree.branching(2, "210") == (4, 2, 1)
    assert tree.branching(3, "700") == (2, 1, 1)
    assert tree.labels[0]["111"] == "digital"


@pytest.mark.parametrize("pred, num", [
    ("1110", F(0)),                                   # all correct
    ("1120", F(1, 9) + F(1, 4)),                      # wrong at 3: 3 and 4 wrong
    ("1210", F(1, 6) + F(1, 9) + F(1, 4)),            # wrong at 2 (earlier: costs more)
    ("2110", T_MAX),                                  # wrong at 1: everything wrong
    ("1220", F(1, 6) + F(1, 9) + F(1, 4)),            # once wrong, later digits wrong too
    ("12*0", F(1, 6) + F(1, 9) + F(1, 4)),            # '*' after a wrong digit is wrong
    ("11*0", F(1, 2) * (F(1, 9) + F(1, 4))),          # '*' -> 0.5, and after it 0.5 (even a '0')
    ("1*10", F(1, 2) * (F(1, 6) + F(1, 9) + F(1, 4))),  # after '*' correct digits count 0.5
    ("111*", F(0)),                                   # correct '0' answered '*': 0
    ("11**", F(1, 2) * F(1, 9)),                      # '*' then '0' vs '*': 0.5, then 0
    ("1*1*", F(1, 2) * (F(1, 6) + F(1, 9))),          # '0' vs '*' stays 0 after an unspecified
    ("****", F(1, 2) * (F(1, 2) + F(1, 6) + F(1, 9))),
])
def test_technical_axis_rules(tree, pred, num):
    got = irma_error(CORRECT, f"{pred}-110-210-700", tree)
    assert got == pytest.approx(t_err(num), abs=1e-15)


def test_wrong_early_costs_more_than_wrong_late(tree):
    early = irma_error(CORRECT, "1210-110-210-700", tree)
    late = irma_error(CORRECT, "1120-110-210-700", tree)
    assert early > late > 0
    assert early == pytest.approx(0.25 * 19 / 37) and late == pytest.approx(0.25 * 13 / 37)


def test_all_axes_and_range(tree):
    assert irma_error(CORRECT, CORRECT, tree) == 0.0
    assert irma_error(CORRECT, "2000-200-100-000", tree) == pytest.approx(1.0)
    # directional wrong at its 2nd digit: (1/6 + 1/3) / (1/3 + 1/6 + 1/3)
    d = F(1, 6) + F(1, 3)
    assert irma_error(CORRECT, "1110-120-210-700", tree) == pytest.approx(
        float(F(1, 4) * d / (F(1, 3) + F(1, 6) + F(1, 3))))


def test_axis_starting_with_C_is_skipped(tree):
    # the biological axis is skipped: it adds nothing, whatever the prediction
    assert irma_error("1110-110-210-C", "1110-110-210-000", tree) == 0.0
    assert irma_error("1110-110-210-C", "2000-110-210-700", tree) == pytest.approx(0.25)
    assert irma_error("1110-110-210-C", "2000-200-100-000", tree) == pytest.approx(0.75)


def test_missing_node_raises_a_clear_error(tree):
    with pytest.raises(IrmaGapError, match=r"technical code '1130': node 113 is missing"):
        irma_error("1130-110-210-700", CORRECT, tree)
    # a non-zero digit below a node without children is missing too; '0' there is b = 1
    with pytest.raises(IrmaGapError, match="node 121 is missing"):
        irma_error("1210-110-210-700", CORRECT, tree)
    assert tree.branching(0, "1200") == (2, 3, 1, 1)


def test_check_reports_parents_made_incomplete(tree):
    gaps = tree.check(["1130-110-210-700", CORRECT, "1200-110-210-700"])
    kinds = {(g.kind, g.node) for g in gaps}
    # 113 is missing, so 11's child count is too small for 1110 as well; 1200 is not affected
    assert kinds == {("missing", "113"), ("incomplete", "11")}
    inc = next(g for g in gaps if g.kind == "incomplete")
    assert inc.codes == (CORRECT,) and "misses 113" in str(inc)
    with pytest.raises(IrmaGapError, match="technical 113"):
        tree.require(["1130-110-210-700"])


def test_extended_tree_is_approximate(tree):
    ext = tree.extended(["1130-110-210-700"])
    assert ext.approximate and "technical 113" in ext.added
    assert ext.check(["1130-110-210-700", CORRECT]) == []
    assert ext.branching(0, "1110") == (2, 3, 4, 1)  # 11 now has 110, 111, 112, 113


def test_malformed_predictions_and_codes(tree):
    with pytest.raises(ValueError, match="shorter"):
        irma_error(CORRECT, "111-110-210-700", tree)
    with pytest.raises(ValueError, match="four"):
        irma_error("1110-110-210", CORRECT, tree)


def test_official_format_problems(tmp_path):
    text = OFFICIAL.replace("[12] fluoroscopy", "[12] fluoro-\nscopy") \
        .replace("[112] analog", "[112] analog\n[112] analogue")
    p = tmp_path / "code.txt"
    p.write_text(text)
    t = IrmaCodeTree.load(p)
    assert t.labels[0]["12"] == "fluoro- scopy"
    assert any("continuation of the label of 12" in i for i in t.issues)
    assert any("112 defined twice" in i for i in t.issues)
    with pytest.raises(ValueError, match="four"):
        bad = tmp_path / "bad.txt"
        bad.write_text("** technical\n[1] x\n")
        IrmaCodeTree.load(bad)
    with pytest.raises(FileNotFoundError, match="A.csv"):
        IrmaCodeTree.load(tmp_path / "nowhere")


def test_folder_format_with_quirks(tmp_path):
    # per-axis files A..D = T, D, A, B; CR CR LF line ends; ';' separators; a wrapped label;
    # a mistyped duplicate (221 among the children of 21, as in the real A.csv)
    a = ["1;x-ray", ";", "2;sonography", ";", "20;unspecified", "21;A-mode", "210;unspecified",
         "221;3.5 MHz", "212;5 MHz", "22;B-mode", "220;unspecified", "221;sector scan",
         "3;nuclear", "30;single photon emission", "computed;tomography (SPECT)", "31;PET"]
    (tmp_path / "A.csv").write_bytes("\r\r\n".join(a).encode())
    (tmp_path / "B.csv").write_text("0;unspecified\n1;coronal\n")
    (tmp_path / "C.csv").write_text("0;unspecified\n5;chest\n50;unspecified\n")
    (tmp_path / "D.csv").write_text("0;unspecified\n7;musculoskeletal\n")
    t = IrmaCodeTree.load(tmp_path)
    assert t.labels[0]["221"] == "sector scan"
    assert t.labels[0]["30"] == "single photon emission computed tomography (SPECT)"
    assert "21" in t.suspect[0] and "line 8" in t.suspect[0]["21"]
    assert t.branching(0, "2210") == (3, 3, 2, 1)  # root {1,2,3}, 2 {20,21,22}, 22 {220,221}
    with pytest.raises(IrmaGapError, match="child count of 21 is suspect"):
        t.branching(0, "2120")
    assert [g.kind for g in t.check(["2120-100-500-700"])] == ["suspect"]


# -- a reference implementation: the official irmacode.py algorithm, positional tree ----------
class RefNode:
    def __init__(self):
        self.children: dict[str, RefNode] = {}


def ref_tree(labels: dict[str, str]) -> RefNode:
    """The official tree keeps children in a list indexed by the digit's value, which is
    the same as a dict keyed by digit when, as in the real files, the digits of each
    node's children run 0, 1, 2, ... without holes; a dict also allows the hand tree's
    biological axis {0, 7}."""
    root = RefNode()
    for code in sorted(labels, key=len):
        node = root
        for d in code[:-1]:
            node = node.children[d]
        node.children[code[-1]] = RefNode()
    return root


def ref_choices(node: RefNode, path: str) -> list[int]:
    # official: a '0' beyond the children (i.e. a node without children) counts 1 and
    # the walk stays on the same node
    if not node.children and path[0] == "0":
        return [1] + (ref_choices(node, path[1:]) if len(path) > 1 else [])
    rest = ref_choices(node.children[path[0]], path[1:]) if len(path) > 1 else []
    return [len(node.children)] + rest


def ref_error(roots, correct: str, coding: str) -> float:
    total = 0.0
    for ax, (cor, cls) in enumerate(zip(correct.split("-"), coding.split("-"))):
        if cor[0] == "C":
            continue
        ch = ref_choices(roots[ax], cor)
        err = mx = 0.0
        wrong = unspec = False
        for i in range(len(cor)):
            e = 1.0 / (i + 1) / ch[i]
            mx += e
            if cor[i] == cls[i] and not wrong and not unspec:
                pass
            elif cor[i] == "0" and cls[i] == "*" and not wrong:
                unspec = True
            elif (cls[i] == "*" and not wrong) or unspec:
                err += 0.5 * e
                unspec = True
            else:
                wrong = True
                err += e
        total += 0.25 * err / mx
    return total


VALID = ["1110", "1100", "1120", "1200", "2000", "1000"], ["110", "100", "120", "200", "000"], \
    ["210", "200", "100", "000", "300"], ["700", "000"]


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_matches_the_official_algorithm(tree, data):
    roots = [ref_tree(d) for d in tree.labels]
    correct = "-".join(data.draw(st.sampled_from(v)) for v in VALID)
    pred = "-".join(
        "".join(data.draw(st.lists(st.sampled_from("0123*"), min_size=len(p), max_size=len(p))))
        for p in correct.split("-"))
    assert irma_error(correct, pred, tree) == pytest.approx(ref_error(roots, correct, pred),
                                                            abs=1e-15)


# -- the irma metric family ---------------------------------------------------------------------
def irma_table(tree, codes, queries, neighbors, patients=None):
    codes = np.asarray(codes, dtype=object)
    n = len(codes)
    return EvalData(queries=np.asarray(queries), neighbors=np.asarray(neighbors),
                    distances=np.zeros(np.shape(neighbors), np.float32),
                    labels=np.zeros((n, 1), np.int8), label_names=("x",),
                    patient_ids=np.asarray(patients if patients is not None
                                           else [f"p{i}" for i in range(n)]),
                    irma_codes=codes, irma_tree=tree)


def test_metric_hand_table(tree):
    codes = [CORRECT, "1120-110-210-700", "2000-200-100-000", CORRECT, None]
    data = irma_table(tree, codes, queries=[0, 3, 4], neighbors=[[1, 2], [0, -1], [0, 1]])
    m = METRICS.create("irma")
    assert m.applicable(data) is None
    s = m.summarize(data, [1, 2])
    e1 = 0.25 * 13 / 37  # q0 -> 1120: wrong at technical 3
    dont_know = irma_error(CORRECT, "****-***-***-***", tree)  # padding = "don't know"
    assert s.values == pytest.approx({
        "irma_error@1": (e1 + 0.0) / 2,           # query 4 has no code: excluded
        "irma_error_total@1": e1 + 0.0,
        "irma_error@2": ((e1 + 1.0) / 2 + (0.0 + dont_know) / 2) / 2,
    }, abs=1e-12)
    assert not m.higher_is_better("irma_error@1")
    assert "1 of 3 queries have no IRMA code" in s.notes["irma"]


def test_metric_not_applicable_reasons(tree):
    m = METRICS.create("irma")
    d = irma_table(tree, [CORRECT, CORRECT], [0], [[1]])
    assert "no IRMA code hierarchy" in m.applicable(
        EvalData(**{**d.__dict__, "irma_tree": None}))
    assert "no IRMA codes" in m.applicable(EvalData(**{**d.__dict__, "irma_codes": None}))
    gap = irma_table(tree, ["1130-110-210-700", CORRECT], [0, 1], [[1], [0]])
    why = m.applicable(gap)
    assert "technical 113" in why and "technical 11: child count 3 misses 113" in why
    assert "tree.extended" in why


def brute_force_metric(tree, data, k):
    errs1, errsk = [], []
    for qi, q in enumerate(data.queries):
        c = data.irma_codes[q]
        if not c:
            continue
        row = [irma_error(c, data.irma_codes[n] if n >= 0 and data.irma_codes[n]
                          else "****-***-***-***", tree) for n in data.neighbors[qi, :k]]
        errs1.append(row[0])
        errsk.append(sum(row) / k)
    return {"irma_error@1": np.mean(errs1), "irma_error_total@1": np.sum(errs1),
            f"irma_error@{k}": np.mean(errsk)}


@pytest.mark.parametrize("seed", range(3))
def test_metric_matches_brute_force(tree, seed):
    rng = np.random.default_rng(seed)
    pool = ["-".join(x) for x in zip(*(rng.choice(v, 8) for v in VALID))]
    codes = rng.choice(pool, 40).astype(object)
    nb = np.stack([rng.choice(np.setdiff1d(np.arange(40), [i]), 5, replace=False) for i in range(40)])
    nb[rng.random(nb.shape) < 0.1] = -1
    data = irma_table(tree, codes, np.arange(40), nb)
    got = METRICS.create("irma").compute(data, [1, 5])
    assert got == pytest.approx(brute_force_metric(tree, data, 5), abs=1e-12)


def test_oracle_gives_zero_error(tree):
    codes = np.array([c for c in ["1110-110-210-700", "1200-120-300-000", "2000-200-100-700"]
                      for _ in range(3)], dtype=object)
    nb = np.array([[j for j in range(9) if j // 3 == i // 3 and j != i] for i in range(9)])
    v = METRICS.create("irma").compute(irma_table(tree, codes, np.arange(9), nb), [1, 2])
    assert v == {"irma_error@1": 0.0, "irma_error_total@1": 0.0, "irma_error@2": 0.0}


def test_orphan_line_makes_its_ancestor_suspect(tmp_path):
    # 1121 is listed but its parent 112 is not: 11 lacks at least one child
    (tmp_path / "A.csv").write_text("1;x-ray\n10;unspecified\n11;plain\n1121;orphan\n")
    for name in ("B.csv", "C.csv", "D.csv"):
        (tmp_path / name).write_text("0;unspecified\n1;one\n")
    t = IrmaCodeTree.load(tmp_path)
    assert any("1121 listed without its parent 112" in i for i in t.issues)
    assert t.branching(0, "1000") == (1, 2, 1, 1)
    with pytest.raises(IrmaGapError, match="child count of 11 is suspect"):
        t.branching(0, "1110")
    ext = t.extended(["1110-100-100-100"])  # opt in: the suspect count is accepted
    assert ext.approximate and ext.branching(0, "1110") == (1, 2, 2, 1)  # 11: {111, 112}
    assert {"technical 111", "technical 112"} <= set(ext.added) and ext.check(["1110-100-100-100"]) == []


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_metric_invariant_to_query_order(tree, seed):
    rng = np.random.default_rng(seed)
    pool = ["-".join(x) for x in zip(*(rng.choice(v, 5) for v in VALID))]
    codes = rng.choice(pool, 20).astype(object)
    nb = rng.integers(-1, 20, (20, 4))
    data = irma_table(tree, codes, np.arange(20), nb)
    m = METRICS.create("irma")
    perm = rng.permutation(20)
    assert m.compute(data.take(perm), [1, 4]) == pytest.approx(m.compute(data, [1, 4]), abs=1e-12)
