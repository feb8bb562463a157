"""INT8 model file for CPU targets: ONNX Runtime static quantization on the calibration images.

Example::

    python -m posenet_train.quantize --model dino.onnx                 # writes dino.int8.onnx
    python -m posenet_train.quantize --model dino.onnx --benchmark     # + FP32 vs INT8 latency
    python -m posenet_train.quantize --model dino.onnx --dataset DATA --analyse  # per layer
    python -m posenet_train.evaluate --onnx dino.int8.onnx --dataset DATA --split test \\
        --output runs/dino_int8                                        # the accuracy change

The input is a model file from ``posenet_train.export`` and its calibration images
(``<stem>_calibration.npy``, float32 ``[N,3,H,W]`` RGB 0..1, preprocessed as the node does).
Steps: ONNX Runtime's quantisation pre-processing (shape inference and graph optimisation --
without it ORT cannot quantise the exported GoogLeNet's convolutions), then
``quantize_static`` with per-channel INT8 weights and UINT8 activations (QDQ format by default,
QOperator on request), activation ranges calibrated on those images (MinMax by default).

The output is still a posenet model file: every ``metadata_props`` entry of the input is copied
(so the node and ``posenet_train.evaluate --onnx`` read it unchanged), plus
``posenet_train.quantization`` describing how it was made. Before the file appears, INT8 and
FP32 are run on the calibration images and the differences printed (position m, rotation deg);
an INT8 output that is NaN or infinite is an error. ``--benchmark`` measures the median latency
of both files at batch 1 (``--threads`` intra-op threads). Existing outputs are kept unless
``--overwrite``.

Accuracy (issue 18). With a dataset (``--dataset``; by default the one recorded in the model
file's ``posenet_train.dataset_path`` when it exists on this machine, ``--no-dataset`` to skip)
the FP32 and INT8 files are run on its ``--split`` (default test; at most ``--max-eval-images``
spread over it, preprocessed as the node does) and the median errors against ground truth are
printed with their increase. Then:

* calibration method: ``--method auto`` (default) quantises with MinMax, Entropy and Percentile
  (``quantize_static``'s own settings) and keeps the one with the smallest error increase
  (a file from a quantisation-aware run takes MinMax, the ranges its weights were tuned for)
  (without a dataset: the smallest deviation from FP32 on the calibration images); the
  comparison is printed and recorded. With ONNX Runtime 1.32 its Entropy calibration histograms
  128 bins into 128 quantised bins, so it can only return the full range: its ranges equal
  MinMax's (measured on the demo and dino models: identical errors, BENCHMARKS.md). TensorRT's
  entropy calibrator is a different, 2048-bin one that clips outliers; it is not measured here;
* mixed precision: when the error increase exceeds ``--max-error-increase`` (default 0.05, i.e.
  5 % more median error, in translation or rotation), every layer is quantised on its own to
  measure its sensitivity, and the most sensitive layers are kept in FP32, one more at a time,
  until the budget is met (at most ``--max-float-layers``, skipping layers that would take the
  float share of the MACs above ``--max-float-mac-share``, which protects the speed-up). The
  sensitivity table is written beside the output (``<out stem>.sensitivity.csv`` / ``.json``);
  the layers kept in FP32 are listed in the output's metadata (``posenet_train.float_layers``,
  and every float node in ``posenet_train.float_nodes``). ``--keep-float NAME`` keeps layers in
  FP32 by hand; ``--no-mixed-precision`` turns the search off;
* the budget: if the final file still exceeds it, nothing is written and the exit status is 3
  (``--on-excess warn`` writes it anyway with a loud warning, recorded in the metadata). With
  ``--min-speedup X`` a measured speed-up below X counts the same way.

Choosing on the split that is then reported flatters the result a little (the stop point of the
search is picked on those labels): ``--select-split train`` makes the choices on the training
images and checks the budget on ``--split``.

Quantisation-aware fine-tuning (``posenet_train.train --qat-from RUN/last.pt``, see
:mod:`posenet_train.qat`) makes weights that lose less on this grid: export that run, quantise
its file with ``--reference`` the source run's FP32 file, so the budget is judged against the
model the user had, not the fine-tuned weights in float (which are tuned for INT8, and worse).

``--analyse`` prints and writes only the sensitivity table (no model file; ``--granularity
block`` measures blocks instead of layers). See quantize_search.py for the definitions.

The INT8 file is for ONNX Runtime on CPUs (x86 with VNNI/AVX2, ARM64). On a Jetson use a
TensorRT engine instead (``ros2 run posenet_ros build_engine --precision int8``).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from posenet_core.calibration import calibration_paths, read_calibration_images
from posenet_core.cli import main_arguments, number
from posenet_core.cli import positive_int as _positive_int
from posenet_core.contract import ORT_DISABLED_OPTIMIZERS
from posenet_core.errors import CalibrationDataError
from posenet_core.files import replaced_atomically
from posenet_train.errors import DatasetError, ModelError, PoseNetTrainError
from posenet_train.evaluate import read_onnx_contract
from posenet_train.export import QAT_KEY, write_metadata

__all__ = [
    "CALIBRATION_METHODS",
    "DEFAULT_MAX_ERROR_INCREASE",
    "EXIT_BUDGET",
    "FLOAT_LAYERS_KEY",
    "FLOAT_NODES_KEY",
    "ON_EXCESS",
    "QUANT_FORMATS",
    "AccuracyBudgetError",
    "CalibrationImages",
    "benchmark_latency",
    "benchmark_pair",
    "build_parser",
    "cli",
    "default_output_path",
    "load_calibration",
    "load_evaluation_images",
    "main",
    "time_in_turns",
    "output_differences",
]

QUANT_FORMATS: tuple[str, ...] = ("qdq", "qoperator")
CALIBRATION_METHODS: tuple[str, ...] = ("minmax", "entropy", "percentile")
QUANTIZATION_KEY = "posenet_train.quantization"
#: JSON list of the layers kept in FP32 (mixed precision, --keep-float); the node ignores it.
FLOAT_LAYERS_KEY = "posenet_train.float_layers"
#: JSON list of every node left in float (those layers' nodes and the regression tail).
FLOAT_NODES_KEY = "posenet_train.float_nodes"
#: --max-error-increase default: INT8 may add 5 % to the FP32 median error (each of t and r).
DEFAULT_MAX_ERROR_INCREASE = 0.05
#: What happens when the final file misses the budget.
ON_EXCESS: tuple[str, ...] = ("refuse", "warn")
#: Exit status of the CLI when it refuses a file that misses the budget.
EXIT_BUDGET = 3
_METHOD_CHOICES = ("auto", *CALIBRATION_METHODS)
_SPLITS = ("train", "test")


class AccuracyBudgetError(PoseNetTrainError):
    """The INT8 file would lose more accuracy (or speed) than allowed; nothing was written."""


def default_output_path(model: str | Path) -> Path:
    """``<stem>.int8.onnx`` beside the model file."""
    model = Path(model)
    return model.with_name(model.stem + ".int8.onnx")


def load_calibration(path: str | Path, input_hw: tuple[int, int]) -> np.ndarray:
    """Calibration images float32 ``[N,3,H,W]`` 0..1 with ``H,W == input_hw``; ModelError else
    (the checks are :func:`posenet_core.calibration.read_calibration_images`)."""
    try:
        return read_calibration_images(path, input_hw)
    except CalibrationDataError as exc:
        raise ModelError(str(exc)) from None


class CalibrationImages:
    """ONNX Runtime ``CalibrationDataReader`` over calibration images, one image per batch."""

    def __init__(self, images: np.ndarray, input_name: str) -> None:
        self.images = images
        self.input_name = input_name
        self._next = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        """The next ``{input name: [1,3,H,W]}`` feed, or None after the last image."""
        if self._next >= len(self.images):
            return None
        index = self._next
        self._next += 1
        return {self.input_name: self.images[index : index + 1]}

    def rewind(self) -> None:
        """Start again from the first image."""
        self._next = 0

    def __len__(self) -> int:
        return len(self.images)


def _session(path: str | Path, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads)
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        return ort.InferenceSession(
            str(path),
            options,
            providers=["CPUExecutionProvider"],
            disabled_optimizers=list(ORT_DISABLED_OPTIMIZERS),
        )
    except Exception as exc:  # ORT raises its own pybind types for every load failure
        raise ModelError(f"{path}: cannot be loaded by ONNX Runtime: {exc}") from exc


def output_differences(
    reference: tuple[np.ndarray, np.ndarray], candidate: tuple[np.ndarray, np.ndarray]
) -> dict[str, float]:
    """Max/median position distance (m) and rotation angle (deg, normalised, q = -q).

    Keys: ``position_max_m``, ``position_median_m``, ``rotation_max_deg``,
    ``rotation_median_deg``. NaN anywhere in the inputs gives NaN statistics.
    """
    rp, rq = (np.asarray(a, dtype=np.float64) for a in reference)
    cp, cq = (np.asarray(a, dtype=np.float64) for a in candidate)
    position = np.linalg.norm(rp.reshape(-1, 3) - cp.reshape(-1, 3), axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        rq = rq.reshape(-1, 4) / np.linalg.norm(rq.reshape(-1, 4), axis=1, keepdims=True)
        cq = cq.reshape(-1, 4) / np.linalg.norm(cq.reshape(-1, 4), axis=1, keepdims=True)
        dot = np.abs(np.sum(rq * cq, axis=1))
    rotation = np.degrees(2.0 * np.arccos(np.clip(dot, 0.0, 1.0)))
    rotation[~np.isfinite(dot)] = np.nan
    return {
        "position_max_m": float(np.max(position)),
        "position_median_m": float(np.median(position)),
        "rotation_max_deg": float(np.max(rotation)),
        "rotation_median_deg": float(np.median(rotation)),
    }


def _run_all(session: Any, contract: Any, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    positions, quats = [], []
    for i in range(len(images)):
        position, quat = session.run(
            [contract.position_output, contract.orientation_output],
            {contract.input_name: images[i : i + 1]},
        )
        positions.append(position)
        quats.append(quat)
    return np.concatenate(positions), np.concatenate(quats)


def benchmark_latency(
    path: str | Path,
    image: np.ndarray,
    input_name: str,
    *,
    threads: int = 2,
    runs: int = 50,
    warmup: int = 5,
) -> float:
    """Median wall time (ms) of one ONNX Runtime CPU inference of ``image`` (batch 1)."""
    session = _session(path, threads)
    feed = {input_name: np.ascontiguousarray(image[:1], dtype=np.float32)}
    for _ in range(warmup):
        session.run(None, feed)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - start)
    return 1000.0 * float(np.median(times))


def regression_tail_nodes(proto) -> list[str]:
    """Names of the pose regressors (Gemm/MatMul layers with <= 8 outputs) and every node after
    them: the position de-normalisation, quaternion normalisation and log-variance outputs.

    These stay in float. Quantising them puts the metre-scale position offset and the final
    3/4/6-wide regressions on an 8-bit grid sized for the whole activation range; on
    middlebury_dino that alone cost a 0.25 m bias (0.034 m -> 0.257 m median). They are a
    negligible share of the compute.
    """
    initializers = {init.name: tuple(init.dims) for init in proto.graph.initializer}
    consumers: dict[str, list] = {}
    for node in proto.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    frontier = [
        node
        for node in proto.graph.node
        if node.op_type in ("Gemm", "MatMul")
        and len(node.input) > 1
        and node.input[1] in initializers
        and len(initializers[node.input[1]]) == 2
        and min(initializers[node.input[1]]) <= 8
    ]
    seen: dict[str, None] = {}
    while frontier:
        node = frontier.pop()
        if node.name in seen:
            continue
        seen[node.name] = None
        for output in node.output:
            frontier.extend(consumers.get(output, []))
    return list(seen)


def benchmark_pair(
    paths: Sequence[str | Path],
    image: np.ndarray,
    input_name: str,
    *,
    threads: int = 2,
    runs: int = 50,
    warmup: int = 5,
    rounds: int = 10,
) -> list[float]:
    """Median wall time (ms) of one batch-1 inference per model, the models timed in turns.

    The runs are split into ``rounds`` turns that alternate between the models, so a load
    change on a shared machine hits all of them alike (one model after the other would not).
    """
    feed = {input_name: np.ascontiguousarray(image[:1], dtype=np.float32)}
    return time_in_turns(
        [(_session(path, threads), feed) for path in paths],
        runs=runs,
        warmup=warmup,
        rounds=rounds,
    )


def time_in_turns(
    feeds: Sequence[tuple[Any, dict[str, np.ndarray]]],
    *,
    runs: int,
    warmup: int = 5,
    rounds: int = 10,
) -> list[float]:
    """Median wall time (ms) of ``session.run(None, feed)`` per ``(session, feed)``, ``runs``
    runs each after ``warmup`` untimed ones, the sessions timed in ``rounds`` alternating turns
    (see :func:`benchmark_pair`)."""
    for session, feed in feeds:
        for _ in range(warmup):
            session.run(None, feed)
    times: list[list[float]] = [[] for _ in feeds]
    per_turn = max(1, runs // max(1, rounds))
    done = 0
    while done < runs:
        count = min(per_turn, runs - done)
        for (session, feed), measured in zip(feeds, times, strict=True):
            for _ in range(count):
                start = time.perf_counter()
                session.run(None, feed)
                measured.append(time.perf_counter() - start)
        done += count
    return [1000.0 * float(np.median(measured)) for measured in times]


def load_evaluation_images(
    dataset: str | Path,
    split: str,
    resize_shorter_px: int,
    input_hw: tuple[int, int],
    max_images: int,
) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray], int]:
    """Images of a dataset split preprocessed as the node does, and their ground truth.

    Returns ``(images float32 [N,3,H,W], (position_m [N,3], quat_wxyz [N,4]), split size)``;
    at most ``max_images``, spread evenly over the split. Raises DatasetError.
    """
    from posenet_train.datasets import load_split
    from posenet_train.export import preprocess_images

    records = load_split(dataset, split)
    if not records:
        raise DatasetError(f"the {split} split of dataset {dataset} holds no image")
    total = len(records)
    if total > max_images:
        keep = np.unique(np.round(np.linspace(0, total - 1, max_images)).astype(int))
        records = [records[i] for i in keep]
    images = preprocess_images(records, resize_shorter_px, input_hw)
    position = np.stack([np.asarray(r.position_m, dtype=np.float64) for r in records])
    quat = np.stack([np.asarray(r.quat_wxyz, dtype=np.float64) for r in records])
    return images, (position, quat), total


def _resolve_dataset(
    dataset: str | Path | None, use_model_dataset: bool, metadata: dict[str, str]
) -> tuple[str | None, str]:
    """``(dataset or None, where it came from / why there is none)``."""
    if dataset is not None:
        return str(dataset), "given"
    if not use_model_dataset:
        return None, "--no-dataset was given"
    recorded = metadata.get("posenet_train.dataset_path", "").strip()
    if not recorded:
        return None, "the model file records no dataset path"
    from posenet_train.datasets import parse_dataset_spec

    try:
        _, folder = parse_dataset_spec(recorded)
    except PoseNetTrainError:
        return None, f"the dataset path the model file records ({recorded}) is not usable"
    if not Path(folder).is_dir():
        return None, f"the dataset the model file records ({recorded}) is not on this machine"
    return recorded, "recorded in the model file"


def _split_evaluator(
    model: Path,
    contract: Any,
    dataset: str,
    split: str,
    max_images: int,
    threads: int,
) -> tuple[Any, dict[str, Any]]:
    """A PoseEvaluator on a dataset split and the label that describes it in reports."""
    from posenet_train.quantize_search import PoseEvaluator

    images, gt, split_size = load_evaluation_images(
        dataset, split, contract.resize_shorter, contract.input_hw, max_images
    )
    label = {
        "dataset": Path(str(dataset).split(":", 1)[-1]).name or str(dataset),
        "dataset_path": str(dataset),
        "split": split,
        "images": len(images),
        "split_images": split_size,
    }
    return PoseEvaluator(model, contract, images, gt, threads), label


def _keep_float_nodes(
    names: Sequence[str], groups: Sequence[Any], proto: Any
) -> tuple[list[str], list[str]]:
    """``(layer names, node names)`` for --keep-float NAMEs: layer/block names or node names."""
    by_name = {group.name: group for group in groups}
    node_names = {node.name for node in proto.graph.node}
    layers, nodes = [], []
    for name in names:
        if name in by_name:
            layers.append(name)
            nodes.extend(by_name[name].nodes)
        elif name in node_names:
            layers.append(name)
            nodes.append(name)
        else:
            examples = ", ".join(list(by_name)[:4])
            raise PoseNetTrainError(
                f"--keep-float {name!r} is neither a layer nor a node of the model; layers are "
                f"named as --analyse prints them (e.g. {examples})"
            )
    return layers, nodes


def _percent(fraction: float) -> str:
    return f"{100 * fraction:+.1f} %" if math.isfinite(fraction) else "+inf %"


def _print_methods(rows: Sequence[dict[str, Any]], chosen: str, ground_truth: bool) -> None:
    if ground_truth:
        print(f"{'calibration':<11} {'t err m':>8} {'r err deg':>9} {'dt':>8} {'dr':>8} "
              f"{'deviation':>9} {'calib s':>7}")  # fmt: skip
    else:
        print(f"{'calibration':<11} {'dpos m':>8} {'drot deg':>8} {'deviation':>9} {'calib s':>7}")
    for row in rows:
        mark = "  <- chosen" if row["method"] == chosen else ""
        if ground_truth:
            print(
                f"{row['method']:<11} {row['median_translation_m']:8.4f} "
                f"{row['median_rotation_deg']:9.3f} {_percent(row['increase_translation']):>8} "
                f"{_percent(row['increase_rotation']):>8} {row['deviation']:9.3f} "
                f"{row['calibration_s']:7.1f}{mark}"
            )
        else:
            print(
                f"{row['method']:<11} {row['deviation_position_median_m']:8.4f} "
                f"{row['deviation_rotation_median_deg']:8.3f} {row['deviation']:9.3f} "
                f"{row['calibration_s']:7.1f}{mark}"
            )


def _accuracy(evaluator: Any, evaluation: dict[str, Any], dataset_label: dict) -> dict | None:
    if not evaluator.has_ground_truth:
        return None
    fp32 = evaluator.fp32_summary
    return {
        **dataset_label,
        "fp32": {
            "median_translation_m": fp32["median_translation_m"],
            "median_rotation_deg": fp32["median_rotation_deg"],
        },
        "int8": {
            "median_translation_m": evaluation["median_translation_m"],
            "median_rotation_deg": evaluation["median_rotation_deg"],
        },
        "increase_translation": evaluation["increase_translation"],
        "increase_rotation": evaluation["increase_rotation"],
    }


def _print_accuracy(accuracy: dict, budget: float) -> None:
    print(
        f"accuracy on {accuracy['images']} {accuracy['split']} images of {accuracy['dataset']} "
        "(median error against ground truth):"
    )
    for name in ("fp32", "int8"):
        values = accuracy[name]
        print(
            f"  {name.upper()}  {values['median_translation_m']:.4f} m  "
            f"{values['median_rotation_deg']:.3f} deg"
        )
    print(
        f"  increase {_percent(accuracy['increase_translation'])} translation, "
        f"{_percent(accuracy['increase_rotation'])} rotation (budget +{100 * budget:g} %)"
    )


def _reference_model(reference: Path | None, model: Path, contract: Any, threads: int) -> Path:
    """The FP32 file that judges the INT8 one: ``reference`` when given (checked to take the
    same input as ``model``), else ``model``."""
    if reference is None or reference.resolve() == model.resolve():
        return model
    metadata = dict(_session(reference, threads).get_modelmeta().custom_metadata_map)
    other = read_onnx_contract(metadata, reference)
    mismatch = [
        f"{name} {theirs} vs {ours}"
        for name, theirs, ours in (
            ("input size", other.input_hw, contract.input_hw),
            ("resize", other.resize_shorter, contract.resize_shorter),
        )
        if theirs != ours
    ]
    if mismatch:
        raise ModelError(
            f"reference {reference} does not take the input of {model} ({'; '.join(mismatch)}):"
            " it must be the FP32 file of the same network (e.g. the run --qat-from started from)"
        )
    print(f"accuracy is judged against the reference FP32 file {reference}")
    return reference


def _check_arguments(
    quant_format: str,
    method: str,
    on_excess: str,
    granularity: str,
    splits: Sequence[str | None],
    numbers: dict[str, Any],
    fractions: dict[str, Any],
) -> None:
    from posenet_train.quantize_search import GRANULARITIES

    choices = [
        ("quantisation format", quant_format, QUANT_FORMATS),
        ("calibration method", method, _METHOD_CHOICES),
        ("on_excess", on_excess, ON_EXCESS),
        ("granularity", granularity, GRANULARITIES),
        *(("split", value, _SPLITS) for value in splits if value is not None),
    ]
    for what, value, allowed in choices:
        if value not in allowed:
            raise PoseNetTrainError(f"{what} {value!r} is not one of {', '.join(allowed)}")
    for name, value in numbers.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise PoseNetTrainError(f"{name} must be an integer >= 1, got {value!r}")
    for name, (value, low, high) in fractions.items():
        if value is None and name == "min_speedup":
            continue
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
            or not low <= value <= high
        ):
            raise PoseNetTrainError(
                f"{name} must be a number in [{low:g}, {high:g}], got {value!r}"
            )


def main(
    model: str | Path,
    output: str | Path | None = None,
    *,
    calibration: str | Path | None = None,
    quant_format: str = "qdq",
    per_channel: bool = True,
    method: str = "auto",
    overwrite: bool = False,
    benchmark: bool = False,
    threads: int = 2,
    runs: int = 50,
    dataset: str | Path | None = None,
    use_model_dataset: bool = True,
    split: str = "test",
    select_split: str | None = None,
    max_eval_images: int = 500,
    max_error_increase: float = DEFAULT_MAX_ERROR_INCREASE,
    on_excess: str = "refuse",
    mixed_precision: bool = True,
    keep_float: Sequence[str] = (),
    analyse: bool = False,
    granularity: str = "layer",
    max_float_layers: int = 16,
    max_float_mac_share: float = 0.25,
    min_speedup: float | None = None,
    reference: str | Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Quantise the model file ``model`` to INT8 and write ``output`` (default ``.int8.onnx``).

    See the module docstring for the steps. Returns ``{"model", "output", "calibration_images",
    "differences", "latency_ms", "method", "methods", "accuracy", "float_layers",
    "sensitivity", "search", "reports"}``: ``differences`` from :func:`output_differences`
    (INT8 vs FP32 on the calibration images), ``latency_ms`` ``{"fp32", "int8", "speedup",
    "threads"}`` when measured (else None), ``accuracy`` (None without a dataset) the FP32 and
    INT8 median errors and their increase, ``methods`` the calibration comparison rows,
    ``sensitivity`` the sorted table when it was measured, ``search`` the mixed-precision steps.
    ``reference``: the FP32 file the accuracy budget is measured against instead of ``model``
    (after quantisation-aware fine-tuning, the file exported from the source run; same input
    contract). With ``analyse`` only the table is made (``output`` is None in the result). An
    existing output is reused (checked, not rewritten) unless ``overwrite``. Raises
    PoseNetTrainError subclasses (AccuracyBudgetError when the file misses the budget and
    ``on_excess`` is "refuse"), leaving no partial file.
    """
    import onnx  # noqa: F401  (checked early: needed to write the metadata)

    from posenet_train import quantize_search as search

    model = Path(model)
    if reference is not None:
        reference = Path(reference)
        if reference.suffix != ".onnx" or not reference.is_file():
            raise ModelError(f"reference {reference} must be an existing .onnx model file")
    _check_arguments(
        quant_format,
        method,
        on_excess,
        granularity,
        (split, select_split),
        {
            "threads": threads,
            "runs": runs,
            "max_eval_images": max_eval_images,
            "max_float_layers": max_float_layers,
        },
        {
            "max_error_increase": (max_error_increase, 0.0, 10.0),
            "max_float_mac_share": (max_float_mac_share, 0.0, 1.0),
            "min_speedup": (min_speedup, 0.01, 100.0),
        },
    )
    keep_float = [keep_float] if isinstance(keep_float, str) else list(keep_float)
    if model.suffix != ".onnx" or not model.is_file():
        raise ModelError(f"model file {model} must be an existing .onnx file")
    output = Path(output) if output is not None else default_output_path(model)
    if output.suffix != ".onnx":
        raise PoseNetTrainError(f"output {output} must be a .onnx file")
    if output.resolve() == model.resolve():
        raise PoseNetTrainError(f"output {output} would overwrite the model file")
    fp32 = _session(model, threads)
    metadata = dict(fp32.get_modelmeta().custom_metadata_map)
    contract = read_onnx_contract(metadata, model)
    calibration = Path(calibration) if calibration else calibration_paths(model)[0]
    images = load_calibration(calibration, contract.input_hw)
    baseline = _reference_model(reference, model, contract, threads)
    if method == "auto" and metadata.get(QAT_KEY):
        method = "minmax"
        print(
            f"{model.name} was fine-tuned for INT8 with MinMax ranges (posenet_train.qat): "
            "calibrating with MinMax (--method to choose another)"
        )
    if baseline == model and metadata.get(QAT_KEY):
        print(
            f"NOTE: {model.name} holds weights fine-tuned for INT8 (train --qat-from "
            f"{metadata[QAT_KEY]}), which are worse in FP32: the increase below is against them."
            " Pass --reference with the source run's FP32 file to judge against the model you had",
            file=sys.stderr,
        )

    dataset_spec, dataset_origin = _resolve_dataset(dataset, use_model_dataset, metadata)
    if dataset_spec is not None:
        checker, label = _split_evaluator(
            baseline, contract, dataset_spec, split, max_eval_images, threads
        )
        print(
            f"accuracy check on {label['images']} of {label['split_images']} {split} images of "
            f"{dataset_spec} ({dataset_origin})"
        )
        selector, select_label = checker, label
        if select_split not in (None, split):
            selector, select_label = _split_evaluator(
                baseline, contract, dataset_spec, select_split, max_eval_images, threads
            )
            print(
                f"choices (calibration method, layers kept in FP32) made on "
                f"{select_label['images']} {select_split} images; the check on the {split} split"
            )
    else:
        checker = selector = search.PoseEvaluator(baseline, contract, images, None, threads)
        label = select_label = {}
        print(
            f"WARNING: accuracy against ground truth is not checked ({dataset_origin}); "
            "pass --dataset PATH to measure it and enforce --max-error-increase",
            file=sys.stderr,
        )

    result: dict[str, Any] = {
        "model": model,
        "output": output,
        "calibration_images": len(images),
        "differences": None,
        "latency_ms": None,
        "method": method,
        "methods": None,
        "accuracy": None,
        "float_layers": [],
        "sensitivity": None,
        "search": None,
        "reports": None,
    }
    exists = output.exists() and not overwrite and not analyse
    latency = None
    if exists:
        print(f"{output} exists: kept (pass --overwrite to quantise again)")
        final_path = output
        evaluation = checker.evaluate(output)
        described = json.loads(metadata_of(output).get(QUANTIZATION_KEY, "{}") or "{}")
        result["float_layers"] = described.get("float_layers", [])
        result["method"] = described.get("calibration_method", method)
    with tempfile.TemporaryDirectory(prefix="posenet_quantize_") as workdir:
        if not exists:
            start = time.monotonic()
            quantizer = search.StaticQuantizer(
                model,
                images,
                contract.input_name,
                quant_format=quant_format,
                per_channel=per_channel,
                workdir=Path(workdir),
                exclude_fn=regression_tail_nodes,
            )
            groups = quantizer.groups(granularity)
            float_layers, float_nodes = _keep_float_nodes(keep_float, groups, quantizer.proto)
            methods = CALIBRATION_METHODS if method == "auto" else (method,)
            rows, paths = search.compare_methods(
                quantizer, selector, methods, exclude=float_nodes, progress=progress
            )
            best = min(rows, key=selector.score)
            chosen_method = best["method"]
            _print_methods(rows, chosen_method, selector.has_ground_truth)
            result.update(method=chosen_method, methods=rows)
            final_path, evaluation = paths[chosen_method], best
            over = selector.has_ground_truth and best["error_increase"] > max_error_increase
            report: dict[str, Any] = {
                "model": model.name,
                "calibration_method": chosen_method,
                "granularity": granularity,
                "analysis_images": select_label or {"calibration_images": len(images)},
                "fp32": selector.fp32_summary,
                "methods": rows,
                "kept_float_by_hand": float_layers,
            }
            if analyse or (over and mixed_precision):
                if over:
                    print(
                        f"the error increase ({_percent(best['error_increase'])}) exceeds "
                        f"+{100 * max_error_increase:g} %: measuring each {granularity}'s "
                        "sensitivity"
                    )
                candidates = [g for g in groups if g.name not in set(float_layers)]
                table = search.analyse_sensitivity(
                    quantizer, selector, chosen_method, candidates, progress=progress
                )
                result["sensitivity"] = table
                print(
                    search.format_table(
                        table, selector.has_ground_truth, limit=None if analyse else 15
                    )
                )
                if not analyse:
                    found = search.choose_float_layers(
                        quantizer,
                        selector,
                        chosen_method,
                        table,
                        candidates,
                        baseline=best,
                        max_error_increase=max_error_increase,
                        max_float_mac_share=max_float_mac_share,
                        max_float_layers=max_float_layers,
                    )
                    result["search"] = found["steps"]
                    report["search"] = found["steps"]
                    if found["path"] is not None:
                        final_path, evaluation = found["path"], found["evaluation"]
                        float_layers = [*float_layers, *found["float_layers"]]
                        by_name = {g.name: g for g in groups}
                        float_nodes = [
                            *float_nodes,
                            *(n for name in found["float_layers"] for n in by_name[name].nodes),
                        ]
                report["sensitivity"] = table
                result["reports"] = search.write_sensitivity(table, output, report)
                print(f"sensitivity table: {result['reports'][0]} and {result['reports'][1]}")
            if analyse:
                result["output"] = None
                return result
            result["float_layers"] = float_layers
            if checker is not selector:
                evaluation = checker.evaluate(final_path)
        accuracy = _accuracy(checker, evaluation, label)
        result["accuracy"] = accuracy
        if accuracy is not None:
            _print_accuracy(accuracy, max_error_increase)
        problems = []
        if accuracy is not None and evaluation["error_increase"] > max_error_increase:
            problems.append(
                f"the INT8 median error is {_percent(accuracy['increase_translation'])} "
                f"(translation) / {_percent(accuracy['increase_rotation'])} (rotation) above "
                f"FP32 on the {split} split of {label['dataset']}, more than "
                f"--max-error-increase {max_error_increase:g}"
                + (
                    f" with {len(result['float_layers'])} layer(s) kept in FP32"
                    if not exists
                    else ""
                )
            )
        if benchmark or min_speedup is not None:
            fp32_ms, int8_ms = benchmark_pair(
                [model, final_path], images, contract.input_name, threads=threads, runs=runs
            )
            latency = {
                "fp32": fp32_ms,
                "int8": int8_ms,
                "speedup": fp32_ms / int8_ms if int8_ms > 0 else math.nan,
                "threads": threads,
            }
            result["latency_ms"] = latency
            print(
                f"ONNX Runtime CPU latency, batch 1, {threads} thread(s), median of {runs} "
                f"(timed in turns): FP32 {fp32_ms:.2f} ms, INT8 {int8_ms:.2f} ms "
                f"({latency['speedup']:.2f}x)"
            )
            if min_speedup is not None and not latency["speedup"] >= min_speedup:
                problems.append(
                    f"the INT8 file is only {latency['speedup']:.2f}x as fast as FP32 here, "
                    f"less than --min-speedup {min_speedup:g}"
                )
        if problems and on_excess == "refuse":
            if exists:
                raise AccuracyBudgetError(
                    f"the existing {output}: {'; '.join(problems)} (the file was left as it "
                    "was; pass --overwrite to quantise again)"
                )
            raise AccuracyBudgetError(
                f"{'; '.join(problems)}. {output} was not written. Options: allow more "
                "(--max-error-increase, --max-float-layers, --max-float-mac-share), measure on "
                "another split, or write it anyway with --on-excess warn"
            )
        if problems:
            print(
                "\n" + "!" * 79 + "\nWARNING: " + "; ".join(problems) + ".\nWritten anyway "
                "(--on-excess warn).\n" + "!" * 79,
                file=sys.stderr,
            )
        if not exists:
            _write_output(
                final_path,
                output,
                metadata,
                {
                    "precision": "int8",
                    "tool": "onnxruntime.quantization.quantize_static",
                    "format": quant_format,
                    "per_channel": per_channel,
                    "weights": "int8",
                    "activations": "uint8",
                    "calibration_method": result["method"],
                    "calibration_comparison": [
                        {
                            key: row.get(key)
                            for key in (
                                "method",
                                "increase_translation",
                                "increase_rotation",
                                "deviation",
                            )
                        }
                        for row in result["methods"]
                    ],
                    "calibration_images": len(images),
                    "calibration_file": calibration.name,
                    "source_model": model.name,
                    "reference_model": baseline.name,
                    "float_layers": result["float_layers"],
                    "accuracy": accuracy,
                    "max_error_increase": max_error_increase,
                    "within_budget": not problems,
                },
                sorted({*quantizer.tail, *float_nodes}),
                contract,
                images,
                threads,
            )
            print(
                f"wrote {output} ({output.stat().st_size / 1e6:.1f} MB, from "
                f"{model.stat().st_size / 1e6:.1f} MB) in {time.monotonic() - start:.0f} s: "
                f"{quant_format}, per-channel {per_channel}, {result['method']} on "
                f"{len(images)} images, {len(result['float_layers'])} layer(s) kept in FP32"
            )
    int8 = _session(output, threads)
    differences = output_differences(
        _run_all(fp32, contract, images), _run_all(int8, contract, images)
    )
    result["differences"] = differences
    print(
        f"INT8 vs FP32 on {len(images)} calibration images: position max "
        f"{differences['position_max_m']:.4g} m, median {differences['position_median_m']:.4g} m;"
        f" rotation max {differences['rotation_max_deg']:.4g} deg, median "
        f"{differences['rotation_median_deg']:.4g} deg"
    )
    return result


def metadata_of(path: str | Path) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file as a dict."""
    import onnx

    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


def _write_output(
    candidate: Path,
    output: Path,
    metadata: dict[str, str],
    description: dict[str, Any],
    float_nodes: list[str],
    contract: Any,
    images: np.ndarray,
    threads: int,
) -> None:
    """Copy ``candidate`` to ``output`` with the metadata, atomically, after a NaN check."""
    import shutil

    with replaced_atomically(output) as tmp:
        shutil.copyfile(candidate, tmp)
        write_metadata(
            tmp,
            {
                **metadata,
                QUANTIZATION_KEY: json.dumps(description),
                FLOAT_LAYERS_KEY: json.dumps(description["float_layers"]),
                FLOAT_NODES_KEY: json.dumps(float_nodes),
            },
            check=False,
        )
        got = _run_all(_session(tmp, threads), contract, images)
        if not (np.isfinite(got[0]).all() and np.isfinite(got[1]).all()):
            raise ModelError(
                f"the INT8 model gives NaN/inf on the calibration images; {output} was not written"
            )


def build_parser() -> argparse.ArgumentParser:
    """The ``posenet-quantize`` argument parser."""
    p = argparse.ArgumentParser(
        prog="posenet-quantize",
        description="Quantise a posenet model file to INT8 for ONNX Runtime on CPUs (static "
        "quantisation calibrated on the exported calibration images), check its accuracy "
        "against ground truth, keep the most sensitive layers in FP32 when needed.",
    )
    p.add_argument("--model", required=True, help="FP32 model file (.onnx) from posenet-export")
    p.add_argument("--output", help="INT8 model file to write (default <stem>.int8.onnx)")
    p.add_argument(
        "--calibration",
        help="calibration images .npy (default <stem>_calibration.npy beside the model)",
    )
    p.add_argument(
        "--format",
        dest="quant_format",
        choices=QUANT_FORMATS,
        default="qdq",
        help="qdq (QuantizeLinear/DequantizeLinear pairs, default) or qoperator (QLinear ops)",
    )
    p.add_argument(
        "--per-tensor",
        action="store_true",
        help="one scale per weight tensor instead of per output channel (less accurate)",
    )
    p.add_argument(
        "--method",
        choices=_METHOD_CHOICES,
        default="auto",
        help="how activation ranges are calibrated; auto (default) tries minmax, entropy and "
        "percentile and keeps the most accurate",
    )
    p.add_argument(
        "--dataset",
        help="dataset (folder or FORMAT:PATH) whose ground truth judges the accuracy (default: "
        "the one recorded in the model file, when it exists here)",
    )
    p.add_argument(
        "--reference",
        metavar="FP32.onnx",
        help="judge the accuracy against this FP32 model file instead of --model: after "
        "quantisation-aware fine-tuning (posenet_train.train --qat-from), the file exported from"
        " the source run (same input size and resize)",
    )
    p.add_argument(
        "--no-dataset",
        action="store_true",
        help="do not use the dataset recorded in the model file (no accuracy check)",
    )
    p.add_argument(
        "--split",
        choices=("train", "test"),
        default="test",
        help="split the accuracy is checked and reported on (default test)",
    )
    p.add_argument(
        "--select-split",
        choices=("train", "test"),
        help="split the calibration method and the FP32 layers are chosen on (default: "
        "--split); train keeps the test split's labels out of the choice",
    )
    p.add_argument(
        "--max-eval-images",
        type=_positive_int,
        default=500,
        help="at most this many images of the split, spread evenly (default 500)",
    )
    p.add_argument(
        "--max-error-increase",
        type=number(low=0.0, high=10.0),
        default=DEFAULT_MAX_ERROR_INCREASE,
        help="largest allowed relative increase of the median translation and rotation errors "
        f"over FP32 (default {DEFAULT_MAX_ERROR_INCREASE:g} = 5 %%)",
    )
    p.add_argument(
        "--on-excess",
        choices=ON_EXCESS,
        default="refuse",
        help="refuse (default: write nothing, exit status 3) or warn (write it with a loud "
        "warning) when the file misses the budget",
    )
    p.add_argument(
        "--no-mixed-precision",
        action="store_true",
        help="never keep layers in FP32 automatically",
    )
    p.add_argument(
        "--keep-float",
        action="append",
        default=[],
        metavar="NAME",
        help="keep this layer (as --analyse names it) or node in FP32; repeatable",
    )
    p.add_argument(
        "--analyse",
        "--analyze",
        action="store_true",
        help="only measure each layer's sensitivity: print the table, write "
        "<output stem>.sensitivity.csv/.json, no model file",
    )
    p.add_argument(
        "--granularity",
        choices=("layer", "block"),
        default="layer",
        help="what is quantised or kept in FP32 as a unit (default layer)",
    )
    p.add_argument(
        "--max-float-layers",
        type=_positive_int,
        default=16,
        help="mixed precision keeps at most this many layers in FP32 (default 16)",
    )
    p.add_argument(
        "--max-float-mac-share",
        type=number(low=0.0, high=1.0),
        default=0.25,
        help="... and at most this share of the multiply-accumulates (default 0.25)",
    )
    p.add_argument(
        "--min-speedup",
        type=number(low=0.01, high=100.0),
        help="measure the speed-up and treat one below this like a missed budget",
    )
    p.add_argument(
        "--benchmark",
        action="store_true",
        help="measure FP32 and INT8 median latency at batch 1 on this CPU",
    )
    p.add_argument(
        "--threads",
        type=_positive_int,
        default=2,
        help="ONNX Runtime intra-op threads for the checks and the benchmark (default 2)",
    )
    p.add_argument(
        "--runs", type=_positive_int, default=50, help="timed runs per model (default 50)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    return p


def cli(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``posenet-quantize`` / ``python -m posenet_train.quantize``."""
    args = build_parser().parse_args(argv)
    try:
        main(
            **main_arguments(
                main,
                args,
                per_channel=not args.per_tensor,
                use_model_dataset=not args.no_dataset,
                mixed_precision=not args.no_mixed_precision,
                handled=("per_tensor", "no_dataset", "no_mixed_precision"),
            )
        )
    except AccuracyBudgetError as exc:
        print(f"posenet-quantize: refused: {exc}", file=sys.stderr)
        return EXIT_BUDGET
    except PoseNetTrainError as exc:
        print(f"posenet-quantize: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(cli())
