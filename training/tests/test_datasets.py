"""Tests of the dataset loaders: each format's conversion into T_world_camera is checked by
projecting points, and every malformed input gives a DatasetError naming file, line and value."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from posenet_core.datasets import PoseRecord, write_cambridge
from posenet_core.datasets.cambridge import read_cambridge_file
from posenet_core.datasets.sevenscenes import read_pose_file
from posenet_core.geometry import (
    matrix_to_quat,
    project_points,
    project_points_krt,
    quat_to_matrix,
)
from posenet_core.metrics import rotation_error_deg
from posenet_train.datasets import detect_format, load_split, parse_dataset_spec
from posenet_train.datasets.colmap import load_colmap
from posenet_train.errors import DatasetError

K = np.array([[500.0, 0.0, 320.0], [0.0, 500.0, 240.0], [0.0, 0.0, 1.0]])
POINTS = np.array([[0.0, 0.0, 0.0], [0.5, 0.0, 0.0], [0.0, 0.5, 0.0], [0.2, -0.3, 0.4]])
HEADER = "Visual Landmark Dataset V1\nImageFile, Camera Position [X Y Z W P Q R]\n\n"


def write_png(path: Path, value: int = 0, size_hw: tuple[int, int] = (6, 8)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.full((*size_hw, 3), value, np.uint8))
    return path


def look_at(center, target, up=(0.0, -1.0, 0.0)) -> np.ndarray:
    """Camera-to-world rotation of an optical camera at ``center`` looking at ``target``."""
    z = np.asarray(target, float) - np.asarray(center, float)
    z /= np.linalg.norm(z)
    x = np.cross(np.asarray(up, float) * -1.0, z)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    return np.stack([x, y, z], axis=1)


# ------------------------------------------------------------------------------- Cambridge


def test_cambridge_loads_and_converts_by_projection(tmp_path: Path) -> None:
    # Camera at (0, 0, -2) looking at the origin with world and camera axes aligned: R = I.
    # Second camera at (2, 0, 0) looking at the origin: world -> camera R maps world -x to +z.
    write_png(tmp_path / "seq1/a.png")
    write_png(tmp_path / "seq1/b.png")
    r_b = np.array([[0.0, 0, 1], [0, 1, 0], [-1, 0, 0]])  # world -> camera of camera b
    q_b = matrix_to_quat(r_b)
    (tmp_path / "dataset_train.txt").write_text(
        HEADER
        + "seq1/a.png 0 0 -2 1 0 0 0\n"
        + f"seq1/b.png 2 0 0 {q_b[0]:.12f} {q_b[1]:.12f} {q_b[2]:.12f} {q_b[3]:.12f}\n"
    )
    records = load_split(tmp_path, "train")
    assert [r.image_path for r in records] == [tmp_path / "seq1/a.png", tmp_path / "seq1/b.png"]
    a, b = records
    # By hand: camera a sees (0.5, 0, 0) at depth 2 -> x = 320 + 500 * 0.25.
    np.testing.assert_allclose(
        project_points(POINTS[:2], K, a.position_m, a.quat_wxyz), [[320, 240], [445, 240]]
    )
    expected_b = project_points_krt(POINTS, K, r_b, -r_b @ np.array([2.0, 0, 0]))
    np.testing.assert_allclose(project_points(POINTS, K, b.position_m, b.quat_wxyz), expected_b)
    # Camera b's optical axis (camera z) points along world -x: the camera-to-world rotation.
    np.testing.assert_allclose(quat_to_matrix(b.quat_wxyz)[:, 2], [-1, 0, 0], atol=1e-12)


def test_cambridge_renormalises_tiny_quaternion_error(tmp_path: Path) -> None:
    write_png(tmp_path / "a.png")
    (tmp_path / "dataset_test.txt").write_text(HEADER + "a.png 1 2 3 1.0005 0 0 0\n")
    (record,) = load_split(tmp_path, "test")
    np.testing.assert_allclose(record.quat_wxyz, [1, 0, 0, 0])
    np.testing.assert_allclose(record.position_m, [1, 2, 3])


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("a.png 1 2 3 1 0 0\n", r"dataset_train.txt:4: expected 8 fields.*got 7"),
        ("a.png 1 2 3 1 0 0 0 9\n", r"dataset_train.txt:4: expected 8 fields.*got 9"),
        ("a.png 1 2 x 1 0 0 0\n", r"dataset_train.txt:4: field Z is not a number: 'x'"),
        ("a.png 1 2 3 nan 0 0 0\n", r"dataset_train.txt:4: field W must be finite"),
        ("a.png 1 2 3 1 0 0 0\n\na.png 1 2 3 0.9 0 0 0\n", r"dataset_train.txt:6: .*norm 0\.9\b"),
        ("a.png 0 0 0 0 0 0 0\n", r"dataset_train.txt:4: .*norm 0\b"),
        ("missing.png 1 2 3 1 0 0 0\n", r"dataset_train.txt:4: 'missing.png': image file not"),
        ("\n\n", r"dataset_train.txt: no image lines"),
    ],
)
def test_cambridge_malformed_lines(tmp_path: Path, body: str, message: str) -> None:
    write_png(tmp_path / "a.png")
    (tmp_path / "dataset_train.txt").write_text(HEADER + body)
    with pytest.raises(DatasetError, match=message):
        load_split(tmp_path, "train")


def test_cambridge_missing_header_and_missing_file(tmp_path: Path) -> None:
    write_png(tmp_path / "a.png")
    (tmp_path / "dataset_train.txt").write_text("a.png 1 2 3 1 0 0 0\n" * 4)
    with pytest.raises(DatasetError, match=r"dataset_train.txt:1: expected 3 header lines"):
        load_split(tmp_path, "train")
    with pytest.raises(DatasetError, match=r"dataset_test.txt: Cambridge split file not found"):
        load_split(tmp_path, "test")
    with pytest.raises(DatasetError, match="not found"):
        read_cambridge_file(tmp_path / "nope.txt")


def test_write_cambridge_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    records = []
    for i in range(5):
        quat = rng.normal(size=4)
        records.append(
            PoseRecord(
                write_png(tmp_path / "img" / f"{i}.png"),
                rng.normal(size=3),
                quat / np.linalg.norm(quat),
            )
        )
    path = write_cambridge(tmp_path, "train", records)
    assert path == tmp_path / "dataset_train.txt"
    lines = path.read_text().splitlines()
    assert lines[:3] == HEADER.splitlines() and lines[3].startswith("img/0.png ")
    loaded = load_split(tmp_path, "train")
    for original, back in zip(records, loaded, strict=True):
        assert back.image_path == original.image_path
        np.testing.assert_allclose(back.position_m, original.position_m, rtol=0, atol=1e-15)
        assert rotation_error_deg(back.quat_wxyz, original.quat_wxyz) < 1e-6
        assert back.quat_wxyz[0] >= 0.0
    with pytest.raises(DatasetError, match="whitespace"):
        write_cambridge(
            tmp_path, "test", [PoseRecord(tmp_path / "a b.png", np.zeros(3), [1, 0, 0, 0])]
        )
    with pytest.raises(DatasetError, match="no records"):
        write_cambridge(tmp_path, "test", [])


# --------------------------------------------------------------------------------- 7-Scenes


def make_sevenscenes(root: Path) -> dict[str, np.ndarray]:
    """Two sequences, hand-made camera-to-world matrices; returns {image name: 4x4}."""
    poses = {
        "seq-01/frame-000000": np.array(
            [[1.0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, -2], [0, 0, 0, 1]]
        ),
        "seq-01/frame-000001": np.vstack(
            [np.hstack([look_at([2, 0, 0], [0, 0, 0]), [[2], [0], [0]]]), [0, 0, 0, 1]]
        ),
        "seq-02/frame-000000": np.vstack(
            [np.hstack([look_at([0, -1, -1], [0, 0, 0]), [[0], [-1], [-1]]]), [0, 0, 0, 1]]
        ),
    }
    for name, matrix in poses.items():
        write_png(root / f"{name}.color.png")
        np.savetxt(root / f"{name}.pose.txt", matrix, fmt="%.9e", delimiter="\t")
    (root / "TrainSplit.txt").write_text("sequence1\n")
    (root / "TestSplit.txt").write_text("Sequence2\n\n")
    return poses


def test_sevenscenes_loads_and_converts_by_projection(tmp_path: Path) -> None:
    poses = make_sevenscenes(tmp_path)
    assert detect_format(tmp_path) == "7scenes"
    train, test = load_split(tmp_path, "train"), load_split(tmp_path, "test")
    assert [r.image_path.name for r in train] == [
        "frame-000000.color.png",
        "frame-000001.color.png",
    ]
    assert [r.image_path.parent.name for r in test] == ["seq-02"]
    for record in train + test:
        name = f"{record.image_path.parent.name}/{record.image_path.name[: -len('.color.png')]}"
        t_world_camera = poses[name]
        r_camera_world = t_world_camera[:3, :3].T
        t = -r_camera_world @ t_world_camera[:3, 3]
        expected = project_points_krt(POINTS, K, r_camera_world, t)
        got = project_points(POINTS, K, record.position_m, record.quat_wxyz)
        np.testing.assert_allclose(got, expected, atol=1e-9)
    # By hand: every camera looks at the world origin, which lands on the principal point.
    for record in train + test:
        np.testing.assert_allclose(
            project_points(POINTS[:1], K, record.position_m, record.quat_wxyz),
            [[320, 240]],
            atol=1e-9,
        )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("1 0 0 0\n0 1 0 0\n0 0 1 0\n", r"pose.txt: expected 4 rows.*got 3"),
        ("1 0 0 0\n0 1 0 0\n0 0 1\n0 0 0 1\n", r"pose.txt:3: expected 4 numbers"),
        ("1 0 0 0\n0 1 0 0\n0 0 1 zz\n0 0 0 1\n", r"pose.txt:3: column 4 is not a number: 'zz'"),
        ("1 0 0 0\n0 1 0 0\n0 0 1 inf\n0 0 0 1\n", r"pose.txt:3: column 4 must be finite"),
        ("1 0 0 0\n0 1 0 0\n0 0 1 0\n0 0 1 1\n", r"pose.txt:4: last row must be '0 0 0 1'"),
        ("2 0 0 0\n0 1 0 0\n0 0 1 0\n0 0 0 1\n", r"pose.txt:1-3: not a rotation matrix"),
    ],
)
def test_sevenscenes_malformed_pose_file(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "frame-000000.pose.txt"
    path.write_text(content)
    with pytest.raises(DatasetError, match=message):
        read_pose_file(path)


@pytest.mark.parametrize(
    ("split_text", "remove", "message"),
    [
        ("seq1\n", None, r"TrainSplit.txt:1: expected a line 'sequenceN'.*'seq1'"),
        ("sequence1\nsequence7\n", None, r"TrainSplit.txt:2: 'sequence7' names .*seq-07"),
        ("\n", None, r"TrainSplit.txt: lists no sequences"),
        ("sequence1\n", "seq-01/frame-000001.pose.txt", r"frame-000001.pose.txt: pose file not"),
    ],
)
def test_sevenscenes_malformed_layout(
    tmp_path: Path, split_text: str, remove: str | None, message: str
) -> None:
    make_sevenscenes(tmp_path)
    (tmp_path / "TrainSplit.txt").write_text(split_text)
    if remove:
        (tmp_path / remove).unlink()
    with pytest.raises(DatasetError, match=message):
        load_split(tmp_path, "train")


# ----------------------------------------------------------------------------------- COLMAP


def make_colmap(root: Path, count: int = 10) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """A pycolmap reconstruction with known cam_from_world poses; returns {name: (R, t)}."""
    pycolmap = pytest.importorskip("pycolmap")
    reconstruction = pycolmap.Reconstruction()
    camera = pycolmap.Camera(
        camera_id=1, model="PINHOLE", width=640, height=480, params=[500.0, 500.0, 320.0, 240.0]
    )
    reconstruction.add_camera_with_trivial_rig(camera)
    truth = {}
    for i in range(count):
        angle = 2 * np.pi * i / count
        center = np.array([2 * np.cos(angle), 0.3 * i - 1.0, 2 * np.sin(angle)])
        r_world_camera = look_at(center, [0.0, 0.0, 0.0])
        r_camera_world = r_world_camera.T
        t = -r_camera_world @ center
        name = f"img_{i:02d}.png"
        image = pycolmap.Image(name=name, camera_id=1, image_id=i + 1)
        reconstruction.add_image_with_trivial_frame(
            image, pycolmap.Rigid3d(pycolmap.Rotation3d(r_camera_world), t)
        )
        write_png(root / "images" / name)
        truth[name] = (r_camera_world, t)
    model = root / "sparse" / "0"
    model.mkdir(parents=True)
    reconstruction.write(str(model))
    return truth


def test_colmap_loads_and_converts_by_projection(tmp_path: Path) -> None:
    truth = make_colmap(tmp_path)
    assert detect_format(tmp_path) == "colmap"
    train, test = load_split(tmp_path, "train"), load_split(tmp_path, "test")
    # Every 8th image (sorted by name, from index 0) is a test image.
    assert [r.image_path.name for r in test] == ["img_00.png", "img_08.png"]
    assert len(train) == 8 and {r.image_path.name for r in train}.isdisjoint(
        {"img_00.png", "img_08.png"}
    )
    for record in train + test:
        r_camera_world, t = truth[record.image_path.name]
        np.testing.assert_allclose(
            project_points(POINTS, K, record.position_m, record.quat_wxyz),
            project_points_krt(POINTS, K, r_camera_world, t),
            atol=1e-9,
        )
        np.testing.assert_allclose(
            project_points(POINTS[:1], K, record.position_m, record.quat_wxyz),
            [[320, 240]],
            atol=1e-9,
        )


def test_colmap_list_files_model_dir_and_forced_format(tmp_path: Path) -> None:
    make_colmap(tmp_path, count=4)
    (tmp_path / "test_list.txt").write_text("# held out\nimg_03.png\n\nimg_01.png\n")
    assert [r.image_path.name for r in load_split(tmp_path, "test")] == [
        "img_03.png",
        "img_01.png",
    ]
    assert [r.image_path.name for r in load_split(tmp_path, "train")] == [
        "img_00.png",
        "img_02.png",
    ]
    (tmp_path / "train_list.txt").write_text("img_02.png\n")
    assert [r.image_path.name for r in load_split(tmp_path, "train")] == ["img_02.png"]
    # The model folder itself, forced with FORMAT:PATH; images found in ../../images.
    forced = load_split(f"colmap:{tmp_path / 'sparse' / '0'}", "test")
    assert [r.image_path.name for r in forced] == ["img_00.png"]


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("unknown_name", r"test_list.txt:1: image 'nope.png' is not a posed image"),
        ("empty_list", r"test_list.txt: lists no images"),
        ("missing_image", r"image 'img_01.png': image file not found"),
        ("no_images_dir", r"no image folder found"),
        ("corrupt_model", r"cannot read the COLMAP model"),
    ],
)
def test_colmap_malformed(tmp_path: Path, setup: str, message: str) -> None:
    make_colmap(tmp_path, count=3)
    split = "test"
    if setup == "unknown_name":
        (tmp_path / "test_list.txt").write_text("nope.png\n")
    elif setup == "empty_list":
        (tmp_path / "test_list.txt").write_text("# nothing\n")
    elif setup == "missing_image":
        (tmp_path / "images" / "img_01.png").unlink()
        split = "train"
    elif setup == "no_images_dir":
        for path in (tmp_path / "images").iterdir():
            path.unlink()
        (tmp_path / "images").rmdir()
    elif setup == "corrupt_model":
        (tmp_path / "sparse" / "0" / "images.bin").write_bytes(b"\x01\x02garbage")
    with pytest.raises(DatasetError, match=message):
        load_split(tmp_path, split)


def test_colmap_bad_test_every(tmp_path: Path) -> None:
    make_colmap(tmp_path, count=2)
    with pytest.raises(DatasetError, match="test_every must be >= 2"):
        load_colmap(tmp_path, "test", test_every=1)


# ------------------------------------------------------------------------ load_split itself


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("cambridge:/data/x", ("cambridge", Path("/data/x"))),
        ("COLMAP:rel/dir", ("colmap", Path("rel/dir"))),
        ("7scenes:chess", ("7scenes", Path("chess"))),
        ("/data/plain", (None, Path("/data/plain"))),
        ("weird:thing", (None, Path("weird:thing"))),
        (Path("/p"), (None, Path("/p"))),
    ],
)
def test_parse_dataset_spec(spec, expected) -> None:
    assert parse_dataset_spec(spec) == expected


def test_load_split_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="unknown split 'val'"):
        load_split(tmp_path, "val")
    with pytest.raises(DatasetError, match="dataset folder not found"):
        load_split(tmp_path / "missing", "train")
    with pytest.raises(DatasetError, match="dataset folder not found"):
        load_split(f"cambridge:{tmp_path / 'missing'}", "train")
    with pytest.raises(DatasetError, match="unknown dataset layout"):
        load_split(tmp_path, "train")


def test_pose_record_validates_and_is_immutable(tmp_path: Path) -> None:
    record = PoseRecord(tmp_path / "a.png", [1, 2, 3], [-1, 0, 0, 0])
    np.testing.assert_array_equal(record.quat_wxyz, [1, 0, 0, 0])
    assert record.position_m.dtype == np.float64 and record.timestamp_s is None
    with pytest.raises(ValueError):
        record.position_m[0] = 5.0
    with pytest.raises(DatasetError, match="unit quaternion"):
        PoseRecord(tmp_path / "a.png", [1, 2, 3], [2, 0, 0, 0])
    with pytest.raises(DatasetError, match="position_m"):
        PoseRecord(tmp_path / "a.png", [1, 2], [1, 0, 0, 0])
