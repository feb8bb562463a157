"""What every inference backend shares: the interface, the input check and the named outputs.

A backend runs the model file's network and returns **every output the contract names**
(:func:`output_names`: position, orientation and, when the file declares one, the uncertainty
output) as ``{name: float64 array}``; the pipeline picks what it needs by name. Values are raw
network outputs: nothing is normalised or checked for NaN here (that is the pipeline's job).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from posenet_core.contract import ModelInfo
from posenet_core.preprocess import has_image_layout
from posenet_ros.errors import BackendError

__all__ = ["Backend", "check_image_batch", "checked_outputs", "output_names"]


@runtime_checkable
class Backend(Protocol):
    """What the node needs from an inference backend."""

    name: str

    def infer(self, image_BCHW: np.ndarray) -> dict[str, np.ndarray]:
        """Run the network on a float32 ``[N, 3, H, W]`` batch (RGB, 0..1).

        Returns ``{output name: float64 array}`` for every name of :func:`output_names`:
        ``[N, 3]`` position (m), ``[N, 4]`` quaternion wxyz (not normalised) and, when the model
        file declares one, its ``[N, 6]`` / ``[N, 2]`` log-variances. Raises BackendError when
        inference fails.
        """
        ...

    def describe(self) -> str:
        """One line for logs/diagnostics: runtime, version, device, threads."""
        ...


def output_names(info: ModelInfo) -> list[str]:
    """The outputs a backend returns: position, orientation and the uncertainty output (when
    the model file declares one), as the contract names them."""
    names = [info.position_output, info.orientation_output]
    if info.uncertainty_output is not None:
        names.append(info.uncertainty_output)
    return names


def check_image_batch(image_BCHW: np.ndarray) -> None:
    """BackendError unless ``image_BCHW`` is a float32 ``[N,3,H,W]`` array."""
    if not has_image_layout(image_BCHW, ndim=4, channel_axis=1, dtype=np.float32):
        raise BackendError(
            "input must be a float32 [N,3,H,W] array, got shape "
            f"{getattr(image_BCHW, 'shape', None)} dtype {getattr(image_BCHW, 'dtype', None)}"
        )


def checked_outputs(
    values: dict[str, np.ndarray], info: ModelInfo, batch: int, source: str
) -> dict[str, np.ndarray]:
    """``values`` (output name -> array, from ``source``: "model", "engine") as float64 arrays;
    BackendError when the position or orientation does not have ``batch`` rows of 3 and 4."""
    outputs = {name: np.asarray(values[name], dtype=np.float64) for name in output_names(info)}
    position_m = outputs[info.position_output]
    quat_wxyz = outputs[info.orientation_output]
    if position_m.shape != (batch, 3) or quat_wxyz.shape != (batch, 4):
        raise BackendError(
            f"{source} outputs have shapes {position_m.shape} and {quat_wxyz.shape}; expected "
            f"({batch}, 3) position and ({batch}, 4) orientation"
        )
    return outputs
