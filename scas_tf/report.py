"""`scas report`: the paper's Table 1 and Figure 4, and Pareto plots, from finished runs.

Reads every finished run (a folder with results.json: a `scas search` run, a sweep's target or
a `scas train` run) under the folders given. Runs that differ only in their target sparsity
form one series (a method's sweep); Table 1 has a row per series, Figure 4 a line.

Counting (accounting.py): params are every learned weight of the final network (kernels,
biases, BatchNorm scale and offset); non-zero params those left after pruning. MACs are
multiply-accumulates per image of convolutions and dense layers; sparse MACs count only
non-zero kernel entries. Accuracy is top-1 on the test split, after the final training.
"""
import csv
import dataclasses
import datetime
import io
import json
from pathlib import Path

import tensorflow as tf

from scas_tf import configs, litert, paper
from scas_tf.errors import ScasError
from scas_tf.figures import INSTALL_MATPLOTLIB, has_matplotlib, new_figure
from scas_tf.run_dir import UNOBSERVABLE_FIELDS, field_defaults, read_json, write_bytes_atomic, write_text_atomic

MAX_DROP = 0.01  # the paper's "<1% drop": test accuracy below the 0% run's by less than 1 point
METHOD_ORDER = ("enas_macro", "enas_micro", "darts", "smash")
DATASET_ORDER = ("mnist", "cifar10", "cifar100")
VARIANT_ORDER = tuple(v.name for v in litert.VARIANTS)
READING_FILE = "reading.md"  # in a report's folder: a person's reading of the results, kept across rewrites


@dataclasses.dataclass(frozen=True)
class Run:
    folder: Path
    series: str  # runs with the same series differ only in their target sparsity
    dataset: str
    method: str
    target: float
    test_accuracy: float
    params: int
    nonzero_params: int
    dense_macs: int
    sparse_macs: int
    search_seconds: float
    train_seconds: float
    machine: str
    architecture: str
    data_source: str


def series_key(config):
    """What two runs of one series share: their configs, the target and the log and checkpoint
    intervals aside, each completed with the defaults of fields added to the code since."""
    complete = {**field_defaults(configs.config_class(config.get("method"))), **config}
    return json.dumps({k: v for k, v in complete.items() if k not in ("target_sparsity", *UNOBSERVABLE_FIELDS)},
                      sort_keys=True)


def load_run(folder):
    results, config = read_json(folder / "results.json"), read_json(folder / "config.json")
    final = results.get("final", results)  # a search's final training, or a training's own results
    machine = final.get("machine")
    return Run(folder=folder, series=series_key(config), dataset=config["dataset"],
               method=config.get("method") or config["arch"].split(":")[0],
               target=config["target_sparsity"], test_accuracy=final["test_accuracy"], params=final["params"],
               nonzero_params=final["nonzero_params"], dense_macs=final["dense_macs"],
               sparse_macs=final["sparse_macs"], search_seconds=results.get("search_seconds", 0.0),
               train_seconds=final["train_seconds"],
               machine=f"{machine['cpu']}, {machine['cpu_cores']} cores" + "".join(
                   f", {n} {kind}" for kind, n in machine["accelerators"].items()) if machine else "not recorded",
               architecture=results.get("architecture") or config.get("arch", ""),
               data_source=final.get("data_source", "not recorded"))


def find_runs(folders):
    """Every finished run in or under `folders`. A run's own subfolders (a search's final
    training) are not runs of their own, nor is anything inside an unfinished run."""
    runs = []
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            raise ScasError(f"not a folder: {folder}")
        if (folder / "results.json").exists():
            runs.append(load_run(folder))
        elif not (folder / "config.json").exists():
            runs.extend(find_runs(sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))))
    return runs


def ordered(key, order):
    return (order.index(key), key) if key in order else (len(order), key)


def series_of(runs):
    """{(dataset, method, series): runs sorted by target}, in the paper's order."""
    groups = {}
    for run in runs:
        groups.setdefault((run.dataset, run.method, run.series), []).append(run)
    return {key: sorted(groups[key], key=lambda r: r.target) for key in
            sorted(groups, key=lambda k: (ordered(k[0], DATASET_ORDER), ordered(k[1], METHOD_ORDER), k[2]))}


@dataclasses.dataclass(frozen=True)
class Row:
    dataset: str
    method: str
    folders: str
    baseline: Run
    chosen: Run
    note: str

    @property
    def params_reduction(self):
        return self.baseline.params / max(self.chosen.nonzero_params, 1)

    @property
    def macs_reduction(self):
        return self.baseline.dense_macs / max(self.chosen.sparse_macs, 1)


def table1(runs):
    """A row per series with a 0% run: that run (the most accurate, if several) as baseline, and
    the sparsest run less than 1 point below its test accuracy (ties: fewer non-zero params,
    then the more accurate). Series without a 0% run are returned apart."""
    rows, without_baseline = [], []
    for (dataset, method, _), members in series_of(runs).items():
        folders = common_folder(members)
        dense = [r for r in members if r.target == 0.0]
        if not dense:
            without_baseline.append(f"{method} on {dataset} ({folders})")
            continue
        baseline = max(dense, key=lambda r: r.test_accuracy)
        within = [r for r in members if baseline.test_accuracy - r.test_accuracy < MAX_DROP]
        chosen = max(within, key=lambda r: (r.target, -r.nonzero_params, r.test_accuracy))
        note = "" if chosen.target > 0 else (
            "only the 0% run" if len(members) == 1 else "no sparse run within 1 point")
        rows.append(Row(dataset, method, folders, baseline, chosen, note))
    return rows, without_baseline


def common_folder(runs):
    parents = {r.folder.parent for r in runs}
    return str(parents.pop()) if len(parents) == 1 else ", ".join(str(r.folder) for r in runs)


def millions(count):
    """Millions to 3 significant digits, without exponents: 0.035M, 66.5M, 1,620M."""
    value = count / 1e6
    return f"{value:,.0f}M" if value >= 100 else f"{value:.3g}M"


TABLE_COLUMNS = ("Dataset", "NAS method", "Params baseline", "Params <1% drop", "Params redn",
                 "MACs baseline", "MACs <1% drop", "MACs redn", "Test acc. baseline", "Test acc. <1% drop",
                 "Target", "Source")


def table_cells(row):
    """Our row, then the paper's (when it has this dataset and method)."""
    ours = [row.dataset, row.method, millions(row.baseline.params), millions(row.chosen.nonzero_params),
            f"{row.params_reduction:.1f}x", millions(row.baseline.dense_macs), millions(row.chosen.sparse_macs),
            f"{row.macs_reduction:.1f}x", f"{100 * row.baseline.test_accuracy:.2f}%",
            f"{100 * row.chosen.test_accuracy:.2f}%", f"{row.chosen.target:g}",
            f"ours: {row.folders}" + (f" ({row.note})" if row.note else "")]
    theirs = paper.TABLE1.get((row.dataset, row.method))
    if theirs is None:
        return [ours]
    return [ours, ["", "", millions(theirs.baseline_params), millions(theirs.params), f"{theirs.params_reduction}x",
                   millions(theirs.baseline_macs), millions(theirs.macs), f"{theirs.macs_reduction}x", "", "", "",
                   "paper, Table 1"]]


def table1_markdown(rows):
    lines = ["| " + " | ".join(TABLE_COLUMNS) + " |", "|" + "---|" * len(TABLE_COLUMNS)]
    lines += ["| " + " | ".join(cells) + " |" for row in rows for cells in table_cells(row)]
    return "\n".join(lines) + "\n"


def table1_csv(rows):
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["dataset", "method", "source", "baseline_target", "baseline_test_accuracy", "baseline_params",
                     "baseline_dense_macs", "target", "test_accuracy", "nonzero_params", "sparse_macs",
                     "params_reduction", "macs_reduction", "note"])
    for row in rows:
        b, c = row.baseline, row.chosen
        writer.writerow([row.dataset, row.method, row.folders, b.target, b.test_accuracy, b.params, b.dense_macs,
                         c.target, c.test_accuracy, c.nonzero_params, c.sparse_macs,
                         f"{row.params_reduction:.4f}", f"{row.macs_reduction:.4f}", row.note])
    return out.getvalue()


def pareto_front(runs, cost):
    """The runs no other run beats: at most the cost with at least the test accuracy, one of them strictly."""
    def dominates(a, b):
        return (cost(a) <= cost(b) and a.test_accuracy >= b.test_accuracy
                and (cost(a) < cost(b) or a.test_accuracy > b.test_accuracy))
    return [r for r in runs if not any(dominates(other, r) for other in runs)]


SIZES = (("nonzero_params", "non-zero parameters"), ("sparse_macs", "sparse MACs per image"))


def log_axis(axis):
    """A log axis labelled 30k, 1M, ... at decades and in between, without overlapping labels."""
    from matplotlib import ticker
    axis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(ticker.EngFormatter(sep=""))
    axis.set_minor_formatter(ticker.NullFormatter())


def series_label(key, labels):
    dataset, method, _ = key
    same = [k for k in labels if k[:2] == key[:2]]
    return method if len(same) == 1 else f"{method} #{same.index(key) + 1}"


def data_caption(runs, dataset):
    """Where the dataset's runs read their data, as they recorded it (a partial or rebuilt
    copy says so in its path or note), for every figure of it."""
    return f"{dataset} data: " + "; ".join(sorted({r.data_source for r in runs if r.dataset == dataset}))


def save(figure, stem):
    for kind in ("png", "svg"):
        buffer = io.BytesIO()
        figure.savefig(buffer, format=kind, dpi=120, bbox_inches="tight")
        write_bytes_atomic(stem.with_suffix(f".{kind}"), buffer.getvalue())


def plot_figure4(runs, dataset, stem, caption):
    """(a) test accuracy and non-zero params, (b) test accuracy and sparse MACs, against the
    target sparsity: accuracy solid on the left axis, size dashed on the right (log) axis."""
    groups = {k: v for k, v in series_of(runs).items() if k[0] == dataset}
    figure = new_figure(figsize=(14, 5.5))
    for panel, ((field, what), ax) in enumerate(zip(SIZES, figure.subplots(1, 2))):
        size_ax = ax.twinx()
        for index, (key, members) in enumerate(groups.items()):
            color = f"C{index % 10}"  # the colour cycle's: a series' two lines share it
            targets = [100 * r.target for r in members]
            ax.plot(targets, [100 * r.test_accuracy for r in members], "o-", color=color,
                    label=f"{series_label(key, groups)}: test accuracy")
            size_ax.plot(targets, [getattr(r, field) for r in members], "s--", color=color,
                         label=f"{series_label(key, groups)}: {what}")
        size_ax.set_yscale("log")
        log_axis(size_ax.yaxis)
        size_ax.margins(y=0.2)  # keeps the size lines off the accuracy lines where their ends would coincide
        ax.set_xlabel("target sparsity (%)")
        ax.set_ylabel("test accuracy (%)")
        size_ax.set_ylabel(f"{what} (log scale)")
        ax.set_title(f"({'ab'[panel]}) {dataset}: accuracy and {what} vs target sparsity")
        ax.grid(alpha=0.3)
        handles = ax.get_legend_handles_labels()[0] + size_ax.get_legend_handles_labels()[0]
        ax.legend(handles, [h.get_label() for h in handles], fontsize="small", loc="upper center",
                  bbox_to_anchor=(0.5, -0.14), ncol=2)
    figure.suptitle(caption, fontsize="small", y=1.0)
    figure.tight_layout(w_pad=3)
    save(figure, stem)


def plot_pareto(runs, dataset, stem, caption):
    """Test accuracy against non-zero params and against sparse MACs, every run a point, the
    non-dominated ones ringed and joined."""
    members = [r for r in runs if r.dataset == dataset]
    groups = series_of(members)
    figure = new_figure(figsize=(13, 4.8))
    for (field, what), ax in zip(SIZES, figure.subplots(1, 2)):
        for key, series in groups.items():
            ax.scatter([getattr(r, field) for r in series], [100 * r.test_accuracy for r in series],
                       label=series_label(key, groups), zorder=2)
            for r in series:
                ax.annotate(f"{r.target:g}", (getattr(r, field), 100 * r.test_accuracy), fontsize="x-small",
                            xytext=(4, 4), textcoords="offset points")
        front = sorted(pareto_front(members, lambda r: getattr(r, field)), key=lambda r: getattr(r, field))
        ax.plot([getattr(r, field) for r in front], [100 * r.test_accuracy for r in front], "k-", lw=0.8,
                drawstyle="steps-post", zorder=1)
        ax.scatter([getattr(r, field) for r in front], [100 * r.test_accuracy for r in front], s=140,
                   facecolors="none", edgecolors="black", label="non-dominated", zorder=3)
        ax.set_xscale("log")
        log_axis(ax.xaxis)
        ax.set_xlabel(f"{what} (log scale; points labelled with their target sparsity)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"{dataset}: test accuracy vs {what}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small", loc="lower right")
    figure.suptitle(caption, fontsize="small", y=1.0)
    figure.tight_layout(w_pad=3)
    save(figure, stem)


def runs_markdown(runs):
    lines = ["| Run | Dataset | Method | Target | Test acc. | Params | Non-zero | MACs dense | MACs sparse "
             "| Search s | Final s | Machine |", "|" + "---|" * 12]
    for members in series_of(runs).values():
        for r in members:
            lines.append(f"| {r.folder} | {r.dataset} | {r.method} | {r.target:g} | {100 * r.test_accuracy:.2f}% "
                         f"| {r.params:,} | {r.nonzero_params:,} | {r.dense_macs:,} | {r.sparse_macs:,} "
                         f"| {r.search_seconds:,.0f} | {r.train_seconds:,.0f} | {r.machine} |")
    return "\n".join(lines) + "\n"


def exports_markdown(runs):
    """Per run with a `scas export` (export/export.json): each LiteRT variant's size, weight
    sparsity in the file, test accuracy and batch-1 median latency per runtime and thread count."""
    exported = [(r, read_json(r.folder / "export" / "export.json")) for r in runs
                if (r.folder / "export" / "export.json").exists()]
    if not exported:
        return ""
    columns = [(runtime, threads) for runtime in litert.RUNTIMES for threads in litert.THREADS]
    lines = ["| Run | Variant | KiB | Weight sparsity | Test acc. | " + " | ".join(
        f"{runtime} {threads}T ms" for runtime, threads in columns) + " |", "|" + "---|" * (5 + len(columns))]
    for run, export in exported:
        for name, figures in sorted(export["variants"].items(), key=lambda item: ordered(item[0], VARIANT_ORDER)):
            if "error" in figures:
                lines.append(f"| {run.folder} | {name} | conversion failed: {figures['error']} |")
                continue
            cells = [litert.latency_cell(figures["runtimes"], runtime, threads) for runtime, threads in columns]
            lines.append(f"| {run.folder} | {name} | {figures['bytes'] / 1024:,.0f} | {figures['weight_sparsity']:.3f} "
                         f"| {100 * figures['test_accuracy']:.2f}% | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def commands_markdown(folders, runs):
    """The commands recorded (commands.txt) in the folders given, their runs and sweeps."""
    places = {Path(f) for f in folders} | {r.folder for r in runs} | {r.folder.parent for r in runs}
    lines = []
    for place in sorted(places):
        recorded = place / "commands.txt"
        if recorded.exists():
            lines += [line for line in recorded.read_text().splitlines() if line and line not in lines]
    return ("    " + "\n    ".join(lines) + "\n") if lines else "Not recorded in these folders.\n"


def report_markdown(folders, runs, rows, without_baseline, figures, reading):
    parts = [f"# SCAS report\n\nMade {datetime.datetime.now():%Y-%m-%d %H:%M} by `scas report "
             f"{' '.join(str(f) for f in folders)}` from {len(runs)} finished runs.\n",
             "## Table 1: reduction at less than 1 point drop of test accuracy\n",
             "Per series (a method's runs that differ only in target sparsity): the baseline is its 0% run, "
             "the `<1% drop` model the sparsest run whose test accuracy is less than 1 percentage point "
             "below the baseline's. Params: every learned weight of the final network (kernels, biases, "
             "BatchNorm scale and offset), baseline all of them, `<1% drop` the non-zero ones; MACs per "
             "image of convolutions and dense layers, baseline dense, `<1% drop` counting non-zero kernel "
             "entries only. The paper's row (its Table 1, which compares validation accuracy) follows ours.\n",
             table1_markdown(rows) if rows else "No series has a 0% run: no table.\n"]
    if without_baseline:
        parts.append("Left out (no 0% run): " + "; ".join(without_baseline) + ".\n")
    if reading:
        parts += ["## Reading\n", reading.strip() + "\n"]
    parts.append("## Figure 4 and Pareto plots\n")
    parts += [f"![{stem.name}]({stem.name}.png)\n\n*{caption}*\n" for stem, caption in figures]
    parts += ["## Runs\n", runs_markdown(runs)]
    if exports := exports_markdown(runs):
        parts += ["## LiteRT exports (`scas export`)\n", "Median of 100 batch-1 runs, measured in one process per "
                  "run; `-`: the runtime could not prepare the variant (see export.json).\n", exports]
    parts += ["## Commands\n", commands_markdown(folders, runs)]
    return "\n".join(parts)


def write_report(folders, output):
    """Writes table1.md, table1.csv, figure4_<dataset> and pareto_<dataset> (.png, .svg),
    report.md, and the table as TensorBoard text in <output>/tensorboard. A reading.md in
    <output>, someone's reading of the results, goes into report.md after the table; it is
    kept apart because report.md is rewritten with every new run."""
    if not has_matplotlib():
        raise ScasError(f"scas report draws with matplotlib: {INSTALL_MATPLOTLIB}")
    runs = find_runs(folders)
    if not runs:
        raise ScasError(f"no finished run (a folder with results.json) in {', '.join(map(str, folders))}")
    output = Path(output)
    rows, without_baseline = table1(runs)
    figures = []
    for dataset in dict.fromkeys(r.dataset for r in sorted(runs, key=lambda r: ordered(r.dataset, DATASET_ORDER))):
        caption = data_caption(runs, dataset)
        plot_figure4(runs, dataset, output / f"figure4_{dataset}", caption)
        plot_pareto(runs, dataset, output / f"pareto_{dataset}", caption)
        figures += [(output / f"{kind}_{dataset}", caption) for kind in ("figure4", "pareto")]
    markdown = table1_markdown(rows)
    write_text_atomic(output / "table1.md", markdown)
    write_text_atomic(output / "table1.csv", table1_csv(rows))
    reading = (output / READING_FILE).read_text() if (output / READING_FILE).exists() else ""
    write_text_atomic(output / "report.md", report_markdown(folders, runs, rows, without_baseline, figures, reading))
    with tf.summary.create_file_writer(str(output / "tensorboard")).as_default():
        tf.summary.text("table1", markdown, step=0)
    return rows
