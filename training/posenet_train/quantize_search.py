"""Keeping INT8 accurate: calibration-method comparison, per-layer sensitivity and the
mixed-precision choice behind ``posenet_train.quantize`` (its docstring has the command line).

Terms used in the reports:

* A **layer** is one weighted node (Conv, ConvTranspose, Gemm, MatMul with a constant weight)
  together with the nodes that only reshape its input (Pad, Reshape, Flatten, ...; used by it
  alone) and the activations that follow it (Relu, Clip, ...; the only consumer of its output).
  Every other node ONNX Runtime quantises (Add, Concat, MaxPool, GlobalAveragePool, ...) is a
  layer of its own. A layer is named after its main node (``/_blocks.3/_depthwise_conv/Conv``).
* A **block** joins the layers whose node names share the module path at the first depth that
  splits the network into at least four blocks (EfficientNet's ``/_blocks.3``, GoogLeNet's
  ``/backbone/inception4a``).
* **Sensitivity** of a layer: the model with only that layer quantised (everything else float,
  activation ranges from the same calibration) run on the analysis images, compared with FP32.
  ``deviation`` is the larger of the median position deviation / the FP32 median position error
  and the median rotation deviation / the FP32 median rotation error (scales: the errors against
  ground truth when a dataset is given, else the spread of the FP32 outputs over the images). The
  layers are ranked by it rather than by their own ground-truth error change: one layer's error
  change is a small difference of two noisy medians (it is often negative), its deviation is not.
* **Error increase**: ``(INT8 median error - FP32 median error) / FP32 median error`` on the
  dataset split, for translation and rotation; the budget (``--max-error-increase``) holds when
  both are within it.

Keeping a layer in FP32 means excluding its nodes from quantisation: its weights and its output
stay float. Its *input* tensor is still 8-bit when the layer before it is quantised (ONNX Runtime
quantises a tensor between two layers once, on the producer's side), so the effect of a choice is
always measured, never assumed.

Everything here uses ONNX Runtime's public quantisation API (``quantize_static`` with
``nodes_to_quantize``/``nodes_to_exclude`` and its calibration cache, so each calibration method
runs once and every candidate model reuses its ranges).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from posenet_train.errors import ModelError, PoseNetTrainError

__all__ = [
    "GRANULARITIES",
    "LayerGroup",
    "PoseEvaluator",
    "StaticQuantizer",
    "analyse_sensitivity",
    "block_groups",
    "choose_float_layers",
    "compare_methods",
    "layer_groups",
    "node_macs",
    "sensitivity_paths",
    "write_sensitivity",
]

GRANULARITIES: tuple[str, ...] = ("layer", "block")
WEIGHTED_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})
#: Nodes that only move or pad the input of the weighted node they feed.
INPUT_SIDE_OPS = frozenset(
    {"Pad", "Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Slice"}
)
#: Activations ONNX Runtime fuses into the quantised output of the node before them.
OUTPUT_SIDE_OPS = frozenset({"Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid"})
_MIN_BLOCKS = 4
_BATCH = 16


# ------------------------------------------------------------------------------ layer groups


@dataclass(frozen=True)
class LayerGroup:
    """Nodes kept in FP32 or quantised together (a layer or a block)."""

    name: str
    nodes: tuple[str, ...]
    op_types: tuple[str, ...]
    macs: int

    def as_dict(self) -> dict[str, Any]:
        """Plain dict (JSON)."""
        return {
            "name": self.name,
            "nodes": list(self.nodes),
            "op_types": list(self.op_types),
            "macs": self.macs,
        }


def quantizable_op_types() -> frozenset[str]:
    """The op types ``quantize_static`` quantises by default (QDQ and QOperator registries)."""
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    return frozenset(QDQRegistry) | frozenset(QLinearOpsRegistry)


def _tensor_types(proto) -> dict[str, int]:
    graph = proto.graph
    types = {init.name: init.data_type for init in graph.initializer}
    for info in (*graph.input, *graph.value_info, *graph.output):
        if info.type.HasField("tensor_type"):
            types[info.name] = info.type.tensor_type.elem_type
    return types


def _shape(proto, name: str) -> list[int] | None:
    for info in (*proto.graph.value_info, *proto.graph.output, *proto.graph.input):
        if info.name == name and info.type.HasField("tensor_type"):
            dims = info.type.tensor_type.shape.dim
            return [d.dim_value if d.HasField("dim_value") else 1 for d in dims]
    return None


def node_macs(proto) -> dict[str, int]:
    """Multiply-accumulates per image of every weighted node (needs shape-inferred value_info).

    Conv: output elements x (input channels / groups) x kernel area; Gemm/MatMul: the weight's
    size times the rows of the output (1 for a vector). Nodes whose shapes are unknown count 0.
    """
    weights = {init.name: list(init.dims) for init in proto.graph.initializer}
    macs: dict[str, int] = {}
    for node in proto.graph.node:
        if node.op_type not in WEIGHTED_OPS or len(node.input) < 2:
            continue
        weight = weights.get(node.input[1])
        out = _shape(proto, node.output[0])
        if weight is None or out is None:
            macs[node.name] = 0
            continue
        if node.op_type in ("Conv", "ConvTranspose"):
            macs[node.name] = int(np.prod(out[1:], dtype=np.int64)) * int(
                np.prod(weight[1:], dtype=np.int64)
            )
        else:
            rows = int(np.prod(out[1:-1], dtype=np.int64)) if len(out) > 2 else 1
            macs[node.name] = rows * int(np.prod(weight, dtype=np.int64))
    return macs


def layer_groups(proto, exclude: Sequence[str] = (), op_types: frozenset[str] | None = None):
    """The layers of a shape-inferred ONNX model (see the module docstring), in graph order.

    Only nodes ONNX Runtime would quantise count: an op type in ``op_types`` (default
    :func:`quantizable_op_types`), a float first input, a non-empty name, not in ``exclude``
    (e.g. the regression tail, which always stays float).
    """
    from onnx import TensorProto

    op_types = quantizable_op_types() if op_types is None else op_types
    exclude = set(exclude)
    types = _tensor_types(proto)
    initializers = {init.name for init in proto.graph.initializer}
    graph_outputs = {out.name for out in proto.graph.output}
    producers = {out: node for node in proto.graph.node for out in node.output}
    consumers: dict[str, list] = {}
    for node in proto.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    macs = node_macs(proto)

    def candidate(node) -> bool:
        return (
            bool(node.name)
            and node.op_type in op_types
            and node.name not in exclude
            and len(node.input) > 0
            and types.get(node.input[0]) == TensorProto.FLOAT
        )

    def weighted(node) -> bool:
        return (
            node.op_type in WEIGHTED_OPS and len(node.input) > 1 and node.input[1] in initializers
        )

    order = {node.name: index for index, node in enumerate(proto.graph.node)}
    assigned: set[str] = set()
    groups: list[tuple[int, LayerGroup]] = []
    for node in proto.graph.node:
        if not (candidate(node) and weighted(node)) or node.name in assigned:
            continue
        members = [node]
        tensor = node.input[0]
        while True:
            prev = producers.get(tensor)
            if (
                prev is None
                or prev.op_type not in INPUT_SIDE_OPS
                or not candidate(prev)
                or prev.name in assigned
                or len(consumers.get(tensor, [])) != 1
            ):
                break
            members.insert(0, prev)
            tensor = prev.input[0]
        tensor = node.output[0]
        while tensor not in graph_outputs and len(consumers.get(tensor, [])) == 1:
            nxt = consumers[tensor][0]
            if nxt.op_type not in OUTPUT_SIDE_OPS or not candidate(nxt) or nxt.name in assigned:
                break
            members.append(nxt)
            tensor = nxt.output[0]
        assigned.update(m.name for m in members)
        groups.append(
            (
                order[members[0].name],
                LayerGroup(
                    name=node.name,
                    nodes=tuple(m.name for m in members),
                    op_types=tuple(m.op_type for m in members),
                    macs=sum(macs.get(m.name, 0) for m in members),
                ),
            )
        )
    for node in proto.graph.node:
        if candidate(node) and node.name not in assigned:
            assigned.add(node.name)
            groups.append(
                (order[node.name], LayerGroup(node.name, (node.name,), (node.op_type,), 0))
            )
    return [group for _, group in sorted(groups, key=lambda item: item[0])]


def _module_path(node_name: str) -> tuple[str, ...]:
    parts = [part for part in node_name.split("/") if part]
    return tuple(parts[:-1])


def block_groups(layers: Sequence[LayerGroup]) -> list[LayerGroup]:
    """Layers joined by module path at the first depth giving >= 4 blocks (graph order kept)."""
    if not layers:
        return []
    paths = [_module_path(layer.name) for layer in layers]
    deepest = max((len(p) for p in paths), default=0)
    depth = deepest
    for candidate in range(1, deepest + 1):
        if len({p[:candidate] for p in paths}) >= _MIN_BLOCKS:
            depth = candidate
            break
    blocks: dict[tuple[str, ...], list[LayerGroup]] = {}
    for layer, path in zip(layers, paths, strict=True):
        key = path[:depth] if path else (layer.name.strip("/"),)
        blocks.setdefault(key, []).append(layer)
    return [
        LayerGroup(
            name="/" + "/".join(key),
            nodes=tuple(n for layer in members for n in layer.nodes),
            op_types=tuple(sorted({t for layer in members for t in layer.op_types})),
            macs=sum(layer.macs for layer in members),
        )
        for key, members in blocks.items()
    ]


# ---------------------------------------------------------------------------------- quantiser


class StaticQuantizer:
    """``quantize_static`` on one pre-processed model with cached calibration per method.

    ``model`` is the FP32 model file; it is pre-processed once (ORT's shape inference and graph
    optimisation, without which ORT cannot quantise the exported GoogLeNet's convolutions) into
    ``workdir``. ``exclude`` always stays float (the regression tail).
    """

    def __init__(
        self,
        model: Path,
        images: np.ndarray,
        input_name: str,
        *,
        quant_format: str,
        per_channel: bool,
        workdir: Path,
        exclude_fn: Callable[[Any], list[str]],
    ) -> None:
        import onnx
        from onnxruntime.quantization.shape_inference import quant_pre_process

        self.images = images
        self.input_name = input_name
        self.quant_format = quant_format
        self.per_channel = per_channel
        self.workdir = Path(workdir)
        self.preprocessed = self.workdir / "preprocessed.onnx"
        try:
            quant_pre_process(str(model), str(self.preprocessed))
        except Exception as exc:  # ORT's tools raise assorted types
            raise ModelError(
                f"{model}: ONNX Runtime quantisation pre-processing failed: {exc}"
            ) from exc
        self.proto = onnx.load(str(self.preprocessed))
        self.tail: list[str] = list(exclude_fn(self.proto))
        self.calibration_s: dict[str, float] = {}
        self._count = 0

    def groups(self, granularity: str = "layer") -> list[LayerGroup]:
        """Layers (or blocks) of the model outside the regression tail."""
        if granularity not in GRANULARITIES:
            raise PoseNetTrainError(
                f"granularity {granularity!r} is not one of {', '.join(GRANULARITIES)}"
            )
        layers = layer_groups(self.proto, self.tail)
        return layers if granularity == "layer" else block_groups(layers)

    def total_macs(self) -> int:
        """MACs per image of every weighted node (float tail included)."""
        return sum(node_macs(self.proto).values())

    def temp_path(self, label: str) -> Path:
        """A fresh file name in the work folder."""
        self._count += 1
        return self.workdir / f"{self._count:04d}_{label}.onnx"

    def quantize(
        self,
        output: Path,
        method: str,
        *,
        exclude: Sequence[str] = (),
        only: Sequence[str] | None = None,
    ) -> Path:
        """Write a quantised model to ``output``: every node but the tail and ``exclude``, or,
        with ``only``, just those nodes. The first call per method calibrates (timed in
        ``calibration_s``); later calls reuse its ranges."""
        from onnxruntime.quantization import (
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_static,
        )

        from posenet_train.quantize import CalibrationImages

        methods = {
            "minmax": CalibrationMethod.MinMax,
            "entropy": CalibrationMethod.Entropy,
            "percentile": CalibrationMethod.Percentile,
        }
        formats = {"qdq": QuantFormat.QDQ, "qoperator": QuantFormat.QOperator}
        cache = self.workdir / f"calibration_{method}.json"
        first = not cache.is_file()
        start = time.monotonic()
        if only is not None:
            tail = set(self.tail)
            selection = {"nodes_to_quantize": [n for n in only if n not in tail]}
        else:
            selection = {"nodes_to_exclude": [*self.tail, *exclude]}
        try:
            # ORT's entropy/percentile calibrators print their progress; keep our output clean.
            with contextlib.redirect_stdout(io.StringIO()):
                quantize_static(
                    str(self.preprocessed),
                    str(output),
                    CalibrationImages(self.images, self.input_name),
                    quant_format=formats[self.quant_format],
                    per_channel=self.per_channel,
                    activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8,
                    calibrate_method=methods[method],
                    calibration_cache_path=str(cache),
                    **selection,
                )
        except Exception as exc:  # ORT's quantiser raises assorted types
            raise ModelError(f"ONNX Runtime static quantisation failed: {exc}") from exc
        if first:
            self.calibration_s[method] = time.monotonic() - start
        return output


# --------------------------------------------------------------------------------- evaluation


def _session(path: Path, threads: int):
    from posenet_train.quantize import _session as session

    return session(path, threads)


def predict_images(
    session: Any, contract: Any, images: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``(position_m [N,3], quat_wxyz [N,4])`` float64 of ``images``, batches of 16."""
    positions, quats = [], []
    for start in range(0, len(images), _BATCH):
        position, quat = session.run(
            [contract.position_output, contract.orientation_output],
            {contract.input_name: images[start : start + _BATCH]},
        )
        positions.append(np.asarray(position, dtype=np.float64).reshape(-1, 3))
        quats.append(np.asarray(quat, dtype=np.float64).reshape(-1, 4))
    return np.concatenate(positions), np.concatenate(quats)


def _relative_increase(new: float, old: float) -> float:
    if old > 0:
        return (new - old) / old
    return 0.0 if new <= old else math.inf


@dataclass
class PoseEvaluator:
    """Judges a candidate model file against the FP32 model on fixed images.

    ``images`` float32 ``[N,3,H,W]``; ``gt`` optional ``(position_m [N,3], quat_wxyz [N,4])``.
    """

    fp32_path: Path
    contract: Any
    images: np.ndarray
    gt: tuple[np.ndarray, np.ndarray] | None = None
    threads: int = 2
    fp32: tuple[np.ndarray, np.ndarray] = field(init=False)
    fp32_summary: dict | None = field(init=False, default=None)
    scale_m: float = field(init=False)
    scale_deg: float = field(init=False)

    def __post_init__(self) -> None:
        self.fp32 = self.predict(self.fp32_path)
        if self.gt is not None:
            self.fp32_summary = self._summary(self.fp32)
            self.scale_m = self.fp32_summary["median_translation_m"]
            self.scale_deg = self.fp32_summary["median_rotation_deg"]
        else:
            # No ground truth: how far the FP32 outputs spread over these images.
            from posenet_core.geometry import average_quaternions
            from posenet_train.quantize import output_differences

            position, quat = self.fp32
            count = len(position)
            spread = output_differences(
                (position, quat),
                (
                    np.repeat(position.mean(0, keepdims=True), count, 0),
                    np.repeat(average_quaternions(quat)[None], count, 0),
                ),
            )
            self.scale_m = spread["position_median_m"]
            self.scale_deg = spread["rotation_median_deg"]
        self.scale_m = self.scale_m if self.scale_m > 0 else 1.0
        self.scale_deg = self.scale_deg if self.scale_deg > 0 else 1.0

    @property
    def has_ground_truth(self) -> bool:
        """Whether errors against ground truth are measured."""
        return self.gt is not None

    def predict(self, path: Path) -> tuple[np.ndarray, np.ndarray]:
        """The model's outputs on the images; ModelError when any is NaN or infinite."""
        prediction = predict_images(_session(path, self.threads), self.contract, self.images)
        if not (np.isfinite(prediction[0]).all() and np.isfinite(prediction[1]).all()):
            raise ModelError(f"{path.name} gives NaN/inf on the {len(self.images)} images")
        return prediction

    def _summary(self, prediction: tuple[np.ndarray, np.ndarray]) -> dict:
        from posenet_core.metrics import error_statistics, pose_errors

        return error_statistics(*pose_errors(*prediction, *self.gt))

    def evaluate(self, path: Path) -> dict[str, Any]:
        """Deviation from FP32 and, with ground truth, errors and their increase.

        Keys: ``deviation_position_median_m``, ``deviation_position_max_m``,
        ``deviation_rotation_median_deg``, ``deviation_rotation_max_deg``, ``deviation`` (the
        normalised score of the module docstring); with ground truth also
        ``median_translation_m``, ``median_rotation_deg``, ``increase_translation``,
        ``increase_rotation`` (fractions) and ``error_increase`` (their maximum).
        """
        from posenet_train.quantize import output_differences

        prediction = self.predict(path)
        diff = output_differences(self.fp32, prediction)
        result: dict[str, Any] = {
            "deviation_position_median_m": diff["position_median_m"],
            "deviation_position_max_m": diff["position_max_m"],
            "deviation_rotation_median_deg": diff["rotation_median_deg"],
            "deviation_rotation_max_deg": diff["rotation_max_deg"],
            "deviation": max(
                diff["position_median_m"] / self.scale_m,
                diff["rotation_median_deg"] / self.scale_deg,
            ),
        }
        if self.gt is not None:
            summary = self._summary(prediction)
            t = _relative_increase(
                summary["median_translation_m"], self.fp32_summary["median_translation_m"]
            )
            r = _relative_increase(
                summary["median_rotation_deg"], self.fp32_summary["median_rotation_deg"]
            )
            result.update(
                median_translation_m=summary["median_translation_m"],
                median_rotation_deg=summary["median_rotation_deg"],
                increase_translation=t,
                increase_rotation=r,
                error_increase=max(t, r),
            )
        return result

    def score(self, evaluation: dict[str, Any]) -> float:
        """What a choice minimises: the error increase with ground truth, else the deviation."""
        return evaluation["error_increase"] if self.gt is not None else evaluation["deviation"]


# ------------------------------------------------------------------------ methods and layers


def _progress(items, desc: str, enabled: bool):
    if not enabled:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit="model", leave=False)


def compare_methods(
    quantizer: StaticQuantizer,
    evaluator: PoseEvaluator,
    methods: Sequence[str],
    *,
    exclude: Sequence[str] = (),
    progress: bool = True,
) -> tuple[list[dict[str, Any]], dict[str, Path]]:
    """Quantise the whole model (but ``exclude``) with each calibration method and evaluate it.

    Returns ``(rows, paths)``: rows ``{"method", "calibration_s", **evaluation}`` in the order
    given, and the model file per method.
    """
    rows, paths = [], {}
    for method in _progress(list(methods), "calibration methods", progress and len(methods) > 1):
        path = quantizer.quantize(quantizer.temp_path(method), method, exclude=exclude)
        paths[method] = path
        evaluation = evaluator.evaluate(path)
        rows.append(
            {
                "method": method,
                "calibration_s": round(quantizer.calibration_s.get(method, 0.0), 2),
                **evaluation,
            }
        )
    return rows, paths


def analyse_sensitivity(
    quantizer: StaticQuantizer,
    evaluator: PoseEvaluator,
    method: str,
    groups: Sequence[LayerGroup],
    *,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Quantise one group at a time (everything else float) and evaluate each; rows sorted
    most sensitive first (``deviation``, then ``error_increase``)."""
    total = max(sum(g.macs for g in groups), 1)
    rows = []
    for group in _progress(list(groups), "sensitivity", progress):
        path = quantizer.quantize(quantizer.temp_path("one"), method, only=group.nodes)
        evaluation = evaluator.evaluate(path)
        path.unlink(missing_ok=True)
        rows.append(
            {
                "layer": group.name,
                "op_types": "+".join(group.op_types),
                "nodes": len(group.nodes),
                "macs": group.macs,
                "mac_share": group.macs / total,
                **evaluation,
            }
        )
    rows.sort(key=lambda row: (-row["deviation"], -row.get("error_increase", 0.0)))
    for rank, row in enumerate(rows, 1):
        row["rank"] = rank
    return rows


def choose_float_layers(
    quantizer: StaticQuantizer,
    evaluator: PoseEvaluator,
    method: str,
    ranked: Sequence[dict[str, Any]],
    groups: Sequence[LayerGroup],
    *,
    baseline: dict[str, Any],
    max_error_increase: float,
    max_float_mac_share: float,
    max_float_layers: int,
    max_trials: int | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Greedy mixed precision (needs ground truth): try the layers in ``ranked`` order (most
    sensitive first), each added to those already kept in FP32; keep it when the error increase
    (the larger of translation and rotation) drops below the best so far, put it back to INT8
    when not. Stops as soon as the increase is within ``max_error_increase``.

    ``baseline`` is the evaluation of the fully quantised model. Putting back the layers that do
    not help matters: on a split where FP32 is very accurate the increase is a small difference
    of noisy medians, and adding layers in rank order alone piles up float layers (and lost
    speed) without getting closer. A layer whose MACs would take the float share of the network
    above ``max_float_mac_share`` is not tried (it would cost the speed-up); at most
    ``max_float_layers`` are kept and ``max_trials`` (default 2 x that) models evaluated.
    Returns ``{"float_layers", "path", "evaluation", "met", "steps"}``; ``path`` and
    ``evaluation`` are None when no layer helped.
    """
    if not evaluator.has_ground_truth:
        raise PoseNetTrainError("mixed precision is chosen against ground truth: give a dataset")
    by_name = {group.name: group for group in groups}
    total = max(quantizer.total_macs(), 1)
    max_trials = 2 * max_float_layers if max_trials is None else max_trials
    chosen: list[str] = []
    current = baseline
    path: Path | None = None
    steps: list[dict[str, Any]] = []
    trials = 0
    for row in (row for row in ranked if row["layer"] in by_name):
        if current["error_increase"] <= max_error_increase:
            break
        if len(chosen) >= max_float_layers or trials >= max_trials:
            break
        layer = row["layer"]
        share = sum(by_name[name].macs for name in (*chosen, layer)) / total
        if share > max_float_mac_share:
            steps.append({"layer": layer, "kept": False, "skipped": "float MAC share"})
            log(f"  skip {layer}: float MACs would be {100 * share:.1f} %")
            continue
        trials += 1
        nodes = [node for name in (*chosen, layer) for node in by_name[name].nodes]
        candidate = quantizer.quantize(quantizer.temp_path("mixed"), method, exclude=nodes)
        evaluation = evaluator.evaluate(candidate)
        kept = evaluation["error_increase"] < current["error_increase"]
        steps.append(
            {
                "layer": layer,
                "kept": kept,
                "float_layers": len(chosen) + 1,
                "float_mac_share": share,
                "increase_translation": evaluation["increase_translation"],
                "increase_rotation": evaluation["increase_rotation"],
                "met": evaluation["error_increase"] <= max_error_increase,
            }
        )
        log(
            f"  {'+' if kept else '-'} {layer}: with {len(chosen) + 1} layer(s) in FP32"
            f" ({100 * share:.1f} % of MACs) the error is"
            f" {100 * evaluation['increase_translation']:+.1f} % translation,"
            f" {100 * evaluation['increase_rotation']:+.1f} % rotation"
            + ("" if kept else ": no better, back to INT8")
        )
        if kept:
            chosen.append(layer)
            current, path = evaluation, candidate
        else:
            candidate.unlink(missing_ok=True)
    return {
        "float_layers": chosen,
        "path": path,
        "evaluation": current if chosen else None,
        "met": current["error_increase"] <= max_error_increase,
        "steps": steps,
    }


# ------------------------------------------------------------------------------------ reports

_CSV_COLUMNS = (
    "rank",
    "layer",
    "op_types",
    "nodes",
    "macs",
    "mac_share",
    "deviation",
    "deviation_position_median_m",
    "deviation_rotation_median_deg",
    "deviation_position_max_m",
    "deviation_rotation_max_deg",
    "median_translation_m",
    "median_rotation_deg",
    "increase_translation",
    "increase_rotation",
)


def sensitivity_paths(output: Path) -> tuple[Path, Path]:
    """``(<output stem>.sensitivity.csv, .json)`` beside the INT8 output."""
    output = Path(output)
    return (
        output.with_name(output.stem + ".sensitivity.csv"),
        output.with_name(output.stem + ".sensitivity.json"),
    )


def write_sensitivity(
    rows: Sequence[dict[str, Any]], output: Path, report: dict
) -> tuple[Path, Path]:
    """Write the sorted table as CSV and ``report`` (which holds it) as JSON beside ``output``."""
    from posenet_train.checkpoint import atomic_write_bytes

    csv_path, json_path = sensitivity_paths(output)
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=_CSV_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: row.get(key, "") for key in _CSV_COLUMNS})
    atomic_write_bytes(csv_path, text.getvalue().encode())
    atomic_write_bytes(json_path, (json.dumps(report, indent=2, default=str) + "\n").encode())
    return csv_path, json_path


def format_table(
    rows: Sequence[dict[str, Any]], ground_truth: bool, limit: int | None = None
) -> str:
    """The sensitivity table as aligned text (most sensitive first)."""
    header = f"{'rank':>4}  {'layer':<48} {'MACs %':>6} {'dev':>6} {'dpos m':>8} {'drot deg':>8}"
    if ground_truth:
        header += f" {'t err m':>8} {'r err deg':>9} {'dt %':>6} {'dr %':>6}"
    lines = [header]
    for row in rows[:limit] if limit else rows:
        name = row["layer"] if len(row["layer"]) <= 48 else "..." + row["layer"][-45:]
        line = (
            f"{row['rank']:>4}  {name:<48} {100 * row['mac_share']:6.2f}"
            f" {row['deviation']:6.3f} {row['deviation_position_median_m']:8.4f}"
            f" {row['deviation_rotation_median_deg']:8.3f}"
        )
        if ground_truth:
            line += (
                f" {row['median_translation_m']:8.4f} {row['median_rotation_deg']:9.3f}"
                f" {100 * row['increase_translation']:6.1f} {100 * row['increase_rotation']:6.1f}"
            )
        lines.append(line)
    if limit and len(rows) > limit:
        lines.append(f"      ... {len(rows) - limit} more in the CSV")
    return "\n".join(lines)
