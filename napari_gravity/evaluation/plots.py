"""FROC plots (PNG + SVG, linear and log FPpI axes) for one or several methods.

Uses matplotlib's object API with the Agg canvas, so it never touches pyplot's global backend
(safe inside the napari GUI). Inputs are report dicts from :func:`report.build_report`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np


def _curve(rep: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray([np.nan if v is None else v for v in rep["fppi"]], dtype=np.float64)
    y = np.asarray([np.nan if v is None else v for v in rep["tpr"]], dtype=np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    return x[ok], y[ok]


def plot_froc(
    reports: Sequence[Mapping[str, Any]],
    path_stem: str | os.PathLike,
    *,
    max_fppi: float | None = None,
    log: bool = False,
    formats: Sequence[str] = ("png", "svg"),
    title: str | None = None,
) -> list[Path]:
    """Draw the FROC curves of ``reports`` (with bootstrap mean and band when present).

    Writes ``path_stem.<fmt>`` for each format and returns the paths.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    g = float(max_fppi if max_fppi is not None else reports[0]["max_fppi"])
    fig = Figure(figsize=(6.4, 4.8), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(111)
    colors = [f"C{k}" for k in range(10)]
    for k, rep in enumerate(reports):
        c = colors[k % len(colors)]
        x, y = _curve(rep)
        # extend flat to the axis end, as the AUFROC does
        if len(x) and x[-1] < g:
            x, y = np.r_[x, g], np.r_[y, y[-1]]
        label = f"{rep['method']} (AUFROC {100 * rep['aufroc']:.1f}%)"
        b = rep.get("bootstrap")
        if b:
            gx = np.asarray(b["grid_fppi"], dtype=np.float64)
            lo = np.asarray(b["tpr_lo"], dtype=np.float64)
            hi = np.asarray(b["tpr_hi"], dtype=np.float64)
            m = np.asarray(b["tpr_mean"], dtype=np.float64)
            sel = gx > 0 if log else np.ones(len(gx), bool)
            ax.fill_between(gx[sel], lo[sel], hi[sel], color=c, alpha=0.2, linewidth=0)
            ax.plot(gx[sel], m[sel], color=c, linestyle="--", linewidth=1)
            lo_ci, hi_ci = b["aufroc_ci"]
            label = (
                f"{rep['method']} (AUFROC {100 * rep['aufroc']:.1f}%, "
                f"95% CI {100 * lo_ci:.1f}–{100 * hi_ci:.1f})"
            )
        sel = x > 0 if log else np.ones(len(x), bool)
        ax.plot(x[sel], y[sel], color=c, linewidth=1.6, label=label, drawstyle="default")
    if log:
        ax.set_xscale("log")
        ax.set_xlim(min(0.01, g / 100), g)
    else:
        ax.set_xlim(0, g)
    ax.set_ylim(0, 1.0)
    ax.set_xlabel("false positives per image (FPpI)")
    ax.set_ylabel("sensitivity (TPR)")
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(title or "FROC" + (" (log FPpI)" if log else ""))
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    out = []
    stem = Path(path_stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    for fmt in formats:
        p = stem.with_name(f"{stem.name}.{fmt}")
        fig.savefig(p, format=fmt)
        out.append(p)
    return out


def save_froc_plots(
    out_dir: str | os.PathLike,
    reports: Sequence[Mapping[str, Any]],
    *,
    max_fppi: float | None = None,
    stem: str = "froc",
) -> list[Path]:
    """``froc_linear.{png,svg}`` and ``froc_log.{png,svg}`` in ``out_dir``."""
    out_dir = Path(out_dir)
    paths = plot_froc(reports, out_dir / f"{stem}_linear", max_fppi=max_fppi, log=False)
    paths += plot_froc(reports, out_dir / f"{stem}_log", max_fppi=max_fppi, log=True)
    return paths
