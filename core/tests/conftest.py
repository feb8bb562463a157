"""Shared pytest set-up of posenet_core's tests: the middlebury_dino fixture, this folder's
helper modules made importable, and the refinement tests' exact planar scene.

The planar scene is exact: images are rendered by a homography of one texture, and a map
keypoint's 3-D point is its ray's intersection with the plane, so a refined pose can be checked
against the rendering pose to sub-millimetre level without any triangulation.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from dino import dino_dir  # noqa: E402


@pytest.fixture(scope="module")
def dino() -> Path:
    """The middlebury_dino dataset folder; the test is skipped where it is not present."""
    path = dino_dir()
    if not (path / "dataset_train.txt").is_file():
        pytest.skip(
            f"middlebury_dino not found at {path} (expected ../shared/datasets/middlebury_dino"
            " beside the repository, or set POSENET_DINO_DIR)"
        )
    return path


PLANE_HALF_SIZE_M = (1.0, 0.75)  # the textured rectangle on the plane z = 0
TEXTURE_PX = (800, 600)


def _texture(seed: int = 0) -> np.ndarray:
    import cv2

    rng = np.random.default_rng(seed)
    w, h = TEXTURE_PX
    image = np.full((h, w, 3), 128, np.uint8)
    for _ in range(500):
        centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        radius = int(rng.integers(3, 25))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            cv2.circle(image, centre, radius, colour, -1)
        else:
            cv2.rectangle(image, centre, (centre[0] + radius, centre[1] + radius // 2), colour, -1)
    return cv2.GaussianBlur(image, (3, 3), 0)


def look_at(centre: np.ndarray, target: np.ndarray, up=(0.0, -1.0, 0.0)) -> np.ndarray:
    """``T_world_camera`` of a camera at ``centre`` whose optical axis points at ``target``."""
    z = np.asarray(target, float) - np.asarray(centre, float)
    z /= np.linalg.norm(z)
    x = np.cross(-np.asarray(up, float), z)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    T = np.eye(4)
    T[:3, :3] = np.stack([x, y, z], axis=1)
    T[:3, 3] = centre
    return T


class PlanarScene:
    """A textured rectangle on the world plane z = 0, rendered by homographies."""

    def __init__(self, seed: int = 0) -> None:
        self.texture = _texture(seed)
        w, h = TEXTURE_PX
        sx, sy = PLANE_HALF_SIZE_M
        # texture pixel (u, v, 1) -> plane point (x, y, 1)
        self.A = np.array([[2 * sx / w, 0.0, -sx], [0.0, 2 * sy / h, -sy], [0.0, 0.0, 1.0]])

    def homography(self, T_world_camera: np.ndarray, K: np.ndarray) -> np.ndarray:
        """Plane point (x, y, 1) -> image pixel."""
        R_cw = T_world_camera[:3, :3].T
        t_cw = -R_cw @ T_world_camera[:3, 3]
        return K @ np.column_stack([R_cw[:, 0], R_cw[:, 1], t_cw])

    def render(self, T_world_camera: np.ndarray, K: np.ndarray, size=(640, 480)) -> np.ndarray:
        import cv2

        H = self.homography(T_world_camera, K) @ self.A
        return cv2.warpPerspective(
            self.texture, H, size, flags=cv2.INTER_LINEAR, borderValue=(30, 30, 30)
        )

    def backproject(self, xy: np.ndarray, T_world_camera: np.ndarray, K: np.ndarray):
        """Plane points (N, 3) of pixels, and a mask of those on the textured rectangle."""
        H = self.homography(T_world_camera, K)
        p = np.linalg.solve(H, np.column_stack([xy, np.ones(len(xy))]).T).T
        p = p[:, :2] / p[:, 2:3]
        sx, sy = PLANE_HALF_SIZE_M
        inside = (np.abs(p[:, 0]) < sx * 0.98) & (np.abs(p[:, 1]) < sy * 0.98)
        return np.column_stack([p, np.zeros(len(p))]), inside


K_640 = np.array([[500.0, 0.0, 319.5], [0.0, 500.0, 239.5], [0.0, 0.0, 1.0]])


def keyframe_poses() -> list[np.ndarray]:
    """A 3x3 grid of cameras 2 m in front of the plane, looking at it (slightly converging)."""
    poses = []
    for x in (-0.4, 0.0, 0.4):
        for y in (-0.3, 0.0, 0.3):
            centre = np.array([x, y, -2.0])
            poses.append(look_at(centre, np.array([x * 0.5, y * 0.5, 0.0])))
    return poses


def build_site_map(scene: PlanarScene, feature=None, **overrides):
    """A SiteMap of the planar scene: each keyframe's keypoints on the plane are 3-D points.

    Every observation gets its own point (the plane makes triangulation unnecessary).
    """
    from posenet_core.features import FeatureConfig, extract_features
    from posenet_core.mapfile import MapCamera, SiteMap

    feature = feature or FeatureConfig(max_keypoints=1000)
    poses = keyframe_poses()
    xy_all, desc_all, xyz_all, offsets = [], [], [], [0]
    for T in poses:
        f = extract_features(scene.render(T, K_640), feature)
        xyz, inside = scene.backproject(f.xy.astype(np.float64), T, K_640)
        xy_all.append(f.xy[inside])
        desc_all.append(f.descriptors[inside])
        xyz_all.append(xyz[inside])
        offsets.append(offsets[-1] + int(inside.sum()))
    xyz = np.concatenate(xyz_all)
    fields = dict(
        scene_frame="map",
        dataset="planar",
        dataset_fingerprint="0" * 64,
        feature=feature,
        camera=MapCamera(640, 480, 500.0, 500.0, 319.5, 239.5),
        keyframe_names=np.array([f"kf{i}.png" for i in range(len(poses))]),
        keyframe_T_world_camera=np.stack(poses),
        keyframe_obs_offset=np.array(offsets, np.int64),
        obs_xy=np.concatenate(xy_all).astype(np.float32),
        descriptor=np.concatenate(desc_all),
        obs_descriptor_index=np.arange(len(xyz), dtype=np.int32),
        obs_point_id=np.arange(len(xyz), dtype=np.int32),
        point_xyz_m=xyz,
        point_rgb=np.zeros((len(xyz), 3), np.uint8),
        point_error_px=np.zeros(len(xyz), np.float32),
        provenance={"builder": "core/tests/conftest.py"},
    )
    fields.update(overrides)
    return SiteMap(**fields)


@pytest.fixture(scope="session")
def planar_scene() -> PlanarScene:
    return PlanarScene()


@pytest.fixture(scope="session")
def planar_map(planar_scene):
    return build_site_map(planar_scene)


@pytest.fixture(scope="session")
def scene_tools():
    """The helpers above for tests (conftest modules are not importable under importlib mode)."""
    import types

    return types.SimpleNamespace(
        look_at=look_at, K_640=K_640, keyframe_poses=keyframe_poses, build_site_map=build_site_map
    )
