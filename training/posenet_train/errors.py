"""Exception types of posenet_train.

Library code raises these (never bare ``ValueError``/``RuntimeError``) so that CLIs can turn them
into one clear message and tests can check for them precisely.
"""

from __future__ import annotations

__all__ = ["PoseNetTrainError", "DatasetError", "ModelError", "CheckpointError"]


class PoseNetTrainError(Exception):
    """Base class of every error raised on purpose by posenet_train."""


class DatasetError(PoseNetTrainError):
    """A dataset is missing or malformed; the message names the file, line number and value."""


class ModelError(PoseNetTrainError):
    """An unknown model name, bad model arguments or an unusable model file."""


class CheckpointError(PoseNetTrainError):
    """A checkpoint file is missing, corrupt or does not match the model it is loaded into."""
