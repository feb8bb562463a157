"""The project's exception types.

Library code raises these (never bare ``ValueError``/``RuntimeError``) so the node can tell a bad
frame or a bad model file from a programming error, log one clear message and keep running.
"""


class PoseNetError(Exception):
    """Base class of every error the posenet_ros library raises on purpose."""


class ImageDecodeError(PoseNetError):
    """An image message cannot be turned into an RGB array (bad encoding, size, data...)."""


class PreprocessError(PoseNetError):
    """An image cannot be resized/cropped to the network input the model file asks for."""


class ModelFileError(PoseNetError):
    """The model file is missing, not ONNX, or breaks the metadata contract."""


class BackendError(PoseNetError):
    """An inference backend cannot be created or failed while running."""


class InvalidPoseError(PoseNetError):
    """A pose (e.g. a network output) is not finite or not a usable rotation."""
