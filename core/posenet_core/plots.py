"""Plots of pose errors that the node's evaluator and the trainer's evaluation both draw.

matplotlib is optional for the library (a robot does not need it): it is imported inside the
functions, and they render with a bare ``Figure`` (Agg on savefig; no pyplot, no display, no
global state).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["figure", "plot_error_cdfs", "save_figure"]


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
    fig = figure((10, 4))
    ax_t, ax_r = fig.subplots(1, 2)
    for ax, errors, label in (
        (ax_t, translation_error_m, "translation error (m)"),
        (ax_r, rotation_error_deg, "rotation error (deg)"),
    ):
        values = np.sort(np.asarray(errors, dtype=np.float64).reshape(-1))
        fractions = np.arange(1, len(values) + 1) / max(len(values), 1)
        ax.step(values, fractions, where="post")
        if len(values):
            ax.axvline(float(np.median(values)), color="0.5", linestyle="--", linewidth=0.8)
        ax.set_xlabel(label)
        ax.set_ylabel(ylabel)
        ax.set_ylim(0.0, 1.0)
        ax.set_xlim(left=0.0)
        ax.grid(True, alpha=0.3)
    return save_figure(fig, path, title)


def save_figure(fig, path: str | Path, suptitle: str = "") -> Path:
    """Lay ``fig`` out (under ``suptitle``, if any) and write it to ``path``; returns it."""
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    return path
