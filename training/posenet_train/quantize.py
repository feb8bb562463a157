"""INT8 model file for CPU targets: ONNX Runtime static quantization on the calibration images.

Example::

    python -m posenet_train.quantize --model dino.onnx                 # writes dino.int8.onnx
    python -m posenet_train.quantize --model dino.onnx --benchmark     # + FP32 vs INT8 latency
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

The INT8 file is for ONNX Runtime on CPUs (x86 with VNNI/AVX2, ARM64). On a Jetson use a
TensorRT engine instead (``ros2 run posenet_ros build_engine --precision int8``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from posenet_core.calibration import calibration_paths, read_calibration_images
from posenet_core.cli import positive_int as _positive_int
from posenet_core.errors import CalibrationDataError
from posenet_train.errors import ModelError, PoseNetTrainError
from posenet_train.evaluate import read_onnx_contract

__all__ = [
    "CALIBRATION_METHODS",
    "QUANT_FORMATS",
    "CalibrationImages",
    "benchmark_latency",
    "build_parser",
    "cli",
    "default_output_path",
    "load_calibration",
    "main",
    "output_differences",
]

QUANT_FORMATS: tuple[str, ...] = ("qdq", "qoperator")
CALIBRATION_METHODS: tuple[str, ...] = ("minmax", "entropy", "percentile")
QUANTIZATION_KEY = "posenet_train.quantization"


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
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
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


def _quantize(
    model: Path,
    output_tmp: Path,
    images: np.ndarray,
    input_name: str,
    quant_format: str,
    per_channel: bool,
    method: str,
    workdir: Path,
) -> None:
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    preprocessed = workdir / "preprocessed.onnx"
    try:
        quant_pre_process(str(model), str(preprocessed))
    except Exception as exc:  # ORT's tools raise assorted types
        raise ModelError(
            f"{model}: ONNX Runtime quantisation pre-processing failed: {exc}"
        ) from exc
    import onnx

    keep_float = regression_tail_nodes(onnx.load(str(preprocessed)))
    formats = {"qdq": QuantFormat.QDQ, "qoperator": QuantFormat.QOperator}
    methods = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }
    try:
        quantize_static(
            str(preprocessed),
            str(output_tmp),
            CalibrationImages(images, input_name),
            quant_format=formats[quant_format],
            per_channel=per_channel,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=methods[method],
            nodes_to_exclude=keep_float,
        )
    except Exception as exc:  # ORT's quantiser raises assorted types
        raise ModelError(f"{model}: ONNX Runtime static quantisation failed: {exc}") from exc


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


def _write_metadata(path: Path, metadata: dict[str, str]) -> None:
    import onnx

    proto = onnx.load(str(path))
    keep = [p for p in proto.metadata_props if p.key not in metadata]
    del proto.metadata_props[:]
    proto.metadata_props.extend(keep)
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save_model(proto, str(path), save_as_external_data=False)


def main(
    model: str | Path,
    output: str | Path | None = None,
    *,
    calibration: str | Path | None = None,
    quant_format: str = "qdq",
    per_channel: bool = True,
    method: str = "minmax",
    overwrite: bool = False,
    benchmark: bool = False,
    threads: int = 2,
    runs: int = 50,
) -> dict[str, Any]:
    """Quantise the model file ``model`` to INT8 and write ``output`` (default ``.int8.onnx``).

    Returns ``{"model", "output", "calibration_images", "differences", "latency_ms"}``:
    ``differences`` from :func:`output_differences` (INT8 vs FP32 on the calibration images),
    ``latency_ms`` ``{"fp32", "int8", "speedup", "threads"}`` when ``benchmark`` (else None).
    An existing output is reused (differences and latency still measured) unless
    ``overwrite``. Raises PoseNetTrainError subclasses, leaving no partial file.
    """
    import onnx  # noqa: F401  (checked early: needed to write the metadata)

    model = Path(model)
    if quant_format not in QUANT_FORMATS:
        raise PoseNetTrainError(
            f"quantisation format {quant_format!r} is not one of {', '.join(QUANT_FORMATS)}"
        )
    if method not in CALIBRATION_METHODS:
        raise PoseNetTrainError(
            f"calibration method {method!r} is not one of {', '.join(CALIBRATION_METHODS)}"
        )
    for name, value in (("threads", threads), ("runs", runs)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise PoseNetTrainError(f"{name} must be an integer >= 1, got {value!r}")
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

    if output.exists() and not overwrite:
        print(f"{output} exists: kept (pass --overwrite to quantise again)")
    else:
        output.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="posenet_quantize_") as workdir:
            fd, tmp_name = tempfile.mkstemp(
                prefix=f".{output.name}.", suffix=".tmp", dir=output.parent
            )
            os.close(fd)
            tmp = Path(tmp_name)
            try:
                start = time.monotonic()
                _quantize(
                    model,
                    tmp,
                    images,
                    contract.input_name,
                    quant_format,
                    per_channel,
                    method,
                    Path(workdir),
                )
                description = {
                    "precision": "int8",
                    "tool": "onnxruntime.quantization.quantize_static",
                    "format": quant_format,
                    "per_channel": per_channel,
                    "weights": "int8",
                    "activations": "uint8",
                    "calibration_method": method,
                    "calibration_images": len(images),
                    "calibration_file": calibration.name,
                    "source_model": model.name,
                }
                _write_metadata(tmp, {**metadata, QUANTIZATION_KEY: json.dumps(description)})
                candidate = _session(tmp, threads)
                got = _run_all(candidate, contract, images)
                if not (np.isfinite(got[0]).all() and np.isfinite(got[1]).all()):
                    raise ModelError(
                        f"the INT8 model gives NaN/inf on the calibration images; {output} was "
                        "not written"
                    )
                mask = os.umask(0o022)
                os.umask(mask)
                os.chmod(tmp, 0o666 & ~mask)
                os.replace(tmp, output)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
        print(
            f"wrote {output} ({output.stat().st_size / 1e6:.1f} MB, from "
            f"{model.stat().st_size / 1e6:.1f} MB) in {time.monotonic() - start:.0f} s: "
            f"{quant_format}, per-channel {per_channel}, {method} on {len(images)} images"
        )
    int8 = _session(output, threads)
    differences = output_differences(
        _run_all(fp32, contract, images), _run_all(int8, contract, images)
    )
    print(
        f"INT8 vs FP32 on {len(images)} calibration images: position max "
        f"{differences['position_max_m']:.4g} m, median {differences['position_median_m']:.4g} m;"
        f" rotation max {differences['rotation_max_deg']:.4g} deg, median "
        f"{differences['rotation_median_deg']:.4g} deg (accuracy against ground truth: "
        f"posenet_train.evaluate --onnx {output})"
    )
    latency = None
    if benchmark:
        fp32_ms, int8_ms = (
            benchmark_latency(path, images, contract.input_name, threads=threads, runs=runs)
            for path in (model, output)
        )
        latency = {
            "fp32": fp32_ms,
            "int8": int8_ms,
            "speedup": fp32_ms / int8_ms if int8_ms > 0 else math.nan,
            "threads": threads,
        }
        print(
            f"ONNX Runtime CPU latency, batch 1, {threads} thread(s), median of {runs}: "
            f"FP32 {fp32_ms:.2f} ms, INT8 {int8_ms:.2f} ms ({latency['speedup']:.2f}x)"
        )
    return {
        "model": model,
        "output": output,
        "calibration_images": len(images),
        "differences": differences,
        "latency_ms": latency,
    }


def build_parser() -> argparse.ArgumentParser:
    """The ``posenet-quantize`` argument parser."""
    p = argparse.ArgumentParser(
        prog="posenet-quantize",
        description="Quantise a posenet model file to INT8 for ONNX Runtime on CPUs (static "
        "quantisation calibrated on the exported calibration images).",
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
        choices=CALIBRATION_METHODS,
        default="minmax",
        help="how activation ranges are calibrated (default minmax)",
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
        help="ONNX Runtime intra-op threads for the check and the benchmark (default 2)",
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
            args.model,
            args.output,
            calibration=args.calibration,
            quant_format=args.quant_format,
            per_channel=not args.per_tensor,
            method=args.method,
            overwrite=args.overwrite,
            benchmark=args.benchmark,
            threads=args.threads,
            runs=args.runs,
        )
    except PoseNetTrainError as exc:
        print(f"posenet-quantize: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(cli())
