"""Result JSON: round trip, atomic never-overwrite writes, schema version."""

from __future__ import annotations

import json
import os

import pytest

import cxrbench
from cxrbench.benchmark.result import SCHEMA_VERSION, Result, atomic_create


def test_result_round_trip_and_contents(tiny, tmp_path):
    r = cxrbench.run("raw", tiny, out=str(tmp_path), n_boot=0)
    assert r.path and r.path.endswith(".json")
    loaded = Result.load(r.path)
    assert loaded == r
    d = json.loads(open(r.path).read())
    assert d["schema_version"] == SCHEMA_VERSION
    for key in ("config", "encoder", "dataset", "timings", "environment", "metrics", "exclusions"):
        assert key in d
    assert d["dataset"]["fingerprint"] == tiny.fingerprint()
    assert d["encoder"]["fingerprint"] and d["encoder"]["embedding"]["dim"] == 1024
    assert d["config"]["encoder"] == "raw" and d["config"]["protocol"] == "holdout"
    assert {"fit", "embed", "search", "metrics", "total"} <= set(d["timings"])
    assert "numpy" in d["environment"]["packages"] and d["environment"]["host"]["cpu_count"]


def test_two_runs_never_overwrite(tiny, tmp_path):
    a = cxrbench.run("raw", tiny, out=str(tmp_path), n_boot=0)
    b = cxrbench.run("raw", tiny, out=str(tmp_path), n_boot=0)
    assert a.path != b.path
    assert len(list((tmp_path / "tiny").glob("*.json"))) == 2


def test_atomic_create_refuses_existing_and_leaves_no_temp(tmp_path):
    p = tmp_path / "x.json"
    atomic_create(p, "first")
    with pytest.raises(FileExistsError, match="never overwritten"):
        atomic_create(p, "second")
    assert p.read_text() == "first"
    assert os.listdir(tmp_path) == ["x.json"]


def test_save_is_atomic_when_writing_fails(tmp_path, monkeypatch):
    p = tmp_path / "y.json"

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError):
        atomic_create(p, "data")
    assert os.listdir(tmp_path) == []  # neither a partial file nor a temp file


def test_unknown_schema_version_is_rejected(tmp_path):
    p = tmp_path / "old.json"
    p.write_text(json.dumps({"schema_version": 999}))
    with pytest.raises(ValueError, match="schema_version 999"):
        Result.load(p)
    p.write_text("{not json")
    with pytest.raises(ValueError, match="not a valid Result JSON"):
        Result.load(p)


def test_save_neighbors_writes_table(tiny, tmp_path):
    r = cxrbench.run("raw", tiny, out=str(tmp_path), n_boot=0, save_neighbors=True, k=[2])
    tsv = r.path.replace(".json", ".neighbors.tsv")
    lines = open(tsv).read().splitlines()
    assert lines[0] == "query_id\trank\tneighbor_id\tdistance"
    assert len(lines) == 1 + 2 * r.protocol["n_queries"]
    q, rank, n, d = lines[1].split("\t")
    assert q.startswith("tiny") and rank == "1" and n.startswith("tiny") and float(d) >= 0
