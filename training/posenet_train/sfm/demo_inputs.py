"""Inputs with known ground truth for the labelling pipeline, made from the embedded scene.

A "recording" is a robot driving an arc round the centre of the synthetic room
(:mod:`posenet_train.synthetic`) with a camera mounted on it, looking forward-left at the room's
centre box, panels and walls (depth from 0.5 m to 6 m: enough parallax for SfM). From it this
module writes

- a video (:func:`write_video`, MJPG in .avi: the codec every OpenCV/FFmpeg build can write),
- a rosbag2 (:func:`write_bag`, sqlite3 or MCAP): the images (raw ``sensor_msgs/Image`` or JPEG
  ``CompressedImage``), ``nav_msgs/Odometry`` of the base in an odometry frame that is offset
  from the scene's world frame by a known transform, with noise, and ``/tf`` + ``/tf_static``
  (odom -> base_link -> camera optical frame), plus ``CameraInfo``.

Used by the tests and the benchmark of :mod:`posenet_train.sfm`, and as a demo::

    from posenet_train.sfm.demo_inputs import make_recording, write_bag
    rec = make_recording(60, 640, 480)
    write_bag("demo_bag", rec, storage="mcap")
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from posenet_core.geometry import matrix_to_quat, quat_to_matrix
from posenet_train.sfm.errors import SfmError
from posenet_train.synthetic import PinholeCamera, Scene, build_scene, look_at_rotation, render

__all__ = [
    "DEFAULT_T_ODOM_WORLD",
    "Recording",
    "make_recording",
    "pose_matrix",
    "render_frames",
    "write_bag",
    "write_video",
]


def pose_matrix(position, yaw_rad: float = 0.0) -> np.ndarray:
    """4x4 pose with a position and a rotation about z."""
    t = np.eye(4)
    c, s = math.cos(yaw_rad), math.sin(yaw_rad)
    t[:3, :3] = [[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]
    t[:3, 3] = position
    return t


# The odometry frame's pose in the scene's world frame is the inverse of this: an odometry frame
# that started somewhere else, turned by 35°.
DEFAULT_T_ODOM_WORLD = pose_matrix((1.2, -0.6, 0.0), math.radians(35.0))


@dataclass(frozen=True)
class Recording:
    """Ground truth of a synthetic recording.

    Attributes:
        stamps_s: (N,) image times.
        T_world_base: (N, 4, 4) poses of the robot base in the scene's world frame.
        T_base_camera: (4, 4) the camera's optical frame on the base (the extrinsic).
        camera: intrinsics and image size.
        scene: the scene the images show.
        path_params: (start_s, duration_s, arc_start_rad, arc_rad, height_wobble_m) of the
            analytic base path.
    """

    stamps_s: np.ndarray
    T_world_base: np.ndarray  # noqa: N815 - the project's pose naming
    T_base_camera: np.ndarray  # noqa: N815
    camera: PinholeCamera
    scene: Scene
    path_params: tuple[float, float, float, float, float]

    def __len__(self) -> int:
        return len(self.stamps_s)

    @property
    def T_world_camera(self) -> np.ndarray:  # noqa: N802
        """(N, 4, 4) camera poses in the world frame."""
        return self.T_world_base @ self.T_base_camera

    def base_pose_at(self, t_s: np.ndarray) -> np.ndarray:
        """(M, 4, 4) base poses at arbitrary times (the analytic path, not interpolated)."""
        return _base_poses(np.asarray(t_s, dtype=np.float64), *self.path_params)


def _base_poses(
    t_s: np.ndarray,
    start_s: float,
    duration_s: float,
    arc_start: float,
    arc_rad: float,
    height_wobble_m: float,
) -> np.ndarray:
    # The base drives counter-clockwise on an ellipse round the room's centre; its heading is
    # the path's tangent.
    phase = arc_start + arc_rad * (t_s - start_s) / duration_s
    out = np.empty((len(t_s), 4, 4))
    for i, phi in enumerate(phase):
        x, y = 2.5 * math.cos(phi), 1.8 * math.sin(phi)
        heading = math.atan2(1.8 * math.cos(phi), -2.5 * math.sin(phi))
        z = height_wobble_m * math.sin(3.0 * (phi - arc_start))
        out[i] = pose_matrix((x, y, z), heading)
    return out


def make_recording(
    count: int,
    width: int = 320,
    height: int = 240,
    *,
    rate_hz: float = 10.0,
    start_s: float = 1_700_000_000.0,
    arc_rad: float = 2.0,
    height_wobble_m: float = 0.0,
    seed: int = 0,
) -> Recording:
    """A robot driving an arc of ``arc_rad`` radians round the room, ``count`` images.

    The camera sits 1.3 m above the base, looking 65° left of the heading (toward the room's
    centre), pitched 8° down. ``height_wobble_m`` moves it up and down (a hand-held camera
    rather than a robot: the path then spans 3D, not a plane). Times start at ``start_s`` (a
    realistic epoch, which also checks that times are handled without float32 loss) and run at
    ``rate_hz``.
    """
    if count < 2:
        raise SfmError(f"a recording needs at least 2 frames, got {count}")
    stamps = start_s + np.arange(count) / rate_hz
    duration = (count - 1) / rate_hz
    arc_start = -0.4
    params = (start_s, duration, arc_start, arc_rad, height_wobble_m)
    base = _base_poses(stamps, *params)
    yaw = math.radians(65.0)
    forward = (math.cos(yaw), math.sin(yaw), -math.tan(math.radians(8.0)))
    t_base_camera = np.eye(4)
    t_base_camera[:3, :3] = look_at_rotation(forward)
    t_base_camera[:3, 3] = (0.12, 0.05, 1.3)
    return Recording(
        stamps,
        base,
        t_base_camera,
        PinholeCamera.default(width, height),
        build_scene(seed),
        params,
    )


def render_frames(recording: Recording) -> Iterator[np.ndarray]:
    """RGB uint8 images of the recording, in order."""
    cam = recording.camera
    for pose in recording.T_world_camera:
        rgb, _ = render(recording.scene, pose, cam.K, cam.width, cam.height)
        yield rgb


def write_video(path: str | Path, recording: Recording, *, fps: float | None = None) -> Path:
    """Write the recording as an MJPG .avi (quality 95) at the recording's rate."""
    path = Path(path)
    if fps is None:
        fps = 1.0 / float(recording.stamps_s[1] - recording.stamps_s[0])
    cam = recording.camera
    writer = cv2.VideoWriter(
        str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (cam.width, cam.height)
    )
    if not writer.isOpened():
        raise SfmError(f"OpenCV cannot write an MJPG video to {path}")
    writer.set(cv2.VIDEOWRITER_PROP_QUALITY, 95)
    try:
        for rgb in render_frames(recording):
            writer.write(np.ascontiguousarray(rgb[:, :, ::-1]))
    finally:
        writer.release()
    return path


def _time(ts, t_s: float):
    sec = math.floor(t_s)
    nanosec = int(round((t_s - sec) * 1e9))
    if nanosec >= 1_000_000_000:
        sec, nanosec = sec + 1, nanosec - 1_000_000_000
    return ts.types["builtin_interfaces/msg/Time"](sec=int(sec), nanosec=nanosec)


def _header(ts, t_s: float, frame_id: str):
    return ts.types["std_msgs/msg/Header"](stamp=_time(ts, t_s), frame_id=frame_id)


def _transform_msg(ts, matrix: np.ndarray):
    q = matrix_to_quat(matrix[:3, :3])
    types = ts.types
    return types["geometry_msgs/msg/Transform"](
        translation=types["geometry_msgs/msg/Vector3"](*map(float, matrix[:3, 3])),
        rotation=types["geometry_msgs/msg/Quaternion"](
            x=float(q[1]), y=float(q[2]), z=float(q[3]), w=float(q[0])
        ),
    )


def _noisy(matrix: np.ndarray, rng: np.random.Generator, noise_m: float, noise_deg: float):
    out = matrix.copy()
    out[:3, 3] += rng.normal(0.0, noise_m, 3)
    axis_angle = np.radians(rng.normal(0.0, noise_deg, 3))
    angle = float(np.linalg.norm(axis_angle))
    if angle > 0:
        half = angle / 2
        q = np.concatenate([[math.cos(half)], math.sin(half) * axis_angle / angle])
        out[:3, :3] = quat_to_matrix(q) @ out[:3, :3]
    return out


def write_bag(
    path: str | Path,
    recording: Recording,
    *,
    storage: str = "sqlite3",
    compressed: bool = False,
    image_topic: str = "/camera/image_raw",
    camera_frame: str = "camera_optical_frame",
    odometry_topic: str | None = "/odom",
    odometry_rate_hz: float = 50.0,
    odometry_time_shift_s: float = 0.0,
    odometry_margin_s: float = 0.5,
    T_odom_world: np.ndarray = DEFAULT_T_ODOM_WORLD,  # noqa: N803
    noise_m: float = 0.005,
    noise_deg: float = 0.2,
    glitch: tuple[float, float, tuple[float, float, float]] | None = None,
    tf: bool = True,
    tf_static: bool = True,
    camera_info: bool = True,
    seed: int = 0,
) -> Path:
    """Write the recording as a rosbag2 (``storage`` "sqlite3" or "mcap").

    Topics: ``image_topic`` (raw rgb8 ``Image``, or JPEG ``CompressedImage`` on
    ``image_topic + "/compressed"`` when ``compressed``), ``/camera/camera_info``,
    ``odometry_topic`` (``odom`` -> ``base_link`` at ``odometry_rate_hz``, covering the images
    plus ``odometry_margin_s`` each side, stamps shifted by ``odometry_time_shift_s``, Gaussian
    noise ``noise_m`` / ``noise_deg`` per sample; ``glitch = (from_s, to_s, offset_m)`` adds a
    position offset to the samples in that interval, seconds after the first image: outliers),
    ``/tf`` (the same odometry as TF) and
    ``/tf_static`` (``base_link`` -> ``camera_frame``). The odometry frame is the scene's world
    frame moved by ``T_odom_world``, so the true camera poses in it are
    ``T_odom_world @ recording.T_world_camera``.
    """
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    plugins = {"sqlite3": StoragePlugin.SQLITE3, "mcap": StoragePlugin.MCAP}
    if storage not in plugins:
        raise SfmError(f"storage must be one of {', '.join(plugins)}, got {storage!r}")
    ts = get_typestore(Stores.ROS2_JAZZY)
    types = ts.types
    rng = np.random.default_rng(seed)
    path = Path(path)
    cam = recording.camera
    messages: list[tuple[int, str, object]] = []  # (bag time ns, topic, message)

    def add(t_s: float, topic: str, msg) -> None:
        messages.append((int(round(t_s * 1e9)), topic, msg))

    topic_types: dict[str, str] = {}
    image_out = image_topic + "/compressed" if compressed else image_topic
    topic_types[image_out] = (
        "sensor_msgs/msg/CompressedImage" if compressed else "sensor_msgs/msg/Image"
    )
    for t_s, rgb in zip(recording.stamps_s, render_frames(recording), strict=True):
        header = _header(ts, float(t_s), camera_frame)
        if compressed:
            ok, data = cv2.imencode(
                ".jpg", np.ascontiguousarray(rgb[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, 95]
            )
            assert ok
            msg = types["sensor_msgs/msg/CompressedImage"](
                header=header, format="jpeg", data=data.reshape(-1)
            )
        else:
            msg = types["sensor_msgs/msg/Image"](
                header=header,
                height=cam.height,
                width=cam.width,
                encoding="rgb8",
                is_bigendian=0,
                step=cam.width * 3,
                data=np.ascontiguousarray(rgb).reshape(-1),
            )
        add(float(t_s), image_out, msg)
    if camera_info:
        topic_types["/camera/camera_info"] = "sensor_msgs/msg/CameraInfo"
        k = [cam.fx, 0.0, cam.cx, 0.0, cam.fy, cam.cy, 0.0, 0.0, 1.0]
        info = types["sensor_msgs/msg/CameraInfo"](
            header=_header(ts, float(recording.stamps_s[0]), camera_frame),
            height=cam.height,
            width=cam.width,
            distortion_model="plumb_bob",
            d=np.zeros(5),
            k=np.array(k),
            r=np.eye(3).reshape(-1),
            p=np.array([cam.fx, 0.0, cam.cx, 0.0, 0.0, cam.fy, cam.cy, 0.0, 0.0, 0.0, 1.0, 0.0]),
            binning_x=0,
            binning_y=0,
            roi=types["sensor_msgs/msg/RegionOfInterest"](
                x_offset=0, y_offset=0, height=0, width=0, do_rectify=False
            ),
        )
        add(float(recording.stamps_s[0]), "/camera/camera_info", info)
    if odometry_topic is not None or tf:
        start = float(recording.stamps_s[0]) - odometry_margin_s
        stop = float(recording.stamps_s[-1]) + odometry_margin_s
        odom_times = np.arange(start, stop + 1e-9, 1.0 / odometry_rate_hz)
        base = recording.base_pose_at(odom_times)
        zero6 = np.zeros(36)
        for t_s, t_world_base in zip(odom_times, base, strict=True):
            t_odom_base = _noisy(T_odom_world @ t_world_base, rng, noise_m, noise_deg)
            if glitch is not None:
                since_start = float(t_s) - float(recording.stamps_s[0])
                if glitch[0] <= since_start <= glitch[1]:
                    t_odom_base[:3, 3] += glitch[2]
            stamp = float(t_s) + odometry_time_shift_s
            q = matrix_to_quat(t_odom_base[:3, :3])
            if odometry_topic is not None:
                topic_types[odometry_topic] = "nav_msgs/msg/Odometry"
                odom = types["nav_msgs/msg/Odometry"](
                    header=_header(ts, stamp, "odom"),
                    child_frame_id="base_link",
                    pose=types["geometry_msgs/msg/PoseWithCovariance"](
                        pose=types["geometry_msgs/msg/Pose"](
                            position=types["geometry_msgs/msg/Point"](
                                *map(float, t_odom_base[:3, 3])
                            ),
                            orientation=types["geometry_msgs/msg/Quaternion"](
                                x=float(q[1]), y=float(q[2]), z=float(q[3]), w=float(q[0])
                            ),
                        ),
                        covariance=zero6,
                    ),
                    twist=types["geometry_msgs/msg/TwistWithCovariance"](
                        twist=types["geometry_msgs/msg/Twist"](
                            linear=types["geometry_msgs/msg/Vector3"](0.0, 0.0, 0.0),
                            angular=types["geometry_msgs/msg/Vector3"](0.0, 0.0, 0.0),
                        ),
                        covariance=zero6,
                    ),
                )
                add(stamp, odometry_topic, odom)
            if tf:
                topic_types["/tf"] = "tf2_msgs/msg/TFMessage"
                transform = types["geometry_msgs/msg/TransformStamped"](
                    header=_header(ts, stamp, "odom"),
                    child_frame_id="base_link",
                    transform=_transform_msg(ts, t_odom_base),
                )
                add(stamp, "/tf", types["tf2_msgs/msg/TFMessage"](transforms=[transform]))
    if tf_static:
        topic_types["/tf_static"] = "tf2_msgs/msg/TFMessage"
        transform = types["geometry_msgs/msg/TransformStamped"](
            header=_header(ts, float(recording.stamps_s[0]) - 1.0, "base_link"),
            child_frame_id=camera_frame,
            transform=_transform_msg(ts, recording.T_base_camera),
        )
        add(
            float(recording.stamps_s[0]) - 1.0,
            "/tf_static",
            types["tf2_msgs/msg/TFMessage"](transforms=[transform]),
        )
    messages.sort(key=lambda m: m[0])
    with Writer(path, version=9, storage_plugin=plugins[storage]) as writer:
        connections = {
            topic: writer.add_connection(topic, msgtype, typestore=ts)
            for topic, msgtype in topic_types.items()
        }
        for stamp_ns, topic, msg in messages:
            writer.write(connections[topic], stamp_ns, ts.serialize_cdr(msg, topic_types[topic]))
    return path
