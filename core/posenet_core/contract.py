"""The model-file contract: the ``posenet.*`` metadata keys of the ``.onnx`` file, their parsing
and validation, the graph signature it promises, and the metadata the trainer writes.

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
``posenet.dataset_         optional: SHA-256 of the training split's image names and poses
fingerprint``              (``posenet_core.mapfile.split_fingerprint``); a map file of another
                           fingerprint is refused by the node
=========================  =================================================================

The rotation part of the uncertainty is the variance of a small-angle rotation vector
``dtheta`` about the scene frame's fixed axes, applied on the left: ``R_true = Exp(dtheta) @
R_estimate`` (``posenet_core.covariance``'s convention, and geometry_msgs/PoseWithCovariance's
"fixed-axis" rotation covariance). Format 1 files, and format 2 files without the key, carry no
uncertainty: the node then publishes its configured fixed covariance.

Extra keys are allowed and ignored (a format 1 file's ``posenet.uncertainty_output`` too: the
key did not exist in that version). The trainer writes the metadata with
:func:`contract_metadata` and the node reads it with :func:`parse_metadata`
(``posenet_ros.model_file`` opens the file with ONNX Runtime), so both sides use the same keys
and rules. Nothing here opens a file:
:func:`validate_session` checks anything shaped like an ONNX Runtime session.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from posenet_core.errors import ModelFileError

__all__ = [
    "EXPORT_HINT",
    "FORMAT_VERSION",
    "FORMAT_VERSION_NO_UNCERTAINTY",
    "KEY_ARCHITECTURE",
    "KEY_DATASET",
    "KEY_DATASET_FINGERPRINT",
    "KEY_FORMAT",
    "KEY_INPUT",
    "KEY_INPUT_SIZE",
    "KEY_MEDIAN_ERROR",
    "KEY_OUTPUTS",
    "KEY_RESIZE",
    "KEY_SCENE_FRAME",
    "OPTIONAL_KEYS",
    "ORT_DISABLED_OPTIMIZERS",
    "REQUIRED_KEYS",
    "SUPPORTED_FORMAT_VERSIONS",
    "UNCERTAINTY_KEY",
    "UNCERTAINTY_WIDTHS",
    "ModelInfo",
    "contract_metadata",
    "format_median_error",
    "parse_median_error",
    "parse_metadata",
    "scene_frame_problem",
    "validate_session",
]

FORMAT_VERSION = "2"
"""The newest contract version (what a model with an uncertainty output declares)."""
FORMAT_VERSION_NO_UNCERTAINTY = "1"
"""The version of a file without an uncertainty output (every node version reads it)."""
SUPPORTED_FORMAT_VERSIONS: tuple[str, ...] = (FORMAT_VERSION_NO_UNCERTAINTY, FORMAT_VERSION)
UNCERTAINTY_KEY = "posenet.uncertainty_output"
#: Widths the uncertainty output may have: 6 (diagonal) or 2 (isotropic position, rotation).
UNCERTAINTY_WIDTHS: tuple[int, ...] = (6, 2)

KEY_FORMAT = "posenet.format"
KEY_INPUT = "posenet.input"
KEY_OUTPUTS = "posenet.outputs"
KEY_INPUT_SIZE = "posenet.input_size"
KEY_RESIZE = "posenet.resize"
KEY_SCENE_FRAME = "posenet.scene_frame"
KEY_ARCHITECTURE = "posenet.architecture"
KEY_DATASET = "posenet.dataset"
KEY_MEDIAN_ERROR = "posenet.median_error"
# SHA-256 of the training split (posenet_core.mapfile.split_fingerprint): a map file records the
# same, and the node refuses a map of another dataset version. Optional (older files lack it).
KEY_DATASET_FINGERPRINT = "posenet.dataset_fingerprint"

REQUIRED_KEYS: tuple[str, ...] = (
    KEY_FORMAT,
    KEY_INPUT,
    KEY_OUTPUTS,
    KEY_INPUT_SIZE,
    KEY_RESIZE,
    KEY_SCENE_FRAME,
)
OPTIONAL_KEYS: tuple[str, ...] = (KEY_ARCHITECTURE, KEY_DATASET, KEY_MEDIAN_ERROR)

EXPORT_HINT = (
    "export one with `python -m posenet_train.export --checkpoint CKPT --output model.onnx` "
    "(see README, 'Training a model')"
)

#: ONNX Runtime graph optimisers every model file is run without (node, evaluate, quantize).
#: "WeightBiasQuantization" (ONNX Runtime >= 1.20) quantises the float weights of any Conv/Gemm
#: that sits between a DequantizeLinear and a QuantizeLinear to one per-tensor INT8 scale, so
#: that it fuses into an integer kernel. In our INT8 files those are exactly the layers that
#: posenet_train.quantize keeps in FP32 on purpose, and one scale per tensor is what ruins a
#: depthwise convolution: on the demo model, "keeping" block 0's depthwise convolution in FP32
#: gave a 5x larger position difference to FP32 (0.20 m median) than quantising it per channel.
#: A name an older ONNX Runtime does not know is ignored.
ORT_DISABLED_OPTIMIZERS: tuple[str, ...] = ("WeightBiasQuantization",)

_UNKNOWN = "unknown"


def _error(path: str, problem: str) -> ModelFileError:
    return ModelFileError(f"model file {path}: {problem}; {EXPORT_HINT}")


def scene_frame_problem(scene_frame: str) -> str | None:
    """Why ``scene_frame`` cannot be ``posenet.scene_frame`` (a tf2 frame id), or None."""
    if not scene_frame.strip() or scene_frame != scene_frame.strip() or " " in scene_frame:
        return (
            f"posenet.scene_frame {scene_frame!r} must be a non-empty frame id without "
            "whitespace (e.g. 'map')"
        )
    if scene_frame.startswith("/"):
        return (
            f"posenet.scene_frame {scene_frame!r} starts with '/'; ROS 2 frame ids have no "
            f"leading slash (use {scene_frame.lstrip('/')!r})"
        )
    return None


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


def parse_metadata(
    metadata: dict[str, str], path: str = "<memory>", *, require_scene_frame: bool = True
) -> ModelInfo:
    """Validate a ``metadata_props`` dict against the contract and return the ModelInfo.

    Pure function (no file access). Raises ModelFileError naming the key, the bad value and what
    is allowed: missing keys, an unsupported ``posenet.format``, ``posenet.input_size`` not
    ``"H,W"`` positive integers, ``posenet.resize`` not a positive integer ``>= min(H, W)``,
    ``posenet.outputs`` not exactly two distinct comma-separated names, an empty input name, or
    an empty/whitespace/leading-slash ``posenet.scene_frame`` (tf2 rejects those frame ids),
    or (format 2) a ``posenet.uncertainty_output`` that is empty or names the position or
    orientation output. ``require_scene_frame`` False accepts a file without
    ``posenet.scene_frame`` (its ``scene_frame`` is then ""): tools that only run the network
    (the trainer's evaluation and quantisation) do not need it.
    """
    metadata = {str(k): str(v) for k, v in dict(metadata).items()}
    required = [k for k in REQUIRED_KEYS if require_scene_frame or k != KEY_SCENE_FRAME]
    missing = [key for key in required if key not in metadata]
    if missing:
        raise _error(
            path,
            f"its metadata lacks {', '.join(missing)} (the posenet contract requires "
            f"{', '.join(required)}; found {', '.join(sorted(metadata)) or 'none'})",
        )

    format_version = metadata[KEY_FORMAT].strip()
    if format_version not in SUPPORTED_FORMAT_VERSIONS:
        raise _error(
            path,
            f"posenet.format {format_version!r} is not supported; this reader knows version(s) "
            f"{', '.join(SUPPORTED_FORMAT_VERSIONS)}",
        )

    input_name = metadata[KEY_INPUT].strip()
    if not input_name:
        raise _error(path, "posenet.input is empty; expected the input tensor's name")

    output_names = [name.strip() for name in metadata[KEY_OUTPUTS].split(",")]
    if len(output_names) != 2 or not all(output_names) or output_names[0] == output_names[1]:
        raise _error(
            path,
            f"posenet.outputs {metadata['posenet.outputs']!r} must be two different "
            "comma-separated tensor names, position then orientation (e.g. "
            "'position,orientation')",
        )

    size_parts = metadata[KEY_INPUT_SIZE].split(",")
    size_values = [_parse_positive_int(part) for part in size_parts]
    if len(size_values) != 2 or None in size_values:
        raise _error(
            path,
            f"posenet.input_size {metadata['posenet.input_size']!r} must be 'H,W' with two "
            "positive integers (e.g. '224,224')",
        )
    input_hw = (int(size_values[0]), int(size_values[1]))

    resize_shorter = _parse_positive_int(metadata[KEY_RESIZE])
    if resize_shorter is None or resize_shorter < min(input_hw):
        raise _error(
            path,
            f"posenet.resize {metadata['posenet.resize']!r} must be a positive integer >= "
            f"min(H, W) = {min(input_hw)} of posenet.input_size {input_hw[0]},{input_hw[1]} "
            "(the shorter image side after resizing must cover the centre crop)",
        )

    scene_frame = metadata.get(KEY_SCENE_FRAME, "")
    problem = scene_frame_problem(scene_frame) if KEY_SCENE_FRAME in metadata else None
    if problem:
        raise _error(path, problem)

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
        architecture=metadata.get(KEY_ARCHITECTURE, _UNKNOWN).strip() or _UNKNOWN,
        dataset=metadata.get(KEY_DATASET, _UNKNOWN).strip() or _UNKNOWN,
        median_error=metadata.get(KEY_MEDIAN_ERROR, _UNKNOWN).strip() or _UNKNOWN,
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
            f"posenet.input names {info.input_name!r}, but the graph's inputs are "
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


def contract_metadata(
    *,
    input_name: str,
    output_names: tuple[str, str],
    input_hw: tuple[int, int],
    resize_shorter: int,
    scene_frame: str,
    architecture: str,
    dataset: str,
    median_error: str,
    uncertainty_output: str | None = None,
    dataset_fingerprint: str | None = None,
) -> dict[str, str]:
    """The ``posenet.*`` metadata of a model file (what the trainer's export writes).

    ``posenet.format`` is "2" with an uncertainty output and "1" without (every node version
    reads format 1). The result is checked with :func:`parse_metadata` before it is returned,
    so a writer cannot produce a file the node would refuse; ModelFileError says what is wrong.
    """
    metadata = {
        KEY_FORMAT: FORMAT_VERSION if uncertainty_output else FORMAT_VERSION_NO_UNCERTAINTY,
        KEY_INPUT: input_name,
        KEY_OUTPUTS: ",".join(output_names),
        KEY_INPUT_SIZE: f"{int(input_hw[0])},{int(input_hw[1])}",
        KEY_RESIZE: str(int(resize_shorter)),
        KEY_SCENE_FRAME: scene_frame,
        KEY_ARCHITECTURE: architecture,
        KEY_DATASET: dataset,
        KEY_MEDIAN_ERROR: median_error,
    }
    if uncertainty_output:
        metadata[UNCERTAINTY_KEY] = uncertainty_output
    if dataset_fingerprint:
        metadata[KEY_DATASET_FINGERPRINT] = dataset_fingerprint
    parse_metadata(metadata, "<being written>")
    return metadata


_MEDIAN_ERROR_PATTERN = re.compile(
    r"^\s*([0-9]+(?:\.[0-9]*)?(?:[eE][-+]?[0-9]+)?)\s*m\s*,"
    r"\s*([0-9]+(?:\.[0-9]*)?(?:[eE][-+]?[0-9]+)?)\s*deg\s*$"
)


def format_median_error(validation: Mapping[str, Any] | None) -> str:
    """``posenet.median_error`` text ("0.026 m, 2.22 deg") of a validation summary.

    ``validation`` holds ``median_translation_m`` and ``median_rotation_deg`` (a checkpoint's
    last validation); "unknown" when it is missing or not two finite numbers.
    """
    if not isinstance(validation, Mapping):
        return _UNKNOWN
    try:
        position_m = float(validation["median_translation_m"])
        rotation_deg = float(validation["median_rotation_deg"])
    except (KeyError, TypeError, ValueError):
        return _UNKNOWN
    if not (math.isfinite(position_m) and math.isfinite(rotation_deg)):
        return _UNKNOWN
    return f"{position_m:.3f} m, {rotation_deg:.2f} deg"


def parse_median_error(text: str | None) -> tuple[float, float] | None:
    """(metres, degrees) of a ``posenet.median_error`` text ("0.026 m, 2.22 deg").

    None when it says "unknown" or anything else that is not two finite numbers.
    """
    match = _MEDIAN_ERROR_PATTERN.match(text or "")
    if match is None:
        return None
    position_m, rotation_deg = float(match.group(1)), float(match.group(2))
    if not (math.isfinite(position_m) and math.isfinite(rotation_deg)):
        return None
    return position_m, rotation_deg
