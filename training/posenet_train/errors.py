"""Exception types of posenet_train.

Library code raises these (never bare ``ValueError``/``RuntimeError``) so that CLIs can turn them
into one clear message and tests can check for them precisely. The base class and the dataset
error are posenet_core's (the readers live there); ``PoseNetTrainError`` is the name the trainer
has always caught them by.
"""

from __future__ import annotations

from posenet_core.errors import DatasetError, PoseNetError

__all__ = ["PoseNetTrainError", "DatasetError", "ModelError", "CheckpointError"]

PoseNetTrainError = PoseNetError
"""The project's one base class (``posenet_core.errors.PoseNetError``) under the trainer's name."""


class ModelError(PoseNetTrainError):
    """An unknown model name, bad model arguments or an unusable model file."""


class CheckpointError(PoseNetTrainError):
    """A checkpoint file is missing, corrupt or does not match the model it is loaded into."""
