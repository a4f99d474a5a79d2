"""Matplotlib helpers shared by the report's plots: figures, axes, styles, smoothing.

Figures are built on matplotlib's Agg canvas (no display, no global ``pyplot`` state) and
saved atomically as PNG.
"""

from __future__ import annotations

import numpy as np

from tf_lottery import files

__all__ = [
    "BRANCH_LABEL",
    "BRANCH_STYLE",
    "RUN_LINESTYLES",
    "RUN_MARKERS",
    "figure",
    "finite_values",
    "line_style",
    "remaining_axis",
    "save",
    "smooth",
    "window",
    "zoom_floor",
]

BRANCH_STYLE = {
    "lottery": dict(color="C0", marker="o"),
    "reinit": dict(color="C1", marker="s"),
    "random_prune": dict(color="C2", marker="^"),
    "one_shot": dict(color="C3", marker="D"),
    "tfmot_gmp": dict(color="C4", marker="x"),
}
BRANCH_LABEL = {
    "lottery": "lottery ticket (IMP)",
    "reinit": "random reinit",
    "random_prune": "random pruning",
    "one_shot": "one-shot pruning",
    "tfmot_gmp": "tfmot GMP (final acc.)",
}
RUN_LINESTYLES = ("-", "--", ":", "-.")
RUN_MARKERS = ("o", "s", "^", "D", "v", "P")


def figure(ncols: int = 1, nrows: int = 1, width: float = 7.0, height: float = 4.5):
    """A constrained-layout figure of ``nrows x ncols`` panels of ``width x height``
    inches each: ``(figure, axes)`` with ``axes`` a 2-D array ``[row, col]``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def save(fig, path: str) -> str:
    """Writes ``fig`` to ``path`` as a 130-dpi PNG, atomically; returns ``path``."""
    with files.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=130)
    return path


def remaining_axis(ax, remaining_percents) -> None:
    """Log x axis of weights remaining (%), reversed, ticks at the runs' levels."""
    from matplotlib.ticker import FixedFormatter, FixedLocator, NullLocator

    ticks = []
    for p in sorted({round(p, 1) for p in remaining_percents if p > 0}, reverse=True):
        if not ticks or ticks[-1] / p > 1.12:  # labels closer than this would overlap
            ticks.append(p)
    while len(ticks) > 11:  # keep labels readable: every other level, keeping both ends
        ticks = ticks[::2] if ticks[::2][-1] == ticks[-1] else ticks[::2] + [ticks[-1]]
    ax.set_xscale("log")
    if ticks:
        ax.set_xlim(max(ticks) * 1.15, min(ticks) / 1.15)  # reversed: sparser to the right
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(FixedFormatter([f"{t:g}" for t in ticks]))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("weights remaining (%)")
    ax.grid(True, alpha=0.3)


def line_style(run_index: int, n_runs: int, branch: str) -> dict:
    """Color and marker of a branch's line; with several runs, a line style and marker
    per run."""
    style = dict(BRANCH_STYLE.get(branch, dict(color=f"C{5 + run_index % 5}", marker="o")))
    if n_runs > 1:
        style["linestyle"] = RUN_LINESTYLES[run_index % len(RUN_LINESTYLES)]
        style["marker"] = RUN_MARKERS[run_index % len(RUN_MARKERS)]
    return style


def finite_values(values) -> list[float]:
    """The finite numbers of ``values`` as floats (``None``, NaN and inf left out)."""
    return [float(v) for v in values if v is not None and np.isfinite(v)]


def zoom_floor(curves) -> tuple[float, float] | None:
    """``(bottom, top)`` of a y axis that skips the first evaluations (near chance);
    non-finite values (a diverged branch) are ignored, ``None`` when none is left."""
    late = []
    for curve in curves:
        its = curve["iteration"]
        if not its:
            continue
        cut = its[0] + 0.05 * (its[-1] - its[0])
        late += finite_values(v for i, v in zip(its, curve["min"]) if i >= cut)
    high = finite_values(v for curve in curves for v in curve["max"])
    if not late or not high:
        return None
    return max(0.0, min(late) - 0.02), min(1.0, max(high) + 0.01)


def smooth(values, window: int) -> list[float]:
    """Centered moving average over ``window`` points (shrinking at the ends) of the
    finite values; a non-finite point stays NaN (a gap in the line) and does not spread
    to its neighbours."""
    values = np.asarray(values, dtype=float)
    if window <= 1 or len(values) < 3:
        return values.tolist()
    finite = np.isfinite(values)
    half = window // 2
    sums = np.concatenate([[0.0], np.cumsum(np.where(finite, values, 0.0))])
    counts = np.concatenate([[0], np.cumsum(finite)])
    idx = np.arange(len(values))
    low = np.maximum(idx - half, 0)
    high = np.minimum(idx + half + 1, len(values))
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (sums[high] - sums[low]) / (counts[high] - counts[low])
    return np.where(finite, out, np.nan).tolist()


def window(length: int, smooth: int) -> int:
    """The moving-average window for a curve of ``length`` evaluations: ``smooth``, or
    for short curves (< ``10 * smooth``) the odd number nearest a tenth of the length."""
    if length >= 10 * smooth:
        return smooth
    return max(1, (length // 10) | 1)
