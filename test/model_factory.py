"""Tiny ONNX model files that follow (or deliberately break) the posenet model-file contract.

Test helper (imports the ``onnx`` package, which the node itself does not need). The good model
computes ``position = position_scale * per-channel spatial mean of the input`` and returns a
constant orientation, so a test that sends a solid-colour image knows the exact expected pose:
RGB (255, 0, 51) -> position (1.0, 0.0, 0.2).

Format 2 files (the default) may carry an uncertainty output (``uncertainty="diagonal"`` or
``"isotropic"``) whose log-variances are a linear function of the same channel means, so tests
also know the exact expected covariance: see ``expected_log_variance``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

MODES = ("mean", "nan", "zero_quat", "nonunit_quat", "conditional")

# mode="conditional": the output depends on the image's colour (means per channel in 0..1), so one
# node process can be sent bad and good frames. Any other colour gives the "mean" output.
CONDITIONAL_NAN_RGB = (255, 255, 255)  # all channel means > 0.99 -> position NaN
CONDITIONAL_ZERO_QUAT_RGB = (0, 0, 0)  # all channel means < 0.01 -> orientation (0, 0, 0, 0)
# R and G means > 0.99, B < 0.01 -> orientation (2, 0, 0, 0)
CONDITIONAL_NONUNIT_QUAT_RGB = (255, 255, 0)

# Uncertainty outputs: [N,6] log-variances = offset + gain * (mean R, G, B, mean R, G, B);
# [N,2] = offset + gain * (mean of R, G, B); "wrong_width": [N,5] (breaks the contract).
UNCERTAINTY_MODES = ("diagonal", "isotropic", "wrong_width")
UNCERTAINTY_OUTPUT = "log_variance"
# sigma 0.1 m (x, y, z) and 0.05 rad (rotations) for a black image.
DEFAULT_LOG_VARIANCE_OFFSET = (
    *(2 * np.log(0.1),) * 3,
    *(2 * np.log(0.05),) * 3,
)
DEFAULT_LOG_VARIANCE_GAIN = 4.0

WRONG_SHAPE_VARIANTS = (
    "input_rank3",  # input [3,H,W]
    "input_channels1",  # input [N,1,H,W]
    "input_size_mismatch",  # input [N,3,H+1,W+2] while metadata says H,W
    "input_uint8",  # input uint8 [N,3,H,W]
    "two_inputs",  # the image plus a second input
    "position_2",  # position [N,2]
    "orientation_3",  # orientation [N,3]
)


def expected_log_variance(
    rgb: Sequence[int],
    uncertainty: str = "diagonal",
    offset: Sequence[float] = DEFAULT_LOG_VARIANCE_OFFSET,
    gain: float = DEFAULT_LOG_VARIANCE_GAIN,
) -> np.ndarray:
    """The log-variances a test model outputs for a solid image of colour ``rgb`` (0..255):
    (6,) for "diagonal", (2,) for "isotropic" (``offset`` then holds 2 values)."""
    mean = np.asarray(rgb, dtype=np.float64) / 255.0
    if uncertainty == "isotropic":
        return np.asarray(offset, dtype=np.float64)[:2] + gain * mean.mean()
    return np.asarray(offset, dtype=np.float64) + gain * np.concatenate([mean, mean])


def contract_metadata(
    *,
    input_hw: tuple[int, int] = (32, 32),
    resize_shorter: int = 36,
    scene_frame: str = "map",
    input_name: str = "image",
    output_names: Sequence[str] = ("position", "orientation"),
    format_version: str = "2",
    uncertainty_output: str | None = None,
) -> dict[str, str]:
    """The metadata_props a valid test model carries (format 2 unless ``format_version``)."""
    metadata = {
        "posenet.format": format_version,
        "posenet.input": input_name,
        "posenet.outputs": f"{output_names[0]},{output_names[1]}",
        "posenet.input_size": f"{input_hw[0]},{input_hw[1]}",
        "posenet.resize": str(resize_shorter),
        "posenet.scene_frame": scene_frame,
        "posenet.architecture": "test-mean-color",
        "posenet.dataset": "synthetic-test",
        "posenet.median_error": "n/a (test model)",
    }
    if uncertainty_output is not None:
        metadata["posenet.uncertainty_output"] = uncertainty_output
    return metadata


def _apply_metadata_changes(
    metadata: dict[str, str], overrides: dict | None, drop_keys: Iterable[str]
) -> dict[str, str]:
    metadata = dict(metadata)
    for key, value in (overrides or {}).items():
        if value is None:
            metadata.pop(key, None)
        else:
            metadata[key] = str(value)
    for key in drop_keys:
        metadata.pop(key, None)
    return metadata


def _reduce_mean(name_in: str, name_out: str, axes: Sequence[int], keepdims: int, opset: int):
    """ReduceMean nodes for either opset convention (axes attribute < 18 <= axes input)."""
    return _reduce("ReduceMean", name_in, name_out, axes, keepdims, opset)


def _reduce(
    op: str, name_in: str, name_out: str, axes: Sequence[int], keepdims: int, opset: int
) -> list:
    """Reduce* nodes for either opset convention (axes attribute < 18 <= axes input)."""
    if opset >= 18:
        axes_name = f"{name_out}_axes"
        axes_const = helper.make_node(
            "Constant",
            [],
            [axes_name],
            value=numpy_helper.from_array(np.array(axes, dtype=np.int64), axes_name),
        )
        node = helper.make_node(op, [name_in, axes_name], [name_out], keepdims=keepdims)
        return [axes_const, node]
    return [helper.make_node(op, [name_in], [name_out], axes=list(axes), keepdims=keepdims)]


def _const(name: str, array: np.ndarray):
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(array, name))


def _broadcast_rows(src: str, row_values: np.ndarray, out: str, prefix: str) -> list:
    """Nodes computing ``out = row_values`` broadcast to ``[src.shape[0], len(row_values)]``."""
    return [
        helper.make_node("Shape", [src], [f"{prefix}_shape"]),
        _const(f"{prefix}_zero", np.array([0], dtype=np.int64)),
        _const(f"{prefix}_one", np.array([1], dtype=np.int64)),
        helper.make_node(
            "Slice", [f"{prefix}_shape", f"{prefix}_zero", f"{prefix}_one"], [f"{prefix}_batch"]
        ),
        _const(f"{prefix}_width", np.array([row_values.size], dtype=np.int64)),
        helper.make_node(
            "Concat", [f"{prefix}_batch", f"{prefix}_width"], [f"{prefix}_target"], axis=0
        ),
        _const(f"{prefix}_values", row_values.astype(np.float32)),
        helper.make_node("Expand", [f"{prefix}_values", f"{prefix}_target"], [out]),
    ]


def _conditional_outputs(
    quat: np.ndarray, position_name: str, orientation_name: str, opset: int
) -> list:
    """Nodes of mode "conditional": ``channel_mean`` [N,3] -> position and orientation."""
    nodes = _reduce("ReduceMin", "channel_mean", "min_mean", axes=(1,), keepdims=1, opset=opset)
    nodes += _reduce("ReduceMax", "channel_mean", "max_mean", axes=(1,), keepdims=1, opset=opset)
    nodes += [
        _const("high", np.array(0.99, dtype=np.float32)),
        _const("low", np.array(0.01, dtype=np.float32)),
        _const("nan", np.array(np.nan, dtype=np.float32)),
        _const("rg_start", np.array([0], dtype=np.int64)),
        _const("rg_end", np.array([2], dtype=np.int64)),
        _const("b_end", np.array([3], dtype=np.int64)),
        _const("channel_axis", np.array([1], dtype=np.int64)),
        # white: every channel mean high -> NaN position
        helper.make_node("Greater", ["min_mean", "high"], ["is_white"]),
        helper.make_node("Mul", ["channel_mean", "position_scale"], ["scaled_mean"]),
        helper.make_node("Where", ["is_white", "nan", "scaled_mean"], [position_name]),
        # black: every channel mean low -> zero quaternion
        helper.make_node("Less", ["max_mean", "low"], ["is_black"]),
        # yellow: R and G high, B low -> non-unit quaternion
        helper.make_node(
            "Slice", ["channel_mean", "rg_start", "rg_end", "channel_axis"], ["rg_mean"]
        ),
        helper.make_node("Slice", ["channel_mean", "rg_end", "b_end", "channel_axis"], ["b_mean"]),
    ]
    nodes += _reduce("ReduceMin", "rg_mean", "rg_min", axes=(1,), keepdims=1, opset=opset)
    nodes += [
        helper.make_node("Greater", ["rg_min", "high"], ["rg_high"]),
        helper.make_node("Less", ["b_mean", "low"], ["b_low"]),
        helper.make_node("And", ["rg_high", "b_low"], ["is_yellow"]),
        _const("quat_ok", quat.astype(np.float32)),
        _const("quat_zero", np.zeros(4, dtype=np.float32)),
        _const("quat_nonunit", np.array([2.0, 0.0, 0.0, 0.0], dtype=np.float32)),
        helper.make_node("Where", ["is_yellow", "quat_nonunit", "quat_ok"], ["quat_not_black"]),
        helper.make_node("Where", ["is_black", "quat_zero", "quat_not_black"], [orientation_name]),
    ]
    return nodes


def _uncertainty_nodes(
    uncertainty: str, name: str, offset: Sequence[float], gain: float, opset: int
) -> tuple[list, int]:
    """Nodes computing the log-variance output ``name`` from ``channel_mean`` [N,3]; width."""
    if uncertainty == "isotropic":
        nodes = _reduce(
            "ReduceMean", "channel_mean", "grey_mean", axes=(1,), keepdims=1, opset=opset
        )
        nodes += [
            _const("lv_gain", np.full(2, gain, dtype=np.float32)),
            _const("lv_offset", np.asarray(offset, dtype=np.float32)[:2]),
            helper.make_node("Mul", ["grey_mean", "lv_gain"], ["lv_scaled"]),
            helper.make_node("Add", ["lv_scaled", "lv_offset"], [name]),
        ]
        return nodes, 2
    width = 5 if uncertainty == "wrong_width" else 6
    return [
        helper.make_node("Concat", ["channel_mean", "channel_mean"], ["lv_means"], axis=1),
        _const("lv_start", np.array([0], dtype=np.int64)),
        _const("lv_end", np.array([width], dtype=np.int64)),
        _const("lv_axis", np.array([1], dtype=np.int64)),
        helper.make_node("Slice", ["lv_means", "lv_start", "lv_end", "lv_axis"], ["lv_cut"]),
        _const("lv_gain", np.array(gain, dtype=np.float32)),
        _const("lv_offset", np.asarray(offset, dtype=np.float32)[:width]),
        helper.make_node("Mul", ["lv_cut", "lv_gain"], ["lv_scaled"]),
        helper.make_node("Add", ["lv_scaled", "lv_offset"], [name]),
    ], width


def _save(graph, path: str, metadata: dict[str, str], opset: int) -> str:
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", opset)],
        producer_name="posenet_ros-test-model-factory",
    )
    model.ir_version = helper.find_min_ir_version_for([helper.make_opsetid("", opset)])
    helper.set_model_props(model, metadata)
    onnx.checker.check_model(model)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    onnx.save(model, path)
    return path


def make_test_model(
    path: str,
    *,
    input_hw: tuple[int, int] = (32, 32),
    resize_shorter: int = 36,
    scene_frame: str = "map",
    quat_wxyz: Sequence[float] = (1.0, 0.0, 0.0, 0.0),
    position_scale: float = 1.0,
    position_offset: Sequence[float] = (0.0, 0.0, 0.0),
    mode: str = "mean",
    metadata_overrides: dict | None = None,
    drop_keys: Iterable[str] = (),
    input_name: str = "image",
    output_names: Sequence[str] = ("position", "orientation"),
    opset: int = 17,
    format_version: str = "2",
    uncertainty: str | None = None,
    uncertainty_name: str = UNCERTAINTY_OUTPUT,
    log_variance_offset: Sequence[float] = DEFAULT_LOG_VARIANCE_OFFSET,
    log_variance_gain: float = DEFAULT_LOG_VARIANCE_GAIN,
) -> str:
    """Write a contract-following test model to ``path`` and return ``path``.

    Input float32 ``[N,3,H,W]`` (N dynamic, H and W static). Outputs: position ``[N,3]`` =
    ``position_scale`` * per-channel spatial mean of the input + ``position_offset`` (with
    ``position_scale=0``: a constant pose, e.g. a prior near a known truth); orientation
    ``[N,4]`` = the constant ``quat_wxyz``. ``mode``: ``"mean"`` as described, ``"nan"``
    (position is NaN),
    ``"zero_quat"`` (orientation all zeros), ``"nonunit_quat"`` (orientation (2, 0, 0, 0)),
    ``"conditional"`` (one of those three chosen by the image colour, see ``CONDITIONAL_*_RGB``;
    "mean" for any other colour).
    ``metadata_overrides`` (a value of None removes the key) and ``drop_keys`` build files that
    break the metadata contract.
    ``format_version``: ``posenet.format`` ("2" by default, "1" for an old file).
    ``uncertainty``: None (no uncertainty output) or one of ``UNCERTAINTY_MODES``: a third output
    ``uncertainty_name`` of log-variances (see ``expected_log_variance``), declared in
    ``posenet.uncertainty_output`` (which a format "1" file also carries then, and must ignore).
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose one of {MODES}")
    if uncertainty is not None and uncertainty not in UNCERTAINTY_MODES:
        raise ValueError(
            f"unknown uncertainty {uncertainty!r}; choose None or one of {UNCERTAINTY_MODES}"
        )
    height, width = input_hw
    position_name, orientation_name = output_names
    quat = np.asarray(quat_wxyz, dtype=np.float32)
    if mode == "zero_quat":
        quat = np.zeros(4, dtype=np.float32)
    elif mode == "nonunit_quat":
        quat = np.array([2.0, 0.0, 0.0, 0.0], dtype=np.float32)
    scale = np.float32(np.nan if mode == "nan" else position_scale)

    nodes = _reduce_mean(input_name, "channel_mean", axes=(2, 3), keepdims=0, opset=opset)
    nodes.append(_const("position_scale", np.array(scale, dtype=np.float32)))
    if mode == "conditional":
        nodes += _conditional_outputs(quat, position_name, orientation_name, opset)
    else:
        offset = np.asarray(position_offset, dtype=np.float32).reshape(3)
        if np.any(offset != 0):
            nodes.append(
                helper.make_node("Mul", ["channel_mean", "position_scale"], ["scaled_mean"])
            )
            nodes.append(_const("position_offset", offset))
            nodes.append(
                helper.make_node("Add", ["scaled_mean", "position_offset"], [position_name])
            )
        else:
            nodes.append(
                helper.make_node("Mul", ["channel_mean", "position_scale"], [position_name])
            )
        nodes += _broadcast_rows(input_name, quat, orientation_name, "orientation")
    outputs = [
        helper.make_tensor_value_info(position_name, TensorProto.FLOAT, ["N", 3]),
        helper.make_tensor_value_info(orientation_name, TensorProto.FLOAT, ["N", 4]),
    ]
    if uncertainty is not None:
        lv_nodes, lv_width = _uncertainty_nodes(
            uncertainty, uncertainty_name, log_variance_offset, log_variance_gain, opset
        )
        nodes += lv_nodes
        outputs.append(
            helper.make_tensor_value_info(uncertainty_name, TensorProto.FLOAT, ["N", lv_width])
        )
    graph = helper.make_graph(
        nodes,
        "posenet_test_mean_color",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["N", 3, height, width])],
        outputs,
    )
    metadata = contract_metadata(
        input_hw=input_hw,
        resize_shorter=resize_shorter,
        scene_frame=scene_frame,
        input_name=input_name,
        output_names=output_names,
        format_version=format_version,
        uncertainty_output=uncertainty_name if uncertainty is not None else None,
    )
    return _save(
        graph, path, _apply_metadata_changes(metadata, metadata_overrides, drop_keys), opset
    )


def make_wrong_shape_model(
    path: str,
    variant: str,
    *,
    input_hw: tuple[int, int] = (32, 32),
    resize_shorter: int = 36,
    opset: int = 17,
) -> str:
    """Write a model whose metadata is valid but whose graph breaks the contract's shapes/types.

    ``variant`` is one of ``WRONG_SHAPE_VARIANTS``. The graph runs (position = the input's mean
    broadcast, orientation = identity), so ONNX Runtime loads it; only the signature is wrong.
    """
    if variant not in WRONG_SHAPE_VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose one of {WRONG_SHAPE_VARIANTS}")
    height, width = input_hw
    input_dims: list = ["N", 3, height, width]
    input_type = TensorProto.FLOAT
    position_width, orientation_width = 3, 4
    if variant == "input_rank3":
        input_dims = [3, height, width]
    elif variant == "input_channels1":
        input_dims = ["N", 1, height, width]
    elif variant == "input_size_mismatch":
        input_dims = ["N", 3, height + 1, width + 2]
    elif variant == "input_uint8":
        input_type = TensorProto.UINT8
    elif variant == "position_2":
        position_width = 2
    elif variant == "orientation_3":
        orientation_width = 3
    batch_dim = input_dims[0]

    nodes = [
        helper.make_node("Cast", ["image"], ["image_float"], to=TensorProto.FLOAT),
        helper.make_node("Flatten", ["image_float"], ["flat"], axis=1),
    ]
    nodes += _reduce_mean("flat", "row_mean", axes=(1,), keepdims=1, opset=opset)
    nodes += _broadcast_rows(
        "row_mean", np.ones(position_width, dtype=np.float32), "ones", "position"
    )
    nodes.append(helper.make_node("Mul", ["ones", "row_mean"], ["position"]))
    identity = np.zeros(orientation_width, dtype=np.float32)
    identity[0] = 1.0
    nodes += _broadcast_rows("row_mean", identity, "orientation", "orientation")
    inputs = [helper.make_tensor_value_info("image", input_type, input_dims)]
    if variant == "two_inputs":
        inputs.append(helper.make_tensor_value_info("scale", TensorProto.FLOAT, [1]))
        nodes.append(helper.make_node("Identity", ["scale"], ["scale_out"]))
    outputs = [
        helper.make_tensor_value_info("position", TensorProto.FLOAT, [batch_dim, position_width]),
        helper.make_tensor_value_info(
            "orientation", TensorProto.FLOAT, [batch_dim, orientation_width]
        ),
    ]
    if variant == "two_inputs":
        outputs.append(helper.make_tensor_value_info("scale_out", TensorProto.FLOAT, [1]))
    graph = helper.make_graph(nodes, f"posenet_test_{variant}", inputs, outputs)
    metadata = contract_metadata(input_hw=input_hw, resize_shorter=resize_shorter)
    return _save(graph, path, metadata, opset)
