"""LiteRT export of a finished run, and what its sparsity buys on that runtime.

A run's serving SavedModel (export.py) converts with `tf.lite.TFLiteConverter` to a flatbuffer,
float or quantised (dynamic range: int8 weights; int8: weights and activations, calibrated on
training images), its weights stored densely or in the converter's sparse encoding
(`Optimize.EXPERIMENTAL_SPARSITY`). `export_run` writes the one asked for and measures every
variant in the same process with the `ai-edge-litert` interpreter: file size, the weight
sparsity left in the flatbuffer, test accuracy and batch-1 latency under XNNPACK (LiteRT's
default CPU delegate) and under the built-in kernels alone, on 1 and 2 threads. A variant that
does not convert, or that a runtime cannot prepare, is recorded with the error instead of
figures: XNNPACK refuses sparse quantised kernels.
"""
import dataclasses
import importlib
import importlib.metadata
import statistics
import time
import warnings
from pathlib import Path

import numpy as np
import tensorflow as tf

from scas_tf.distribute import describe_machine
from scas_tf.errors import ScasError
from scas_tf.run_dir import held, read_json, write_bytes_atomic, write_json_atomic

QUANTIZATIONS = ("none", "dynamic", "int8")
RUNTIMES = ("xnnpack", "builtin")  # LiteRT's default delegate; its own kernels, no delegate
THREADS = (1, 2)
CALIBRATION_IMAGES = 256  # representative images for int8 ranges (TF's guide: a few hundred)
TIMED_RUNS, WARMUP_RUNS = 100, 10
ACCURACY_BATCH = 100
# Weights: the constant tensors of rank >= 2 (kernels; biases and BN vectors are rank 1).
WEIGHT_TYPES = {"FLOAT32": np.float32, "FLOAT16": np.float16, "INT8": np.int8}


@dataclasses.dataclass(frozen=True)
class Variant:
    quantize: str
    sparse: bool

    @property
    def name(self):
        return ("float" if self.quantize == "none" else self.quantize) + ("-sparse" if self.sparse else "")


VARIANTS = tuple(Variant(q, s) for q in QUANTIZATIONS for s in (False, True))


def litert_module(name):
    """ai_edge_litert.<name>, or a one-line error naming the package to install."""
    try:
        return importlib.import_module(f"ai_edge_litert.{name}")
    except ImportError:
        raise ScasError("scas export needs LiteRT's interpreter: pip install ai-edge-litert "
                        "(or pip install -e \".[export]\")") from None


def convert(saved_model, variant, calibration_images):
    """The flatbuffer of the SavedModel's serving signature as `variant`."""
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
    converter.optimizations = ([tf.lite.Optimize.DEFAULT] if variant.quantize != "none" else []) + (
        [tf.lite.Optimize.EXPERIMENTAL_SPARSITY] if variant.sparse else [])
    if variant.quantize == "int8":
        converter.representative_dataset = lambda: ({"images": image[None]} for image in calibration_images)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    with warnings.catch_warnings():  # the converter's calibration runs the deprecated tf.lite.Interpreter
        warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated")
        return converter.convert()


def weight_sparsity(content):
    """(zero fraction of the weights' entries, fraction of entries the file stores) of a
    flatbuffer. A sparse-encoded tensor stores only its kept blocks' values."""
    schema = litert_module("schema_py_generated")
    model = schema.Model.GetRootAs(content, 0)
    type_names = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    total = nonzero = stored = 0
    seen = set()
    for s in range(model.SubgraphsLength()):
        subgraph = model.Subgraphs(s)
        for t in range(subgraph.TensorsLength()):
            tensor = subgraph.Tensors(t)
            dtype = WEIGHT_TYPES.get(type_names.get(tensor.Type()))
            buffer = model.Buffers(tensor.Buffer())
            if dtype is None or tensor.ShapeLength() < 2 or buffer.DataLength() == 0 or tensor.Buffer() in seen:
                continue
            seen.add(tensor.Buffer())
            values = buffer.DataAsNumpy().view(dtype)
            total += int(np.prod(tensor.ShapeAsNumpy()))
            stored += values.size
            nonzero += int(np.count_nonzero(values))
    if not total:
        return 0.0, 0.0
    return 1.0 - nonzero / total, stored / total


def make_interpreter(content, runtime, threads):
    interpreter = litert_module("interpreter")
    resolver = (interpreter.OpResolverType.AUTO if runtime == "xnnpack" else
                interpreter.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    return interpreter.Interpreter(model_content=content, num_threads=threads, experimental_op_resolver_type=resolver)


def runner(content, runtime, threads, batch_size):
    """A function images -> logits on an interpreter sized for `batch_size` images."""
    model = make_interpreter(content, runtime, threads)
    (image_input,) = model.get_input_details()
    model.resize_tensor_input(image_input["index"], [batch_size, *image_input["shape"][1:]])
    model.allocate_tensors()
    logits_index = model.get_signature_runner("serving_default").get_output_details()["logits"]["index"]

    def run(images):
        model.set_tensor(image_input["index"], images)
        model.invoke()
        return model.get_tensor(logits_index)
    return run


def latency_ms(content, runtime, threads, image):
    """(median, p90) milliseconds of one image's inference, after warm-up runs."""
    run = runner(content, runtime, threads, 1)
    for _ in range(WARMUP_RUNS):
        run(image[None])
    times = []
    for _ in range(TIMED_RUNS):
        start = time.perf_counter()
        run(image[None])
        times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times), float(np.percentile(times, 90))


def predict(content, runtime, images):
    """Logits of every image, in batches of ACCURACY_BATCH (the last one padded)."""
    run = runner(content, runtime, max(THREADS), ACCURACY_BATCH)
    logits = []
    for start in range(0, len(images), ACCURACY_BATCH):
        batch = images[start:start + ACCURACY_BATCH]
        padded = np.concatenate([batch, np.repeat(batch[-1:], ACCURACY_BATCH - len(batch), axis=0)])
        logits.append(run(padded)[:len(batch)])
    return np.concatenate(logits).astype(np.float32)


def latency_cell(runtimes, runtime, threads):
    """A variant's median latency on `runtime` with `threads` threads, as a table cell."""
    timings = runtimes.get(runtime, {})
    key = threads_key(threads)
    return f"{timings[key]['median_ms']:.2f}" if key in timings else "-"


def threads_key(threads):
    return f"{threads}_thread{'s' if threads > 1 else ''}"


def first_line(error):
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:300]


def measure(content, test, latency_image):
    """A variant's figures: size, sparsity in the file, per runtime its test accuracy (on the
    first runtime that prepares it) and latencies, or the error that stopped it."""
    zeros, stored = weight_sparsity(content)
    figures = {"bytes": len(content), "weight_sparsity": zeros, "stored_weight_fraction": stored, "runtimes": {}}
    for runtime in RUNTIMES:
        try:
            if "test_accuracy" not in figures:
                logits = predict(content, runtime, test.images)
                figures["test_accuracy"] = float(np.mean(logits.argmax(axis=1) == test.labels))
                figures["accuracy_runtime"] = runtime
            figures["runtimes"][runtime] = {
                threads_key(threads): dict(zip(("median_ms", "p90_ms"), latency_ms(
                    content, runtime, threads, latency_image))) for threads in THREADS}
        except (RuntimeError, ValueError) as e:
            figures["runtimes"][runtime] = {"error": first_line(e)}
    return figures


def export_variants(saved_model, splits, wanted):
    """(flatbuffer of `wanted`, {variant name: figures}) for every variant, measured here."""
    calibration = splits.train.images[:CALIBRATION_IMAGES]
    try:
        wanted_content = convert(saved_model, wanted, calibration)
    except Exception as e:  # the converter raises its own types (ConverterError and others)
        raise ScasError(f"the LiteRT converter failed on {wanted.name}: {first_line(e)}") from None
    check_signature(wanted_content)
    variants = {}
    for variant in VARIANTS:
        try:
            content = wanted_content if variant == wanted else convert(saved_model, variant, calibration)
        except Exception as e:  # recorded: a variant the converter cannot make is a finding
            variants[variant.name] = {"error": first_line(e)}
            continue
        variants[variant.name] = measure(content, splits.test, splits.test.images[0])
    return wanted_content, variants


def trained_network(run_dir):
    """(folder of a finished run's trained network, its results): the run's own for `scas
    train`, its final training's for `scas search`."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ScasError(f"not a run folder: {run_dir}")
    if not (run_dir / "results.json").exists():
        raise ScasError(f"{run_dir} has no results.json: not a finished run")
    results = read_json(run_dir / "results.json")
    folder = run_dir / results.get("final_dir", ".")
    if not (folder / "saved_model" / "saved_model.pb").exists():
        raise ScasError(f"{folder / 'saved_model'} is missing: the run's trained network was not exported")
    return folder, results.get("final", results)


def check_signature(content):
    """The serving signature export.py writes: one uint8 `images` input, a `logits` output."""
    signature = make_interpreter(content, "builtin", 1).get_signature_list().get("serving_default", {})
    if signature.get("inputs") != ["images"] or "logits" not in signature.get("outputs", []):
        raise ScasError(f"the SavedModel's serving signature is {signature or 'missing'}, not uint8 images -> "
                        "logits: it predates scas_tf's serving export; retrain the run")


def export_run(run_dir, load_splits, wanted):
    """Writes <run_dir>/export/model.tflite (`wanted`) and export.json (every variant measured
    in this process, beside the Keras model's test accuracy and sparsity); returns export.json's
    contents. `load_splits(config)` gives the data of the run's config (a dict)."""
    folder, final = trained_network(run_dir)
    splits = load_splits(read_json(folder / "config.json"))
    with held(run_dir):  # no two exports of one run at once
        content, variants = export_variants(folder / "saved_model", splits, wanted)
        summary = {"model": "model.tflite", "variant": wanted.name, "source": str(folder / "saved_model"),
                   "keras_test_accuracy": final["test_accuracy"], "keras_weight_sparsity": final["weight_sparsity"],
                   "num_test": len(splits.test), "timed_runs": TIMED_RUNS,
                   "litert": f"ai-edge-litert {importlib.metadata.version('ai-edge-litert')}",
                   "machine": describe_machine(), "variants": variants}
        export = Path(run_dir) / "export"
        write_bytes_atomic(export / "model.tflite", content)
        write_json_atomic(export / "export.json", summary)
    return summary
