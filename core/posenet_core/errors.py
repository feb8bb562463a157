"""The exception types of posenet_core, and the one base class of the whole project.

Library code raises these (never bare ``ValueError``/``RuntimeError``) so that callers can tell a
bad input (a frame, a pose, a dataset file, a model file) from a programming error: the node
logs one clear message and keeps running, a CLI prints it and exits non-zero, tests check the
type. ``posenet_ros.errors`` and ``posenet_train.errors`` add their own subclasses of
:class:`PoseNetError` (and keep their old names as aliases), so one ``except PoseNetError``
catches every deliberate error on either side.
"""

from __future__ import annotations

__all__ = [
    "CalibrationDataError",
    "DatasetError",
    "EvaluationError",
    "ImageDecodeError",
    "InvalidPoseError",
    "ModelFileError",
    "PoseNetError",
    "PreprocessError",
]


class PoseNetError(Exception):
    """Base class of every error the project's code raises on purpose."""


class InvalidPoseError(PoseNetError):
    """A pose (e.g. a network output) is not finite or not a usable rotation."""


class DatasetError(PoseNetError):
    """A dataset is missing or malformed; the message names the file, line number and value."""


class ModelFileError(PoseNetError):
    """The model file is missing, not ONNX, or breaks the metadata contract."""


class ImageDecodeError(PoseNetError):
    """An image message cannot be turned into an RGB array (bad encoding, size, data...)."""


class PreprocessError(PoseNetError):
    """An image cannot be resized/cropped to the network input the model file asks for."""


class CalibrationDataError(PoseNetError):
    """The calibration images beside a model file are missing or not what the model takes."""


class EvaluationError(PoseNetError):
    """Bad evaluation input (a pose, a tolerance, a reference summary) or an unwritable output."""
