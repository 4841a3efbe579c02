"""Heat maps a researcher reads (DARTS alpha, ENAS policies), the summaries the searchers write
at each epoch's end, the dashboard layout, SMASH's scoring curves; without matplotlib, none."""
import io
import logging

import matplotlib.image
import numpy as np
import pytest
import tensorflow as tf
from tensorboard.plugins.custom_scalar import layout_pb2

from conftest import summaries
from scas_tf import figures, report
from scas_tf.errors import ScasError
from scas_tf.search import darts, enas, smash
from scas_tf.spaces import enas_macro, enas_micro
from scas_tf.spaces.darts import PRIMITIVES, derive, edge_labels, softmax


def hand_made_alpha():
    """Nearly uniform, as early in a search (entries 1e-3 apart), with one op leading per cell
    type and one edge of node 2 stronger than the other two of each node's."""
    alpha = {t: np.zeros((14, 8)) for t in ("normal", "reduce")}
    alpha["normal"][:, PRIMITIVES.index("sep_conv_3x3")] = 0.004
    alpha["reduce"][:, PRIMITIVES.index("max_pool_3x3")] = 0.004
    alpha["normal"][1] += 0.002 * np.arange(8)  # node 2 <- c[k-1]: dil_conv_5x5 leads there
    return alpha


def image_size(value):
    """(width, height) of a tf.summary.image value, read from its PNG."""
    assert value.metadata.plugin_data.plugin_name == "images"
    height, width, _ = matplotlib.image.imread(io.BytesIO(value.tensor.string_val[2])).shape
    return width, height


def texts(axes):
    return [t.get_text() for t in axes.texts]


def test_alpha_heat_map_labels_edges_and_ops_writes_values_and_outlines_the_genotype():
    alpha = hand_made_alpha()
    genotype = derive(alpha["normal"], alpha["reduce"])
    weights = softmax(alpha["normal"])
    figure = figures.heatmap_figure(darts.alpha_heatmap("normal", weights, genotype, "after epoch 3"))
    axes, colour_bar = figure.axes
    assert [t.get_text() for t in axes.get_yticklabels()] == edge_labels()
    assert edge_labels()[:3] == ["node 2 <- c[k-2]", "node 2 <- c[k-1]", "node 3 <- c[k-2]"]
    assert edge_labels()[-1] == "node 5 <- node 4"
    assert [t.get_text() for t in axes.get_xticklabels()] == list(PRIMITIVES)
    assert axes.get_title().startswith("normal cell: softmax(\u03b1) after epoch 3")
    assert colour_bar.get_ylabel() == "probability"
    # Every cell carries its probability, with the decimals that tell the entries apart.
    np.testing.assert_allclose([float(t) for t in texts(axes)], weights.ravel(), atol=1e-4)
    assert len(set(texts(axes))) > 2  # nearly uniform, yet the entries differ in the text
    outlined = sorted((round(p.get_y() + 0.5), round(p.get_x() + 0.5)) for p in axes.patches)
    cell, _ = genotype.cell("normal")
    want = sorted((darts.edges().index((k // 2, state)), PRIMITIVES.index(op)) for k, (op, state) in enumerate(cell))
    assert outlined == want and len(want) == 8
    assert (1, PRIMITIVES.index("dil_conv_5x5")) in outlined  # the hand-made leader of node 2
    width, height = figure.get_size_inches() * figures.DPI
    png = figures.png_bytes(figure)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    np.testing.assert_allclose(matplotlib.image.imread(io.BytesIO(png)).shape[:2], (height, width), atol=1)
    assert width > 700 and height > 450


def test_macro_policy_tables_and_heat_maps():
    num_layers = 4
    probabilities = []
    for layer in range(num_layers):
        probabilities.append(np.eye(6)[layer] * 0.5 + 0.5 / 6)
        probabilities += [np.array([1 - p, p]) for p in np.linspace(0.1, 0.9, layer)]
    tables = enas_macro.policy_tables(probabilities)
    _, rows, columns, ops = tables["ops"]
    assert rows == ["layer 0", "layer 1", "layer 2", "layer 3"] and columns == enas_macro.OPS
    np.testing.assert_allclose(ops, np.stack([probabilities[i * (i + 1) // 2] for i in range(num_layers)]))
    caption, rows, columns, skips = tables["skips"]
    assert rows == ["layer 1 (rate 0.10)", "layer 2 (rate 0.50)", "layer 3 (rate 0.50)"]
    assert columns == ["stem", "layer 0", "layer 1"]
    np.testing.assert_allclose(skips[2], [0.1, 0.5, 0.9])
    assert np.isnan(skips[0, 1:]).all() and np.isnan(skips[1, 2])
    figure = figures.heatmap_figure(figures.Heatmap(caption, rows, columns, skips))
    assert texts(figure.axes[0]) == ["0.10", "0.10", "0.90", "0.10", "0.50", "0.90"]  # none in the NaN cells
    assert [t.get_text() for t in figure.axes[0].get_yticklabels()] == rows


def test_micro_policy_tables_follow_the_decision_order():
    rng = np.random.default_rng(0)
    probabilities = [rng.dirichlet(np.ones(size)) for size in enas_micro.choice_sizes() * 2]
    tables = enas_micro.policy_tables(probabilities)
    assert list(tables) == ["normal_ops", "normal_inputs", "reduce_ops", "reduce_inputs"]
    _, rows, columns, inputs = tables["reduce_inputs"]
    assert rows[:3] == ["node 2 (1st)", "node 2 (2nd)", "node 3 (1st)"] and len(rows) == 10
    assert columns == ["c[k-2]", "c[k-1]", "node 2", "node 3", "node 4", "node 5"]
    offset = enas_micro.CELL_LENGTH
    np.testing.assert_allclose(inputs[3, :3], probabilities[offset + 6])  # node 3's second input
    assert np.isnan(inputs[3, 3:]).all()
    np.testing.assert_allclose(tables["normal_ops"][3][9], probabilities[19])  # node 6's second op


def test_searchers_write_labelled_images_a_dashboard_and_scoring_curves(tmp_path):
    """What the epoch ends write, by direct calls: DARTS's alpha images (and per-op means and
    genotype), ENAS's policy images, the dashboard layout, SMASH's scoring curves."""
    alpha = hand_made_alpha()
    scores = [0.5, 0.7, 0.4, 0.45, 0.3]
    candidates = sorted(({"index": i, "validation_error": e} for i, e in enumerate(scores)),
                        key=lambda c: c["validation_error"])
    with tf.summary.create_file_writer(str(tmp_path)).as_default():
        darts.write_alpha_summaries({t: softmax(a) for t, a in alpha.items()},
                                    derive(alpha["normal"], alpha["reduce"]), "after epoch 1", step=10)
        probabilities = [p for layer in range(3) for p in [np.full(6, 1 / 6)] + [np.array([0.6, 0.4])] * layer]
        enas.write_policy_heatmaps(enas_macro.policy_tables(probabilities), "after epoch 1", step=10)
        figures.write_dashboard(*darts.DASHBOARD)
        smash.write_scoring_summaries(candidates, step=99)
    values = summaries(tmp_path)
    for tag in ("alpha/normal", "alpha/reduce", "controller/policy/ops", "controller/policy/skips"):
        [value] = values[tag]
        width, height = image_size(value)
        assert width > 300 and height > 200, tag
    assert {"alpha/normal/sep_conv_3x3", "alpha/reduce/none", "genotype"} <= values.keys()
    layout = layout_pb2.Layout.FromString(values["custom_scalars__config__"][0].tensor.string_val[0])
    [category] = layout.category
    assert category.title == "darts search"
    assert [list(c.multiline.tag) for c in category.chart][2:4] == [
        ["sparsity/achieved$", "sparsity/scheduled$"], ["alpha/normal/"]]
    assert [float(tf.make_ndarray(v.tensor)) for v in values["scoring/best_validation_error"]] == pytest.approx(
        [0.5, 0.5, 0.4, 0.4, 0.3])
    assert len(values["candidates/validation_error"]) == 1


def test_without_matplotlib_a_search_warns_once_and_draws_nothing(tmp_path, monkeypatch, caplog):
    for module in (figures, report):
        monkeypatch.setattr(module, "has_matplotlib", lambda: False)
    figures.can_draw.cache_clear()
    heatmap = figures.Heatmap("t", ["a"], ["b"], np.ones((1, 1)))
    try:
        with caplog.at_level(logging.WARNING, "scas"), tf.summary.create_file_writer(str(tmp_path)).as_default():
            figures.write_heatmap_summary("image", heatmap, 0)
            figures.save_heatmaps(tmp_path / "alpha.png", heatmap)
    finally:
        figures.can_draw.cache_clear()
    assert [r.getMessage() for r in caplog.records] == [
        'matplotlib is not installed: no heat maps in TensorBoard or the run folder (pip install -e ".[report]")']
    assert "image" not in summaries(tmp_path) and not (tmp_path / "alpha.png").exists()
    with pytest.raises(ScasError, match="scas report draws with matplotlib"):
        report.write_report([tmp_path], tmp_path / "report")
