"""Export a checkpoint as the posenet_ros model file (ONNX with the ``posenet.*`` metadata) and
write INT8 calibration images beside it.

Example::

    python -m posenet_train.export --checkpoint runs/dino/best.pt --output dino.onnx

The model file (see DESIGN.md, "The model-file contract"):

* one ONNX file (opset 17, legacy TorchScript exporter for the widest TensorRT support, no
  external data), input ``image`` float32 ``[N,3,H,W]`` RGB 0..1 with a dynamic batch axis,
  outputs ``position`` ``[N,3]`` (metres, scene frame) and ``orientation`` ``[N,4]`` (unit
  quaternion wxyz, camera-to-world); the backbone normalisation and the position
  de-normalisation are inside the graph;
* a model with an uncertainty head (``uncertainty=True``) has a third output,
  ``log_variance`` ``[N,6]``: natural-log variances of the position x, y, z (metres^2, scene
  frame) and of the rotation about the scene frame's fixed x, y, z axes (rad^2), converted
  inside the graph; its file says ``posenet.format`` "2" and ``posenet.uncertainty_output``
  "log_variance". A model without one is written as format "1", which every node reads.
  Before export the predicted variances are recalibrated (``--uncertainty-calibration``, default
  the training split): the head learned the errors of training passes, with dropout active,
  which are larger than those of inference, so its variances come out too large by a roughly
  constant factor per block. On the chosen split, preprocessed as the node does it (eval mode,
  centre crop), the factor that makes the median squared Mahalanobis distance that of a
  calibrated 3-D Gaussian is measured for the position and for the rotation block
  (:func:`posenet_train.evaluate.calibration_report`, ``variance_scale_median``) and its
  logarithm added to the log-variances inside the graph (the model's ``log_variance_offset``);
  ``posenet_train.uncertainty_calibration`` records what was done;
* ``metadata_props``: ``posenet.format`` "1" (or "2"), ``posenet.input``, ``posenet.outputs``,
  ``posenet.input_size`` "H,W" (the training crop), ``posenet.resize`` (the training resize),
  ``posenet.scene_frame``, ``posenet.architecture``, ``posenet.dataset`` (the dataset folder's
  name), ``posenet.median_error`` ("0.021 m, 1.90 deg" from the checkpoint's own validation, or
  "unknown"), ``posenet.dataset_fingerprint`` (SHA-256 of the training split's names and poses,
  as the map file of ``posenet_train.map`` records it: the node refuses a map of another dataset
  version); plus ``posenet_train.*`` provenance keys (ignored by the node).

Before the file appears it is checked: ONNX Runtime must reproduce PyTorch on a few real images
of the dataset (batch of several and of one) within 1e-4, or the export fails and nothing is
written (the file is built under a temporary name and renamed at the end).

Calibration set for TensorRT INT8 (``--calibration-images N``, default 64, 0 to skip):
``<stem>_calibration.npy``, float32 ``[N,3,H,W]`` RGB 0..1, N training images spread evenly over
the training split, preprocessed exactly as the node does it
(:func:`posenet_train.preprocess.resize_shorter_and_center_crop`, then /255), and
``<stem>_calibration.json`` describing it (model file name, count, layout "NCHW", range 0..1,
the images used).

Existing outputs are kept unless ``--overwrite``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from posenet_core.calibration import calibration_paths
from posenet_core.cli import non_negative_int, run_main
from posenet_core.contract import contract_metadata, format_median_error, scene_frame_problem
from posenet_core.datasets import PoseRecord
from posenet_core.errors import ModelFileError
from posenet_core.files import replaced_atomically
from posenet_core.images import read_rgb
from posenet_core.mapfile import split_fingerprint
from posenet_core.preprocess import resize_shorter_and_center_crop
from posenet_train.checkpoint import atomic_write_bytes, model_from_checkpoint
from posenet_train.datasets import load_split, parse_dataset_spec
from posenet_train.errors import DatasetError, ModelError, PoseNetTrainError

__all__ = [
    "CALIBRATION_IMAGES",
    "INPUT_NAME",
    "OPSET",
    "OUTPUT_NAMES",
    "QAT_KEY",
    "TOLERANCE",
    "UNCERTAINTY_CALIBRATION_CHOICES",
    "UNCERTAINTY_OUTPUT",
    "build_metadata",
    "cli",
    "main",
    "output_names",
    "preprocess_images",
    "recalibrate_uncertainty",
    "spread_records",
    "write_metadata",
]

INPUT_NAME = "image"
OUTPUT_NAMES = ("position", "orientation")
UNCERTAINTY_OUTPUT = "log_variance"
#: Splits the uncertainty can be recalibrated on, or "none".
UNCERTAINTY_CALIBRATION_CHOICES = ("train", "test", "none")
UNCERTAINTY_CALIBRATION_KEY = "posenet_train.uncertainty_calibration"
#: The source checkpoint of a quantisation-aware run (train --qat-from): the file's weights are
#: tuned for INT8, so its FP32 form is only the input of posenet_train.quantize.
QAT_KEY = "posenet_train.qat_from"
OPSET = 17
#: Largest allowed |ONNX Runtime - PyTorch| over the check images.
TOLERANCE = 1e-4
_CHECK_IMAGES = 4
#: Training images in the INT8 calibration set (--calibration-images default).
CALIBRATION_IMAGES = 64


def preprocess_images(
    records: Sequence[PoseRecord], resize_shorter_px: int, input_hw: tuple[int, int]
) -> np.ndarray:
    """Float32 ``[N,3,H,W]`` RGB 0..1 network inputs, preprocessed exactly as the node does."""
    crops = [
        resize_shorter_and_center_crop(read_rgb(r.image_path), resize_shorter_px, input_hw)
        for r in records
    ]
    stacked = np.stack(crops).transpose(0, 3, 1, 2)
    return np.ascontiguousarray(np.divide(stacked, np.float32(255.0), dtype=np.float32))


def _dataset_name(dataset: str) -> str:
    _, folder = parse_dataset_spec(dataset)
    return folder.resolve().name or str(folder)


def build_metadata(
    ckpt: dict[str, Any],
    *,
    scene_frame: str,
    dataset: str,
    checkpoint_path: Path,
    dataset_fingerprint: str | None = None,
) -> dict[str, str]:
    """The ``metadata_props`` of the model file for checkpoint ``ckpt`` (contract + provenance).

    ``dataset_fingerprint``: the training split's (:func:`training_fingerprint`), written as
    ``posenet.dataset_fingerprint`` so the node can refuse a map of another dataset version.
    """
    extra = ckpt["extra"]
    crop_h, crop_w = (int(v) for v in extra["crop_hw"])
    uncertainty = bool(ckpt["model_args"].get("uncertainty", False))
    try:
        contract = contract_metadata(
            input_name=INPUT_NAME,
            output_names=OUTPUT_NAMES,
            input_hw=(crop_h, crop_w),
            resize_shorter=int(extra["resize_shorter"]),
            scene_frame=scene_frame,
            architecture=str(ckpt["model_args"]["name"]),
            dataset=_dataset_name(dataset),
            median_error=format_median_error(extra.get("val")),
            uncertainty_output=UNCERTAINTY_OUTPUT if uncertainty else None,
            dataset_fingerprint=dataset_fingerprint,
        )
    except ModelFileError as exc:
        raise ModelError(f"the checkpoint cannot make a valid model file: {exc}") from None
    metadata = {
        **contract,
        "posenet_train.checkpoint": checkpoint_path.name,
        "posenet_train.epoch": str(int(ckpt["epoch"])),
        "posenet_train.dataset_path": str(dataset),
    }
    qat_from = (extra.get("config") or {}).get("qat_from")
    if qat_from:
        metadata[QAT_KEY] = str(qat_from)
    return metadata


def training_fingerprint(dataset: str) -> str:
    """SHA-256 of ``dataset``'s training split (names and poses), as the map file records it
    (:func:`posenet_core.mapfile.split_fingerprint`)."""
    _, folder = parse_dataset_spec(dataset)
    return split_fingerprint(_load_records(dataset, "train"), folder)


def output_names(model: torch.nn.Module) -> tuple[str, ...]:
    """The graph's output names for ``model``: position, orientation[, log_variance]."""
    if getattr(model, "uncertainty", False):
        return (*OUTPUT_NAMES, UNCERTAINTY_OUTPUT)
    return OUTPUT_NAMES


def recalibrate_uncertainty(
    model: torch.nn.Module,
    dataset: str,
    split: str,
    resize_shorter_px: int,
    input_hw: tuple[int, int],
) -> dict[str, Any]:
    """Scale an uncertainty head's variances so that they fit the errors on ``split``.

    Predicts ``split`` of ``dataset`` the way the node does (eval mode, centre crop), measures
    per block (position, rotation) the factor that calibrates the median squared Mahalanobis
    distance, and adds its logarithm to the model's ``log_variance_offset``. ``split`` "none"
    changes nothing. Returns what was done, for the model file's metadata.
    """
    if split == "none":
        return {"method": "none"}
    from posenet_train.evaluate import calibration_report, pose_error_vectors, predict

    records = _load_records(dataset, split)
    position, quat, log_variance = predict(
        model,
        records,
        batch_size=16,
        resize_shorter_px=resize_shorter_px,
        crop_hw=input_hw,
        with_uncertainty=True,
    )
    errors = pose_error_vectors(
        position,
        quat,
        np.stack([r.position_m for r in records]),
        np.stack([r.quat_wxyz for r in records]),
    )
    report = calibration_report(errors, np.exp(log_variance))
    scales = {block: report[block]["variance_scale_median"] for block in ("position", "rotation")}
    if not all(math.isfinite(v) and v > 0.0 for v in scales.values()):
        raise ModelError(f"cannot recalibrate the uncertainty on the {split} split: {scales}")
    offset = torch.tensor(
        [math.log(scales["position"])] * 3 + [math.log(scales["rotation"])] * 3,
        dtype=model.log_variance_offset.dtype,
    )
    with torch.no_grad():
        model.log_variance_offset += offset.to(model.log_variance_offset.device)
    print(
        f"uncertainty recalibrated on the {split} split ({len(records)} images): variances x "
        f"{scales['position']:.3g} (position), x {scales['rotation']:.3g} (rotation)"
    )
    return {
        "method": "variance_scale_median",
        "split": split,
        "images": len(records),
        "variance_scale": scales,
    }


def spread_records(records: Sequence[PoseRecord], count: int) -> list[PoseRecord]:
    """``count`` records spread evenly over ``records`` (all of them if there are fewer)."""
    if count >= len(records):
        return list(records)
    indices = np.unique(np.round(np.linspace(0, len(records) - 1, count)).astype(int))
    return [records[i] for i in indices]


def _export_onnx(model: torch.nn.Module, example: torch.Tensor, path: Path) -> None:
    names = output_names(model)
    with warnings.catch_warnings():
        # Shape checks and size arithmetic become constants at the fixed input size: expected.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.onnx")
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        fixed_size = getattr(model, "fixed_input_size", None)
        with fixed_size(example) if fixed_size else contextlib.nullcontext():
            torch.onnx.export(
                model,
                (example,),
                str(path),
                input_names=[INPUT_NAME],
                output_names=list(names),
                dynamic_axes={name: {0: "batch"} for name in (INPUT_NAME, *names)},
                opset_version=OPSET,
                do_constant_folding=True,
                dynamo=False,
            )
    import onnx

    proto = onnx.load(str(path))
    if fold_pads_into_convs(proto):
        onnx.save_model(proto, str(path), save_as_external_data=False)


def fold_pads_into_convs(proto: Any) -> int:
    """Fold each zero-valued constant Pad whose only consumer is a Conv into that Conv's
    ``pads`` attribute (ONNX Conv pads may be asymmetric); returns how many were folded.

    What is left of TensorFlow-"SAME" padding after a fixed-size export (see
    PoseNetModel.fixed_input_size): a separate Pad copies the tensor, and in an INT8 graph it
    sits between a DequantizeLinear and a QuantizeLinear, so folding it keeps the graph
    integer from one convolution to the next. The pads may come from a chain of nodes on
    constants (the exporter's ConstantOfShape/Concat/... arithmetic): that chain is evaluated
    with ONNX's reference implementation. Pads on the batch or channel axes, other modes or
    values, pads that depend on the input, and Pads feeding anything else are left alone.
    Nodes left without a consumer are removed.
    """
    from onnx import AttributeProto, numpy_helper
    from onnx.reference import ReferenceEvaluator

    constants: dict[str, np.ndarray | None] = {
        init.name: numpy_helper.to_array(init) for init in proto.graph.initializer
    }
    producers = {name: node for node in proto.graph.node for name in node.output}
    consumers: dict[str, list[Any]] = {}
    for node in proto.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    def constant(name: str) -> np.ndarray | None:
        if name not in constants:
            node = producers.get(name)
            constants[name] = None  # a graph input, or a cycle guard while evaluating
            if node is not None and not node.op_type.startswith("Random"):
                inputs = {i: constant(i) for i in node.input if i}
                if all(value is not None for value in inputs.values()):
                    outputs = ReferenceEvaluator(node).run(None, inputs)
                    constants.update(zip(node.output, outputs, strict=True))
        return constants[name]

    graph_outputs = {output.name for output in proto.graph.output}
    folded = []
    for pad in proto.graph.node:
        users = consumers.get(pad.output[0], []) if pad.op_type == "Pad" else []
        if len(users) != 1 or users[0].op_type != "Conv" or pad.output[0] in graph_outputs:
            continue
        conv = users[0]
        mode = next((a.s for a in pad.attribute if a.name == "mode"), b"constant")
        pads = constant(pad.input[1]) if len(pad.input) > 1 else None
        value = constant(pad.input[2]) if len(pad.input) > 2 and pad.input[2] else 0.0
        if (
            conv.input[0] != pad.output[0]
            or mode != b"constant"
            or pads is None
            or value is None
            or np.any(np.asarray(value) != 0)
            or np.shape(pads) != (8,)
            or np.any(pads[[0, 1, 4, 5]] != 0)
            or np.any(pads < 0)
            or any(a.name == "auto_pad" and a.s not in (b"", b"NOTSET") for a in conv.attribute)
        ):
            continue
        attribute = next((a for a in conv.attribute if a.name == "pads"), None)
        if attribute is None:
            attribute = conv.attribute.add()
            attribute.name, attribute.type = "pads", AttributeProto.INTS
            attribute.ints.extend([0, 0, 0, 0])
        top, left, bottom, right = (int(v) for v in pads[[2, 3, 6, 7]])
        current = list(attribute.ints)
        del attribute.ints[:]
        attribute.ints.extend(
            [current[0] + top, current[1] + left, current[2] + bottom, current[3] + right]
        )
        conv.input[0] = pad.input[0]
        folded.append(pad)
    for pad in folded:
        proto.graph.node.remove(pad)
    _remove_unused(proto)
    return len(folded)


def _remove_unused(proto: Any) -> None:
    """Drop nodes none of whose outputs is read (repeatedly), then unread initializers."""
    graph_outputs = {output.name for output in proto.graph.output}
    while True:
        used = {name for node in proto.graph.node for name in node.input} | graph_outputs
        dead = [n for n in proto.graph.node if not any(o in used for o in n.output)]
        if not dead:
            break
        for node in dead:
            proto.graph.node.remove(node)
    for init in [i for i in proto.graph.initializer if i.name not in used]:
        proto.graph.initializer.remove(init)


def write_metadata(path: Path, metadata: dict[str, str], *, check: bool = True) -> None:
    """Set ``metadata``'s keys in the ONNX file at ``path`` (other keys kept), in place; with
    ``check``, run the ONNX checker on the result first. Used by export and by quantize."""
    import onnx

    proto = onnx.load(str(path))
    keep = [p for p in proto.metadata_props if p.key not in metadata]
    del proto.metadata_props[:]
    proto.metadata_props.extend(keep)
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    if check:
        onnx.checker.check_model(proto)
    # One self-contained file: the node and TensorRT get everything from it.
    onnx.save_model(proto, str(path), save_as_external_data=False)


def _compare_with_onnxruntime(model: torch.nn.Module, path: Path, inputs: np.ndarray) -> float:
    """Largest |ORT - PyTorch| over the outputs, for the whole batch and for its first image."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = output_names(model)
    worst = 0.0
    for batch in (inputs, inputs[:1]):
        ort_outputs = session.run(list(names), {INPUT_NAME: batch})
        with torch.inference_mode():
            torch_outputs = model(torch.from_numpy(batch))
        for name, got, want in zip(names, ort_outputs, torch_outputs, strict=True):
            want = want.numpy()
            if got.shape != want.shape:
                raise ModelError(
                    f"ONNX output {name!r} has shape {list(got.shape)}, PyTorch gives "
                    f"{list(want.shape)}"
                )
            worst = max(worst, float(np.max(np.abs(got.astype(np.float64) - want))))
    return worst


def _load_records(dataset: str, split: str) -> list[PoseRecord]:
    try:
        return load_split(dataset, split)
    except DatasetError as exc:
        raise DatasetError(
            f"cannot read the {split} images of dataset {dataset!r} (needed for the export "
            f"check and the calibration set): {exc}. Pass --dataset PATH if it moved."
        ) from exc


def main(
    checkpoint: str | Path,
    output: str | Path,
    *,
    scene_frame: str = "map",
    calibration_images: int = CALIBRATION_IMAGES,
    overwrite: bool = False,
    dataset: str | None = None,
    tolerance: float = TOLERANCE,
    uncertainty_calibration: str = "train",
) -> dict[str, Any]:
    """Export ``checkpoint`` to the model file ``output`` (``.onnx``) and its calibration set.

    Args:
        checkpoint: a posenet_train checkpoint (``best.pt`` / ``last.pt``).
        output: the model file to write; must end in ``.onnx``.
        scene_frame: ``posenet.scene_frame``, the frame id of the scene (e.g. ``map``).
        calibration_images: number of training images in the INT8 calibration set (0: none).
        overwrite: replace existing outputs (otherwise they are kept and reported).
        dataset: the dataset to read images from, if not where the checkpoint says.
        tolerance: largest allowed |ONNX Runtime - PyTorch| difference.
        uncertainty_calibration: split whose errors recalibrate an uncertainty head's variances
            ("train" or "test"; see the module docstring), or "none" to export them as trained.

    Returns ``{"model", "calibration", "calibration_json", "max_abs_diff", "metadata"}``
    (paths, or None for what was not written; ``max_abs_diff`` None when the model file was
    reused). Raises PoseNetTrainError subclasses with a clear message, leaving no partial file.
    """
    checkpoint, output = Path(checkpoint), Path(output)
    if output.suffix != ".onnx":
        raise PoseNetTrainError(f"output {output} must be a .onnx file")
    if calibration_images < 0:
        raise PoseNetTrainError(f"calibration_images must be >= 0, got {calibration_images}")
    if uncertainty_calibration not in UNCERTAINTY_CALIBRATION_CHOICES:
        raise PoseNetTrainError(
            f"uncertainty_calibration {uncertainty_calibration!r} is not one of "
            f"{', '.join(UNCERTAINTY_CALIBRATION_CHOICES)}"
        )
    # The node rejects these too (tf2 frame ids): fail here rather than on the robot.
    problem = scene_frame_problem(scene_frame)
    if problem:
        raise PoseNetTrainError(problem)
    calib_npy, calib_json = calibration_paths(output)

    model, ckpt = model_from_checkpoint(checkpoint)
    extra = ckpt["extra"]
    missing = [k for k in ("resize_shorter", "crop_hw") if k not in extra]
    if dataset is None:
        dataset = extra.get("dataset")
        if dataset is None:
            missing.append("dataset")
    if missing:
        raise ModelError(
            f"checkpoint {checkpoint} does not record {', '.join(missing)} "
            "(write it with posenet_train.train, or pass --dataset)"
        )
    resize = int(extra["resize_shorter"])
    input_hw = (int(extra["crop_hw"][0]), int(extra["crop_hw"][1]))
    metadata = build_metadata(
        ckpt,
        scene_frame=scene_frame,
        dataset=str(dataset),
        checkpoint_path=checkpoint,
        dataset_fingerprint=training_fingerprint(str(dataset)),
    )
    if getattr(model, "uncertainty", False) and not (output.exists() and not overwrite):
        record = recalibrate_uncertainty(
            model, str(dataset), uncertainty_calibration, resize, input_hw
        )
        metadata[UNCERTAINTY_CALIBRATION_KEY] = json.dumps(record, sort_keys=True)
    result: dict[str, Any] = {
        "model": output,
        "calibration": None,
        "calibration_json": None,
        "max_abs_diff": None,
        "metadata": metadata,
    }

    if output.exists() and not overwrite:
        print(f"{output} exists: kept (pass --overwrite to export again)")
    else:
        try:
            check_records = _load_records(str(dataset), "test")
        except DatasetError:
            check_records = _load_records(str(dataset), "train")
        inputs = preprocess_images(spread_records(check_records, _CHECK_IMAGES), resize, input_hw)
        with replaced_atomically(output) as tmp:
            _export_onnx(model, torch.from_numpy(inputs[:1]), tmp)
            write_metadata(tmp, metadata)
            max_diff = _compare_with_onnxruntime(model, tmp, inputs)
            print(
                f"ONNX Runtime vs PyTorch on {len(inputs)} images: max |difference| "
                f"{max_diff:.3g} (allowed {tolerance:g})"
            )
            if not max_diff <= tolerance:
                raise ModelError(
                    f"the exported model differs from PyTorch by {max_diff:.3g} > {tolerance:g} "
                    f"on real images of {dataset}; {output} was not written"
                )
        result["max_abs_diff"] = max_diff
        size_mb = output.stat().st_size / 1e6
        print(
            f"wrote {output} ({size_mb:.1f} MB): "
            + ", ".join(f"{k}={v}" for k, v in metadata.items() if k.startswith("posenet."))
        )
        if QAT_KEY in metadata:
            print(
                f"NOTE: {checkpoint} was fine-tuned for INT8 (--qat-from {metadata[QAT_KEY]}): "
                f"quantise {output.name} with posenet_train.quantize and deploy the INT8 file; in "
                "FP32 these weights are less accurate than the source run's (its validation "
                "median above is the simulated INT8 one)"
            )

    if calibration_images > 0:
        if calib_npy.exists() and calib_json.exists() and not overwrite:
            print(f"{calib_npy} exists: kept (pass --overwrite to write it again)")
        else:
            chosen = spread_records(_load_records(str(dataset), "train"), calibration_images)
            images = preprocess_images(chosen, resize, input_hw)
            buffer = io.BytesIO()
            np.save(buffer, images, allow_pickle=False)
            atomic_write_bytes(calib_npy, buffer.getvalue())
            _, folder = parse_dataset_spec(str(dataset))
            description = {
                "model": output.name,
                "file": calib_npy.name,
                "count": len(chosen),
                "shape": list(images.shape),
                "dtype": "float32",
                "layout": "NCHW",
                "color": "RGB",
                "range": [0.0, 1.0],
                "input": INPUT_NAME,
                "input_size": list(input_hw),
                "resize": resize,
                "preprocessing": (
                    f"shorter side resized to {resize} px, centre crop {input_hw[0]}x"
                    f"{input_hw[1]} (posenet_train.preprocess.resize_shorter_and_center_crop, "
                    "the node's algorithm), divided by 255; no mean/std (inside the model)"
                ),
                "dataset": str(dataset),
                "split": "train",
                "images": [_relative(r.image_path, folder) for r in chosen],
            }
            atomic_write_bytes(calib_json, (json.dumps(description, indent=2) + "\n").encode())
            if len(chosen) < calibration_images:
                print(
                    f"the training split has only {len(chosen)} images; the calibration set "
                    f"holds all of them (asked for {calibration_images})"
                )
            print(f"wrote {calib_npy} ({len(chosen)} images) and {calib_json}")
        result["calibration"], result["calibration_json"] = calib_npy, calib_json
    return result


def _relative(path: Path, folder: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(folder.resolve()))
    except ValueError:
        return str(path)


def build_parser() -> argparse.ArgumentParser:
    """The ``posenet-export`` argument parser."""
    p = argparse.ArgumentParser(
        prog="posenet-export",
        description="Export a posenet_train checkpoint as a posenet_ros model file (.onnx) "
        "with INT8 calibration images.",
    )
    p.add_argument("--checkpoint", required=True, help="checkpoint to export (e.g. RUN/best.pt)")
    p.add_argument("--output", required=True, help="model file to write, ending in .onnx")
    p.add_argument(
        "--scene-frame", default="map", help="frame id of the scene, posenet.scene_frame (map)"
    )
    p.add_argument(
        "--calibration-images",
        type=non_negative_int,
        default=CALIBRATION_IMAGES,
        help="training images in the INT8 calibration set beside the model; 0: none (64)",
    )
    p.add_argument(
        "--dataset", help="dataset to read images from, if not where the checkpoint says"
    )
    p.add_argument(
        "--uncertainty-calibration",
        choices=UNCERTAINTY_CALIBRATION_CHOICES,
        default="train",
        help="models with an uncertainty head: the split whose errors rescale the predicted "
        "variances before export (the head learned them with dropout on), or none (train)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    return p


def cli(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``posenet-export`` / ``python -m posenet_train.export``."""
    return run_main("posenet-export", main, build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(cli())
