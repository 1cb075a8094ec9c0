"""`replay --plot`: both equity curves as a PNG (matplotlib, the optional `plot` extra)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from app.errors import AppError
from app.trading.replay import ReplayReport

MISSING = "replay --plot needs matplotlib: pip install 'app[plot]' (or pip install matplotlib)"


class PlotUnavailable(AppError):
    """matplotlib is not installed."""


def plot_equity(report: ReplayReport, path: Path) -> Path:
    """Write both models' compounded net equity against market time to `path`."""
    try:
        # Optional, imported only for --plot; the Figure API, not pyplot: no global state,
        # no GUI backend, safe in a worker thread.
        from matplotlib.figure import Figure  # noqa: PLC0415
    except ImportError:
        raise PlotUnavailable(MISSING) from None
    figure = Figure(figsize=(10, 4.5), dpi=100)
    axes = figure.subplots()
    runs = [("incumbent", report.incumbent)]
    if report.candidate is not None:
        runs.append(("candidate", report.candidate))
    for role, run in runs:
        count = len(run.equity)
        # The equity after decision i is known at the next bar's time.
        times = report.times[1 : count + 1].astype(np.int64).astype("datetime64[s]")
        figures = run.performance
        axes.plot(
            times,
            run.equity,
            label=f"{role} {run.version}: net {figures.net_return:+.2%}, "
            f"Sharpe {figures.sharpe:.2f}, max drawdown {figures.max_drawdown:.2%}",
            linewidth=1.2,
        )
    axes.axhline(1.0, color="grey", linewidth=0.6)
    axes.set_ylabel("equity (compounded, after costs)")
    axes.set_title(f"replay over {report.bars:,} bars")
    axes.legend(loc="best", fontsize=8)
    figure.autofmt_xdate()
    # Fixed margins: tight_layout would draw the whole figure once more to measure it.
    figure.subplots_adjust(left=0.08, right=0.98, top=0.92, bottom=0.16)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    return path
