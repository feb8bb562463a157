"""posenet_core.datasets.read_dataset: a split with its timestamps and intrinsics, as the dataset
player reads it (tests moved from test/test_dataset_reader.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import transforms3d.quaternions as t3q

from posenet_core.datasets import (
    CameraIntrinsics,
    dataset_intrinsics,
    detect_format,
    load_split,
    parse_dataset_spec,
    read_dataset,
    read_intrinsics,
    read_poses_csv,
)
from posenet_core.datasets import PoseRecord as DatasetFrame
from posenet_core.datasets.cambridge import read_cambridge_file as read_cambridge_split
from posenet_core.datasets.intrinsics import SEVENSCENES_INTRINSICS
from posenet_core.datasets.sevenscenes import read_pose_file as read_sevenscenes_pose
from posenet_core.errors import DatasetError
from posenet_core.geometry import project_points, project_points_krt

from dino import read_calibration

HEADER = "Visual Landmark Dataset V1\nImageFile, Camera Position [X Y Z W P Q R]\n\n"
K = np.array([[100.0, 0.0, 15.5], [0.0, 100.0, 11.5], [0.0, 0.0, 1.0]])
TARGET = np.array([0.3, -0.2, 0.1])


def write_png(path: Path, rgb=(10, 20, 30), size_hw=(6, 8)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.broadcast_to(np.array(rgb, np.uint8), (*size_hw, 3))
    assert cv2.imwrite(str(path), cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR))
    return path


def look_at(center, target=TARGET, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """Camera-to-world rotation of an optical camera at ``center`` looking at ``target``."""
    z = np.asarray(target, float) - np.asarray(center, float)
    z /= np.linalg.norm(z)
    x = np.cross(z, up)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    return np.stack([x, y, z], axis=1)


def circle_poses(count: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(centre, R_world_camera) on a circle around TARGET."""
    poses = []
    for i in range(count):
        a = 2.0 * math.pi * i / count
        center = TARGET + np.array([2.0 * math.cos(a), 2.0 * math.sin(a), 0.5 + 0.1 * i])
        poses.append((center, look_at(center)))
    return poses


def cambridge_line(name: str, center, R_world_camera) -> str:
    # Cambridge stores the quaternion of the world-to-camera rotation R^T.
    quat = t3q.mat2quat(np.asarray(R_world_camera).T)
    return name + " " + " ".join(repr(float(v)) for v in (*center, *quat))


def make_cambridge(root: Path, count: int = 4, split: str = "test", csv: bool = False):
    poses = circle_poses(count)
    lines = []
    for i, (center, R) in enumerate(poses):
        write_png(root / "seq1" / f"frame{i:03d}.png", (40 * i, 255 - 40 * i, 7))
        lines.append(cambridge_line(f"seq1/frame{i:03d}.png", center, R))
    (root / f"dataset_{split}.txt").write_text(HEADER + "\n".join(lines) + "\n")
    if csv:
        rows = ["image,timestamp_s,x_m,y_m,z_m,qw,qx,qy,qz"]
        for i, (center, R) in enumerate(poses):
            q = t3q.mat2quat(R)
            rows.append(
                f"seq1/frame{i:03d}.png,{0.1 * i!r},"
                + ",".join(repr(float(v)) for v in (*center, *q))
            )
        (root / f"poses_{split}.csv").write_text("\n".join(rows) + "\n")
    return poses


def make_sevenscenes(root: Path, frames_per_sequence: int = 3):
    poses = circle_poses(2 * frames_per_sequence)
    (root / "TrainSplit.txt").write_text("sequence1\n")
    (root / "TestSplit.txt").write_text("Sequence2\n\n")
    for s in (1, 2):
        for i in range(frames_per_sequence):
            center, R = poses[(s - 1) * frames_per_sequence + i]
            write_png(root / f"seq-{s:02d}" / f"frame-{i:06d}.color.png")
            T = np.eye(4)
            T[:3, :3], T[:3, 3] = R, center
            text = "\n".join(" ".join(f"{v:.9e}" for v in row) for row in T)
            (root / f"seq-{s:02d}" / f"frame-{i:06d}.pose.txt").write_text(text + "\n")
    return poses


def project_krt(points, R_camera_world, t):
    """Pixels of world points with the original K [R | t] (the datasets' own convention)."""
    cam = (R_camera_world @ points.T).T + t
    uv = (K @ cam.T).T
    return uv[:, :2] / uv[:, 2:]


def project_frame(points, frame: DatasetFrame):
    """Pixels of world points with the loaded T_world_camera."""
    R = t3q.quat2mat(frame.quat_wxyz)
    cam = (R.T @ (points - frame.position_m).T).T
    uv = (K @ cam.T).T
    return uv[:, :2] / uv[:, 2:]


POINTS = TARGET + np.array([[0.0, 0.0, 0.0], [0.2, 0.0, 0.0], [0.0, 0.3, 0.1], [-0.1, 0.1, 0.2]])


# ------------------------------------------------------------------------------ Cambridge


def test_cambridge_loads_and_converts_by_projection(tmp_path):
    poses = make_cambridge(tmp_path, split="train")
    assert detect_format(tmp_path) == "cambridge"
    dataset = read_dataset(tmp_path, "train")
    assert (dataset.format, dataset.split, dataset.intrinsics) == ("cambridge", "train", None)
    assert not dataset.has_timestamps
    assert len(dataset.frames) == len(poses)
    for frame, (center, R) in zip(dataset.frames, poses, strict=True):
        assert frame.image_path.is_absolute() and frame.image_path.is_file()
        assert frame.quat_wxyz[0] >= 0.0
        expected = project_krt(POINTS, R.T, -R.T @ center)
        np.testing.assert_allclose(project_frame(POINTS, frame), expected, atol=1e-9)
        assert not frame.position_m.flags.writeable


def test_cambridge_timestamps_and_intrinsics(tmp_path):
    make_cambridge(tmp_path, csv=True)
    (tmp_path / "intrinsics.json").write_text(
        json.dumps({"fx": 100, "fy": 101.5, "cx": 15.5, "cy": 11.5, "width": 32, "height": 24})
    )
    dataset = read_dataset(tmp_path, "test")
    assert dataset.has_timestamps
    assert [f.timestamp_s for f in dataset.frames] == [0.0, 0.1, 0.2, 0.30000000000000004]
    i = dataset.intrinsics
    assert (i.width, i.height, i.fx, i.fy, i.cx, i.cy) == (32, 24, 100.0, 101.5, 15.5, 11.5)
    assert i.distortion == () and i.dist_coeffs is None
    assert dataset.intrinsics_source == "intrinsics.json"
    np.testing.assert_array_equal(i.K, [[100, 0, 15.5], [0, 101.5, 11.5], [0, 0, 1]])


def assert_refused(read, message: str, names: str) -> None:
    """``read()`` raises a DatasetError that matches ``message`` and contains ``names`` (the
    file, and its line where known)."""
    with pytest.raises(DatasetError, match=message) as info:
        read()
    assert names in str(info.value)


@pytest.mark.parametrize(
    "line, message",
    [
        ("seq1/frame000.png 1 2 3 1 0 0", "expected 8 fields"),
        ("seq1/frame000.png 1 2 x 1 0 0 0", "field Z is not a number: 'x'"),
        ("seq1/frame000.png 1 2 3 nan 0 0 0", "field W must be finite"),
        ("seq1/frame000.png 1 2 3 2 0 0 0", "has norm 2"),
        ("seq1/missing.png 1 2 3 1 0 0 0", "image file not found"),
    ],
)
def test_cambridge_malformed_line_names_file_line_and_value(tmp_path, line, message):
    write_png(tmp_path / "seq1" / "frame000.png")
    good = "seq1/frame000.png 0 0 0 1 0 0 0"
    (tmp_path / "dataset_test.txt").write_text(HEADER + good + "\n\n" + line + "\n")
    assert_refused(lambda: read_dataset(tmp_path, "test"), message, "dataset_test.txt:6:")


@pytest.mark.parametrize(
    "text, message",
    [
        ("seq1/frame000.png 0 0 0 1 0 0 0\n", ":1: expected 3 header lines"),
        (HEADER, "no image lines"),
    ],
)
def test_cambridge_malformed_file(tmp_path, text, message):
    write_png(tmp_path / "seq1" / "frame000.png")
    (tmp_path / "dataset_test.txt").write_text(text)
    with pytest.raises(DatasetError, match=message):
        read_cambridge_split(tmp_path / "dataset_test.txt")


# ------------------------------------------------------------------------------- 7-Scenes


def test_sevenscenes_loads_and_converts_by_projection(tmp_path):
    poses = make_sevenscenes(tmp_path)
    assert detect_format(tmp_path) == "7scenes"
    train, test = read_dataset(tmp_path, "train"), read_dataset(tmp_path, "test")
    assert (len(train.frames), len(test.frames)) == (3, 3)
    assert test.frames[0].image_path.parent.name == "seq-02"
    for frame, (center, R) in zip(train.frames + test.frames, poses, strict=True):
        expected = project_krt(POINTS, R.T, -R.T @ center)
        np.testing.assert_allclose(project_frame(POINTS, frame), expected, atol=1e-6)


def _pose_text(rows) -> str:
    return "\n".join(" ".join(str(v) for v in row) for row in rows) + "\n"


EYE = np.eye(4).tolist()


@pytest.mark.parametrize(
    "text, message",
    [
        (_pose_text(EYE[:3]), "expected 4 rows"),
        (_pose_text([EYE[0][:3], *EYE[1:]]), ":1: expected 4 numbers"),
        (_pose_text([EYE[0], ["0", "1", "zero", "0"], *EYE[2:]]), ":2: column 3 is not a number"),
        (_pose_text([*EYE[:3], [0, 0, 1, 1]]), ":4: last row must be '0 0 0 1'"),
        (_pose_text([[2, 0, 0, 0], *EYE[1:]]), "not a rotation"),
        (_pose_text([[-1, 0, 0, 0], *EYE[1:]]), "det = -1"),
    ],
)
def test_sevenscenes_malformed_pose_file(tmp_path, text, message):
    path = tmp_path / "frame-000000.pose.txt"
    path.write_text(text)
    assert_refused(lambda: read_sevenscenes_pose(path), message, str(path))


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda r: (r / "TestSplit.txt").write_text("seq2\n"), "TestSplit.txt:1: expected a line"),
        (lambda r: (r / "TestSplit.txt").write_text("sequence7\n"), "does not exist"),
        (lambda r: (r / "TestSplit.txt").write_text("\n"), "lists no sequences"),
        (
            lambda r: [p.unlink() for p in (r / "seq-02").glob("*.color.png")],
            "no frame-XXXXXX.color.png",
        ),
        (lambda r: (r / "seq-02" / "frame-000001.pose.txt").unlink(), "pose file not found"),
    ],
)
def test_sevenscenes_malformed_layout(tmp_path, change, message):
    make_sevenscenes(tmp_path)
    change(tmp_path)
    with pytest.raises(DatasetError, match=message):
        read_dataset(tmp_path, "test")


# ---------------------------------------------------------------------- layout and split


def test_forced_format_and_spec_parsing(tmp_path):
    make_cambridge(tmp_path)
    assert parse_dataset_spec(f"cambridge:{tmp_path}") == ("cambridge", tmp_path)
    assert parse_dataset_spec("7SCENES:chess") == ("7scenes", Path("chess"))
    assert parse_dataset_spec("c:/data") == (None, Path("c:/data"))
    assert len(read_dataset(f"cambridge:{tmp_path}", "test").frames) == 4
    with pytest.raises(DatasetError, match="TestSplit.txt: 7-Scenes split file not found"):
        read_dataset(f"7scenes:{tmp_path}", "test")


@pytest.mark.parametrize(
    "dataset, split, message",
    [
        ("{tmp}/nope", "test", "dataset folder not found"),
        ("cambridge:{tmp}/nope", "test", "dataset folder not found"),
        ("{tmp}/empty", "test", "unknown dataset layout"),
        ("{tmp}/cam", "val", "unknown split 'val'; allowed: train, test"),
        ("{tmp}/cam", "train", "dataset_train.txt: Cambridge split file not found"),
    ],
)
def test_bad_dataset_or_split(tmp_path, dataset, split, message):
    (tmp_path / "empty").mkdir()
    make_cambridge(tmp_path / "cam")
    with pytest.raises(DatasetError, match=message):
        read_dataset(dataset.format(tmp=tmp_path), split)


# --------------------------------------------------------------------------- intrinsics


GOOD_INTRINSICS = {"fx": 500.0, "fy": 500.0, "cx": 319.5, "cy": 239.5, "width": 640, "height": 480}


def test_intrinsics_with_distortion(tmp_path):
    path = tmp_path / "intrinsics.json"
    path.write_text(json.dumps({**GOOD_INTRINSICS, "distortion": [0.1, -0.2, 0, 0, 0.01]}))
    assert read_intrinsics(path).distortion == (0.1, -0.2, 0.0, 0.0, 0.01)


@pytest.mark.parametrize(
    "content, message",
    [
        ("{", ":1: not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        (json.dumps({k: v for k, v in GOOD_INTRINSICS.items() if k != "cy"}), "'cy' missing"),
        (json.dumps({**GOOD_INTRINSICS, "fx": "500"}), "fx must be a number, got '500'"),
        (json.dumps({**GOOD_INTRINSICS, "fy": True}), "fy must be a number"),
        (json.dumps({**GOOD_INTRINSICS, "fx": -1.0}), "fx must be > 0 pixels, got -1.0"),
        (json.dumps({**GOOD_INTRINSICS, "fx": 0}), "fx must be > 0"),
        (json.dumps({**GOOD_INTRINSICS, "width": 640.5}), "width must be a whole number"),
        (json.dumps({**GOOD_INTRINSICS, "height": 0}), "height must be a whole number >= 1"),
        ('{"fx": NaN}', "fx must be finite"),
        (json.dumps({**GOOD_INTRINSICS, "distortion": [0, 0]}), "distortion must be 0, 4, 5 or 8"),
        (
            json.dumps({**GOOD_INTRINSICS, "distortion_model": "equidistant"}),
            "distortion_model 'equidistant' is not supported; allowed: none, plumb_bob",
        ),
    ],
)
def test_malformed_intrinsics(tmp_path, content, message):
    path = tmp_path / "intrinsics.json"
    path.write_text(content)
    assert_refused(lambda: read_intrinsics(path), message, str(path))


def test_malformed_intrinsics_fails_the_dataset(tmp_path):
    make_cambridge(tmp_path)
    (tmp_path / "intrinsics.json").write_text("{}")
    with pytest.raises(DatasetError, match="intrinsics.json: key 'fx' missing"):
        read_dataset(tmp_path, "test")


def write_par(path: Path, k: str = "90 0 3.5 0 91 2.5 0 0 1", rows: int = 2, first=None):
    """A Middlebury camera file: a header line, then ``name k11..k33 r11..r33 t1 t2 t3``."""
    lines = [first if first is not None else "imgname.png k11 k12 k13 ... t3"]
    lines += [f"seq1/frame{i:03d}.png {k} 1 0 0 0 1 0 0 0 1 0 0 1" for i in range(rows)]
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize(
    "files, source, fx",
    [
        ((), "", None),
        (("intrinsics.json",), "intrinsics.json", 100.0),
        (("dino_par.txt",), "dino_par.txt", 90.0),
        (("dino_par.txt", "intrinsics.json"), "intrinsics.json", 100.0),
    ],
)
def test_the_camera_of_a_dataset(tmp_path, files, source, fx):
    """What the player publishes, the map builder maps with and evaluation refines with."""
    make_cambridge(tmp_path)
    if "intrinsics.json" in files:
        (tmp_path / "intrinsics.json").write_text(json.dumps({**GOOD_INTRINSICS, "fx": 100.0}))
    if "dino_par.txt" in files:
        write_par(tmp_path / "dino_par.txt")
    dataset = read_dataset(tmp_path, "test")
    assert dataset.intrinsics_source == source
    if fx is None:
        assert dataset.intrinsics is None
        with pytest.raises(DatasetError, match="no intrinsics found.*intrinsics.json"):
            dataset_intrinsics(tmp_path, "test")
        return
    assert dataset.intrinsics.fx == fx
    if source == "dino_par.txt":  # no size in the file: the images' (8x6)
        assert dataset.intrinsics == CameraIntrinsics(8, 6, 90.0, 91.0, 3.5, 2.5)
        assert dataset_intrinsics(tmp_path, "test") == (dataset.intrinsics, source)
    else:  # intrinsics.json says 640x480, the images are 8x6
        with pytest.raises(DatasetError, match="640x480 images but the test images are 8x6"):
            dataset_intrinsics(tmp_path, "test")


def test_sevenscenes_has_its_published_camera(tmp_path):
    make_sevenscenes(tmp_path)
    dataset = read_dataset(tmp_path, "train")
    assert dataset.intrinsics == SEVENSCENES_INTRINSICS
    assert dataset.intrinsics_source == "7-Scenes published calibration"


@pytest.mark.parametrize(
    "k, first, message",
    [
        ("90 0 3.5 0 91 2.5 0 0", None, ":2: expected 'name k11..k33 r11..r33 t1 t2 t3'"),
        ("90 0 3.5 0 x 2.5 0 0 1", None, ":2: K is not numeric"),
        ("90 1 3.5 0 91 2.5 0 0 1", None, "is not an upper-triangular pinhole matrix"),
        ("-90 0 3.5 0 91 2.5 0 0 1", None, "is not an upper-triangular pinhole matrix"),
        ("90 0 3.5 0 91 2.5 0 0 1", "2", None),  # the original files' count line
    ],
)
def test_malformed_middlebury_camera(tmp_path, k, first, message):
    make_cambridge(tmp_path)
    write_par(tmp_path / "dino_par.txt", k, first=first)
    if message is None:
        assert read_dataset(tmp_path, "test").intrinsics.fx == 90.0
        return
    assert_refused(lambda: read_dataset(tmp_path, "test"), message, "dino_par.txt")


def test_middlebury_camera_with_two_matrices(tmp_path):
    make_cambridge(tmp_path)
    write_par(tmp_path / "dino_par.txt")
    with (tmp_path / "dino_par.txt").open("a") as f:
        f.write("x.png 80 0 3.5 0 91 2.5 0 0 1 1 0 0 0 1 0 0 0 1 0 0 1\n")
    with pytest.raises(DatasetError, match="2 different camera matrices; expected one"):
        read_dataset(tmp_path, "test")


# ---------------------------------------------------------------------------- poses CSV


def _csv_lines(tmp_path) -> list[str]:
    make_cambridge(tmp_path, csv=True)
    return (tmp_path / "poses_test.csv").read_text().splitlines()


def _replace_field(line: str, index: int, value: str) -> str:
    fields = line.split(",")
    fields[index] = value
    return ",".join(fields)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda ls: ["image,t,x,y,z,qw,qx,qy,qz", *ls[1:]], ":1: expected the header"),
        (lambda ls: [], ":1: expected the header"),
        (lambda ls: [ls[0], ls[1] + ",9", *ls[2:]], ":2: expected 9 fields, got 10"),
        (lambda ls: [ls[0], _replace_field(ls[1], 3, "abc"), *ls[2:]], ":2: y_m is not a number"),
        (lambda ls: [ls[0], _replace_field(ls[1], 1, "-1.0"), *ls[2:]], ":2: timestamp_s must"),
        (lambda ls: [ls[0], ls[1], ls[1].replace("frame000", "frame009")], ":3: timestamp_s"),
        (lambda ls: [ls[0], ls[1], _replace_field(ls[1], 1, "0.05")], ":3: image 'seq1/fr"),
        (lambda ls: [ls[0], _replace_field(ls[1], 5, "3.0"), *ls[2:]], ":2: quaternion qw"),
        (lambda ls: ls[:-1], "no row for image 'seq1/frame003.png'"),
        (lambda ls: [ls[0], _replace_field(ls[1], 2, "7.5"), *ls[2:]], ":2: pose of 'seq1/f"),
        (lambda ls: [ls[0], ls[2], _replace_field(ls[1], 1, "0.15"), *ls[3:]], "time order"),
    ],
)
def test_malformed_poses_csv(tmp_path, edit, message):
    lines = _csv_lines(tmp_path)
    (tmp_path / "poses_test.csv").write_text("\n".join(edit(lines)) + "\n")
    assert_refused(lambda: read_dataset(tmp_path, "test"), message, "poses_test.csv")


def test_poses_csv_reader_returns_rows(tmp_path):
    lines = _csv_lines(tmp_path)
    poses = read_poses_csv(tmp_path / "poses_test.csv")
    assert list(poses) == [f"seq1/frame{i:03d}.png" for i in range(4)]
    timestamp_s, position_m, quat_wxyz, lineno = poses["seq1/frame002.png"]
    assert (timestamp_s, lineno) == (0.2, 4)
    assert position_m.tolist() == [float(v) for v in lines[3].split(",")[2:5]]
    assert math.isclose(float(np.linalg.norm(quat_wxyz)), 1.0)


# ------------------------------------------------------------------------ middlebury dino


def test_dino_camera_is_dino_par_txt(dino):
    """The player's camera_info, the map's camera and evaluation's K of the dino: one K."""
    expected = CameraIntrinsics(640, 480, 3310.4, 3325.5, 316.73, 200.55)
    for split in ("train", "test"):
        dataset = read_dataset(dino, split)
        assert (dataset.intrinsics, dataset.intrinsics_source) == (expected, "dino_par.txt")
        assert dataset_intrinsics(dino, split) == (expected, "dino_par.txt")


def test_dino_matches_original_calibration(dino):
    """The player reads the dino like dino_par.txt's K[R|t]: the same projections."""
    frames = read_dataset(dino, "train").frames + read_dataset(dino, "test").frames
    assert len(frames) == 363
    calibration = read_calibration(dino)
    corners = np.array(
        [[x, y, z] for x in (-0.04, 0.03) for y in (0.0, 0.09) for z in (-0.04, 0.04)]
    )
    worst = 0.0
    for frame in frames:
        k, r, t = calibration[frame.image_path.name]
        cam = (r @ corners.T).T + t
        expected = (k @ cam.T).T
        expected = expected[:, :2] / expected[:, 2:]
        R = t3q.quat2mat(frame.quat_wxyz)
        got = (k @ (R.T @ (corners - frame.position_m).T)).T
        got = got[:, :2] / got[:, 2:]
        worst = max(worst, float(np.max(np.abs(got - expected))))
    assert worst < 1e-3, f"largest reprojection difference {worst} px"


# Moved from training/tests/test_datasets.py: the Cambridge reader (load_split) on the dino.
def test_dino_cambridge_files_match_original_calibration(dino: Path) -> None:
    """The Cambridge files, loaded, project the dino's bounding box like dino_par.txt's K[R|t]."""
    train, test = load_split(dino, "train"), load_split(dino, "test")
    assert (len(train), len(test)) == (273, 90)
    calibration = read_calibration(dino)
    assert len(calibration) == 363
    low, high = (
        np.array([-0.041897, 0.001126, -0.037845]),
        np.array([0.030897, 0.088227, 0.035495]),
    )
    corners = np.array(
        [
            [x, y, z]
            for x in (low[0], high[0])
            for y in (low[1], high[1])
            for z in (low[2], high[2])
        ]
    )
    names = [r.image_path.name for r in train + test]
    assert sorted(names) == sorted(calibration)
    worst = 0.0
    for record in train + test:
        k, r, t = calibration[record.image_path.name]
        expected = project_points_krt(corners, k, r, t)
        got = project_points(corners, k, record.position_m, record.quat_wxyz)
        worst = max(worst, float(np.max(np.abs(got - expected))))
    assert worst < 1e-3, f"largest reprojection difference {worst} px"
