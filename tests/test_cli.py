"""The CLI end to end, in a subprocess, as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from cxrbench.commands.run import parse_sets


def cli(*args, env=None, cwd=None):
    e = {**os.environ, "COLUMNS": "200", **(env or {})}
    return subprocess.run([sys.executable, "-m", "cxrbench.cli", *args], capture_output=True,
                          text=True, env=e, cwd=cwd, timeout=600)


def test_run_end_to_end(tmp_path):
    p = cli("run", "--encoder", "raw", "--dataset", "tiny", "--set", "dataset.n=30", "--k", "1", "3",
            "--out", str(tmp_path / "res"), "--cache-dir", str(tmp_path / "cache"), "-q", "--n-boot", "0")
    assert p.returncode == 0, p.stderr
    assert "raw on tiny" in p.stdout
    files = list((tmp_path / "res" / "tiny").glob("*.json"))
    assert len(files) == 1
    d = json.loads(files[0].read_text())
    assert d["config"]["k"] == [1, 3] and d["dataset"]["params"]["n"] == 30


def test_run_from_yaml_config_with_override(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("encoder: {name: raw, size: 16}\ndataset: {name: tiny, n: 24}\nk: [2]\nn_boot: 0\n")
    p = cli("run", "--config", str(cfg), "--set", "size=8", "--out", str(tmp_path / "r"), "-q")
    assert p.returncode == 0, p.stderr
    d = json.loads(next((tmp_path / "r" / "tiny").glob("*.json")).read_text())
    assert d["encoder"]["params"]["size"] == 8 and d["encoder"]["embedding"]["dim"] == 64
    assert d["dataset"]["params"]["n"] == 24


def test_unknown_encoder_is_a_clean_error():
    p = cli("run", "--encoder", "rwa", "--dataset", "tiny", "-q")
    assert p.returncode == 2
    assert "Did you mean 'raw'?" in p.stderr and "Traceback" not in p.stderr


def test_list_commands():
    for kind, name in (("encoders", "raw"), ("datasets", "tiny")):
        p = cli("list", kind)
        assert p.returncode == 0 and name in p.stdout


def test_parse_sets():
    enc, ds = parse_sets(["arch=densenet121", "weights=none", "dataset.n=5", "binary=true"])
    assert enc == {"arch": "densenet121", "weights": "none", "binary": True}
    assert ds == {"n": 5}
    with pytest.raises(ValueError, match="key=value"):
        parse_sets(["oops"])


def test_run_summary_shows_each_label_once(tmp_path):
    p = cli("run", "--encoder", "raw", "--dataset", "tiny", "--k", "1", "5", "--out", str(tmp_path),
            "-q", "--n-boot", "0")
    assert p.returncode == 0, p.stderr
    assert "k-NN-vote AUC per label (knn_auc@5)" in " ".join(p.stdout.split())
    for label in ("bright_top", "bright_left", "ring"):
        assert p.stdout.count(label) == 1
