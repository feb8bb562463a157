"""The node's exception types.

Library code raises these (never bare ``ValueError``/``RuntimeError``) so the node can tell a bad
frame or a bad model file from a programming error, log one clear message and keep running.
The base class and the types the trainer shares (pose, image messages, preprocessing, model
file) come from ``posenet_core.errors``; this module adds what only the node raises.
"""

from posenet_core.errors import (
    ImageDecodeError,
    InvalidPoseError,
    ModelFileError,
    PoseNetError,
    PreprocessError,
)

__all__ = [
    "BackendError",
    "ImageDecodeError",
    "InvalidPoseError",
    "ModelFileError",
    "PoseNetError",
    "PreprocessError",
]


class BackendError(PoseNetError):
    """An inference backend cannot be created or failed while running."""
