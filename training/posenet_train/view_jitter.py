"""Label-exact view augmentation: a small random turn of the camera about its own centre.

A camera that turns by ``R_delta`` (expressed in its own optical frame: x right, y down,
z forward) without moving sees a point at camera coordinates ``X`` at ``X' = R_delta^T X``, so
its image is the old one warped by the homography ``H = K R_delta^T K^-1`` (old pixels to new
pixels, OpenCV's pixel-centre convention) and its pose is ``T_world_camera`` with the rotation
``R_world_camera @ R_delta`` and the same position. Nothing about the pose is approximated: the
image's content is exact wherever the old image saw it, and only the border the turn uncovers is
made up (:data:`BORDER`).

The turn is drawn as pan (about y) and tilt (about x) angles up to ``view_fraction`` of the
camera's horizontal and vertical field of view, and a roll (about the optical axis z) up to
``roll_deg``. Pan and tilt need the focal length (:class:`posenet_core.datasets.CameraIntrinsics`);
an image without matching intrinsics (none found, or another size or orientation than they
describe) is only rolled, about its centre: a pure roll's homography does not depend on the
focal length when ``fx == fy``, and is exact when the principal point is at the centre.

Randomness is drawn from torch's RNG only (see :mod:`posenet_train.data`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from posenet_core.geometry import matrix_to_quat, quat_to_matrix
from posenet_train.errors import PoseNetTrainError

__all__ = [
    "BORDER",
    "MAX_ROLL_DEG",
    "MAX_VIEW_FRACTION",
    "ViewJitter",
    "check_jitter",
    "jitter_rotation",
    "rotated_quat_wxyz",
    "rotation_homography",
    "scaled_camera_matrix",
    "warp_image",
]

#: Largest pan/tilt range, as a fraction of the field of view: beyond half of it most of the
#: image would be made-up border.
MAX_VIEW_FRACTION = 0.5
#: Largest roll range, degrees.
MAX_ROLL_DEG = 180.0
#: How the uncovered border is filled: the nearest edge pixel repeated (cv2.BORDER_REPLICATE).
#: Reflecting would copy real structure (landmarks) into places where the scene does not have
#: it, contradicting the label; a constant colour draws a hard, rotation-dependent edge that the
#: evaluation images never have. Repeating the edge invents neither.
BORDER = "replicate"


def check_jitter(view_fraction: float, roll_deg: float) -> None:
    """Raise PoseNetTrainError naming the bad value and the allowed range."""
    if not (math.isfinite(view_fraction) and 0.0 <= view_fraction <= MAX_VIEW_FRACTION):
        raise PoseNetTrainError(
            f"view_jitter must be a fraction of the field of view in [0, {MAX_VIEW_FRACTION}], "
            f"got {view_fraction!r}"
        )
    if not (math.isfinite(roll_deg) and 0.0 <= roll_deg <= MAX_ROLL_DEG):
        raise PoseNetTrainError(
            f"roll_jitter_deg must be in [0, {MAX_ROLL_DEG:g}] degrees, got {roll_deg!r}"
        )


def _rx(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def _ry(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def _rz(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def jitter_rotation(pan_rad: float, tilt_rad: float, roll_rad: float) -> np.ndarray:
    """``R_delta`` (the new camera's axes in the old camera's frame): pan about y, then tilt
    about the panned x, then roll about the new optical axis."""
    return _ry(pan_rad) @ _rx(tilt_rad) @ _rz(roll_rad)


def rotation_homography(camera_matrix: np.ndarray, r_delta: np.ndarray) -> np.ndarray:
    """``K R_delta^T K^-1``: old pixel (x, y, 1) to new pixel, for a camera turned by
    ``r_delta`` about its centre (the form cv2.warpPerspective takes)."""
    k = np.asarray(camera_matrix, dtype=np.float64)
    return k @ np.asarray(r_delta, dtype=np.float64).T @ np.linalg.inv(k)


def rotated_quat_wxyz(quat_wxyz: np.ndarray, r_delta: np.ndarray) -> np.ndarray:
    """The label of the turned camera: ``R_world_camera @ R_delta`` as quat_wxyz."""
    return matrix_to_quat(quat_to_matrix(np.asarray(quat_wxyz, dtype=np.float64)) @ r_delta)


def scaled_camera_matrix(
    camera_matrix: np.ndarray, from_hw: tuple[int, int], to_hw: tuple[int, int]
) -> np.ndarray:
    """K of an image resized from ``from_hw`` to ``to_hw`` (pixel centres at integers: a pixel
    coordinate u becomes (u + 0.5) * scale - 0.5)."""
    sy = to_hw[0] / from_hw[0]
    sx = to_hw[1] / from_hw[1]
    k = np.asarray(camera_matrix, dtype=np.float64)
    return np.array(
        [
            [k[0, 0] * sx, k[0, 1] * sx, (k[0, 2] + 0.5) * sx - 0.5],
            [0.0, k[1, 1] * sy, (k[1, 2] + 0.5) * sy - 0.5],
            [0.0, 0.0, 1.0],
        ]
    )


def warp_image(rgb_hwc: np.ndarray, homography: np.ndarray) -> np.ndarray:
    """``rgb_hwc`` warped by ``homography`` (old to new pixels), same size, bilinear,
    border :data:`BORDER`."""
    import cv2

    height, width = rgb_hwc.shape[:2]
    return cv2.warpPerspective(
        rgb_hwc,
        np.asarray(homography, dtype=np.float64),
        (width, height),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )


@dataclass(frozen=True)
class ViewJitter:
    """The augmentation's ranges: pan/tilt up to ``view_fraction`` of the field of view (needs
    intrinsics), roll up to ``roll_deg`` degrees. Both zero: the augmentation is off."""

    view_fraction: float = 0.0
    roll_deg: float = 0.0

    def __post_init__(self) -> None:
        check_jitter(float(self.view_fraction), float(self.roll_deg))

    @property
    def active(self) -> bool:
        """Whether any image is changed."""
        return self.view_fraction > 0.0 or self.roll_deg > 0.0

    def draw(
        self,
        image_hw: tuple[int, int],
        camera_matrix: np.ndarray | None,
        generator: torch.Generator | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(R_delta, K)`` for one image of ``image_hw`` pixels: angles drawn uniformly (torch
        RNG) within the ranges. ``camera_matrix`` is this image's K (at this size), or None: then
        no pan/tilt, and the roll is about the image centre."""
        u = (2.0 * torch.rand(3, generator=generator, dtype=torch.float64) - 1.0).tolist()
        roll = math.radians(self.roll_deg) * u[2]
        if camera_matrix is None:
            height, width = image_hw
            f = float(max(height, width))
            k = np.array([[f, 0.0, (width - 1) / 2.0], [0.0, f, (height - 1) / 2.0], [0, 0, 1.0]])
            return jitter_rotation(0.0, 0.0, roll), k
        k = np.asarray(camera_matrix, dtype=np.float64)
        height, width = image_hw
        half_fov_x = math.atan2(width / 2.0, k[0, 0])
        half_fov_y = math.atan2(height / 2.0, k[1, 1])
        pan = self.view_fraction * 2.0 * half_fov_x * u[0]
        tilt = self.view_fraction * 2.0 * half_fov_y * u[1]
        return jitter_rotation(pan, tilt, roll), k

    def apply(
        self,
        rgb_hwc: np.ndarray,
        quat_wxyz: np.ndarray,
        camera_matrix: np.ndarray | None,
        generator: torch.Generator | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The turned camera's ``(image, quat_wxyz)``; the input unchanged when not active."""
        if not self.active:
            return rgb_hwc, np.asarray(quat_wxyz)
        r_delta, k = self.draw(rgb_hwc.shape[:2], camera_matrix, generator)
        image = warp_image(rgb_hwc, rotation_homography(k, r_delta))
        return image, rotated_quat_wxyz(quat_wxyz, r_delta)
