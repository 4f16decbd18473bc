"""The example third-party plugin: pip-installed, found through its entry point."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "cxrbench-example-plugin"


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory):
    """pip-install the example plugin into a private folder (not the test venv)."""
    target = tmp_path_factory.mktemp("site")
    # build from a copy: an in-tree build would leave build/ and *.egg-info behind
    src = tmp_path_factory.mktemp("src") / "plugin"
    shutil.copytree(EXAMPLE, src, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    p = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
         "--disable-pip-version-check", "--target", str(target), str(src)],
        capture_output=True, text=True, timeout=300,
    )
    assert p.returncode == 0, p.stderr
    assert list(target.glob("cxrbench_example_plugin-*.dist-info"))
    return target


def run_cli(site, *args, tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
           "COLUMNS": "200", "CXRBENCH_CACHE": str(tmp_path / "cache")}
    return subprocess.run([sys.executable, "-m", "cxrbench.cli", *args], capture_output=True,
                          text=True, env=env, timeout=600)


def test_plugin_encoder_runs_through_entry_point(plugin_site, tmp_path):
    p = run_cli(plugin_site, "list", "encoders", tmp_path=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "example-histogram" in p.stdout and "plugin" in p.stdout
    out = tmp_path / "res"
    p = run_cli(plugin_site, "run", "--encoder", "example-histogram", "--dataset", "tiny",
                "--set", "size=32", "--out", str(out), "-q", "--n-boot", "0", tmp_path=tmp_path)
    assert p.returncode == 0, p.stderr
    d = json.loads(next((out / "tiny").glob("*.json")).read_text())
    assert d["encoder"]["name"] == "example-histogram"
    assert d["encoder"]["embedding"] == {"dim": 48, "distance": "cosine", "dtype": "float32"}


def test_without_the_plugin_the_name_is_unknown(tmp_path):
    p = run_cli("", "run", "--encoder", "example-histogram", "--dataset", "tiny", "-q",
                tmp_path=tmp_path)
    assert p.returncode == 2 and "unknown encoder 'example-histogram'" in p.stderr
