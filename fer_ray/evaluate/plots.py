"""PNG plots for the evaluation report, rendered with matplotlib's Agg canvas.

Figures are built with matplotlib.figure.Figure directly (not pyplot), so no global backend or figure
state is touched: safe in workers, threads and headless machines. Each function returns PNG bytes.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from fer_ray import labels

__all__ = ["confusion_matrix_png", "per_class_f1_png", "window_sweep_png", "timeline_png"]


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return buffer.getvalue()


def confusion_matrix_png(cm: np.ndarray, class_names: Sequence[str] = labels.ABAW_CLASSES) -> bytes:
    """Row-normalized confusion matrix (recall per true class) with the raw counts written in each cell."""
    cm = np.asarray(cm, dtype=np.float64)
    rows = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    fig = Figure(figsize=(7, 6))
    ax = fig.add_subplot()
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, label="share of true class")
    ticks = np.arange(len(class_names))
    ax.set_xticks(ticks, class_names, rotation=45, ha="right")
    ax.set_yticks(ticks, class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("ground truth")
    for i in ticks:
        for j in ticks:
            ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center", fontsize=7,
                    color="white" if share[i, j] > 0.5 else "black")
    return _png(fig)


def per_class_f1_png(f1: Mapping[str, float]) -> bytes:
    fig = Figure(figsize=(7, 3.5))
    ax = fig.add_subplot()
    names = list(f1)
    ax.bar(names, [f1[n] for n in names], color="tab:blue")
    ax.set_ylim(0, 1)
    ax.set_ylabel("F1")
    ax.tick_params(axis="x", rotation=45)
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def window_sweep_png(windows: Sequence[int], f1: Sequence[float]) -> bytes:
    fig = Figure(figsize=(6, 3.5))
    ax = fig.add_subplot()
    ax.plot(list(windows), list(f1), marker="o")
    ax.set_xlabel("SP window w (frames)")
    ax.set_ylabel("macro F1")
    ax.grid(alpha=0.3)
    return _png(fig)


def timeline_png(series: Mapping[str, np.ndarray], title: str, fps: float | None = None) -> bytes:
    """One row per series (e.g. ground truth, raw, smoothed): class index over time, -1 left blank."""
    fig = Figure(figsize=(10, 1.0 + 0.9 * len(series)))
    axes = fig.subplots(len(series), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (name, values) in zip(axes, series.items()):
        values = np.asarray(values, dtype=np.float64)
        x = np.arange(values.size) / fps if fps else np.arange(values.size)
        ax.step(x, np.where(values < 0, np.nan, values), where="post", linewidth=1)
        ax.set_ylim(-0.5, labels.NUM_CLASSES - 0.5)
        ax.set_yticks(range(labels.NUM_CLASSES), [n[:3] for n in labels.ABAW_CLASSES], fontsize=6)
        ax.set_ylabel(name, fontsize=8)
    axes[0].set_title(title, fontsize=9)
    axes[-1].set_xlabel("seconds" if fps else "frame")
    return _png(fig)
