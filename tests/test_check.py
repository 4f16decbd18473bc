"""Baselines and the quality gate: pass on identical results, fail clearly on a drop."""

from __future__ import annotations

import json

import pytest

from test_leaderboard import make_result, save_all


def _results():
    raw = make_result(
        "raw", {"knn_auc@10": 0.812, "p@10": 0.6, "irma_error@1": 0.30,
                "knn_auc@10[Effusion]": 0.7},
        params={"size": 32},
        ci={"knn_auc@10": [0.79, 0.834], "p@10": [0.55, 0.65], "irma_error@1": [0.28, 0.32]})
    rnd = make_result("random", {"knn_auc@10": 0.5}, params={"dim": 32}, dim=32,
                      ci={"knn_auc@10": [0.45, 0.55]})
    return [raw, rnd]


def _baseline(tmp_path, results=None, **kw):
    from cxrbench.leaderboards.check import make_baseline, save_baseline

    doc = make_baseline(results or _results(), **kw)
    return save_baseline(doc, tmp_path / "baseline.json")


def _degraded(**changes):
    rs = _results()
    rs[0].metrics.update(changes)
    return rs


def test_identical_results_pass(tmp_path):
    from cxrbench.leaderboards.check import check

    base = _baseline(tmp_path)
    rep = check(base, save_all(_results(), tmp_path / "fresh"))
    assert rep.ok
    # entries in key order (random < raw), metrics sorted within an entry
    assert [(ln.run.split(" ")[0], ln.metric, ln.status.value) for ln in rep.lines] == [
        ("random(dim=32)", "knn_auc@10", "ok"), ("raw(size=32)", "irma_error@1", "ok"),
        ("raw(size=32)", "knn_auc@10", "ok"), ("raw(size=32)", "p@10", "ok")]
    assert rep.moved() == []


def test_baseline_document(tmp_path):
    path = _baseline(tmp_path)
    doc = json.loads(path.read_text())
    assert doc["format"] == "cxrbench-baseline/1"
    raw = [e for e in doc["entries"] if e["key"]["encoder"] == "raw"][0]
    assert raw["label"] == "raw(size=32) · phantom(n=300) · holdout · seed 0"
    assert raw["key"] == {"encoder": "raw", "encoder_params": {"size": 32}, "dataset": "phantom",
                          "dataset_params": {"n": 300}, "seed": 0,
                          "protocol": {"name": "holdout", "exclude_same_patient": True}}
    # per-label metrics are left out unless asked for
    assert sorted(raw["metrics"]) == ["irma_error@1", "knn_auc@10", "p@10"]
    assert raw["metrics"]["irma_error@1"] == {"value": 0.3, "ci": [0.28, 0.32],
                                              "higher_is_better": False}
    doc2 = json.loads(_baseline(tmp_path / "b", per_label=True, metrics=["knn_auc@*"]).read_text())
    assert sorted(doc2["entries"][1]["metrics"]) == ["knn_auc@10", "knn_auc@10[Effusion]"]


@pytest.mark.parametrize("changes,metric,status", [
    ({"knn_auc@10": 0.78}, "knn_auc@10", "WORSE"),       # below CI low 0.79
    ({"knn_auc@10": 0.795}, "knn_auc@10", "ok"),         # lower but inside the CI
    ({"knn_auc@10": 0.84}, "knn_auc@10", "improved"),    # above CI high
    ({"irma_error@1": 0.33}, "irma_error@1", "WORSE"),   # lower is better: above CI high
    ({"irma_error@1": 0.27}, "irma_error@1", "improved"),
])
def test_ci_rule(tmp_path, changes, metric, status):
    from cxrbench.leaderboards.check import check

    base = _baseline(tmp_path)
    rep = check(base, save_all(_degraded(**changes), tmp_path / "fresh"))
    (line,) = [ln for ln in rep.lines if ln.metric == metric and ln.run.startswith("raw")]
    assert line.status.value == status
    assert rep.ok == (status != "WORSE")


def test_explicit_tolerances(tmp_path):
    from cxrbench.leaderboards.check import check, load_baseline, save_baseline

    path = _baseline(tmp_path)
    doc = load_baseline(path)
    doc["tolerance"] = {"knn_auc@*": 0.05}
    (raw,) = [e for e in doc["entries"] if e["key"]["encoder"] == "raw"]
    raw["tolerance"] = {"p@10": 0.0, "knn_auc@10": 0.1}  # entry-level beats file-level
    doc["tolerance"]["p@*"] = 0.5
    save_baseline(doc, path, force=True)
    # 0.78 is outside the CI but within the 0.05 tolerance; p@10 may not drop at all
    rep = check(path, save_all(_degraded(**{"knn_auc@10": 0.78, "p@10": 0.599}), tmp_path / "f"))
    got = {ln.metric: (ln.status.value, ln.tolerance) for ln in rep.lines if ln.run.startswith("raw")}
    assert got["knn_auc@10"] == ("ok", 0.1)
    assert got["p@10"] == ("WORSE", 0.0)
    assert got["irma_error@1"] == ("ok", None)  # no pattern matches: the CI rule
    rep = check(path, save_all(_degraded(**{"knn_auc@10": 0.70}), tmp_path / "g"))
    assert [(ln.run.split(" ")[0], ln.metric) for ln in rep.failed] == [("raw(size=32)", "knn_auc@10")]
    rnd = _results()
    rnd[1].metrics["knn_auc@10"] = 0.455  # random's entry: file-level 0.05 applies
    assert check(path, save_all(rnd, tmp_path / "h")).ok
    rnd[1].metrics["knn_auc@10"] = 0.449
    rnd[1].run_id += "-2"
    rnd[1].created = "2026-01-01T00:00:00+00:00"
    assert not check(path, save_all(rnd[1:], tmp_path / "h")).ok


def test_missing_run_metric_and_changed_data_fail(tmp_path):
    from cxrbench.leaderboards.check import check

    base = _baseline(tmp_path)
    raw, _ = _results()
    del raw.metrics["p@10"]
    extra = make_result("raw", {"p@10": 0.5}, params={"size": 64})  # not in the baseline
    rep = check(base, save_all([raw, extra], tmp_path / "fresh"))
    st = {(ln.run.split(" ")[0], ln.metric): ln.status.value for ln in rep.lines}
    assert st[("raw(size=32)", "p@10")] == "MISSING"
    assert st[("random(dim=32)", "(all)")] == "MISSING"
    assert st[("raw(size=64)", "(all)")] == "new"
    assert not rep.ok
    changed = _results()
    for r in changed:
        r.dataset["fingerprint"] = "ffffffffffffffff"
    rep = check(base, save_all(changed, tmp_path / "changed"))
    assert {ln.status.value for ln in rep.lines} == {"DATA CHANGED"}


def test_newest_fresh_result_is_checked(tmp_path):
    from cxrbench.leaderboards.check import check

    base = _baseline(tmp_path)
    old_bad = _degraded(**{"knn_auc@10": 0.1})
    for r in old_bad:
        r.created, r.run_fingerprint = "2025-01-01T00:00:00+00:00", "old-" + r.run_fingerprint
        r.run_id = "old-" + r.run_id
    folder = save_all(old_bad + _results(), tmp_path / "fresh")
    assert check(base, folder).ok


def test_baseline_refuses_to_overwrite(tmp_path):
    from cxrbench.leaderboards.check import make_baseline, save_baseline

    path = _baseline(tmp_path)
    with pytest.raises(FileExistsError, match="--force"):
        save_baseline(make_baseline(_results()), path)
    save_baseline(make_baseline(_results()[:1]), path, force=True)
    assert len(json.loads(path.read_text())["entries"]) == 1


def test_cli_baseline_and_degraded_check(tmp_path, capsys):
    from cxrbench.cli import main

    good = save_all(_results(), tmp_path / "good")
    base = tmp_path / "lb" / "baseline.json"
    assert main(["baseline", str(good), "--out", str(base)]) == 0
    assert main(["baseline", str(good), "--out", str(base)]) == 2  # exists, no --force
    assert "--force" in capsys.readouterr().err
    assert main(["check", "--baseline", str(base), "--results", str(good)]) == 0
    assert "quality check passed" in capsys.readouterr().out

    bad = save_all(_degraded(**{"knn_auc@10": 0.70}), tmp_path / "bad")
    assert main(["check", "--baseline", str(base), "--results", str(bad)]) == 1
    captured = capsys.readouterr()
    out = captured.out
    # the table says which run and metric moved, from what to what, and why it failed
    # (one table per run, titled with the run key, so an 80-column CI log does not wrap it)
    assert "raw(size=32) · phantom(n=300) · holdout · seed 0" in out
    row = next(line for line in out.splitlines() if "knn_auc@10" in line and "WORSE" in line)
    for text in ("0.812", "[0.790, 0.834]", "0.700", "-0.1120", "≥ 0.790", "WORSE"):
        assert text in row, (text, row)
    assert "p@10" not in out  # unchanged metrics are not listed
    assert "1 failure(s)" in out and "quality check failed" in captured.err


def test_bad_baseline_files(tmp_path):
    from cxrbench.leaderboards.check import load_baseline

    with pytest.raises(FileNotFoundError, match="cxrbench baseline"):
        load_baseline(tmp_path / "none.json")
    p = tmp_path / "x.json"
    p.write_text('{"entries": []}')
    with pytest.raises(ValueError, match="not a cxrbench baseline"):
        load_baseline(p)
    p.write_text('{"format": "cxrbench-baseline/1", "entries": [], "tolerance": {"p@10": -1}}')
    with pytest.raises(ValueError, match="tolerance"):
        load_baseline(p)
