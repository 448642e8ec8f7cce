"""Pictures: mask overlays, image grids, bar charts and training curves (PNG files).

Figures are drawn with matplotlib's object API straight into files: no pyplot, so the
plotting backend of the process (a notebook's, say) is never touched and no display is needed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

# Overlay colours per class id (background is left uncoloured).
OVERLAY_COLORS = np.array(
    [
        (0, 0, 0),
        (255, 50, 50),
        (50, 220, 50),
        (60, 120, 255),
        (255, 200, 0),
        (200, 60, 255),
        (0, 220, 220),
    ],
    np.float32,
)


def to_display(image: np.ndarray) -> np.ndarray:
    """Any image (H, W, C) or (H, W) -> uint8 RGB (H, W, 3), contrast stretched; of an image
    whose channels are not RGB (two MRI sequences, neighbouring slices), the first.

    The stretch spans the 1st-99.5th percentile of the pixels above the image's minimum, so a
    large empty background (as in skull-stripped MRI) does not wash out the anatomy.
    """
    image = np.asarray(image, np.float32)
    if image.ndim == 3 and image.shape[-1] != 3:  # gray, or channels that are no RGB: the first
        image = image[..., 0]
    content = image[image > image.min()] if image.size else image
    low, high = np.percentile(content, (1, 99.5)) if content.size else (0.0, 1.0)
    low = min(low, float(image.min()) if image.size else 0.0)
    scaled = np.clip((image - low) / max(high - low, 1e-6), 0, 1) * 255
    if scaled.ndim == 2:
        scaled = np.repeat(scaled[..., None], 3, axis=-1)
    return scaled[..., :3].astype(np.uint8)


def overlay(image: np.ndarray, mask: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """An RGB picture of `image` with the foreground classes of `mask` (H, W) tinted."""
    picture = to_display(image).astype(np.float32)
    colors = OVERLAY_COLORS[np.minimum(mask, len(OVERLAY_COLORS) - 1)]
    tinted = mask > 0
    picture[tinted] = (1 - alpha) * picture[tinted] + alpha * colors[tinted]
    return picture.astype(np.uint8)


def save_grid(
    path: str | Path,
    rows: Sequence[Sequence[np.ndarray]],
    column_titles: Sequence[str] = (),
    row_titles: Sequence[str] = (),
    title: str = "",
) -> Path:
    """Saves RGB pictures laid out in rows as one PNG."""
    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    fig = Figure(figsize=(2.4 * n_cols, 2.4 * n_rows + 0.4))
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    for r, row in enumerate(rows):
        for c in range(n_cols):
            ax = axes[r][c]
            ax.axis("off")
            if c < len(row):
                ax.imshow(row[c])
            if r == 0 and c < len(column_titles):
                ax.set_title(column_titles[c], fontsize=9)
            if c == 0 and r < len(row_titles):
                ax.text(
                    -0.04,
                    0.5,
                    row_titles[r],
                    transform=ax.transAxes,
                    fontsize=7,
                    ha="right",
                    va="center",
                    rotation=90,
                )
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    return Path(path)


def save_bars(path: str | Path, groups: Mapping[str, Mapping[str, float]], title: str, ylabel: str):
    """Grouped bar chart: `groups` maps a series (e.g. a split) to {label: value}."""
    labels = sorted({k for values in groups.values() for k in values})
    width = 0.8 / max(len(groups), 1)
    fig = Figure(figsize=(max(4, 1.2 * len(labels) * len(groups)), 3.2))
    ax = fig.subplots()
    for i, (series, values) in enumerate(groups.items()):
        xs = np.arange(len(labels)) + i * width
        ax.bar(xs, [values.get(k, 0) for k in labels], width, label=series)
    ax.set_xticks(np.arange(len(labels)) + width * (len(groups) - 1) / 2, labels)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    return Path(path)


def save_curves(
    path: str | Path, history: Mapping[str, Sequence[float]], keys: Sequence[str], title: str
) -> Path:
    """Line plot of the named history series against the epoch."""
    fig = Figure(figsize=(5, 3.2))
    ax = fig.subplots()
    for key in keys:
        if key in history and len(history[key]):
            ax.plot(np.arange(1, len(history[key]) + 1), history[key], marker=".", label=key)
    ax.set_xlabel("epoch")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    return Path(path)
