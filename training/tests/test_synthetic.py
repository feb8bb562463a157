"""Tests of the embedded synthetic scene: geometry of the renderer, determinism, the dataset it
writes (read back by the dataset loader), reuse/overwrite, and argument checking."""

from __future__ import annotations

import csv
import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from posenet_core.geometry import matrix_to_quat, pose_to_matrix, project_points
from posenet_train import synthetic
from posenet_train.datasets import load_split
from posenet_train.errors import PoseNetTrainError
from posenet_train.synthetic import (
    COMPLETE_MARKER,
    IN_PROGRESS_MARKER,
    Face,
    PinholeCamera,
    Scene,
    SyntheticSceneError,
    build_scene,
    look_at_rotation,
    make_trajectories,
    raycast,
    render,
    rotation_from_yaw_pitch_roll,
)

SMALL = {"width": 160, "height": 120}


@pytest.fixture(scope="module")
def scene() -> Scene:
    return build_scene(0)


@pytest.fixture(scope="module")
def small_camera() -> PinholeCamera:
    return PinholeCamera.default(**SMALL)


def _pose(position, yaw_deg, pitch_deg=0.0, roll_deg=0.0) -> np.ndarray:
    rotation = rotation_from_yaw_pitch_roll(
        math.radians(yaw_deg), math.radians(pitch_deg), math.radians(roll_deg)
    )
    return pose_to_matrix(position, matrix_to_quat(rotation))


def _ramp_texture(size: int = 256) -> np.ndarray:
    """R = texel column, G = texel row, B = 128: colour is a linear function of texel position."""
    cols, rows = np.meshgrid(np.arange(size), np.arange(size))
    return np.stack([cols, rows, np.full_like(cols, 128)], axis=2).astype(np.uint8)


def _bilinear(image: np.ndarray, x: float, y: float):
    """Bilinear interpolation in float64 at a sub-pixel position (pixel centres at integers)."""
    x0, y0 = int(math.floor(x)), int(math.floor(y))
    fx, fy = x - x0, y - y0
    patch = image[y0 : y0 + 2, x0 : x0 + 2]
    top = patch[0, 0] * (1 - fx) + patch[0, 1] * fx
    bottom = patch[1, 0] * (1 - fx) + patch[1, 1] * fx
    return top * (1 - fy) + bottom * fy


def _reference_hit(scene: Scene, t_world_camera: np.ndarray, k: np.ndarray, x: float, y: float):
    """Independent float64 ray cast of one pixel: (depth, face index, s, t) of the nearest face."""
    rotation, center = t_world_camera[:3, :3], t_world_camera[:3, 3]
    ray_world = rotation @ np.linalg.solve(k, np.array([x, y, 1.0]))  # camera z = 1
    best = (np.inf, -1, 0.0, 0.0)
    for i, face in enumerate(scene.faces):
        denom = float(face.normal @ ray_world)
        if denom >= 0.0:  # parallel, or hitting the back side
            continue
        lam = float(face.normal @ (face.origin_m - center)) / denom
        if lam <= synthetic.NEAR_PLANE_M or lam >= best[0]:
            continue
        rel = center + lam * ray_world - face.origin_m
        s = float(rel @ face.edge_u_m) / float(face.edge_u_m @ face.edge_u_m)
        t = float(rel @ face.edge_v_m) / float(face.edge_v_m @ face.edge_v_m)
        if -1e-9 <= s <= 1 + 1e-9 and -1e-9 <= t <= 1 + 1e-9:
            best = (lam, i, s, t)
    return best


# ---------------------------------------------------------------------------------------------
# The renderer's geometry


@pytest.mark.parametrize(
    ("position", "yaw_deg", "pitch_deg", "roll_deg"),
    [
        ((0.0, 0.0, 1.0), 0.0, 0.0, 0.0),  # square on
        ((0.3, -0.8, 1.4), 25.0, -10.0, 7.0),  # oblique, rolled
        ((1.2, 0.9, 0.6), -30.0, 15.0, -20.0),
    ],
)
def test_point_on_a_face_renders_where_the_pose_projects_it(
    position, yaw_deg, pitch_deg, roll_deg
):
    """A 3-D point on a known rectangle, projected with K and the pose by the project's geometry
    module, lands on a pixel whose rendered depth is the point's camera z and whose colour is the
    texture's colour at that point."""
    texture = _ramp_texture()
    # A 3 m x 3 m wall at x = 3 m facing -x (towards the camera), texture upright.
    wall = Face(
        "wall",
        origin_m=np.array([3.0, 1.5, 2.5]),
        edge_u_m=np.array([0.0, -3.0, 0.0]),
        edge_v_m=np.array([0.0, 0.0, -3.0]),
        texture_rgb=texture,
    )
    scene = Scene(seed=None, room_size_m=(8.0, 6.0, 3.0), faces=(wall,))
    camera = PinholeCamera.default(320, 240, focal_px=300.0)
    t_world_camera = _pose(position, yaw_deg, pitch_deg, roll_deg)
    rgb, depth = render(scene, t_world_camera, camera.K, camera.width, camera.height)

    rng = np.random.default_rng(3)
    checked = 0
    for s, t in rng.uniform(0.2, 0.8, size=(40, 2)):
        point = wall.origin_m + s * wall.edge_u_m + t * wall.edge_v_m
        ((x, y),) = project_points(
            point[None], camera.K, t_world_camera[:3, 3], matrix_to_quat(t_world_camera[:3, :3])
        )
        if not (1 <= x <= camera.width - 2 and 1 <= y <= camera.height - 2):
            continue
        z_camera = float((t_world_camera[:3, :3].T @ (point - t_world_camera[:3, 3]))[2])
        # Inverse depth of a plane is affine in pixel coordinates, so bilinear interpolation of
        # the rendered 1/depth at the projected sub-pixel position gives exactly 1/z there.
        assert 1.0 / _bilinear(1.0 / depth.astype(np.float64), x, y) == pytest.approx(
            z_camera, rel=1e-5
        )
        # The ramp texture's red = texel column, green = texel row (texel centres at +0.5).
        colour = _bilinear(rgb.astype(np.float64), x, y)
        assert colour[0] == pytest.approx(s * 256 - 0.5, abs=1.0)
        assert colour[1] == pytest.approx(t * 256 - 0.5, abs=1.0)
        assert colour[2] == 128
        checked += 1
    assert checked >= 20


def test_every_pixel_matches_an_independent_float64_ray_cast(scene, small_camera):
    """Nearest face, depth and texture position of pixels of real trajectory poses agree with a
    straightforward per-pixel reference (no z-buffer, no bounding boxes)."""
    trajectories = make_trajectories(scene, 8, 4)
    k = small_camera.K
    rng = np.random.default_rng(0)
    for traj in trajectories.values():
        for i in range(0, len(traj), 3):
            pose = traj.T_world_camera(i)
            hits = raycast(scene, pose, k, small_camera.width, small_camera.height)
            for _ in range(60):
                x = int(rng.integers(small_camera.width))
                y = int(rng.integers(small_camera.height))
                lam, face, s, t = _reference_hit(scene, pose, k, x, y)
                assert hits.depth_m[y, x] == pytest.approx(lam, rel=1e-4)
                if hits.face_index[y, x] != face:
                    # Only where two faces meet at (almost) the same depth may the pick differ.
                    other = scene.faces[hits.face_index[y, x]]
                    assert abs(_plane_depth(other, pose, k, x, y) - lam) < 1e-3 * lam
                    continue
                assert hits.u[y, x] == pytest.approx(s, abs=1e-4)
                assert hits.v[y, x] == pytest.approx(t, abs=1e-4)


def _plane_depth(face: Face, pose: np.ndarray, k: np.ndarray, x: int, y: int) -> float:
    ray_world = pose[:3, :3] @ np.linalg.solve(k, np.array([x, y, 1.0]))
    return float(face.normal @ (face.origin_m - pose[:3, 3])) / float(face.normal @ ray_world)


def test_back_projected_pixels_lie_on_the_faces_they_show(scene, small_camera):
    pose = _pose((1.0, -0.5, 1.5), 40.0, -10.0)
    hits = raycast(scene, pose, small_camera.K, small_camera.width, small_camera.height)
    assert np.all(np.isfinite(hits.depth_m)), "a camera inside the closed room sees a surface"
    ys, xs = np.mgrid[0 : small_camera.height, 0 : small_camera.width]
    rays = (
        np.stack([xs, ys, np.ones_like(xs)], -1).reshape(-1, 3) @ np.linalg.inv(small_camera.K).T
    )
    points = (rays * hits.depth_m.reshape(-1, 1)) @ pose[:3, :3].T + pose[:3, 3]
    for i, face in enumerate(scene.faces):
        on_face = points[hits.face_index.reshape(-1) == i]
        if len(on_face) == 0:
            continue
        assert np.abs((on_face - face.origin_m) @ face.normal).max() < 2e-3


def test_faces_are_one_sided(small_camera):
    wall = Face("wall", (3.0, 1.0, 2.0), (0.0, -2.0, 0.0), (0.0, 0.0, -2.0), _ramp_texture(8))
    scene = Scene(None, (8.0, 6.0, 3.0), (wall,))
    k, w, h = small_camera.K, small_camera.width, small_camera.height
    _, depth_front = render(scene, _pose((0.0, 0.0, 1.0), 0.0), k, w, h)
    _, depth_back = render(scene, _pose((5.0, 0.0, 1.0), 180.0), k, w, h)
    assert np.isfinite(depth_front).any()
    assert not np.isfinite(depth_back).any()


def test_look_at_rotation_gives_optical_axes():
    rotation = look_at_rotation((1.0, 0.0, 0.0))
    # Looking along world +x with z up: image right is world -y, image down is world -z.
    np.testing.assert_allclose(rotation[:, 0], [0, -1, 0], atol=1e-12)
    np.testing.assert_allclose(rotation[:, 1], [0, 0, -1], atol=1e-12)
    np.testing.assert_allclose(rotation[:, 2], [1, 0, 0], atol=1e-12)
    assert np.linalg.det(rotation) == pytest.approx(1.0)
    with pytest.raises(SyntheticSceneError, match="parallel"):
        look_at_rotation((0.0, 0.0, 2.0))


# ---------------------------------------------------------------------------------------------
# Determinism, distinguishability, trajectories


def test_same_seed_same_images_other_seed_other_images(scene, small_camera):
    again = build_scene(0)
    other = build_scene(1)
    pose = make_trajectories(scene, 4, 1)["train"].T_world_camera(0)
    k, w, h = small_camera.K, small_camera.width, small_camera.height
    image, depth = render(scene, pose, k, w, h)
    image_again, depth_again = render(again, pose, k, w, h)
    image_other, _ = render(other, pose, k, w, h)
    np.testing.assert_array_equal(image, image_again)
    np.testing.assert_array_equal(depth, depth_again)
    assert np.abs(image.astype(int) - image_other.astype(int)).mean() > 10
    traj_a = make_trajectories(scene, 12, 5)
    traj_b = make_trajectories(again, 12, 5)
    for split in ("train", "test"):
        assert traj_a[split].digest() == traj_b[split].digest()
    assert make_trajectories(other, 12, 5)["train"].digest() != traj_a["train"].digest()


@pytest.mark.parametrize(
    ("move", "turn_deg"),
    [((1.0, 0.0, 0.0), 0.0), ((0.0, 1.0, 0.0), 0.0), ((0.0, 0.0, 0.0), 30.0)],
)
def test_nearby_views_are_distinguishable(scene, small_camera, move, turn_deg):
    k, w, h = small_camera.K, small_camera.width, small_camera.height
    start = np.array([0.5, -0.8, 1.5])
    image_a, _ = render(scene, _pose(start, 60.0), k, w, h)
    image_b, _ = render(scene, _pose(start + np.array(move), 60.0 + turn_deg), k, w, h)
    assert np.abs(image_a.astype(int) - image_b.astype(int)).mean() > 20


@pytest.mark.parametrize("room_size_m", [(8.0, 6.0, 3.0), (6.0, 5.0, 2.5), (30.0, 30.0, 6.0)])
def test_trajectories_stay_in_free_space_and_test_is_covered_by_train(room_size_m):
    scene = build_scene(0, room_size_m)
    trajectories = make_trajectories(scene, 600, 150, rate_hz=10.0)
    train, test = trajectories["train"], trajectories["test"]
    assert (len(train), len(test)) == (600, 150)
    np.testing.assert_allclose(np.diff(train.timestamps_s), 0.1)
    np.testing.assert_allclose(np.diff(test.timestamps_s), 0.1)
    np.testing.assert_allclose(np.linalg.norm(train.quats_wxyz, axis=1), 1.0, atol=1e-12)
    assert np.all(train.quats_wxyz[:, 0] >= 0)
    half = np.array(scene.room_size_m) / 2.0
    margin = 0.3
    for traj in (train, test):
        pos = traj.positions_m
        assert np.all(np.abs(pos[:, :2]) < half[:2] - margin)
        assert np.all((pos[:, 2] > margin) & (pos[:, 2] < scene.room_size_m[2] - margin))
        for lo, hi in scene.obstacles_m:
            inside = np.all((pos > np.array(lo) - margin) & (pos < np.array(hi) + margin), axis=1)
            assert not inside.any(), f"a camera comes within {margin} m of obstacle {lo}-{hi}"
    # Every test pose has a training pose close in position and viewing direction (the loops
    # scale with the room, and so does the spacing of a fixed number of frames).
    scale = max(room_size_m[:2]) / 8.0
    axes_train = np.stack([train.T_world_camera(i)[:3, 2] for i in range(len(train))])
    for i in range(len(test)):
        distance = np.linalg.norm(train.positions_m - test.positions_m[i], axis=1)
        angle = np.degrees(np.arccos(np.clip(axes_train @ test.T_world_camera(i)[:3, 2], -1, 1)))
        # e.g. 0.5 m and 20° at 8 m: near enough to interpolate, not a copy of a training view
        assert np.min(distance + angle / 60.0) < 0.8 * scale


@pytest.mark.parametrize("room_size_m", [(8.0, 6.0, 3.0), (6.0, 5.0, 2.5)])
def test_cameras_never_see_a_surface_closer_than_the_near_plane(room_size_m):
    scene = build_scene(0, room_size_m)
    camera = PinholeCamera.default(64, 48)
    trajectories = make_trajectories(scene, 120, 40)
    for traj in trajectories.values():
        for i in range(len(traj)):
            _, depth = render(scene, traj.T_world_camera(i), camera.K, 64, 48)
            assert np.isfinite(depth).all()
            assert depth.min() > 0.3


def test_sample_images_load_without_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    synthetic._sample_image.cache_clear()
    try:
        scene = build_scene(2)
    finally:
        synthetic._sample_image.cache_clear()
    assert len(scene.faces) > 40
    assert len({f.texture_rgb.tobytes() for f in scene.faces}) == len(scene.faces)


# ---------------------------------------------------------------------------------------------
# The dataset on disk


def _make(folder: Path, **kwargs) -> Path:
    args = {"train_frames": 6, "test_frames": 3, "workers": 1, "progress": False, **SMALL}
    args.update(kwargs)
    return synthetic.main(folder, **args)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return _make(tmp_path_factory.mktemp("synthetic") / "room")


def test_dataset_reads_back_with_exact_poses_and_matching_images(dataset, scene, small_camera):
    trajectories = make_trajectories(scene, 6, 3)
    intrinsics = json.loads((dataset / "intrinsics.json").read_text())
    assert intrinsics["width"] == 160 and intrinsics["height"] == 120
    k = np.array(
        [
            [intrinsics["fx"], 0, intrinsics["cx"]],
            [0, intrinsics["fy"], intrinsics["cy"]],
            [0, 0, 1],
        ]
    )
    np.testing.assert_array_equal(k, small_camera.K)
    for split in ("train", "test"):
        traj = trajectories[split]
        records = load_split(dataset, split)
        assert len(records) == len(traj)
        with open(dataset / f"poses_{split}.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        assert len(rows) == len(traj)
        for i, (record, row) in enumerate(zip(records, rows, strict=True)):
            np.testing.assert_allclose(record.position_m, traj.positions_m[i], rtol=0, atol=1e-9)
            np.testing.assert_allclose(record.quat_wxyz, traj.quats_wxyz[i], rtol=0, atol=1e-9)
            csv_pose = [float(row[c]) for c in ("x_m", "y_m", "z_m", "qw", "qx", "qy", "qz")]
            np.testing.assert_array_equal(csv_pose[:3], traj.positions_m[i])
            np.testing.assert_array_equal(csv_pose[3:], traj.quats_wxyz[i])
            assert float(row["timestamp_s"]) == traj.timestamps_s[i]
            assert (dataset / row["image"]).resolve() == record.image_path.resolve()
            # The image on disk is exactly the render from the pose the loader returns.
            image = cv2.imread(str(record.image_path))[:, :, ::-1]
            expected, _ = render(
                scene, pose_to_matrix(record.position_m, record.quat_wxyz), k, 160, 120
            )
            np.testing.assert_array_equal(image, expected)
    described = json.loads((dataset / "scene.json").read_text())
    assert described["fingerprint"]["seed"] == 0
    assert len(described["scene"]["faces"]) == len(scene.faces)
    assert (dataset / COMPLETE_MARKER).is_file()
    assert not (dataset / IN_PROGRESS_MARKER).exists()


def test_two_worker_processes_write_the_same_images(tmp_path, dataset):
    parallel = _make(tmp_path / "room", workers=2)
    for name in sorted(os.listdir(dataset / "images")):
        np.testing.assert_array_equal(
            cv2.imread(str(parallel / "images" / name)), cv2.imread(str(dataset / "images" / name))
        )
    assert (parallel / COMPLETE_MARKER).read_text() == (dataset / COMPLETE_MARKER).read_text()


def test_jpeg_option(tmp_path):
    folder = _make(tmp_path / "room", image_format="jpg", train_frames=2, test_frames=1)
    records = load_split(folder, "train")
    assert [r.image_path.suffix for r in records] == [".jpg", ".jpg"]
    assert cv2.imread(str(records[0].image_path)).shape == (120, 160, 3)


def _mtimes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in (folder / "images").iterdir()}


def test_complete_dataset_is_reused_and_replaced_only_with_overwrite(tmp_path):
    folder = _make(tmp_path / "room")
    before = _mtimes(folder)
    assert _make(folder) == folder
    assert _mtimes(folder) == before
    with pytest.raises(SyntheticSceneError, match="different parameters.*frames.*--overwrite"):
        _make(folder, train_frames=5)
    assert _mtimes(folder) == before
    _make(folder, train_frames=5, overwrite=True)
    assert len(load_split(folder, "train")) == 5
    assert len(list((folder / "images").iterdir())) == 5 + 3
    assert json.loads((folder / COMPLETE_MARKER).read_text())["frames"]["train"] == 5


def test_half_written_folder_is_never_taken_as_complete(tmp_path):
    folder = _make(tmp_path / "room")
    # What an interrupted run leaves: the in-progress marker, no completion marker, some images.
    (folder / COMPLETE_MARKER).unlink()
    (folder / IN_PROGRESS_MARKER).touch()
    victim = folder / "images" / "train_00001.png"
    victim.write_bytes(b"truncated")
    _make(folder)
    assert cv2.imread(str(victim)) is not None
    assert (folder / COMPLETE_MARKER).is_file()
    assert not (folder / IN_PROGRESS_MARKER).exists()


@pytest.mark.parametrize("overwrite", [False, True])
def test_foreign_folder_is_left_alone(tmp_path, overwrite):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    with pytest.raises(SyntheticSceneError, match="not written by posenet_train.synthetic"):
        _make(folder, overwrite=overwrite)
    assert sorted(os.listdir(folder)) == ["notes.txt"]


def test_corrupt_completion_marker_means_rewrite(tmp_path):
    folder = _make(tmp_path / "room")
    (folder / COMPLETE_MARKER).write_text("{not json")
    _make(folder)
    assert json.loads((folder / COMPLETE_MARKER).read_text())["seed"] == 0


# ---------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"train_frames": -1}, "train_frames must be an integer >= 1, got -1"),
        ({"test_frames": 0}, "test_frames must be an integer >= 1, got 0"),
        ({"width": 0}, "width must be 1..8192 pixels, got 0"),
        ({"height": 100000}, "height must be 1..8192 pixels"),
        ({"width": 64.5}, "width must be an integer"),
        ({"focal_px": -3.0}, "focal length must be a positive number"),
        ({"rate_hz": float("nan")}, "rate_hz must be a positive number"),
        ({"workers": 0}, "workers must be an integer >= 1"),
        ({"seed": -2}, "seed must be a non-negative integer"),
        ({"image_format": "bmp"}, "image_format must be one of png, jpg"),
    ],
)
def test_main_rejects_bad_parameters(tmp_path, kwargs, message):
    with pytest.raises(SyntheticSceneError, match=message.replace(".", r"\.")):
        _make(tmp_path / "room", **kwargs)
    assert not (tmp_path / "room" / COMPLETE_MARKER).exists()


DRIVE = ["--scene", "drive"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--train-frames", "-5"], "argument --train-frames: must be >= 1, got -5"),
        (["--test-frames", "many"], "argument --test-frames: expected an integer, got 'many'"),
        (["--width", "0"], "argument --width: must be >= 1, got 0"),
        (["--height", "-1"], "argument --height: must be >= 1, got -1"),
        (["--focal-px", "0"], "argument --focal-px: must be a positive number"),
        (["--rate-hz", "inf"], "argument --rate-hz: must be a positive number"),
        (["--workers", "0"], "argument --workers: must be >= 1"),
        (["--seed", "-1"], "argument --seed: must be >= 0"),
        (["--image-format", "tiff"], "argument --image-format: invalid choice"),
        (["--scene", "forest"], "argument --scene: invalid choice"),
        # The drive's own options (DRIVE: --scene drive).
        ([*DRIVE, "--frames", "1"], "argument --frames: must be >= 2, got 1"),
        ([*DRIVE, "--spacing-m", "0"], "argument --spacing-m: must be a positive number"),
        ([*DRIVE, "--spacing-m", "far"], "argument --spacing-m: expected a number"),
        ([*DRIVE, "--test-every", "1"], "argument --test-every: must be >= 2, got 1"),
        ([*DRIVE, "--test-every", "x"], "argument --test-every: expected an integer"),
    ],
)
def test_cli_rejects_bad_arguments(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        synthetic.cli(["--output", str(tmp_path / "room"), *argv])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "room").exists()


def test_cli_requires_output(capsys):
    with pytest.raises(SystemExit) as exit_info:
        synthetic.cli([])
    assert exit_info.value.code == 2
    assert "--output" in capsys.readouterr().err


def test_cli_reports_library_errors_with_status_1(tmp_path, capsys):
    folder = tmp_path / "taken"
    folder.mkdir()
    (folder / "other.bin").write_bytes(b"x")
    assert synthetic.cli(["--output", str(folder), "--no-progress"]) == 1
    assert "not written by posenet_train.synthetic" in capsys.readouterr().err


def test_cli_runs_as_a_module_with_worker_processes(tmp_path):
    folder = tmp_path / "room"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "posenet_train.synthetic",
            "--output",
            str(folder),
            "--train-frames",
            "4",
            "--test-frames",
            "2",
            "--width",
            "80",
            "--height",
            "60",
            "--workers",
            "2",
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(folder)
    assert len(load_split(folder, "train")) == 4
    assert cv2.imread(str(folder / "images" / "test_00001.png")).shape == (60, 80, 3)


@pytest.mark.parametrize(
    ("pose", "k", "message"),
    [
        (np.eye(3), None, "T_world_camera must be a finite 4x4"),
        (np.diag([1.0, 1.0, 2.0, 1.0]), None, "must be a rotation matrix"),
        (np.diag([1.0, 1.0, -1.0, 1.0]), None, "must be a rotation matrix"),
        (np.full((4, 4), np.nan), None, "T_world_camera must be a finite 4x4"),
        (np.eye(4), np.eye(2), "K must be a finite 3x3 matrix"),
        (np.eye(4), np.diag([-100.0, 100.0, 1.0]), "fx, fy > 0"),
    ],
)
def test_render_rejects_bad_pose_or_camera_matrix(scene, small_camera, pose, k, message):
    k = small_camera.K if k is None else k
    with pytest.raises(SyntheticSceneError, match=message):
        render(scene, pose, k, 32, 24)


@pytest.mark.parametrize(
    ("edges", "texture", "message"),
    [
        (((1.0, 0.0, 0.0), (0.5, 0.0, -1.0)), np.zeros((4, 4, 3), np.uint8), "at 90"),
        (((0.0, 0.0, 0.0), (0.0, 0.0, -1.0)), np.zeros((4, 4, 3), np.uint8), "positive length"),
        (((1.0, 0.0, 0.0), (0.0, 0.0, -1.0)), np.zeros((4, 4), np.uint8), r"\(H, W, 3\) uint8"),
        (((1.0, 0.0, 0.0), (0.0, 0.0, -1.0)), np.zeros((4, 4, 3), np.float32), "uint8"),
        (((1.0, np.nan, 0.0), (0.0, 0.0, -1.0)), np.zeros((4, 4, 3), np.uint8), "finite"),
    ],
)
def test_face_rejects_malformed_geometry_or_texture(edges, texture, message):
    with pytest.raises(SyntheticSceneError, match=message):
        Face("bad", (0.0, 0.0, 0.0), edges[0], edges[1], texture)


def test_errors_are_project_errors():
    assert issubclass(SyntheticSceneError, PoseNetTrainError)
    with pytest.raises(SyntheticSceneError, match="room_size_m"):
        build_scene(0, room_size_m=(5.0, 6.0, 3.0))


# ---------------------------------------------------------------------------------------------
# The street and the forward drive (issue 15)

DRIVE_SMALL = {"scene": "drive", "frames": 9, "width": 96, "height": 32, **{"workers": 1}}


@pytest.fixture(scope="module")
def street() -> Scene:
    return synthetic.street_for_drive(0, 51, 1.2)


def test_drive_goes_straight_ahead_in_its_lane_clear_of_everything(street):
    drive = synthetic.make_drive(street, 51, 1.2, rate_hz=10.0)
    assert len(drive) == 51
    np.testing.assert_allclose(np.diff(drive.timestamps_s), 0.1)
    step = np.diff(drive.positions_m, axis=0)
    np.testing.assert_allclose(step[:, 0], 1.2, atol=1e-12)
    assert np.abs(step[:, 1:]).max() < 0.05  # little sideways or vertical motion
    path = float(np.linalg.norm(step, axis=1).sum())
    assert path == pytest.approx(60.0, rel=1e-3)
    axes = np.stack([drive.T_world_camera(i)[:3, 2] for i in range(len(drive))])
    # Looking ahead along the street: within 2° of +x.
    assert np.degrees(np.arccos(np.clip(axes[:, 0], -1, 1))).max() < 2.0
    half_width = street.room_size_m[1] / 2.0
    assert np.all(np.abs(drive.positions_m[:, 1]) < half_width - 3.0)
    assert np.all(np.abs(drive.positions_m[:, 2] - 1.45) < 0.05)
    margin = 0.5
    for lo, hi in street.obstacles_m:
        inside = np.all(
            (drive.positions_m > np.array(lo) - margin)
            & (drive.positions_m < np.array(hi) + margin),
            axis=1,
        )
        assert not inside.any(), f"the drive comes within {margin} m of obstacle {lo}-{hi}"
    again = synthetic.make_drive(synthetic.street_for_drive(0, 51, 1.2), 51, 1.2)
    assert again.digest() == drive.digest()
    other = synthetic.make_drive(synthetic.street_for_drive(1, 51, 1.2), 51, 1.2)
    assert other.digest() != drive.digest()


def test_drive_sees_facades_and_ground_and_sky_only_above(street):
    drive = synthetic.make_drive(street, 51, 1.2)
    camera = PinholeCamera.default(240, 80, 120.0)  # 90° horizontal field of view
    for i in (0, 25, 50):
        rgb, depth = render(
            street, drive.T_world_camera(i), camera.K, 240, 80, background_rgb=(1, 2, 3)
        )
        hit = np.isfinite(depth)
        assert depth[hit].min() > 1.0  # nothing closer than the parked cars beside the lane
        # The lower half is road, cars and facades everywhere; sky only shows above.
        assert hit[40:].all()
        assert (rgb[~hit] == (1, 2, 3)).all() and not hit[:10, 100:140].all()
        assert (
            len(
                {
                    street.faces[f].name.split("_")[0]
                    for f in np.unique(
                        raycast(street, drive.T_world_camera(i), camera.K, 240, 80).face_index[hit]
                    )
                }
            )
            >= 3
        )  # facades, ground, cars or posts


def test_drive_dataset_is_one_sequence_with_every_nth_frame_held_out(tmp_path):
    folder = synthetic.main(tmp_path / "drive", test_every=4, progress=False, **DRIVE_SMALL)
    train, test = load_split(folder, "train"), load_split(folder, "test")
    assert [r.image_path.name for r in test] == ["frame_000003.png", "frame_000007.png"]
    assert len(train) == 7 and train[0].image_path.name == "frame_000000.png"
    names = sorted(p.name for p in (folder / "images").iterdir())
    assert names == [f"frame_{i:06d}.png" for i in range(9)]
    assert cv2.imread(str(folder / "images" / names[0])).shape == (32, 96, 3)
    intrinsics = json.loads((folder / "intrinsics.json").read_text())
    assert intrinsics["fx"] == pytest.approx(48.0)  # 90° across 96 px
    assert (intrinsics["width"], intrinsics["height"]) == (96, 32)
    # The records are the rendered poses, frame by frame; poses_*.csv keep the drive's times.
    street = synthetic.street_for_drive(0, 9, 1.2)
    drive = synthetic.make_drive(street, 9, 1.2)
    for record in train + test:
        i = int(record.image_path.stem.split("_")[1])
        np.testing.assert_allclose(record.position_m, drive.positions_m[i], atol=1e-9)
    with open(folder / "poses_test.csv", newline="") as f:
        stamps = [float(row["timestamp_s"]) for row in csv.DictReader(f)]
    assert stamps == pytest.approx([0.3, 0.7])
    description = json.loads((folder / "scene.json").read_text())
    assert description["scene"]["kind"] == "street"
    assert description["parameters"]["test_every"] == 4
    # Reused as it is; another hold-out needs --overwrite.
    assert synthetic.main(folder, test_every=4, progress=False, **DRIVE_SMALL) == folder
    with pytest.raises(SyntheticSceneError, match="different parameters"):
        synthetic.main(folder, test_every=3, progress=False, **DRIVE_SMALL)


@pytest.mark.parametrize(
    ("frames", "test_every", "expected"),
    [(51, 4, list(range(3, 51, 4))), (9, 2, [1, 3, 5, 7]), (5, 5, [4]), (2, 2, [1])],
)
def test_drive_test_indices(frames, test_every, expected):
    assert synthetic.drive_test_indices(frames, test_every) == expected


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"scene": "forest"}, "scene must be one of room, drive"),
        ({"scene": "drive", "train_frames": 10}, "train_frames do\\(es\\) not apply to the drive"),
        ({"frames": 10}, "frames do\\(es\\) not apply to the room"),
        ({"spacing_m": 1.0}, "spacing_m do\\(es\\) not apply to the room"),
        ({**DRIVE_SMALL, "frames": 1}, "frames must be an integer >= 2, got 1"),
        ({**DRIVE_SMALL, "test_every": 1}, "test_every must be an integer >= 2, got 1"),
        ({**DRIVE_SMALL, "test_every": 10}, "holds out no frame of 9"),
        ({**DRIVE_SMALL, "spacing_m": 0.0}, "spacing_m must be 0.01..20 m, got 0.0"),
        ({**DRIVE_SMALL, "spacing_m": float("nan")}, "spacing_m must be 0.01..20 m"),
        ({**DRIVE_SMALL, "spacing_m": "1.2"}, "spacing_m must be a number of metres"),
        ({**DRIVE_SMALL, "spacing_m": 20.0, "frames": 200}, "at most 1940 m are supported"),
        ({**DRIVE_SMALL, "width": 0}, "width must be 1..8192 pixels, got 0"),
        ({**DRIVE_SMALL, "focal_px": -1.0}, "focal length must be a positive number"),
    ],
)
def test_main_rejects_bad_drive_parameters(tmp_path, kwargs, message):
    args = {"workers": 1, "progress": False, **kwargs}
    with pytest.raises(SyntheticSceneError, match=message):
        synthetic.main(tmp_path / "out", **args)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: synthetic.build_street(-1), "seed must be a non-negative integer"),
        (lambda: synthetic.build_street(0, 5.0), "street length_m must be 20..2000 m"),
        (lambda: synthetic.build_street(0, float("inf")), "street length_m must be 20..2000 m"),
        (
            lambda: synthetic.make_drive(synthetic.build_street(0, 40.0), 51, 1.2),
            "does not fit the street",
        ),
        (lambda: synthetic.make_drive(build_scene(0), 5, 1.2), "needs the street scene"),
    ],
)
def test_street_and_drive_reject_bad_input(build, message):
    with pytest.raises(SyntheticSceneError, match=message):
        build()


def test_cli_refuses_options_of_the_other_scene_with_status_1(tmp_path, capsys):
    out = tmp_path / "room"
    assert synthetic.cli(["--output", str(out), "--frames", "9", "--no-progress"]) == 1
    assert "frames do(es) not apply to the room scene" in capsys.readouterr().err
    assert not out.exists()
