"""The exception type of the structure-from-motion labelling tool."""

from __future__ import annotations

from posenet_train.errors import PoseNetTrainError

__all__ = ["SfmError"]


class SfmError(PoseNetTrainError):
    """Bad input (video, image folder, bag, topic, odometry), failed reconstruction or alignment,
    or an output folder the tool must not write into. The message names the problem."""
