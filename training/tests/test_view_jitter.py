"""The label-exact view augmentation: homography vs label, fallbacks, training only, options."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from posenet_core.datasets import CameraIntrinsics
from posenet_core.geometry import quat_to_matrix
from posenet_train.checkpoint import load_checkpoint
from posenet_train.data import PoseDataset
from posenet_train.errors import PoseNetTrainError
from posenet_train.train import build_parser, cli, main
from posenet_train.view_jitter import (
    ViewJitter,
    jitter_rotation,
    rotated_quat_wxyz,
    rotation_homography,
    scaled_camera_matrix,
    warp_image,
)

sys.path.insert(0, str(Path(__file__).parent))
from tiny_scene import CROP, RESIZE, TINY_TRAIN, random_records, write_tiny_cambridge  # noqa: E402

# dino's camera (dino_par.txt at 640x480), a wide 3:1 one and a square one.
DINO_K = np.array([[3310.4, 0.0, 316.73], [0.0, 3325.5, 200.55], [0.0, 0.0, 1.0]])
WIDE_K = np.array([[480.0, 0.0, 479.5], [0.0, 480.0, 159.5], [0.0, 0.0, 1.0]])
SQUARE_K = np.array([[100.0, 0.0, 63.5], [0.0, 100.0, 63.5], [0.0, 0.0, 1.0]])


def _project(k: np.ndarray, r_world_camera: np.ndarray, centre: np.ndarray, point_w) -> np.ndarray:
    """Pixel of a world point seen by a camera with pose (R_world_camera, centre)."""
    x_c = r_world_camera.T @ (np.asarray(point_w) - centre)
    p = k @ x_c
    return p[:2] / p[2]


@pytest.mark.parametrize(
    ("k", "pan_deg", "tilt_deg", "roll_deg"),
    [
        (DINO_K, 0.0, 0.0, 0.0),
        (DINO_K, 1.1, 0.0, 0.0),
        (DINO_K, 0.0, -0.8, 0.0),
        (DINO_K, 0.0, 0.0, 15.0),
        (DINO_K, -1.0, 0.7, -12.0),
        (WIDE_K, 10.0, -5.0, 8.0),
        (SQUARE_K, -20.0, 10.0, 170.0),
        (scaled_camera_matrix(DINO_K, (480, 640), (128, 171)), 0.9, 0.6, -20.0),
    ],
)
def test_homography_moves_a_point_where_the_turned_label_projects_it(
    k, pan_deg, tilt_deg, roll_deg
) -> None:
    rng = np.random.default_rng(7)
    quat = rng.normal(size=4)
    quat /= np.linalg.norm(quat)
    r_world_camera, centre = quat_to_matrix(quat), rng.normal(size=3)
    # A point in front of the camera, near the middle of the view.
    point_w = r_world_camera @ np.array([0.02, -0.01, 0.7]) + centre
    r_delta = jitter_rotation(*(math.radians(a) for a in (pan_deg, tilt_deg, roll_deg)))
    turned = quat_to_matrix(rotated_quat_wxyz(quat, r_delta))

    before = _project(k, r_world_camera, centre, point_w)
    after = _project(k, turned, centre, point_w)
    mapped = rotation_homography(k, r_delta) @ np.array([*before, 1.0])
    np.testing.assert_allclose(mapped[:2] / mapped[2], after, atol=1e-6)


@pytest.mark.parametrize(
    ("pan", "tilt", "roll"), [(0.1, 0.0, 0.0), (0.0, -0.08, 0.0), (0.05, 0.05, 0.3)]
)
def test_warp_moves_image_content_the_homography_way(pan, tilt, roll) -> None:
    """cv2.warpPerspective is given the old-to-new map (not its inverse): a bright dot lands
    where the homography sends its pixel."""
    image = np.zeros((120, 160, 3), np.uint8)
    image[59:62, 89:92] = 255  # centred at (x=90, y=60)
    homography = rotation_homography(SQUARE_K, jitter_rotation(pan, tilt, roll))
    out = warp_image(image, homography)
    ys, xs = np.nonzero(out[..., 0] > 100)
    expected = homography @ np.array([90.0, 60.0, 1.0])
    np.testing.assert_allclose([xs.mean(), ys.mean()], expected[:2] / expected[2], atol=0.5)


@pytest.mark.parametrize(
    ("from_hw", "to_hw"),
    [((480, 640), (128, 171)), ((320, 960), (128, 384)), ((48, 64), (40, 53))],
)
def test_scaled_camera_matrix_keeps_the_pixel_convention(from_hw, to_hw) -> None:
    """The first pixel's centre (0, 0) and the last's (W-1, H-1) map to those of the resize."""
    k = np.array([[300.0, 0.0, 0.0], [0.0, 310.0, 0.0], [0.0, 0.0, 1.0]])
    scaled = scaled_camera_matrix(k, from_hw, to_hw)
    ray_first = np.linalg.inv(k) @ np.array([-0.5, -0.5, 1.0])  # the image's top-left corner
    corner = scaled @ ray_first
    np.testing.assert_allclose(corner[:2], [-0.5, -0.5], atol=1e-9)
    ray_last = np.linalg.inv(k) @ np.array([from_hw[1] - 0.5, from_hw[0] - 0.5, 1.0])
    np.testing.assert_allclose((scaled @ ray_last)[:2], [to_hw[1] - 0.5, to_hw[0] - 0.5])


def _intrinsics(width: int, height: int) -> CameraIntrinsics:
    return CameraIntrinsics(width, height, 50.0, 50.0, (width - 1) / 2, (height - 1) / 2)


def _relative_rotation(dataset: PoseDataset, index: int, quat) -> np.ndarray:
    original = quat_to_matrix(dataset.quats_wxyz[index].double().numpy())
    return original.T @ quat_to_matrix(np.asarray(quat, dtype=np.float64))


@pytest.mark.parametrize(
    ("intrinsics_wh", "expect_pan_tilt"),
    [
        ((40, 30), True),  # the images' own camera
        ((30, 40), False),  # portrait intrinsics for landscape images: roll only
        ((80, 30), False),  # another aspect ratio
        (None, False),  # no intrinsics
    ],
)
def test_pan_tilt_only_with_matching_intrinsics(tmp_path, intrinsics_wh, expect_pan_tilt):
    """Pan/tilt only (no roll): with intrinsics that do not describe the images nothing may
    change (roll-only fallback, and the roll is 0); with matching ones every item turns, by a
    rotation with no roll component beyond what pan-then-tilt gives, within the range."""
    records = random_records(tmp_path, 3, (30, 40), seed=1)
    intr = None if intrinsics_wh is None else _intrinsics(*intrinsics_wh)
    plain = PoseDataset(records, resize_shorter=24, crop_hw=(24, 32), train=True)
    jittered = PoseDataset(
        records,
        resize_shorter=24,
        crop_hw=(24, 32),
        train=True,
        view_jitter=ViewJitter(0.2, 0.0),
        intrinsics=intr,
    )
    half_fov_x = math.atan2(20.0, 50.0)
    for index in range(len(records)):
        torch.manual_seed(index)
        image, position, quat = jittered[index]
        torch.manual_seed(index)
        plain_image, plain_position, plain_quat = plain[index]
        assert torch.equal(position, plain_position)
        angle = math.acos(
            np.clip((np.trace(_relative_rotation(jittered, index, quat)) - 1) / 2, -1, 1)
        )
        if expect_pan_tilt:
            assert not torch.equal(image, plain_image)
            assert 1e-4 < angle <= 0.2 * 2 * half_fov_x * math.sqrt(2) + 1e-6
        else:
            assert torch.equal(image, plain_image) and angle < 1e-3


def test_roll_turns_the_label_about_the_optical_axis(tmp_path):
    records = random_records(tmp_path, 3, (30, 40), seed=1)
    dataset = PoseDataset(
        records,
        resize_shorter=30,
        crop_hw=(30, 40),
        train=True,
        view_jitter=ViewJitter(0.0, 25.0),
    )
    angles = []
    for _ in range(20):
        _, _, quat = dataset[0]
        relative = _relative_rotation(dataset, 0, quat)
        np.testing.assert_allclose(relative[:, 2], [0.0, 0.0, 1.0], atol=1e-6)  # z stays z
        angles.append(math.degrees(math.atan2(relative[1, 0], relative[0, 0])))
    assert max(abs(a) for a in angles) <= 25.0 + 1e-4
    assert len({round(a, 3) for a in angles}) > 10


def test_no_view_jitter_at_evaluation(tmp_path):
    records = random_records(tmp_path, 3, (30, 40), seed=1)
    options = {"resize_shorter": 24, "crop_hw": (24, 32), "train": False}
    plain = PoseDataset(records, **options)
    jittered = PoseDataset(
        records, **options, view_jitter=ViewJitter(0.3, 40.0), intrinsics=_intrinsics(40, 30)
    )
    for index in range(len(records)):
        for a, b in zip(plain[index], jittered[index], strict=True):
            assert torch.equal(a, b)


@pytest.mark.parametrize(
    ("view", "roll", "message"),
    [
        (-0.1, 0.0, r"view_jitter must be a fraction of the field of view in \[0, 0.5\]"),
        (0.6, 0.0, r"view_jitter .* got 0.6"),
        (float("nan"), 0.0, "view_jitter"),
        (0.0, -1.0, r"roll_jitter_deg must be in \[0, 180\] degrees, got -1.0"),
        (0.0, 181.0, "roll_jitter_deg"),
        (0.0, float("inf"), "roll_jitter_deg"),
    ],
)
def test_bad_ranges_are_refused(view, roll, message):
    with pytest.raises(PoseNetTrainError, match=message):
        ViewJitter(view, roll)


@pytest.mark.parametrize(
    "argv", [["--view-jitter", "-0.1"], ["--view-jitter", "x"], ["--roll-jitter-deg", "-5"]]
)
def test_bad_flags_exit_2(argv, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["--output", str(tmp_path), *argv])
    assert info.value.code == 2
    assert "error" in capsys.readouterr().err


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return write_tiny_cambridge(tmp_path_factory.mktemp("tiny") / "scene")


TINY = {
    **TINY_TRAIN,
    "max_shift": 0,
    "val_every": 0,
}


@pytest.mark.parametrize(
    ("args", "pattern"),
    [
        (["--view-jitter", "0.9"], "view_jitter must be a fraction of the field of view"),
        (["--roll-jitter-deg", "200"], "roll_jitter_deg must be in [0, 180] degrees, got 200"),
    ],
)
def test_out_of_range_flags_are_reported_by_the_cli(dataset, tmp_path, capsys, args, pattern):
    argv = ["--dataset", str(dataset), "--output", str(tmp_path / "run"), *args]
    argv += ["--model", "posenet-tiny", "--crop", str(CROP), "--resize", str(RESIZE)]
    argv += ["--no-progress", "--threads", "1"]
    assert cli(argv) == 2
    err = capsys.readouterr().err
    assert "posenet-train: error:" in err and pattern in err


@pytest.mark.parametrize(
    ("given", "frozen_blocks", "expected", "cached"),
    [
        ({}, 0, (0.0, 0.0), False),  # off by default
        ({}, 1, (0.0, 0.0), True),  # so the frozen trunk's output stays cached
        ({"view_jitter": 0.1, "roll_jitter_deg": 10.0}, 0, (0.1, 10.0), False),
        ({"roll_jitter_deg": 5.0}, 1, (0.0, 5.0), False),  # asked for: computed every step
    ],
)
def test_ranges_are_recorded_and_kept_on_resume(
    dataset, tmp_path, capsys, given, frozen_blocks, expected, cached
):
    out = tmp_path / "run"
    main(dataset, out, epochs=1, frozen_blocks=frozen_blocks, **TINY, **given)
    err = capsys.readouterr().err
    config = load_checkpoint(out / "last.pt")["extra"]["config"]
    assert (config["view_jitter"], config["roll_jitter_deg"]) == expected
    assert json.loads((out / "config.json").read_text())["roll_jitter_deg"] == expected[1]
    assert ("cached for" in err) == cached
    assert ("view jitter: off" in err) == (expected == (0.0, 0.0))
    main(dataset, out, epochs=2, frozen_blocks=frozen_blocks, resume="auto", **TINY)
    config = load_checkpoint(out / "last.pt")["extra"]["config"]
    assert (config["view_jitter"], config["roll_jitter_deg"]) == expected


def test_resume_refuses_another_range(dataset, tmp_path):
    out = tmp_path / "run"
    main(dataset, out, epochs=1, roll_jitter_deg=5.0, **TINY)
    with pytest.raises(PoseNetTrainError, match="roll_jitter_deg"):
        main(dataset, out, epochs=2, roll_jitter_deg=6.0, resume="auto", **TINY)


def test_intrinsics_of_a_subset_come_from_its_source(tmp_path, capsys):
    """A posenet_train.subset folder has no camera file: the source's (subset.json) is used."""
    source = write_tiny_cambridge(tmp_path / "scene")
    intr = {"model": "pinhole", "width": 64, "height": 48, "fx": 60.0, "fy": 60.0}
    (source / "intrinsics.json").write_text(json.dumps({**intr, "cx": 31.5, "cy": 23.5}))
    subset = tmp_path / "subset"
    subset.mkdir()
    for split in ("train", "test"):
        lines = (source / f"dataset_{split}.txt").read_text().splitlines()
        lines = [
            line if i < 3 else f"{source / line.split()[0]} {' '.join(line.split()[1:])}"
            for i, line in enumerate(lines)
        ]
        (subset / f"dataset_{split}.txt").write_text("\n".join(lines) + "\n")
    (subset / "subset.json").write_text(json.dumps({"source": str(source)}))
    main(subset, tmp_path / "run", epochs=1, view_jitter=0.1, roll_jitter_deg=0.0, **TINY)
    err = capsys.readouterr().err
    assert "pan/tilt up to +-0.1 of the field of view" in err
    assert "(subset.json's source)" in err


def test_a_run_from_before_the_augmentation_resumes_without_it(dataset, tmp_path, capsys):
    """A checkpoint whose config has no jitter keys was trained without jitter: resuming it
    (with the new defaults) must not switch the augmentation on half way."""
    out = tmp_path / "run"
    main(dataset, out, epochs=1, view_jitter=0.0, roll_jitter_deg=0.0, **TINY)
    raw = torch.load(out / "last.pt", weights_only=True)
    for key in ("view_jitter", "roll_jitter_deg"):
        del raw["extra"]["config"][key]
    torch.save(raw, out / "last.pt")
    capsys.readouterr()
    main(dataset, out, epochs=2, resume="auto", **TINY)
    assert "view jitter: off" in capsys.readouterr().err
    config = load_checkpoint(out / "last.pt")["extra"]["config"]
    assert (config["view_jitter"], config["roll_jitter_deg"]) == (0.0, 0.0)
