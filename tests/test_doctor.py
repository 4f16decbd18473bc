"""``cxrbench doctor`` and the end-to-end run on the real NIH images."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from conftest import shared_path
from dataset_fixtures import NIH_ROWS, chexpert_tree, corrupt, nih_tree

import cxrbench
from cxrbench.cli import main


def doctor(capsys, *args):
    rc = main(["doctor", *args])
    out = capsys.readouterr()
    return rc, out.out + out.err


def test_doctor_healthy_tree_prints_tables_and_exits_0(tmp_path, capsys):
    root = nih_tree(tmp_path / "nih", split_lists=True)
    rc, out = doctor(capsys, "--dataset", "nih14", "--root", str(root))
    assert rc == 0, out
    assert re.search(r"train\s*│\s*9\s*│\s*6", out)  # 9 images of 6 patients
    assert re.search(r"test\s*│\s*2\s*│\s*2", out)
    assert re.search(r"Cardiomegaly\s*│\s*3\s*│\s*0", out)
    assert re.search(r"PA\s*│\s*8", out) and re.search(r"AP\s*│\s*3", out)
    assert "decoded all images: 11 readable" in out and "ok: 11 images ready" in out


def test_doctor_reports_missing_and_unreadable_files(tmp_path, capsys):
    root = nih_tree(tmp_path / "nih", present={r[0] for r in NIH_ROWS[:6]})
    corrupt(root / "images" / "00000002_000.png")
    rc, out = doctor(capsys, "--dataset", "nih14", "--root", str(root))
    assert rc == 1
    assert "missing: 5 listed images are not on disk" in out
    assert "unreadable images (1)" in out and "00000002_000.png" in out
    assert "1 of 6 decoded images are unreadable" in out


def test_doctor_strict_turns_warnings_into_problems(tmp_path, capsys):
    root = nih_tree(tmp_path / "nih", present={r[0] for r in NIH_ROWS[:6]})
    assert doctor(capsys, "--dataset", "nih14", "--root", str(root))[0] == 0
    assert doctor(capsys, "--dataset", "nih14", "--root", str(root), "--strict")[0] == 1


def test_doctor_layout_error_names_the_file(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    rc, out = doctor(capsys, "--dataset", "nih14", "--root", str(tmp_path / "empty"))
    assert rc == 2 and "Data_Entry_2017_v2020.csv" in out


def test_doctor_passes_dataset_params(tmp_path, capsys):
    root = chexpert_tree(tmp_path)
    rc, out = doctor(capsys, "--dataset", "chexpert", "--root", str(root),
                     "--set", "dataset.uncertain=ones", "view=all", "--images", "none")
    assert rc == 0, out
    assert "'uncertain': 'ones'" in out and re.search(r"LAT\s*│\s*2", out)


def test_doctor_on_real_nih14_mini(capsys):
    root = shared_path("nih14-mini")
    rc, out = doctor(capsys, "--dataset", "nih14", "--root", str(root))
    assert rc == 0, out
    assert re.search(r"all\s*│\s*308\s*│\s*308", out)
    assert re.search(r"Infiltration\s*│.*│\s*251\s*│\s*0\s*│\s*18.5%", out)
    assert "111812 listed images are not on disk" in out
    assert "308 readable; sizes 256x256 (308)" in out


def test_end_to_end_raw_leave_one_out_on_real_nih14_mini(tmp_path):
    root = shared_path("nih14-mini")
    res = cxrbench.run("raw", "nih14", root=str(root), protocol="leave-one-out", out=str(tmp_path),
                       n_boot=0)
    assert res.protocol["n_queries"] == 308
    assert res.dataset["n_images"] == 308 and res.dataset["n_patients"] == 308
    assert res.dataset["info"]["missing_files"] == 112120 - 308
    assert res.path is not None and Path(res.path).exists()
    table = res._table
    assert table.neighbors.shape == (308, 10)
    assert not np.any(table.neighbors == table.queries[:, None])  # never itself
    assert (table.distances[:, 1:] >= table.distances[:, :-1] - 1e-6).all()


@pytest.mark.slow
def test_cli_run_on_real_nih14_mini(tmp_path, capsys):
    root = shared_path("nih14-mini")
    rc = main(["run", "--encoder", "raw", "--dataset", "nih14", "--root", str(root),
               "--protocol", "leave-one-out", "--out", str(tmp_path), "-q"])
    assert rc == 0
    assert re.search(r"leave-one-out,\s+308\s+queries", capsys.readouterr().out)
