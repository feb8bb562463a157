"""Plots of pose errors that the node's evaluator and the trainer's evaluation both draw.

matplotlib is optional for the library (a robot does not need it): it is imported inside the
functions, and they render with a bare ``Figure`` (Agg on savefig; no pyplot, no display, no
global state).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

__all__ = ["figure", "plot_error_cdf_curves", "plot_error_cdfs", "save_figure"]


def figure(size: tuple[float, float]):
    """A matplotlib ``Figure`` of ``size`` inches at 110 dpi (imports matplotlib)."""
    from matplotlib.figure import Figure

    return Figure(figsize=size, dpi=110)


def plot_error_cdfs(
    translation_error_m: np.ndarray,
    rotation_error_deg: np.ndarray,
    path: str | Path,
    title: str = "",
    *,
    ylabel: str = "fraction of frames",
) -> Path:
    """PNG with the cumulative distributions of translation and rotation errors, a dashed line
    at each median; returns ``path``."""
    return plot_error_cdf_curves(
        {"": (translation_error_m, rotation_error_deg)}, path, title, ylabel=ylabel
    )


def plot_error_cdf_curves(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
    path: str | Path,
    title: str = "",
    *,
    ylabel: str = "fraction of frames",
    log_x: bool = False,
) -> Path:
    """PNG with one cumulative distribution of translation and of rotation errors per entry of
    ``curves`` (label -> (translation m, rotation deg); an empty label draws no legend), a
    dashed line at each median; ``log_x`` for errors that span decades (a prior in dm beside a
    refined pose in mm). Returns ``path``."""
    fig = figure((10, 4))
    ax_t, ax_r = fig.subplots(1, 2)
    for index, (ax, label) in enumerate(
        ((ax_t, "translation error (m)"), (ax_r, "rotation error (deg)"))
    ):
        for number, (name, errors) in enumerate(curves.items()):
            values = np.sort(np.asarray(errors[index], dtype=np.float64).reshape(-1))
            fractions = np.arange(1, len(values) + 1) / max(len(values), 1)
            colour = f"C{number}"
            ax.step(values, fractions, where="post", color=colour, label=name or None)
            if len(values):
                median = float(np.median(values))
                ax.axvline(median, color=colour, linestyle="--", linewidth=0.8, alpha=0.7)
        ax.set_xlabel(label + (", log scale" if log_x else ""))
        ax.set_ylabel(ylabel)
        ax.set_ylim(0.0, 1.0)
        if log_x:
            ax.set_xscale("log")
        else:
            ax.set_xlim(left=0.0)
        ax.grid(True, alpha=0.3, which="both" if log_x else "major")
        if any(curves):
            ax.legend(loc="lower right", fontsize=8)
    return save_figure(fig, path, title)


def save_figure(fig, path: str | Path, suptitle: str = "") -> Path:
    """Lay ``fig`` out (under ``suptitle``, if any) and write it to ``path``; returns it."""
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    return path
