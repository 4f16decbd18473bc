"""Leaderboards from Result files: suites, markdown/PNG tables and the regression check.

* :mod:`~cxrbench.leaderboards.suite`: YAML suites of runs, run resumably.
* :mod:`~cxrbench.leaderboards.collect`: reading Results; run/config identities.
* :mod:`~cxrbench.leaderboards.boards`: grouping Results into comparable tables.
* :mod:`~cxrbench.leaderboards.markdown` / :mod:`~cxrbench.leaderboards.plots`:
  rendering; :mod:`~cxrbench.leaderboards.publish` writes a leaderboard folder.
* :mod:`~cxrbench.leaderboards.check`: baselines and the quality gate.
"""

from cxrbench.leaderboards.boards import Board, build_boards
from cxrbench.leaderboards.check import check, compare, make_baseline, save_baseline
from cxrbench.leaderboards.collect import config_fingerprint, load_results, run_key
from cxrbench.leaderboards.markdown import render
from cxrbench.leaderboards.publish import publish
from cxrbench.leaderboards.suite import Suite, load_suite, run_suite

__all__ = [
    "Board", "Suite", "build_boards", "check", "compare", "config_fingerprint", "load_results",
    "load_suite", "make_baseline", "publish", "render", "run_key", "run_suite", "save_baseline",
]
