"""PNG plots per board: primary metric vs embedding size, and vs images/s.

Drawn with matplotlib's Agg backend (no display needed). Points carry their
95% CI as vertical error bars; runs without the x value (e.g. no timing
because every embedding came from the cache) are left out and counted in the
plot's footnote.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from cxrbench.leaderboards.boards import Board, Row, ranked

PLOTS = (
    ("size", "embedding size (bytes per image)", lambda r: r.bytes_per_image),
    ("speed", "embedding throughput (images/s)", lambda r: r.images_per_s),
)


def plot_files(board: Board) -> list[tuple[str, str]]:
    """(file name, alt text) of the plots :func:`write_plots` makes for ``board``."""
    if board.primary is None:
        return []
    return [(f"{board.slug}-{kind}.png", f"{board.primary} vs {label}")
            for kind, label, _ in PLOTS]


def _scatter(board: Board, xlabel: str, getx: Callable[[Row], float | None], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib import pyplot as plt

    key = board.primary
    assert key is not None
    pts = []
    missing = 0
    for _, r in ranked(board):
        x, y = getx(r), r.value(key)
        if y is None:
            continue
        if x is None or x <= 0:
            missing += 1
            continue
        pts.append((x, y, r.ci(key), r.label))
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=100)
    for x, y, ci, label in pts:
        yerr = [[y - ci[0]], [ci[1] - y]] if ci else None
        ax.errorbar([x], [y], yerr=yerr, fmt="o", capsize=3)
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    if pts:
        ax.set_xscale("log")
        ax.margins(x=0.2, y=0.1)  # room for the point labels
    arrow = "higher is better" if board.higher_is_better(key) else "lower is better"
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"{key} ({arrow})")
    ax.set_title(board.title(), fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    note = f"dataset fingerprint {board.dataset_fingerprint}"
    if missing:
        note += f"; {missing} run(s) without this measurement not shown"
    fig.text(0.01, 0.01, note, fontsize=7, alpha=0.7)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", metadata={"Software": None})
    plt.close(fig)


def write_plots(board: Board, out_dir: str | Path) -> list[tuple[str, str]]:
    """Write the board's plots into ``out_dir``; returns (file name, alt text) pairs."""
    files = plot_files(board)
    for (name, _), (_, xlabel, getx) in zip(files, PLOTS):
        _scatter(board, xlabel, getx, Path(out_dir) / name)
    return files
