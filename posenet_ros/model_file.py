"""Read and validate the model file: one ``.onnx`` carrying the posenet metadata contract.

The contract (``metadata_props`` of the ONNX model; see DESIGN.md):

=========================  =================================================================
key                        meaning
=========================  =================================================================
``posenet.format``         contract version, ``"1"`` or ``"2"`` (2 adds the uncertainty key)
``posenet.input``          input tensor name; float32 ``[N,3,H,W]``, RGB, values 0..1
``posenet.outputs``        ``"position,orientation"`` tensor names: ``[N,3]`` metres in the
                           scene frame, ``[N,4]`` unit quaternion wxyz, camera-to-world
``posenet.input_size``     ``"H,W"`` the network takes, e.g. ``"224,224"``
``posenet.resize``         shorter side the image is resized to before the centre crop
``posenet.scene_frame``    frame id of the scene, e.g. ``map``
``posenet.architecture``,  provenance (optional), shown in logs and diagnostics
``posenet.dataset``,
``posenet.median_error``
``posenet.uncertainty_     format 2 only, optional: name of an output of log-variances,
output``                   ``[N,6]`` (x, y, z position in m^2 in the scene frame; rotation
                           about the scene frame's fixed x, y, z axes in rad^2) or ``[N,2]``
                           (isotropic: one position and one rotation log-variance)
=========================  =================================================================

The rotation part of the uncertainty is the variance of a small-angle rotation vector
``dtheta`` about the scene frame's fixed axes, applied on the left: ``R_true = Exp(dtheta) @
R_estimate`` (``posenet_core.covariance``'s convention, and geometry_msgs/PoseWithCovariance's
"fixed-axis" rotation covariance). Format 1 files, and format 2 files without the key, carry no
uncertainty: the node then publishes its configured fixed covariance.

Extra keys are allowed and ignored (a format 1 file's ``posenet.uncertainty_output`` too: the
key did not exist in that version). The file is read with ONNX Runtime (the ``onnx`` package is
not a runtime dependency on the robot).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from posenet_ros.errors import ModelFileError

FORMAT_VERSION = "2"
"""The newest contract version (what a model with an uncertainty output declares)."""
SUPPORTED_FORMAT_VERSIONS: tuple[str, ...] = ("1", FORMAT_VERSION)
UNCERTAINTY_KEY = "posenet.uncertainty_output"
#: Widths the uncertainty output may have: 6 (diagonal) or 2 (isotropic position, rotation).
UNCERTAINTY_WIDTHS: tuple[int, ...] = (6, 2)

REQUIRED_KEYS: tuple[str, ...] = (
    "posenet.format",
    "posenet.input",
    "posenet.outputs",
    "posenet.input_size",
    "posenet.resize",
    "posenet.scene_frame",
)
OPTIONAL_KEYS: tuple[str, ...] = (
    "posenet.architecture",
    "posenet.dataset",
    "posenet.median_error",
)

EXPORT_HINT = (
    "export one with `python -m posenet_train.export --checkpoint CKPT --output model.onnx` "
    "(see README, 'Training a model')"
)

_UNKNOWN = "unknown"


def _error(path: str, problem: str) -> ModelFileError:
    return ModelFileError(f"model file {path}: {problem}; {EXPORT_HINT}")


@dataclass(frozen=True)
class ModelInfo:
    """What the node needs to know about a model file, validated against the contract."""

    path: str
    input_name: str
    position_output: str
    orientation_output: str
    input_hw: tuple[int, int]
    resize_shorter: int
    scene_frame: str
    architecture: str
    dataset: str
    median_error: str
    format_version: str
    # All raw metadata_props; left out of the hash (a dict is unhashable).
    metadata: dict[str, str] = field(default_factory=dict, hash=False)
    # Format 2: name of the [N,6] / [N,2] log-variance output; None when the file has none.
    uncertainty_output: str | None = None

    @property
    def name(self) -> str:
        """Short human-readable name for logs: ``"model.onnx (googlenet)"``."""
        return f"{os.path.basename(self.path)} ({self.architecture})"


def _parse_positive_int(text: str) -> int | None:
    text = text.strip()
    if not text.isdigit():  # also rejects signs, decimals and empty strings
        return None
    value = int(text)
    return value if value > 0 else None


def parse_metadata(metadata: dict[str, str], path: str = "<memory>") -> ModelInfo:
    """Validate a ``metadata_props`` dict against the contract and return the ModelInfo.

    Pure function (no file access). Raises ModelFileError naming the key, the bad value and what
    is allowed: missing keys, an unsupported ``posenet.format``, ``posenet.input_size`` not
    ``"H,W"`` positive integers, ``posenet.resize`` not a positive integer ``>= min(H, W)``,
    ``posenet.outputs`` not exactly two distinct comma-separated names, an empty input name, or
    an empty/whitespace/leading-slash ``posenet.scene_frame`` (tf2 rejects those frame ids),
    or (format 2) a ``posenet.uncertainty_output`` that is empty or names the position or
    orientation output.
    """
    metadata = {str(k): str(v) for k, v in dict(metadata).items()}
    missing = [key for key in REQUIRED_KEYS if key not in metadata]
    if missing:
        raise _error(
            path,
            f"missing metadata key(s) {', '.join(missing)} (the posenet contract needs "
            f"{', '.join(REQUIRED_KEYS)}; found {', '.join(sorted(metadata)) or 'none'})",
        )

    format_version = metadata["posenet.format"].strip()
    if format_version not in SUPPORTED_FORMAT_VERSIONS:
        raise _error(
            path,
            f"unsupported posenet.format {format_version!r}; this node reads version(s) "
            f"{', '.join(SUPPORTED_FORMAT_VERSIONS)}",
        )

    input_name = metadata["posenet.input"].strip()
    if not input_name:
        raise _error(path, "posenet.input is empty; expected the input tensor's name")

    output_names = [name.strip() for name in metadata["posenet.outputs"].split(",")]
    if len(output_names) != 2 or not all(output_names) or output_names[0] == output_names[1]:
        raise _error(
            path,
            f"posenet.outputs {metadata['posenet.outputs']!r} must be two different "
            "comma-separated tensor names, position then orientation (e.g. "
            "'position,orientation')",
        )

    size_parts = metadata["posenet.input_size"].split(",")
    size_values = [_parse_positive_int(part) for part in size_parts]
    if len(size_values) != 2 or None in size_values:
        raise _error(
            path,
            f"posenet.input_size {metadata['posenet.input_size']!r} must be 'H,W' with two "
            "positive integers (e.g. '224,224')",
        )
    input_hw = (int(size_values[0]), int(size_values[1]))

    resize_shorter = _parse_positive_int(metadata["posenet.resize"])
    if resize_shorter is None or resize_shorter < min(input_hw):
        raise _error(
            path,
            f"posenet.resize {metadata['posenet.resize']!r} must be a positive integer >= "
            f"min(H, W) = {min(input_hw)} of posenet.input_size {input_hw[0]},{input_hw[1]} "
            "(the shorter image side after resizing must cover the centre crop)",
        )

    scene_frame = metadata["posenet.scene_frame"]
    if not scene_frame.strip() or scene_frame != scene_frame.strip() or " " in scene_frame:
        raise _error(
            path,
            f"posenet.scene_frame {scene_frame!r} must be a non-empty frame id without "
            "whitespace (e.g. 'map')",
        )
    if scene_frame.startswith("/"):
        raise _error(
            path,
            f"posenet.scene_frame {scene_frame!r} starts with '/'; ROS 2 frame ids have no "
            f"leading slash (use {scene_frame.lstrip('/')!r})",
        )

    uncertainty_output = None
    if format_version != "1" and UNCERTAINTY_KEY in metadata:
        uncertainty_output = metadata[UNCERTAINTY_KEY].strip()
        if not uncertainty_output or "," in uncertainty_output:
            raise _error(
                path,
                f"{UNCERTAINTY_KEY} {metadata[UNCERTAINTY_KEY]!r} must be one tensor name (the "
                "[N,6] or [N,2] log-variance output), or the key must be left out",
            )
        if uncertainty_output in output_names:
            raise _error(
                path,
                f"{UNCERTAINTY_KEY} {uncertainty_output!r} is also in posenet.outputs; the "
                "log-variances need an output of their own",
            )

    return ModelInfo(
        path=path,
        input_name=input_name,
        position_output=output_names[0],
        orientation_output=output_names[1],
        input_hw=input_hw,
        resize_shorter=resize_shorter,
        scene_frame=scene_frame,
        architecture=metadata.get("posenet.architecture", _UNKNOWN).strip() or _UNKNOWN,
        dataset=metadata.get("posenet.dataset", _UNKNOWN).strip() or _UNKNOWN,
        median_error=metadata.get("posenet.median_error", _UNKNOWN).strip() or _UNKNOWN,
        format_version=format_version,
        metadata=metadata,
        uncertainty_output=uncertainty_output,
    )


def _dims(shape: Any) -> list[Any]:
    """ORT shape -> list; symbolic dims stay strings (or None), static dims are ints."""
    return list(shape) if shape is not None else []


def _shape_text(shape: Any) -> str:
    return "[" + ",".join("?" if d is None else str(d) for d in _dims(shape)) + "]"


def validate_session(session: Any, info: ModelInfo) -> None:
    """Check an ONNX Runtime session's inputs and outputs against ``info`` (the contract).

    ``session`` is anything with ONNX Runtime's ``get_inputs()``/``get_outputs()`` (each item
    with ``name``, ``shape``, ``type``), so a backend that already holds a session can check it
    without loading the file again. Checks: exactly one input, named ``info.input_name``,
    ``tensor(float)`` of rank 4 with channel dimension 3 and, where static, H and W equal to
    ``info.input_hw``; the two named outputs exist, are floating point, and their last
    dimensions are 3 (position) and 4 (orientation wxyz); the uncertainty output, when ``info``
    names one, exists, is floating point, and its last dimension is 6 or 2. Raises
    ModelFileError.
    """
    path = info.path
    inputs = list(session.get_inputs())
    input_names = [item.name for item in inputs]
    if info.input_name not in input_names:
        raise _error(
            path,
            f"posenet.input names tensor {info.input_name!r}, but the graph's inputs are "
            f"{', '.join(input_names) or 'none'}",
        )
    if len(inputs) != 1:
        raise _error(
            path,
            f"the graph has {len(inputs)} inputs ({', '.join(input_names)}); the contract "
            "allows exactly one, the image",
        )
    image = inputs[0]
    dims = _dims(image.shape)
    if image.type != "tensor(float)":
        raise _error(
            path, f"input {image.name!r} has type {image.type}; the contract needs tensor(float)"
        )
    if len(dims) != 4:
        raise _error(
            path,
            f"input {image.name!r} has shape {_shape_text(image.shape)} (rank {len(dims)}); "
            "the contract needs rank 4 [N,3,H,W]",
        )
    if isinstance(dims[1], int) and dims[1] != 3:
        raise _error(
            path,
            f"input {image.name!r} has shape {_shape_text(image.shape)} with {dims[1]} "
            "channels; the contract needs 3 (RGB) in [N,3,H,W]",
        )
    for axis, label, expected in ((2, "H", info.input_hw[0]), (3, "W", info.input_hw[1])):
        if isinstance(dims[axis], int) and dims[axis] != expected:
            raise _error(
                path,
                f"input {image.name!r} has shape {_shape_text(image.shape)} but "
                f"posenet.input_size says {label} = {expected}",
            )

    outputs = {item.name: item for item in session.get_outputs()}
    # (name, allowed last dimensions, what it is, the metadata key that names it)
    checks: list[tuple[str, tuple[int, ...], str, str]] = [
        (info.position_output, (3,), "position [N,3]", "posenet.outputs"),
        (info.orientation_output, (4,), "orientation wxyz [N,4]", "posenet.outputs"),
    ]
    if info.uncertainty_output is not None:
        checks.append(
            (
                info.uncertainty_output,
                UNCERTAINTY_WIDTHS,
                "log-variances [N,6] or [N,2]",
                UNCERTAINTY_KEY,
            )
        )
    for name, widths, what, label in checks:
        item = outputs.get(name)
        if item is None:
            raise _error(
                path,
                f"{label} names {name!r} ({what}), but the graph's outputs are "
                f"{', '.join(outputs) or 'none'}",
            )
        if item.type not in ("tensor(float)", "tensor(double)", "tensor(float16)"):
            raise _error(
                path,
                f"output {name!r} has type {item.type}; the contract needs a float {what}",
            )
        out_dims = _dims(item.shape)
        if not out_dims or (isinstance(out_dims[-1], int) and out_dims[-1] not in widths):
            raise _error(
                path,
                f"output {name!r} has shape {_shape_text(item.shape)}; the contract needs "
                f"{what} (last dimension {' or '.join(str(w) for w in widths)})",
            )


def load_session_for_inspection(path: str) -> Any:
    """Open ``path`` with ONNX Runtime on the CPU, cheaply (no graph optimisation, one thread).

    Raises ModelFileError when the file is missing or ONNX Runtime cannot load it.
    """
    if not os.path.exists(path):
        raise ModelFileError(f"model file not found: {path}; {EXPORT_HINT}")
    if not os.path.isfile(path):
        raise _error(path, "is not a regular file")
    import onnxruntime as ort  # deferred: importing ORT takes ~0.2 s, parse_metadata needs none

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own pybind exception types for every load failure
        raise _error(path, f"cannot be loaded as an ONNX model: {exc}") from exc


def load_model_info(path: str, session: Any = None) -> ModelInfo:
    """Read, validate and describe the model file at ``path``.

    Opens it with ONNX Runtime on the CPU (or uses ``session`` when the caller already holds
    one for this file, so the file is loaded once), validates the metadata (``parse_metadata``)
    and the graph's input/output signature (``validate_session``). Raises ModelFileError with
    the file name, the problem and how to produce a valid file.
    """
    path = os.fspath(path)
    if session is None:
        session = load_session_for_inspection(path)
    try:
        metadata = dict(session.get_modelmeta().custom_metadata_map)
    except Exception as exc:
        raise _error(path, f"its metadata cannot be read: {exc}") from exc
    info = parse_metadata(metadata, path=path)
    validate_session(session, info)
    return info
