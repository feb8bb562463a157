"""Shared pytest set-up of posenet_core's tests: the middlebury_dino fixture, this folder's
helper modules made importable, and the refinement tests' exact planar scene.

The planar scene is exact: images are rendered by a homography of one texture, and a map
keypoint's 3-D point is its ray's intersection with the plane, so a refined pose can be checked
against the rendering pose to sub-millimetre level without any triangulation.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from planar_scene import K_640, PlanarScene, build_site_map, keyframe_poses, look_at  # noqa: E402

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
