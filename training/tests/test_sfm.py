"""Tests of posenet_train.sfm: labels from a video or a rosbag2 by structure from motion.

Fast unit tests (alignment maths, TF, image decoding, frame selection, split, option checking,
bad input caught before any SfM) plus three real pycolmap runs on the embedded scene:

- a video (MJPG) of a hand-held path, intrinsics estimated, scale from a known distance:
  median position error <= 1 % of the path length and rotation <= 1 deg after the tool's own
  rigid alignment to the renderer's ground truth;
- a rosbag2 (sqlite3, raw images, odometry with a known offset, noise and a glitch, extrinsic in
  /tf_static, intrinsics in CameraInfo): metric poses in the odometry frame within the same
  tolerance, with no alignment at all in the test;
- a recording whose frames mostly cannot register: a clear error, nothing left looking complete.
"""

from __future__ import annotations

import inspect
import json
import math
import shutil
import warnings
from dataclasses import fields
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from posenet_core.geometry import matrix_to_quat, quat_to_matrix
from posenet_core.metrics import rotation_error_deg
from posenet_train.datasets import load_split
from posenet_train.sfm import (
    COMPLETE_MARKER,
    REPORT,
    CameraIntrinsics,
    FrameSelection,
    ReferenceOptions,
    SfmError,
    SfmOptions,
    SfmWarning,
    Similarity,
    extract_frames,
    fit_similarity_robust,
    interpolate_poses,
    main,
    open_source,
    split_by_time_blocks,
    umeyama,
)
from posenet_train.sfm.align import check_spread, slerp
from posenet_train.sfm.cli import build_parser, cli
from posenet_train.sfm.demo_inputs import (
    DEFAULT_T_ODOM_WORLD,
    make_recording,
    pose_matrix,
    render_frames,
    write_bag,
    write_video,
)
from posenet_train.sfm.frames import detect_input_kind, read_frames_csv, write_frames_csv
from posenet_train.sfm.reconstruct import select_largest
from posenet_train.sfm.reference import (
    parse_extrinsic,
    reference_camera_poses,
    resolve_frame,
)
from posenet_train.sfm.rosbag import (
    ImageDecodeError,
    TransformBuffer,
    decode_compressed_image,
    decode_image,
)

# The SfM runs: big enough for sub-degree accuracy from lossy video, small enough to be quick.
SFM_FRAMES = 32
SFM_WIDTH, SFM_HEIGHT = 480, 360
QUIET = {"progress": False}
# The pipeline's default selection but every frame kept, blurred or not.
NO_BLUR_REJECTION = FrameSelection(reject_blur=False, max_frames=300)


def _rotation(axis, angle_deg: float) -> np.ndarray:
    axis = np.asarray(axis, dtype=np.float64)
    axis = axis / np.linalg.norm(axis)
    half = math.radians(angle_deg) / 2
    return quat_to_matrix(np.concatenate([[math.cos(half)], math.sin(half) * axis]))


def _path_length(matrices: np.ndarray) -> float:
    return float(np.linalg.norm(np.diff(matrices[:, :3, 3], axis=0), axis=1).sum())


def _records(folder: Path, spec: str | None = None):
    target = folder if spec is None else f"{spec}:{folder}"
    return load_split(target, "train") + load_split(target, "test")


def _frame_index(record) -> int:
    return int(Path(record.image_path).stem.split("_")[1])


def _assert_not_complete(folder: Path) -> None:
    assert not (folder / COMPLETE_MARKER).exists()
    assert not (folder / "dataset_train.txt").exists()
    assert not (folder / "dataset_test.txt").exists()


# --------------------------------------------------------------------------------------------
# Alignment maths


@pytest.mark.parametrize("with_scale", [True, False])
def test_umeyama_recovers_a_known_transform(with_scale):
    rng = np.random.default_rng(1)
    source = rng.normal(size=(20, 3))
    truth = Similarity(
        2.5 if with_scale else 1.0, _rotation((1, 2, 3), 70), np.array([1.0, -2.0, 0.5])
    )
    result = umeyama(source, truth.apply_points(source), with_scale=with_scale)
    assert result.scale == pytest.approx(truth.scale, rel=1e-9)
    assert np.allclose(result.rotation, truth.rotation, atol=1e-9)
    assert np.allclose(result.translation_m, truth.translation_m, atol=1e-9)


def test_umeyama_returns_a_rotation_for_coplanar_points():
    # Coplanar points are where a plain SVD solution can come out as a reflection.
    rng = np.random.default_rng(2)
    source = np.column_stack([rng.normal(size=(10, 2)), np.zeros(10)])
    truth = Similarity(0.5, _rotation((0, 1, 1), 150), np.array([0.0, 3.0, 1.0]))
    result = umeyama(source, truth.apply_points(source))
    assert np.linalg.det(result.rotation) == pytest.approx(1.0)
    assert np.allclose(result.apply_points(source), truth.apply_points(source), atol=1e-9)


@pytest.mark.parametrize(
    ("source", "target", "message"),
    [
        (np.zeros((2, 3)), np.zeros((2, 3)), "at least 3"),
        (np.zeros((4, 3)), np.zeros((5, 3)), "same shape"),
        (np.zeros((4, 2)), np.zeros((4, 2)), r"\(N, 3\)"),
        (np.outer(np.arange(5.0), [1, 1, 0]), np.outer(np.arange(5.0), [1, 0, 0]), "one line"),
        (np.full((4, 3), np.nan), np.zeros((4, 3)), "non-finite"),
    ],
)
def test_umeyama_rejects_bad_input(source, target, message):
    with pytest.raises(SfmError, match=message):
        umeyama(source, target)


def test_robust_fit_finds_the_outliers():
    rng = np.random.default_rng(3)
    source = rng.uniform(-3, 3, size=(40, 3))
    truth = Similarity(3.0, _rotation((0, 0, 1), 35), np.array([5.0, 1.0, 0.0]))
    target = truth.apply_points(source) + rng.normal(0, 0.005, size=(40, 3))
    outliers = np.zeros(40, dtype=bool)
    outliers[::4] = True
    target[outliers] += rng.uniform(0.5, 2.0, size=(10, 3))
    fit = fit_similarity_robust(source, target, seed=0)
    assert np.array_equal(fit.inliers, ~outliers)
    assert fit.outlier_share == pytest.approx(0.25)
    assert fit.transform.scale == pytest.approx(3.0, rel=1e-3)
    assert fit.rms_inliers_m < 0.015 < fit.rms_all_m
    assert 0.001 < fit.sigma_m < 0.02
    summary = fit.summary()
    assert summary["inliers"] == 30 and summary["pairs"] == 40
    # A fixed threshold larger than the outliers' offsets keeps everything.
    assert fit_similarity_robust(source, target, inlier_threshold_m=10.0).outlier_share == 0.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"inlier_threshold_m": -1.0}, "positive"),
        ({"inlier_threshold_m": float("nan")}, "positive"),
    ],
)
def test_robust_fit_rejects_bad_options(kwargs, message):
    points = np.random.default_rng(0).normal(size=(10, 3))
    with pytest.raises(SfmError, match=message):
        fit_similarity_robust(points, points, **kwargs)


def test_robust_fit_needs_four_pairs_and_spread():
    with pytest.raises(SfmError, match="at least 4"):
        fit_similarity_robust(np.eye(3), np.eye(3))
    line = np.outer(np.arange(10.0), [1.0, 2.0, 0.0])
    with pytest.raises(SfmError, match="degenerate|line"):
        fit_similarity_robust(line, line)
    with pytest.raises(SfmError, match="straight line"):
        check_spread(line + 1e-6, "the positions")


def test_interpolate_poses_is_linear_and_slerp_and_never_extrapolates():
    stamps = np.array([10.0, 11.0, 12.0, 20.0])
    positions = np.array([[0, 0, 0], [2, 0, 0], [2, 2, 0], [2, 2, 2]], dtype=float)
    quats = np.array([matrix_to_quat(_rotation((0, 0, 1), a)) for a in (0, 90, 90, 90)])
    query = np.array([9.0, 10.0, 10.5, 11.75, 12.0, 15.0, 20.0 + 1e-7, 21.0])
    p, q, valid = interpolate_poses(stamps, positions, quats, query, max_gap_s=2.0)
    assert valid.tolist() == [False, True, True, True, True, False, True, False]
    assert np.allclose(p[2], [1, 0, 0]) and np.allclose(p[3], [2, 1.5, 0])
    assert rotation_error_deg(q[2], matrix_to_quat(_rotation((0, 0, 1), 45))) < 1e-9
    assert np.all(np.isnan(p[~valid]))
    with pytest.raises(SfmError, match="strictly increasing"):
        interpolate_poses(stamps[::-1], positions, quats, query, max_gap_s=1.0)


def test_slerp_takes_the_short_way_for_negated_quaternions():
    q0 = matrix_to_quat(np.eye(3))
    q1 = -matrix_to_quat(_rotation((1, 0, 0), 60))
    mid = slerp(q0, q1, np.array([0.5]))[0]
    assert rotation_error_deg(mid, matrix_to_quat(_rotation((1, 0, 0), 30))) < 1e-9


# --------------------------------------------------------------------------------------------
# TF


def _tf_buffer() -> TransformBuffer:
    q = matrix_to_quat
    transforms = [
        ("map", "odom", 0.0, np.array([1.0, 2.0, 0.0]), q(_rotation((0, 0, 1), 90)), True)
    ]
    for t in (0.0, 1.0, 2.0):
        transforms.append(
            (
                "odom",
                "base_link",
                t,
                np.array([t, 0.0, 0.0]),
                q(_rotation((0, 0, 1), 10 * t)),
                False,
            )
        )
    transforms.append(
        ("base_link", "cam", 0.0, np.array([0.0, 0.0, 1.0]), q(_rotation((1, 0, 0), -90)), True)
    )
    return TransformBuffer.from_transforms(transforms)


def test_transform_buffer_composes_static_and_dynamic_links():
    tf = _tf_buffer()
    matrices, valid = tf.lookup("map", "cam", np.array([0.5, 1.5, 3.0]), max_gap_s=2.0)
    assert valid.tolist() == [True, True, False]
    t_map_odom = pose_matrix((1.0, 2.0, 0.0), math.radians(90))
    t_odom_base = pose_matrix((0.5, 0.0, 0.0), math.radians(5))
    t_base_cam = np.eye(4)
    t_base_cam[:3, :3] = _rotation((1, 0, 0), -90)
    t_base_cam[:3, 3] = (0, 0, 1)
    assert np.allclose(matrices[0], t_map_odom @ t_odom_base @ t_base_cam, atol=1e-9)
    inverse, _ = tf.lookup("cam", "map", np.array([0.5]), max_gap_s=2.0)
    assert np.allclose(inverse[0], np.linalg.inv(matrices[0]), atol=1e-9)
    assert tf.span("map", "cam") == (0.0, 2.0)


def test_transform_buffer_errors_name_the_frames():
    tf = _tf_buffer()
    with pytest.raises(SfmError, match="'nowhere' is not in the bag"):
        tf.lookup("map", "nowhere", np.array([0.0]), max_gap_s=1.0)
    disconnected = TransformBuffer.from_transforms(
        [
            ("a", "b", 0.0, np.zeros(3), np.array([1.0, 0, 0, 0]), True),
            ("c", "d", 0.0, np.zeros(3), np.array([1.0, 0, 0, 0]), True),
        ]
    )
    with pytest.raises(SfmError, match="not connected"):
        disconnected.lookup("a", "d", np.array([0.0]), max_gap_s=1.0)
    with pytest.raises(SfmError, match="two parents"):
        TransformBuffer.from_transforms(
            [
                ("a", "b", 0.0, np.zeros(3), np.array([1.0, 0, 0, 0]), True),
                ("c", "b", 0.0, np.zeros(3), np.array([1.0, 0, 0, 0]), True),
            ]
        )


# --------------------------------------------------------------------------------------------
# Image messages


def _image_msg(encoding: str, pixels: np.ndarray, *, step_pad: int = 0, bigendian: int = 0):
    height, width = pixels.shape[:2]
    row = pixels.reshape(height, -1).view(np.uint8).reshape(height, -1)
    padded = np.zeros((height, row.shape[1] + step_pad), np.uint8)
    padded[:, : row.shape[1]] = row
    return SimpleNamespace(
        encoding=encoding,
        height=height,
        width=width,
        step=padded.shape[1],
        is_bigendian=bigendian,
        data=padded.reshape(-1),
    )


_RGB = np.random.default_rng(5).integers(0, 256, size=(6, 8, 3), dtype=np.uint8)
_GREY = _RGB[:, :, 0].copy()


@pytest.mark.parametrize(
    ("encoding", "pixels", "expected"),
    [
        ("rgb8", _RGB, _RGB),
        ("bgr8", _RGB[:, :, ::-1].copy(), _RGB),
        ("8UC3", _RGB[:, :, ::-1].copy(), _RGB),
        ("rgba8", np.dstack([_RGB, np.full((6, 8), 7, np.uint8)]), _RGB),
        ("bgra8", np.dstack([_RGB[:, :, ::-1], np.full((6, 8), 7, np.uint8)]), _RGB),
        ("mono8", _GREY, np.dstack([_GREY] * 3)),
        ("8UC1", _GREY, np.dstack([_GREY] * 3)),
        ("mono16", _GREY.astype("<u2") * 256 + 17, np.dstack([_GREY] * 3)),
        ("16UC1", _GREY.astype("<u2") * 256, np.dstack([_GREY] * 3)),
        ("rgb16", _RGB.astype("<u2") * 256 + 255, _RGB),
    ],
)
def test_decode_image_encodings(encoding, pixels, expected):
    rgb = decode_image(_image_msg(encoding, np.ascontiguousarray(pixels), step_pad=3))
    assert rgb.dtype == np.uint8 and rgb.shape == (6, 8, 3)
    assert np.array_equal(rgb, expected)


def test_decode_image_big_endian_16_bit():
    pixels = (_GREY.astype(">u2") * 256).astype(">u2")
    rgb = decode_image(_image_msg("mono16", pixels, bigendian=1))
    assert np.array_equal(rgb[:, :, 1], _GREY)


@pytest.mark.parametrize(
    "encoding", ["yuv422", "uyvy", "yuyv", "yuv422_yuy2", "bayer_rggb8", "bayer_bggr8"]
)
def test_decode_image_grey_yuv_and_bayer(encoding):
    # A flat grey image must stay a flat grey whatever the layout.
    if encoding.startswith("bayer"):
        pixels = np.full((6, 8), 120, np.uint8)
    else:
        pixels = np.full((6, 8, 2), 128, np.uint8)
        luma = 1 if encoding in ("yuv422", "uyvy") else 0
        pixels[:, :, luma] = 120
    rgb = decode_image(_image_msg(encoding, pixels))
    assert rgb.shape == (6, 8, 3)
    assert np.ptp(rgb.astype(int)) <= 2 and 100 <= rgb.mean() <= 130


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"data": np.zeros(10, np.uint8)}, "bytes, but height"),
        ({"step": 5}, "smaller than width"),
        ({"width": 0}, "not allowed"),
        ({"height": 100000, "width": 100000}, "not allowed"),
    ],
)
def test_decode_image_malformed_is_a_frame_error(change, message):
    msg = _image_msg("rgb8", _RGB)
    for key, value in change.items():
        setattr(msg, key, value)
    with pytest.raises(ImageDecodeError, match=message):
        decode_image(msg)


def test_decode_image_unknown_encoding_is_fatal():
    msg = _image_msg("rgb8", _RGB)
    msg.encoding = "32FC1"
    with pytest.raises(SfmError, match="'32FC1' is not supported") as info:
        decode_image(msg)
    assert not isinstance(info.value, ImageDecodeError)


@pytest.mark.parametrize("ext", [".jpg", ".png"])
def test_decode_compressed_image(ext):
    big = cv2.resize(_RGB, (64, 48), interpolation=cv2.INTER_NEAREST)
    ok, data = cv2.imencode(ext, big[:, :, ::-1].copy())
    assert ok
    rgb = decode_compressed_image(SimpleNamespace(format=ext[1:], data=data.reshape(-1)))
    tolerance = 0 if ext == ".png" else 60
    assert rgb.shape == (48, 64, 3)
    assert np.abs(rgb.astype(int) - big).mean() <= max(tolerance / 4, 0)


@pytest.mark.parametrize(
    ("fmt", "data", "error", "message"),
    [
        ("jpeg", np.frombuffer(b"not a jpeg at all", np.uint8), ImageDecodeError, "cannot decode"),
        ("jpeg", np.zeros(0, np.uint8), ImageDecodeError, "no data"),
        ("16UC1; compressedDepth", np.ones(10, np.uint8), SfmError, "depth"),
    ],
)
def test_decode_compressed_image_bad_input(fmt, data, error, message):
    with pytest.raises(error, match=message):
        decode_compressed_image(SimpleNamespace(format=fmt, data=data))


# --------------------------------------------------------------------------------------------
# Inputs and frame selection


@pytest.fixture(scope="module")
def small_recording():
    return make_recording(12, 160, 120, height_wobble_m=0.1)


@pytest.fixture(scope="module")
def small_frames(small_recording):
    return list(render_frames(small_recording))


@pytest.fixture(scope="module")
def small_bag(tmp_path_factory, small_recording):
    return write_bag(tmp_path_factory.mktemp("bag") / "small", small_recording)


@pytest.fixture(scope="module")
def small_mcap(tmp_path_factory, small_recording):
    return write_bag(
        tmp_path_factory.mktemp("mcap") / "small",
        small_recording,
        storage="mcap",
        compressed=True,
        odometry_topic=None,
    )


def _write_folder(folder: Path, frames: list[np.ndarray]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, rgb in enumerate(frames):
        cv2.imwrite(str(folder / f"img_{i:03d}.png"), rgb[:, :, ::-1].copy())
    return folder


def test_detect_input_kind(tmp_path, small_bag, small_mcap):
    video = tmp_path / "clip.avi"
    video.write_bytes(b"x")
    assert detect_input_kind(video) == "video"
    assert detect_input_kind(tmp_path) == "images"
    assert detect_input_kind(small_bag) == "rosbag"
    mcap_file = next(small_mcap.glob("*.mcap"))
    assert detect_input_kind(mcap_file) == "rosbag"
    with pytest.raises(SfmError, match="input not found"):
        detect_input_kind(tmp_path / "missing.mp4")


def test_every_nth_and_cap(tmp_path, small_frames):
    source = open_source(_write_folder(tmp_path / "in", small_frames), image_rate_hz=10.0)
    frames, stats = extract_frames(
        source, tmp_path / "a", FrameSelection(every_nth=3, reject_blur=False), progress=False
    )
    assert [f.source_index for f in frames] == [0, 3, 6, 9]
    assert [f.name for f in frames][:2] == ["frame_000000.png", "frame_000003.png"]
    assert frames[1].timestamp_s == pytest.approx(0.3)
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [f.name for f in frames]
    assert stats["selected"] == 4 and stats["image_size_wh"] == [160, 120]
    capped, stats = extract_frames(
        source, tmp_path / "b", FrameSelection(max_frames=4, reject_blur=False), progress=False
    )
    # With the length known the block grows to 3, then the cap takes an even subset.
    assert stats["block_size_frames"] == 3
    assert len(capped) == 4 and capped[0].source_index == 0 and capped[-1].source_index == 9


def test_time_based_selection(tmp_path, small_frames):
    folder = _write_folder(tmp_path / "in", small_frames)
    selection = FrameSelection(min_interval_s=0.25, reject_blur=False)
    frames, _ = extract_frames(
        open_source(folder, image_rate_hz=10.0), tmp_path / "a", selection, progress=False
    )
    assert [f.source_index for f in frames] == [0, 3, 6, 9]
    with pytest.raises(SfmError, match="needs timestamps"):
        extract_frames(open_source(folder), tmp_path / "b", selection, progress=False)
    assert not (tmp_path / "b").exists()


def test_blurred_frames_are_rejected(tmp_path, small_recording, small_frames):
    frames = [f.copy() for f in small_frames]
    for i in (4, 9):
        frames[i] = cv2.GaussianBlur(frames[i], (0, 0), 3.0)
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (160, 120))
    for rgb in frames:
        writer.write(rgb[:, :, ::-1].copy())
    writer.release()
    source = open_source(video)
    kept, stats = extract_frames(source, tmp_path / "a", FrameSelection(), progress=False)
    assert stats["rejected_blurred_names"] == ["frame_000004.png", "frame_000009.png"]
    assert [f.source_index for f in kept] == [i for i in range(12) if i not in (4, 9)]
    assert kept[1].timestamp_s == pytest.approx(0.1)
    # Blocks of two: the sharp frame of each pair wins.
    pairs, _ = extract_frames(source, tmp_path / "b", FrameSelection(every_nth=2), progress=False)
    assert 4 not in [f.source_index for f in pairs] and 5 in [f.source_index for f in pairs]


def test_bag_frames_mcap_compressed(tmp_path, small_mcap, small_frames):
    source = open_source(small_mcap)
    assert source.description["image_topic"] == "/camera/image_raw/compressed"
    frames, stats = extract_frames(
        source, tmp_path / "a", FrameSelection(reject_blur=False), progress=False
    )
    assert len(frames) == 12 and stats["source"]["frame_ids"] == {"camera_optical_frame": 12}
    assert frames[1].timestamp_s - frames[0].timestamp_s == pytest.approx(0.1, abs=1e-6)
    first = cv2.imread(str(tmp_path / "a" / frames[0].name))[:, :, ::-1]
    assert np.abs(first.astype(int) - small_frames[0]).mean() < 6  # JPEG quality 95
    # An MCAP file copied without its metadata.yaml still opens.
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(next(small_mcap.glob("*.mcap")), bare)
    assert open_source(bare).frame_count == 12


def _handmade_bag(path: Path, messages: list[tuple[str, str, object]]) -> Path:
    from rosbags.rosbag2 import Writer
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_JAZZY)
    with Writer(path, version=9) as writer:
        connections = {}
        for i, (topic, msgtype, msg) in enumerate(messages):
            if topic not in connections:
                connections[topic] = writer.add_connection(topic, msgtype, typestore=ts)
            writer.write(connections[topic], (i + 1) * 100_000_000, ts.serialize_cdr(msg, msgtype))
    return path


def _ros_image(ts, i: int, rgb: np.ndarray, *, truncate: bool = False):
    types = ts.types
    data = np.ascontiguousarray(rgb).reshape(-1)
    return types["sensor_msgs/msg/Image"](
        header=types["std_msgs/msg/Header"](
            stamp=types["builtin_interfaces/msg/Time"](sec=i, nanosec=0), frame_id="cam"
        ),
        height=rgb.shape[0],
        width=rgb.shape[1],
        encoding="rgb8",
        is_bigendian=0,
        step=rgb.shape[1] * 3,
        data=data[: len(data) // 2] if truncate else data,
    )


def test_bag_malformed_image_is_skipped_and_counted(tmp_path, small_frames):
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_JAZZY)
    msgs = [
        ("/img", "sensor_msgs/msg/Image", _ros_image(ts, i + 1, small_frames[i], truncate=i == 1))
        for i in range(4)
    ]
    bag = _handmade_bag(tmp_path / "bag", msgs)
    frames, stats = extract_frames(
        open_source(bag), tmp_path / "a", FrameSelection(reject_blur=False), progress=False
    )
    assert [f.source_index for f in frames] == [0, 2, 3]
    assert stats["undecodable"] == 1 and "message 1" in stats["undecodable_examples"][0]


def test_bag_topic_errors(tmp_path, small_bag, small_frames):
    with pytest.raises(SfmError, match="no image topic '/nope'.*'?/camera/image_raw"):
        open_source(small_bag, image_topic="/nope")
    with pytest.raises(SfmError, match="has type nav_msgs/msg/Odometry"):
        open_source(small_bag, image_topic="/odom")
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_JAZZY)
    two = _handmade_bag(
        tmp_path / "two",
        [
            ("/a", "sensor_msgs/msg/Image", _ros_image(ts, 1, small_frames[0])),
            ("/b", "sensor_msgs/msg/Image", _ros_image(ts, 1, small_frames[0])),
        ],
    )
    with pytest.raises(SfmError, match=r"2 image topics \(/a, /b\)"):
        open_source(two)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "metadata.yaml").write_text("this: [is not a bag")
    with pytest.raises(SfmError, match="cannot open rosbag2"):
        open_source(broken)


@pytest.mark.parametrize(
    ("make", "kwargs", "message"),
    [
        (lambda d: (d / "x.mp4").write_text("not a video") and d / "x.mp4", {}, "cannot read"),
        (lambda d: d, {}, "holds no images"),
        (lambda d: (d / "a.png").write_bytes(b"garbage") and d, {}, "could be decoded"),
        (lambda d: d / "missing.avi", {}, "input not found"),
        (lambda d: d, {"image_topic": "/x"}, "only applies to a rosbag2"),
        (lambda d: d, {"kind": "dvd"}, "unknown input kind"),
    ],
)
def test_unreadable_inputs(tmp_path, make, kwargs, message):
    folder = tmp_path / "in"
    folder.mkdir()
    with pytest.raises(SfmError, match=message):
        source = open_source(make(folder), **kwargs)
        extract_frames(source, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_frames_of_different_sizes_are_refused(tmp_path, small_frames):
    folder = _write_folder(tmp_path / "in", small_frames[:3])
    cv2.imwrite(str(folder / "img_999.png"), np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(SfmError, match="one size"):
        extract_frames(open_source(folder), tmp_path / "out", progress=False)


def test_frames_csv_round_trip_and_malformed(tmp_path, small_frames):
    source = open_source(_write_folder(tmp_path / "in", small_frames[:4]))
    frames, _ = extract_frames(source, tmp_path / "a", progress=False)
    write_frames_csv(tmp_path / "frames.csv", frames)
    assert read_frames_csv(tmp_path / "frames.csv") == frames
    header = "name,source_index,timestamp_s,sharpness,source\n"
    for text, message in [
        ("a,b\n", "expected the header"),
        (header + "x.png,1,0.5\n", "expected 5 fields"),
        (header + "x.png,one,0.5,1.0,s\n", ":2: bad number"),
        (header, "lists no frames"),
    ]:
        (tmp_path / "bad.csv").write_text(text)
        with pytest.raises(SfmError, match=message):
            read_frames_csv(tmp_path / "bad.csv")
    with pytest.raises(SfmError, match="cannot read"):
        read_frames_csv(tmp_path / "missing.csv")


# --------------------------------------------------------------------------------------------
# Split, intrinsics, options


def test_split_by_time_blocks_is_blockwise():
    train, test, dropped = split_by_time_blocks(100, test_fraction=0.2, blocks=10, guard_frames=1)
    assert test == list(range(20, 30)) + list(range(70, 80))
    assert dropped == [19, 30, 69, 80]
    assert sorted(train + test + dropped) == list(range(100))
    train, test, dropped = split_by_time_blocks(9, test_fraction=0.25, guard_frames=0)
    assert test and train and not dropped and len(train) + len(test) == 9


def test_intrinsics_json_and_colmap_convention(tmp_path):
    path = tmp_path / "intrinsics.json"
    path.write_text(
        json.dumps(
            {
                "width": 640,
                "height": 480,
                "fx": 500,
                "fy": 501,
                "cx": 319.5,
                "cy": 239.5,
                "distortion": [0, 0, 0, 0, 0],
            }
        )
    )
    camera = CameraIntrinsics.from_json(path)
    # COLMAP puts pixel centres at +0.5: the principal point moves by half a pixel.
    assert camera.colmap_camera() == ("PINHOLE", [500.0, 501.0, 320.0, 240.0])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "cannot read intrinsics JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"width": 640, "height": 480, "fx": 500, "fy": 500, "cx": 1}', "missing key"),
        ('{"width": 640, "height": 480, "fx": -5, "fy": 500, "cx": 1, "cy": 1}', "> 0"),
        ('{"width": 0, "height": 480, "fx": 5, "fy": 500, "cx": 1, "cy": 1}', "width"),
        ('{"width": 64, "height": 48, "fx": "a", "fy": 5, "cx": 1, "cy": 1}', "bad intrinsics"),
        (
            '{"width": 64, "height": 48, "fx": 5, "fy": 5, "cx": 1, "cy": 1,'
            ' "distortion_model": "kannala", "distortion": [1]}',
            "not supported",
        ),
    ],
)
def test_intrinsics_json_malformed(tmp_path, content, message):
    path = tmp_path / "intrinsics.json"
    path.write_text(content)
    with pytest.raises(SfmError, match=message):
        CameraIntrinsics.from_json(path)
    with pytest.raises(SfmError, match="not found"):
        CameraIntrinsics.from_json(tmp_path / "missing.json")


@pytest.mark.parametrize(
    ("model", "d", "expected_model", "n_params"),
    [
        ("plumb_bob", [0.1, -0.01, 0.001, 0.002, 0.0], "OPENCV", 8),
        ("plumb_bob", [0.1, -0.01, 0.001, 0.002, 0.005], "FULL_OPENCV", 12),
        ("plumb_bob", [0.0] * 5, "PINHOLE", 4),
        ("rational_polynomial", [0.1] * 8, "FULL_OPENCV", 12),
        ("equidistant", [0.1, 0.01, 0.0, 0.0], "OPENCV_FISHEYE", 8),
    ],
)
def test_intrinsics_from_camera_info(model, d, expected_model, n_params):
    info = {
        "width": 64,
        "height": 48,
        "distortion_model": model,
        "d": d,
        "k": [50.0, 0, 31.5, 0, 51.0, 23.5, 0, 0, 1],
    }
    name, params = CameraIntrinsics.from_camera_info(info, "test").colmap_camera()
    assert name == expected_model and len(params) == n_params and params[2] == 32.0


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ([0, 0, 0, 1, 0, 0], "7 finite numbers"),
        ([0, 0, 0, 2, 0, 0, 0], "unit quaternion"),
        ([0, 0, float("nan"), 1, 0, 0, 0], "7 finite numbers"),
    ],
)
def test_parse_extrinsic_rejects_bad_values(values, message):
    with pytest.raises(SfmError, match=message):
        parse_extrinsic(values)


@pytest.mark.parametrize(
    ("build", "kwargs", "message"),
    [
        (FrameSelection, {"every_nth": 0}, "every_nth"),
        (FrameSelection, {"every_nth": 1.5}, "every_nth"),
        (FrameSelection, {"min_interval_s": -1.0}, "min_interval_s"),
        (FrameSelection, {"blur_ratio": 1.0}, "blur_ratio"),
        (FrameSelection, {"blur_window": 0}, "blur_window"),
        (FrameSelection, {"max_frames": 1}, "max_frames"),
        (split_by_time_blocks, {"count": 20, "test_fraction": 0.0}, "test_fraction"),
        (split_by_time_blocks, {"count": 20, "test_fraction": 1.0}, "test_fraction"),
        (split_by_time_blocks, {"count": 20, "blocks": 1}, "blocks"),
        (split_by_time_blocks, {"count": 20, "guard_frames": -1}, "guard_frames"),
        (split_by_time_blocks, {"count": 2}, "at least 3"),
        (split_by_time_blocks, {"count": 4, "guard_frames": 3}, "a split is empty"),
        (ReferenceOptions, {"mode": "metric"}, "scale mode"),
        (ReferenceOptions, {"mode": "factor"}, "needs scale_factor"),
        (ReferenceOptions, {"mode": "factor", "scale_factor": -2.0}, "positive"),
        (ReferenceOptions, {"mode": "distance", "known_distance": ("a", "b", 0.0)}, "positive"),
        (ReferenceOptions, {"mode": "distance", "known_distance": ("a", "b")}, "frame_a, frame_b"),
        (ReferenceOptions, {"mode": "odometry"}, "needs odometry_topic"),
        (ReferenceOptions, {"mode": "tf"}, "needs reference_frame"),
        (
            ReferenceOptions,
            {"mode": "tf", "reference_frame": "map", "camera_extrinsic": (0,) * 3 + (1, 0, 0, 0)},
            "odometry only",
        ),
        (ReferenceOptions, {"max_gap_s": 0.0}, "max_gap_s"),
        (ReferenceOptions, {"min_pairs": 2}, "min_pairs"),
        (ReferenceOptions, {"inlier_threshold_m": 0.0}, "inlier_threshold_m"),
        (SfmOptions, {"matcher": "vocab"}, "matcher"),
        (SfmOptions, {"camera_model": "FISHEYE9"}, "camera_model"),
        (SfmOptions, {"overlap": 0}, "overlap"),
        (SfmOptions, {"max_features": 10}, "max_features"),
        (SfmOptions, {"num_threads": 0}, "num_threads"),
        (SfmOptions, {"init_min_tri_angle_deg": 0.0}, "init_min_tri_angle_deg"),
        (SfmOptions, {"init_min_tri_angle_deg": 90.0}, "init_min_tri_angle_deg"),
        (SfmOptions, {"init_min_tri_angle_deg": float("nan")}, "init_min_tri_angle_deg"),
        (SfmOptions, {"init_min_tri_angle_deg": "4"}, "init_min_tri_angle_deg"),
        (SfmOptions, {"init_max_forward_motion": 0.2}, "init_max_forward_motion"),
        (SfmOptions, {"init_max_forward_motion": 1.01}, "init_max_forward_motion"),
        (SfmOptions, {"init_max_forward_motion": True}, "init_max_forward_motion"),
    ],
)
def test_options_refuse_bad_values(build, kwargs, message):
    with pytest.raises(SfmError, match=message):
        build(**kwargs)


def test_resolve_frame_by_name_stem_or_index():
    names, indices = ["frame_000004.png", "frame_000009.png"], [4, 9]
    assert resolve_frame("frame_000009.png", names, indices) == "frame_000009.png"
    assert resolve_frame("frame_000004", names, indices) == "frame_000004.png"
    assert resolve_frame("9", names, indices) == "frame_000009.png"
    with pytest.raises(SfmError, match="not one of the selected frames"):
        resolve_frame("5", names, indices)


class _StubModel:
    """What select_largest reads of a pycolmap.Reconstruction."""

    def __init__(self, names: list[str], points: int) -> None:
        self.images = {i: SimpleNamespace(name=n) for i, n in enumerate(names)}
        self.points = points

    def num_reg_images(self) -> int:
        return len(self.images)

    def num_points3D(self) -> int:  # noqa: N802 - pycolmap's name
        return self.points

    def reg_image_ids(self) -> list[int]:
        return list(self.images)


def test_select_largest_keeps_the_biggest_model_and_reports_the_rest():
    models = {
        0: _StubModel(["b.png", "a.png"], 50),
        1: _StubModel(["c.png", "d.png", "e.png"], 80),
        2: _StubModel(["f.png"], 5),
    }
    index, best, others = select_largest(models)
    assert index == 1 and best is models[1]
    assert others == [
        {"model": 0, "registered_frames": 2, "points": 50, "frames": ["a.png", "b.png"]},
        {"model": 2, "registered_frames": 1, "points": 5, "frames": ["f.png"]},
    ]
    with pytest.raises(SfmError, match="no model"):
        select_largest({})


# --------------------------------------------------------------------------------------------
# Reference poses from a bag (no SfM needed)


@pytest.mark.parametrize("source", ["odometry+tf_static", "odometry+extrinsic", "tf"])
def test_reference_camera_poses_match_the_ground_truth(tmp_path, small_recording, source):
    no_static = source == "odometry+extrinsic"
    bag = write_bag(
        tmp_path / "bag", small_recording, noise_m=0.0, noise_deg=0.0, tf_static=not no_static
    )
    if source == "tf":
        options = ReferenceOptions(mode="tf", reference_frame="odom")
    else:
        extrinsic = None
        if no_static:
            t = small_recording.T_base_camera
            extrinsic = (*t[:3, 3], *matrix_to_quat(t[:3, :3]))
        options = ReferenceOptions(
            mode="odometry", odometry_topic="/odom", camera_extrinsic=extrinsic
        )
    stamps = small_recording.stamps_s + 0.031  # between odometry samples
    reference = reference_camera_poses(bag, options, stamps, "camera_optical_frame")
    assert reference.frame_id == "odom" and reference.valid.all()
    truth = DEFAULT_T_ODOM_WORLD @ small_recording.base_pose_at(stamps)
    truth = truth @ small_recording.T_base_camera
    # Linear interpolation of a 50 Hz arc: sub-millimetre.
    assert np.abs(reference.matrices[:, :3, 3] - truth[:, :3, 3]).max() < 1e-3
    angles = rotation_error_deg(
        matrix_to_quat(reference.matrices[:, :3, :3]), matrix_to_quat(truth[:, :3, :3])
    )
    assert angles.max() < 0.01


# --------------------------------------------------------------------------------------------
# Bad input of the whole pipeline caught before SfM (fast)


@pytest.mark.parametrize(
    ("bag_kwargs", "reference", "main_kwargs", "message"),
    [
        ({}, {"odometry_topic": "/wheel_odom"}, {}, "no odometry topic '/wheel_odom'.*/odom"),
        ({}, {}, {"image_topic": "/camera/depth"}, "no image topic '/camera/depth'"),
        ({"odometry_time_shift_s": 100.0}, {"odometry_topic": "/odom"}, {}, "does not overlap"),
        ({"tf_static": False}, {"odometry_topic": "/odom"}, {}, "no camera extrinsic"),
        ({}, {"reference_frame": "map"}, {}, "'map' is not in the bag"),
        ({}, {}, {"camera_info_topic": "/camera/info"}, "no camera info topic"),
        ({}, {"odometry_topic": "/odom", "scale_factor": 2.0}, {}, "at most one"),
        ({}, {}, {"redo_from": "everything"}, "redo_from"),
        ({}, {}, {"min_registered_share": 2.0}, "min_registered_share"),
    ],
)
def test_bad_bag_input_fails_before_sfm(
    tmp_path, small_recording, bag_kwargs, reference, main_kwargs, message
):
    bag = write_bag(tmp_path / "bag", small_recording, **bag_kwargs)
    out = tmp_path / "out"
    with pytest.raises(SfmError, match=message):
        main(bag, out, reference=ReferenceOptions(**reference), **QUIET, **main_kwargs)
    assert not (out / "sfm" / "database.db").exists()  # failed before features
    if out.exists():
        _assert_not_complete(out)


def test_odometry_needs_a_rosbag(tmp_path, small_frames):
    folder = _write_folder(tmp_path / "in", small_frames)
    with pytest.raises(SfmError, match="needs odometry or TF from a rosbag2"):
        main(folder, tmp_path / "out", reference=ReferenceOptions(odometry_topic="/odom"), **QUIET)
    _assert_not_complete(tmp_path / "out")


def test_refuses_a_foreign_output_folder(tmp_path, small_frames):
    folder = _write_folder(tmp_path / "in", small_frames)
    out = tmp_path / "out"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    with pytest.raises(SfmError, match="not written by posenet_train.sfm"):
        main(folder, out, **QUIET)
    assert (out / "thesis.tex").read_text() == "precious"


# --------------------------------------------------------------------------------------------
# SfM runs


@pytest.fixture(scope="module")
def video_run(tmp_path_factory):
    """A hand-held video of the scene -> SfM (intrinsics estimated) -> known-distance scale."""
    root = tmp_path_factory.mktemp("video")
    recording = make_recording(SFM_FRAMES, SFM_WIDTH, SFM_HEIGHT, height_wobble_m=0.2)
    video = write_video(root / "walk.avi", recording)
    truth = recording.T_world_camera
    first, last = 0, SFM_FRAMES - 1
    distance = float(np.linalg.norm(truth[first, :3, 3] - truth[last, :3, 3]))
    known_distance = (f"frame_{first:06d}", str(last), distance)
    kwargs = {"reference": ReferenceOptions(known_distance=known_distance), **QUIET}
    out = main(video, root / "out", **kwargs)
    return SimpleNamespace(
        root=root, video=video, out=out, truth=truth, kwargs=kwargs, recording=recording
    )


def test_video_known_distance_meets_the_tolerance(video_run):
    report = json.loads((video_run.out / REPORT).read_text())
    sfm = report["sfm"]
    assert sfm["registered_share"] >= 0.9 and sfm["other_models"] == []
    assert 0 < sfm["mean_reprojection_error_px"] < 1.0
    assert sfm["track_length_mean"] > 3 and sfm["track_length_max"] >= sfm["track_length_median"]
    assert sfm["cameras"][0]["model"] == "SIMPLE_RADIAL"
    assert report["scale"]["mode"] == "distance" and report["warnings"] == []
    assert report["frames"]["selected"] == SFM_FRAMES
    records = _records(video_run.out)
    index = [_frame_index(r) for r in records]
    positions = np.array([r.position_m for r in records])
    quats = np.array([r.quat_wxyz for r in records])
    truth = video_run.truth[index]
    # The SfM frame is arbitrary: a rigid alignment (no scale: that is what is being tested)
    # by the tool's own Umeyama routine, then the errors.
    rigid = umeyama(positions, truth[:, :3, 3], with_scale=False)
    aligned_p, aligned_q = rigid.apply_poses(positions, quats)
    position_error = np.linalg.norm(aligned_p - truth[:, :3, 3], axis=1)
    rotation_error = rotation_error_deg(aligned_q, matrix_to_quat(truth[:, :3, :3]))
    path_length = _path_length(video_run.truth)
    assert np.median(position_error) <= 0.01 * path_length
    assert np.median(rotation_error) <= 1.0


def test_output_is_a_cambridge_and_a_colmap_dataset(video_run):
    out = video_run.out
    cambridge = {r.image_path.name: r for r in _records(out)}
    colmap = {r.image_path.name: r for r in _records(out, "colmap")}
    assert cambridge.keys() == colmap.keys()
    for name, record in cambridge.items():
        assert np.allclose(record.position_m, colmap[name].position_m, atol=1e-6)
        assert rotation_error_deg(record.quat_wxyz, colmap[name].quat_wxyz) < 1e-4
    test_names = [r.image_path.name for r in load_split(out, "test")]
    assert test_names == [r.image_path.name for r in load_split(f"colmap:{out}", "test")]
    # Test frames come in contiguous blocks of the sequence, not interleaved.
    indices = sorted(int(n[6:12]) for n in test_names)
    runs = np.split(indices, np.flatnonzero(np.diff(indices) > 1) + 1)
    assert len(runs) == 2 and all(len(r) >= 2 for r in runs)
    lines = (out / "poses.csv").read_text().splitlines()
    assert lines[0].startswith("image,timestamp_s,split,x_m")
    assert {line.split(",")[2] for line in lines[1:]} == {"train", "test", "guard"}
    assert cv2.imread(str(out / "trajectory.png")) is not None
    assert (out / "sfm" / "database.db").is_file() and (out / "sparse" / "0").is_dir()


def test_posenet_train_trains_on_the_output(video_run, tmp_path):
    from posenet_train.train import main as train_main

    summary = train_main(
        video_run.out,
        tmp_path / "run",
        model="posenet-tiny",
        epochs=1,
        batch_size=8,
        resize=40,
        crop=32,
        threads=1,
        workers=0,
        progress=False,
    )
    assert summary["epochs_done"] == 1 and Path(summary["last"]).is_file()


def test_rerun_reuses_and_parameter_changes_need_redo(video_run, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(video_run.out, out)
    marker = out / COMPLETE_MARKER
    before = marker.stat().st_mtime_ns
    assert main(video_run.video, out, **video_run.kwargs) == out
    assert marker.stat().st_mtime_ns == before
    changed = {**QUIET, "reference": ReferenceOptions(scale_factor=2.0)}
    with pytest.raises(SfmError, match="'export' step made with different.*redo-from export"):
        main(video_run.video, out, **changed)
    assert marker.is_file()  # the complete previous result is untouched
    with pytest.raises(SfmError, match="'features' step.*max_features"):
        main(video_run.video, out, sfm=SfmOptions(max_features=1024), **video_run.kwargs)
    with pytest.warns(SfmWarning, match="SfM units"):
        main(video_run.video, out, redo_from="export", **QUIET)
    report = json.loads((out / REPORT).read_text())
    assert report["reused_steps"] == ["frames", "features", "mapping"]
    assert report["scale"]["mode"] == "none" and report["output_frame"]["units"] == "sfm"
    raw = {r.image_path.name: r.position_m for r in _records(out)}
    with pytest.warns(SfmWarning, match="spans only"):
        main(
            video_run.video,
            out,
            redo_from="export",
            reference=ReferenceOptions(known_distance=("0", "1", 0.1)),
            **QUIET,
        )
    main(video_run.video, out, redo_from="export", **changed)
    doubled = {r.image_path.name: r.position_m for r in _records(out)}
    for name, position in raw.items():
        assert np.allclose(doubled[name], 2.0 * position, atol=1e-9)


def test_cli_reuses_the_output_and_reports_errors(video_run, tmp_path, capsys):
    out = tmp_path / "copy"
    shutil.copytree(video_run.out, out)
    first, second, metres = video_run.kwargs["reference"].known_distance
    argv = [str(video_run.video), "-o", str(out), "--no-progress"]
    argv += ["--known-distance", first, second, repr(metres)]
    assert cli(argv) == 0
    assert capsys.readouterr().out.strip() == str(out)
    bad = tmp_path / "bad.mp4"
    bad.write_text("no video")
    assert cli([str(bad), "-o", str(tmp_path / "x"), "--no-progress"]) == 1
    assert "error: cannot read video" in capsys.readouterr().err
    _assert_not_complete(tmp_path / "x")


@pytest.mark.parametrize(
    "extra",
    [
        ["--every-nth", "0"],
        ["--max-frames", "-1"],
        ["--blur-ratio", "1.5"],
        ["--known-distance", "a", "b", "far"],
        ["--known-distance", "a", "b", "-1"],
        ["--scale", "2", "--odometry-topic", "/odom"],
        ["--camera-extrinsic", "0", "0", "0", "1"],
        ["--camera-extrinsic", "0", "0", "0", "1", "0", "0", "x"],
        ["--matcher", "vocab"],
        ["--camera-model", "FISHEYE9"],
        ["--redo-from", "start"],
        ["--test-fraction", "0"],
        ["--max-gap-s", "nan"],
        ["--input-kind", "dvd"],
        ["--init-min-tri-angle", "0"],
        ["--init-min-tri-angle", "steep"],
        ["--init-max-forward-motion", "1.5"],
        ["--init-max-forward-motion", "inf"],
    ],
)
def test_cli_rejects_malformed_arguments(tmp_path, extra, capsys):
    with pytest.raises(SystemExit) as info:
        cli([str(tmp_path), "-o", str(tmp_path / "out"), *extra])
    assert info.value.code == 2
    assert "error" in capsys.readouterr().err


# Flags the CLI maps itself because their names differ from what they set.
RENAMED_FLAGS = {
    "input": "input_path",
    "no_blur_rejection": "reject_blur",
    "threads": "num_threads",
    "scale": "scale_factor",
    "tf_reference_frame": "reference_frame",
    "min_reference_pairs": "min_pairs",
    "no_progress": "progress",
}


def test_every_cli_flag_reaches_main_or_an_option_object():
    """The CLI builds main's option objects from the flags named like their fields: a flag named
    like nothing would be dropped silently."""
    parsed = set(vars(build_parser().parse_args(["in", "-o", "out"])))
    targets = set(inspect.signature(main).parameters) | {
        f.name for cls in (FrameSelection, SfmOptions, ReferenceOptions) for f in fields(cls)
    }
    assert parsed - targets - set(RENAMED_FLAGS) == set()
    assert set(RENAMED_FLAGS.values()) <= targets


@pytest.fixture(scope="module")
def bag_run(tmp_path_factory):
    """A robot's rosbag2: raw images, odometry with an offset, noise and a glitch, /tf_static."""
    root = tmp_path_factory.mktemp("robot")
    recording = make_recording(SFM_FRAMES, SFM_WIDTH, SFM_HEIGHT)
    # 0.4 s of odometry 30 cm off: the alignment must see those frames as outliers.
    bag = write_bag(root / "bag", recording, glitch=(1.0, 1.4, (0.3, 0.0, 0.0)))
    out = main(
        bag,
        root / "out",
        reference=ReferenceOptions(odometry_topic="/odom"),
        camera_info_topic="/camera/camera_info",
        **QUIET,
    )
    return SimpleNamespace(root=root, bag=bag, out=out, recording=recording)


def test_rosbag_odometry_gives_metric_labels_in_the_odometry_frame(bag_run):
    report = json.loads((bag_run.out / REPORT).read_text())
    scale = report["scale"]
    assert scale["mode"] == "odometry" and scale["reference_frame"] == "odom"
    assert scale["extrinsic_source"].startswith("TF base_link -> camera_optical_frame")
    assert 0.05 <= scale["outlier_share"] <= 0.3
    assert scale["residual_rms_inliers_m"] < 0.03 and scale["rotation_residual_median_deg"] < 2
    assert report["sfm"]["cameras"][0]["model"] == "PINHOLE"
    assert report["output_frame"] == {**report["output_frame"], "frame_id": "odom", "units": "m"}
    truth = DEFAULT_T_ODOM_WORLD @ bag_run.recording.T_world_camera
    records = _records(bag_run.out)
    index = [_frame_index(r) for r in records]
    # No alignment here: the poses must already be metric and in the odometry frame.
    position_error = np.linalg.norm(
        np.array([r.position_m for r in records]) - truth[index, :3, 3], axis=1
    )
    rotation_error = rotation_error_deg(
        np.array([r.quat_wxyz for r in records]), matrix_to_quat(truth[index, :3, :3])
    )
    assert np.median(position_error) <= 0.01 * _path_length(truth)
    assert np.median(rotation_error) <= 1.0
    # The timestamps of the records are the image stamps.
    stamps = [r.timestamp_s for r in load_split(bag_run.out, "train")]
    assert stamps == [None] * len(stamps) or all(s > 1.6e9 for s in stamps)


def test_rosbag_tf_alignment_reuses_the_reconstruction(bag_run, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(bag_run.out, out)
    main(
        bag_run.bag,
        out,
        reference=ReferenceOptions(reference_frame="odom"),
        camera_info_topic="/camera/camera_info",
        redo_from="export",
        **QUIET,
    )
    report = json.loads((out / REPORT).read_text())
    assert report["reused_steps"] == ["frames", "features", "mapping"]
    assert report["scale"]["source"] == "TF odom -> camera_optical_frame"
    truth = DEFAULT_T_ODOM_WORLD @ bag_run.recording.T_world_camera
    records = _records(out)
    error = np.linalg.norm(
        np.array([r.position_m for r in records])
        - truth[[_frame_index(r) for r in records], :3, 3],
        axis=1,
    )
    assert np.median(error) <= 0.01 * _path_length(truth)


def test_too_few_registered_frames_is_a_clear_error(tmp_path):
    recording = make_recording(10, 320, 240, arc_rad=0.6, height_wobble_m=0.1)
    frames = list(render_frames(recording))
    grey = np.full_like(frames[0], 128)
    folder = _write_folder(tmp_path / "in", frames + [grey] * 14)
    out = tmp_path / "out"
    with pytest.raises(SfmError, match=r"too few registered frames: \d+ of 24"):
        main(folder, out, selection=NO_BLUR_REJECTION, **QUIET)
    _assert_not_complete(out)
    # The finished steps stay and are reused: a lower bar then completes the run.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SfmWarning)
        main(folder, out, selection=NO_BLUR_REJECTION, min_registered_share=0.2, **QUIET)
    report = json.loads((out / REPORT).read_text())
    assert report["reused_steps"] == ["frames", "features", "mapping"]
    assert report["sfm"]["registered_frames"] <= 10
    # The first try left too few frames registered: COLMAP's own initialisation was tried too,
    # and the better of the two kept.
    attempts = report["sfm"]["mapping_attempts"]
    assert [(a["init_min_tri_angle_deg"], a["init_max_forward_motion"]) for a in attempts] == [
        (4.0, 1.0),
        (16.0, 0.95),
    ]
    assert sum(a["kept"] for a in attempts) == 1
    kept = next(a for a in attempts if a["kept"])
    assert kept["model_sizes"][0] == max((a["model_sizes"] or [0])[0] for a in attempts)
    assert not any(p.name.startswith("try") for p in (out / "sfm" / "models").iterdir())
    # Redoing a step redoes every later one, whatever their markers say.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SfmWarning)
        main(
            folder,
            out,
            selection=NO_BLUR_REJECTION,
            min_registered_share=0.2,
            sfm=SfmOptions(max_features=2048, matcher="exhaustive"),
            redo_from="features",
            **QUIET,
        )
    report = json.loads((out / REPORT).read_text())
    assert report["reused_steps"] == ["frames"]
    assert report["sfm"]["options"]["max_features"] == 2048
    assert report["sfm"]["options"]["matcher"] == "exhaustive"
    # Every pair is matched; only pairs of the 10 scene frames verify (the grey ones have no
    # features).
    assert report["features"]["matched_pairs"] == 24 * 23 // 2
    assert report["features"]["verified_pairs"] <= 10 * 9 // 2


def test_blank_frames_have_no_features(tmp_path):
    folder = _write_folder(tmp_path / "in", [np.full((60, 80, 3), 90, np.uint8)] * 6)
    out = tmp_path / "out"
    with pytest.raises(SfmError, match="no SIFT features"):
        main(folder, out, selection=NO_BLUR_REJECTION, **QUIET)
    _assert_not_complete(out)
    assert not (out / "sfm" / "database.db").exists()


# --------------------------------------------------------------------------------------------
# A robot driving forward (issue 15)

# The rendered forward drive at a third of the benchmark's pixels (640x214, still 3:1): 51 frames
# 1.2 m apart down the street, nearly pure forward motion. With COLMAP's own initialisation
# (16°, forward motion refused) these frames give a model that drifts to 3-5 % of the path
# (BENCHMARKS.md); at 480x160 that failure comes and goes with the SIFT run, so the test uses
# this size.
DRIVE = {"frames": 51, "spacing_m": 1.2, "width": 640, "height": 214}


@pytest.fixture(scope="module")
def drive_run(tmp_path_factory):
    """The rendered forward drive -> SfM with defaults, intrinsics and the first-to-last
    distance."""
    from posenet_train import synthetic

    root = tmp_path_factory.mktemp("drive")
    dataset = synthetic.main(root / "street", scene="drive", workers=1, progress=False, **DRIVE)
    truth = {}
    rotations = {}
    for split in ("train", "test"):
        for record in load_split(dataset, split):
            truth[record.image_path.name] = record.position_m
            rotations[record.image_path.name] = quat_to_matrix(record.quat_wxyz)
    names = sorted(truth)
    distance = float(np.linalg.norm(truth[names[-1]] - truth[names[0]]))
    kwargs = {
        "intrinsics": dataset / "intrinsics.json",
        "reference": ReferenceOptions(known_distance=("0", str(DRIVE["frames"] - 1), distance)),
        **QUIET,
    }
    out = main(dataset / "images", root / "out", **kwargs)
    path = float(np.linalg.norm(np.diff([truth[n] for n in names], axis=0), axis=1).sum())
    return SimpleNamespace(
        dataset=dataset, out=out, truth=truth, rotations=rotations, path=path, kwargs=kwargs
    )


def _drive_position_errors(out: Path, truth: dict) -> np.ndarray:
    records = _records(out)
    positions = np.array([r.position_m for r in records])
    expected = np.array([truth[r.image_path.name] for r in records])
    # Metric from the known distance; the SfM frame is arbitrary: rigid alignment only.
    rigid = umeyama(positions, expected, with_scale=False)
    return np.linalg.norm(rigid.apply_points(positions) - expected, axis=1)


def test_forward_drive_reconstructs_with_defaults(drive_run):
    report = json.loads((drive_run.out / REPORT).read_text())
    assert report["sfm"]["registered_frames"] == DRIVE["frames"]
    assert report["sfm"]["mapping_attempts"][0]["kept"]  # no fallback needed
    assert report["sfm"]["cameras"][0]["model"] == "PINHOLE"
    assert drive_run.path == pytest.approx(60.0, rel=0.01)
    errors = _drive_position_errors(drive_run.out, drive_run.truth)
    assert np.median(errors) <= 0.01 * drive_run.path
    # Frame-to-frame rotations (free of any alignment, which a straight path leaves loose about
    # its own axis): main before issue 15 registered all 51 frames of this drive at 0.49 % of
    # the path, but started from a wrong pair and turned some frames by up to 17 deg.
    records = sorted(_records(drive_run.out), key=lambda r: r.image_path.name)
    estimated = [quat_to_matrix(r.quat_wxyz) for r in records]
    expected = [drive_run.rotations[r.image_path.name] for r in records]

    def relative(rotations):
        pairs = zip(rotations[:-1], rotations[1:], strict=True)
        return np.array([matrix_to_quat(a.T @ b) for a, b in pairs])

    relative_errors = rotation_error_deg(relative(estimated), relative(expected))
    assert np.max(relative_errors) <= 1.0
