"""The Refiner on an exact planar scene: accuracy, failure reasons, other intrinsics, threads."""

from __future__ import annotations

import concurrent.futures
import dataclasses

import numpy as np
import pytest

from posenet_core.refine import FAILURE_REASONS, RefineError, Refiner, RefinerConfig


def _rotation_error_deg(R_a, R_b) -> float:
    return float(np.degrees(np.arccos(np.clip((np.trace(R_a.T @ R_b) - 1) / 2, -1, 1))))


def _perturbed(T: np.ndarray, shift_m, angle_deg: float, axis=(0.0, 1.0, 0.0)) -> np.ndarray:
    import cv2

    P = T.copy()
    P[:3, 3] += shift_m
    rotvec = np.radians(angle_deg) * np.asarray(axis, float) / np.linalg.norm(axis)
    P[:3, :3] = cv2.Rodrigues(rotvec.reshape(3, 1))[0] @ T[:3, :3]
    return P


QUERY_CASES = [
    # (name, camera centre, look-at target, prior shift (m), prior rotation (deg))
    ("between keyframes", (0.2, 0.15, -1.9), (0.1, 0.05, 0.0), (0.05, -0.03, 0.02), 2.0),
    ("closer, turned", (-0.25, 0.1, -1.5), (-0.3, 0.0, 0.0), (-0.1, 0.05, 0.1), 4.0),
    ("off to the side", (0.45, -0.2, -2.2), (0.1, 0.0, 0.0), (0.0, 0.1, -0.1), 3.0),
]


@pytest.mark.parametrize(("name", "centre", "target", "shift", "angle"), QUERY_CASES)
def test_refines_to_the_rendering_pose(
    planar_scene, planar_map, scene_tools, name, centre, target, shift, angle
):
    T_true = scene_tools.look_at(np.array(centre), np.array(target))
    image = planar_scene.render(T_true, scene_tools.K_640)
    prior = _perturbed(T_true, shift, angle)
    result = Refiner(planar_map).refine(image, scene_tools.K_640, prior)
    assert result.success, result.message
    assert result.failure == ""
    assert np.linalg.norm(result.T_world_camera[:3, 3] - T_true[:3, 3]) < 0.005
    assert _rotation_error_deg(result.T_world_camera[:3, :3], T_true[:3, :3]) < 0.1
    assert result.num_inliers >= 50
    assert result.covariance.shape == (6, 6)
    assert np.all(np.linalg.eigvalsh(result.covariance) > 0)
    assert set(result.timings) == {"extract", "select", "match", "pnp"}
    assert result.time_s >= sum(result.timings.values()) * 0.99


def test_frame_of_another_size_and_intrinsics(planar_scene, planar_map, scene_tools):
    # A 960x540 camera with another focal length: K comes from the frame, not the map.
    K = np.array([[700.0, 0.0, 479.5], [0.0, 700.0, 269.5], [0.0, 0.0, 1.0]])
    T_true = scene_tools.look_at(np.array([0.1, -0.1, -2.1]), np.array([0.0, 0.0, 0.0]))
    image = planar_scene.render(T_true, K, size=(960, 540))
    result = Refiner(planar_map).refine(image, K, _perturbed(T_true, (0.05, 0, 0), 2.0))
    assert result.success, result.message
    assert np.linalg.norm(result.T_world_camera[:3, 3] - T_true[:3, 3]) < 0.005


def test_distortion_is_removed_from_the_keypoints(planar_scene, planar_map, scene_tools):
    import cv2

    T_true = scene_tools.look_at(np.array([0.0, 0.1, -2.0]), np.array([0.0, 0.0, 0.0]))
    K = scene_tools.K_640
    image = planar_scene.render(T_true, K)
    dist = np.array([-0.2, 0.05, 0.0, 0.0, 0.0])
    # distort the image: each output pixel samples the undistorted image where it maps to
    grid = np.stack(np.meshgrid(np.arange(640.0), np.arange(480.0)), axis=-1).reshape(-1, 1, 2)
    undist = cv2.undistortPoints(grid, K, dist, P=K).reshape(480, 640, 2).astype(np.float32)
    distorted = cv2.remap(image, undist[..., 0], undist[..., 1], cv2.INTER_LINEAR)
    prior = _perturbed(T_true, (0.03, 0, 0), 1.0)
    refiner = Refiner(planar_map)
    good = refiner.refine(distorted, K, prior, dist_coeffs=dist)
    assert good.success, good.message
    error_with = np.linalg.norm(good.T_world_camera[:3, 3] - T_true[:3, 3])
    assert error_with < 0.01
    # the same frame taken as undistorted fits worse: the distortion really was removed
    bad = refiner.refine(distorted, K, prior)
    if bad.success:
        assert bad.sigma_px > 1.5 * good.sigma_px


def test_frame_without_texture_fails_cleanly(planar_map, scene_tools):
    T = scene_tools.keyframe_poses()[4]
    for image in (np.full((480, 640, 3), 90, np.uint8), np.zeros((480, 640), np.uint8)):
        result = Refiner(planar_map).refine(image, scene_tools.K_640, T)
        assert not result.success
        assert result.failure == "no_texture"
        assert result.T_world_camera is None and result.covariance is None
        assert "keypoints" in result.message


def _failure(planar_scene, planar_map, scene_tools, prior=None, **config):
    T_true = scene_tools.look_at(np.array([0.2, 0.15, -1.9]), np.array([0.1, 0.05, 0.0]))
    image = planar_scene.render(T_true, scene_tools.K_640)
    prior = _perturbed(T_true, (0.05, 0, 0), 2.0) if prior is None else prior(T_true)
    return Refiner(planar_map, RefinerConfig(**config)).refine(image, scene_tools.K_640, prior)


FAILURE_CASES = [
    # (reason, config overrides, prior from truth)
    ("too_far_from_prior", {"max_prior_distance_m": 0.01}, None),
    ("too_far_from_prior", {"max_prior_angle_deg": 0.5}, None),
    ("too_few_inliers", {"min_inliers": 100000}, None),
    ("too_few_matches", {"min_matches": 100000}, None),
    # a prior looking away from the plane: no keyframe's view overlaps it
    ("no_overlapping_keyframes", {}, lambda T: _perturbed(T, (0, 0, 0), 180.0)),
]


@pytest.mark.parametrize(("reason", "config", "prior"), FAILURE_CASES)
def test_failure_reasons(planar_scene, planar_map, scene_tools, reason, config, prior):
    result = _failure(planar_scene, planar_map, scene_tools, prior, **config)
    assert reason in FAILURE_REASONS
    assert not result.success
    assert result.failure == reason, result.message
    assert result.T_world_camera is None


def test_wrong_arguments_raise_refine_error(planar_map, scene_tools):
    refiner = Refiner(planar_map)
    image = np.zeros((480, 640, 3), np.uint8)
    T = np.eye(4)
    with pytest.raises(RefineError, match="K"):
        refiner.refine(image, np.eye(2), T)
    with pytest.raises(RefineError, match="K"):
        refiner.refine(image, np.diag([-1.0, 1.0, 1.0]), T)
    with pytest.raises(RefineError, match="prior"):
        refiner.refine(image, scene_tools.K_640, np.full((4, 4), np.nan))
    with pytest.raises(RefineError, match="rotation"):
        refiner.refine(image, scene_tools.K_640, np.diag([2.0, 1.0, 1.0, 1.0]))
    with pytest.raises(RefineError, match="frame"):
        refiner.refine(np.zeros((480, 640, 3), np.float32), scene_tools.K_640, T)
    with pytest.raises(RefineError, match="frame"):
        refiner.refine(np.zeros((4, 4, 3), np.uint8), scene_tools.K_640, T)


CONFIG_ERRORS = [
    {"num_keyframes": 0},
    {"ratio": 1.5},
    {"ratio": float("nan")},
    {"min_inliers": 2},
    {"ransac_threshold_px": 0.0},
    {"max_prior_distance_m": -1.0},
    {"mutual": "yes"},
    {"num_keyframes": 2.5},
]


@pytest.mark.parametrize("overrides", CONFIG_ERRORS)
def test_config_rejects_bad_values(overrides):
    (name,) = overrides
    with pytest.raises(RefineError, match=name):
        RefinerConfig(**overrides)


def test_config_from_dict_names_unknown_keys():
    assert RefinerConfig.from_dict({"num_keyframes": 3}).num_keyframes == 3
    with pytest.raises(RefineError, match="unknown refine parameter.*colour"):
        RefinerConfig.from_dict({"colour": 1})


def test_refine_is_thread_safe(planar_scene, planar_map, scene_tools):
    refiner = Refiner(planar_map)
    jobs = []
    for centre, target, shift, angle in [c[1:] for c in QUERY_CASES] * 2:
        T_true = scene_tools.look_at(np.array(centre), np.array(target))
        jobs.append(
            (planar_scene.render(T_true, scene_tools.K_640), _perturbed(T_true, shift, angle))
        )
    serial = [refiner.refine(image, scene_tools.K_640, prior) for image, prior in jobs]
    with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
        parallel = list(pool.map(lambda j: refiner.refine(j[0], scene_tools.K_640, j[1]), jobs))
    for a, b in zip(serial, parallel, strict=True):
        assert a.success and b.success
        np.testing.assert_allclose(a.T_world_camera, b.T_world_camera, atol=1e-9)


def test_keyframe_selection_prefers_the_nearest_view(planar_map, scene_tools):
    refiner = Refiner(planar_map, RefinerConfig(num_keyframes=3))
    poses = scene_tools.keyframe_poses()
    for index in (0, 4, 8):
        chosen = refiner.select_keyframes(poses[index], scene_tools.K_640, (640, 480))
        assert chosen[0] == index
        assert len(chosen) == 3


def test_per_observation_descriptors_take_the_per_keyframe_path(
    planar_scene, planar_map, scene_tools
):
    """A map whose descriptors are not one per point is matched keyframe by keyframe."""
    m = planar_map
    doubled = dataclasses.replace(
        m,
        descriptor=np.concatenate([m.descriptor, m.descriptor]),
        obs_descriptor_index=(np.arange(m.num_observations) + m.num_observations).astype(np.int32),
    )
    T_true = scene_tools.look_at(np.array([0.2, 0.15, -1.9]), np.array([0.1, 0.05, 0.0]))
    image = planar_scene.render(T_true, scene_tools.K_640)
    prior = _perturbed(T_true, (0.05, 0, 0), 2.0)
    per_point, per_keyframe = Refiner(m), Refiner(doubled)
    assert per_point._per_point and not per_keyframe._per_point
    for refiner in (per_point, per_keyframe):
        result = refiner.refine(image, scene_tools.K_640, prior)
        assert result.success, result.message
        assert np.linalg.norm(result.T_world_camera[:3, 3] - T_true[:3, 3]) < 0.005
