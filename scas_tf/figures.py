"""Figures a researcher reads: labelled heat maps (TensorBoard images, alpha.png, shared by the
DARTS and ENAS searchers) and a search's TensorBoard dashboard (the custom scalars layout).

Figures are matplotlib `Figure`s made without pyplot: they render off-screen (Agg) when saved,
no global figure list keeps them alive between epochs, and the backend of a notebook that
imports scas_tf is left alone. matplotlib is an optional extra: `scas report` needs it, a
search does not, and without it a search warns once and writes no figures.
"""
import dataclasses
import functools
import importlib.util
import io
import logging
import re

import numpy as np
import tensorflow as tf
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.plugins.custom_scalar import summary as custom_scalar_summary

from scas_tf.run_dir import write_bytes_atomic

log = logging.getLogger("scas")
INSTALL_MATPLOTLIB = 'pip install -e ".[report]"'
DPI = 80  # TensorBoard shows images at their own size: a DARTS map is then about 900 pixels wide
CELL_INCHES = (0.95, 0.34)  # width and height of one heat-map cell: room for "0.12503" at font size 8
PANEL_INCHES = (3.8, 2.4)  # a heat map's room beside its cells: labels, colour bar, two-line title
MIN_PANEL_WIDTH = 7.5  # inches: the title's width, for maps of few columns


def has_matplotlib():
    return importlib.util.find_spec("matplotlib") is not None


@functools.cache
def can_draw():
    """Whether a search can draw its figures; the first call without matplotlib warns."""
    if not has_matplotlib():
        log.warning("matplotlib is not installed: no heat maps in TensorBoard or the run folder (%s)",
                    INSTALL_MATPLOTLIB)
    return has_matplotlib()


def new_figure(**kwargs):
    """A matplotlib Figure (see above: no pyplot); matplotlib must be installed."""
    from matplotlib.figure import Figure
    return Figure(**kwargs)


@dataclasses.dataclass(frozen=True)
class Heatmap:
    """Probabilities [rows, columns] (NaN where a row has no such choice) with their labels;
    `marked`: (row, column) cells to outline."""
    title: str
    rows: tuple
    columns: tuple
    values: np.ndarray
    marked: tuple = ()


def heatmap_figure(*heatmaps):
    """The heat maps side by side, each with its labels, a colour bar and every cell's value."""
    width = sum(max(CELL_INCHES[0] * len(h.columns) + PANEL_INCHES[0], MIN_PANEL_WIDTH) for h in heatmaps)
    height = CELL_INCHES[1] * max(len(h.rows) for h in heatmaps) + PANEL_INCHES[1]
    figure = new_figure(figsize=(width, height), dpi=DPI, layout="constrained")
    for heatmap, axes in zip(heatmaps, np.atleast_1d(figure.subplots(1, len(heatmaps)))):
        draw_heatmap(figure, axes, heatmap)
    return figure


def draw_heatmap(figure, axes, heatmap):
    from matplotlib.patches import Rectangle
    values = np.asarray(heatmap.values, dtype=float)
    # The colours span this map's own range, which the colour bar states: a nearly uniform
    # softmax still shows which entries lead, where a fixed 0..1 scale would be one flat colour.
    low, high = np.nanmin(values), np.nanmax(values)
    image = axes.imshow(values, cmap="viridis", vmin=low, vmax=max(high, low + 1e-6), aspect="auto")
    # Enough decimals to tell the entries apart: an early alpha differs in the fourth.
    decimals = int(np.clip(np.ceil(-np.log10(max(high - low, 1e-9))) + 1, 2, 5))
    figure.colorbar(image, ax=axes, fraction=0.05, pad=0.02, label="probability", format=f"%.{decimals}f",
                    ticks=np.unique(np.round(np.linspace(low, high, 5), decimals)))  # no two ticks read alike
    axes.set_xticks(range(len(heatmap.columns)), heatmap.columns, rotation=35, ha="right")
    axes.set_yticks(range(len(heatmap.rows)), heatmap.rows)
    axes.set_title(heatmap.title, fontsize="medium")
    for (row, column), value in np.ndenumerate(values):
        if not np.isnan(value):
            bright = image.norm(value) > 0.6  # viridis turns yellow: dark text reads better there
            axes.text(column, row, f"{value:.{decimals}f}", ha="center", va="center", fontsize=8,
                      color="black" if bright else "white")
    for row, column in heatmap.marked:
        axes.add_patch(Rectangle((column - 0.5, row - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2.5))


def png_bytes(figure):
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def write_heatmap_summary(tag, heatmap, step):
    """The heat map as a TensorBoard image at `step` (nothing without matplotlib)."""
    if can_draw():
        png = png_bytes(heatmap_figure(heatmap))
        tf.summary.image(tag, tf.image.decode_png(png, channels=3)[None], step)


def save_heatmaps(path, *heatmaps):
    """The heat maps side by side in one PNG file (nothing without matplotlib)."""
    if can_draw():
        write_bytes_atomic(path, png_bytes(heatmap_figure(*heatmaps)))


def tag_pattern(tag):
    """A custom-scalars chart's tag regex (TensorBoard matches it at the tag's start): a name
    ending in "/" stands for every tag under it, any other name for itself."""
    return re.escape(tag) if tag.endswith("/") else re.escape(tag) + "$"


def write_dashboard(title, charts):
    """TensorBoard's custom scalars layout (its CUSTOM SCALARS tab): one category `title` of
    multi-line charts, each (chart title, tags drawn together), in reading order. Written
    once per run, at step 0, to the default summary writer."""
    layout = layout_pb2.Layout(category=[layout_pb2.Category(title=title, chart=[
        layout_pb2.Chart(title=name, multiline=layout_pb2.MultilineChartContent(tag=[tag_pattern(t) for t in tags]))
        for name, tags in charts])])
    tf.summary.experimental.write_raw_pb(custom_scalar_summary.pb(layout).SerializeToString(), step=0)
