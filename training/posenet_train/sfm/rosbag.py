"""rosbag2 input (sqlite3 or MCAP, read with ``rosbags``): images, odometry, TF, camera info.

No ROS installation is needed: ``rosbags`` deserialises CDR itself. Messages are decoded with
the ROS 2 Jazzy type store (the definitions of the types read here are the same in Humble).

Times are the messages' header stamps in seconds (the sensor's capture time, which is what
odometry and TF are stamped with); a zero header stamp falls back to the bag's receive time.

Images (``sensor_msgs/msg/Image``) are converted to RGB uint8 by the node's decoder,
:mod:`posenet_core.image_codec` (numpy and OpenCV, without cv_bridge), for the encodings in
:data:`SUPPORTED_ENCODINGS` (its ``RECORDED_ENCODINGS``: ``8UC3`` is BGR, ``8UC1`` mono, 16-bit
keeps the high byte, ``yuv422`` is UYVY, Bayer patterns are demosaiced).
``sensor_msgs/msg/CompressedImage`` (JPEG or PNG, as image_transport writes them) is decoded by
the same module. A message whose payload does not match its header raises
:class:`ImageDecodeError` (the caller skips and counts it); an unsupported encoding or
compressed format raises :class:`~posenet_train.sfm.errors.SfmError` (every frame would fail).

TF: :class:`TransformBuffer` collects ``/tf`` and ``/tf_static`` and looks up the transform
between two frames at many times at once (dynamic links interpolated, never extrapolated).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from posenet_core.errors import ImageDecodeError as FrameDecodeError
from posenet_core.geometry import quat_normalize, quat_to_matrix
from posenet_core.image_codec import (
    RECORDED_ENCODINGS,
    compressed_format_problem,
    compressed_msg_to_rgb,
    image_msg_to_rgb,
)
from posenet_train.sfm.align import interpolate_poses
from posenet_train.sfm.errors import SfmError

__all__ = [
    "CAMERA_INFO_TYPE",
    "COMPRESSED_IMAGE_TYPE",
    "IMAGE_TYPE",
    "ODOMETRY_TYPE",
    "SUPPORTED_ENCODINGS",
    "TF_TYPE",
    "Bag",
    "ImageDecodeError",
    "PoseSeries",
    "TransformBuffer",
    "decode_compressed_image",
    "decode_image",
    "is_rosbag",
    "stamp_to_seconds",
]

IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE_TYPE = "sensor_msgs/msg/CompressedImage"
ODOMETRY_TYPE = "nav_msgs/msg/Odometry"
TF_TYPE = "tf2_msgs/msg/TFMessage"
CAMERA_INFO_TYPE = "sensor_msgs/msg/CameraInfo"
IMAGE_TYPES = (IMAGE_TYPE, COMPRESSED_IMAGE_TYPE)
_MAX_PIXELS = 8192 * 8192


class ImageDecodeError(SfmError):
    """One image message is malformed (payload size, undecodable compressed data)."""


SUPPORTED_ENCODINGS: tuple[str, ...] = RECORDED_ENCODINGS


def stamp_to_seconds(stamp) -> float:
    """``builtin_interfaces/Time`` -> float seconds."""
    return float(stamp.sec) + 1e-9 * float(stamp.nanosec)


def decode_image(msg) -> np.ndarray:
    """RGB uint8 ``(H, W, 3)`` of a ``sensor_msgs/msg/Image`` (duck-typed on its fields), by
    :func:`posenet_core.image_codec.decode_image`, the node's decoder.

    Raises SfmError for an unsupported encoding; ImageDecodeError when the header does not
    describe the payload (zero or huge size, ``step`` too small, data too short).
    """
    encoding = str(msg.encoding)
    if encoding not in SUPPORTED_ENCODINGS:
        raise SfmError(
            f"image encoding {encoding!r} is not supported; supported: "
            + ", ".join(SUPPORTED_ENCODINGS)
        )
    try:
        return image_msg_to_rgb(msg, _MAX_PIXELS, encodings=SUPPORTED_ENCODINGS)
    except FrameDecodeError as exc:  # the library's type: a frame error of the labeller here
        raise ImageDecodeError(str(exc)) from exc


def decode_compressed_image(msg) -> np.ndarray:
    """RGB uint8 ``(H, W, 3)`` of a ``sensor_msgs/msg/CompressedImage`` (JPEG or PNG), by
    :func:`posenet_core.image_codec.decode_compressed`, the node's decoder.

    Raises SfmError for a format it cannot read (compressed depth images, neither JPEG nor PNG);
    ImageDecodeError for data OpenCV cannot decode.
    """
    problem = compressed_format_problem(str(msg.format))
    if problem:
        raise SfmError(problem)
    try:
        return compressed_msg_to_rgb(msg, _MAX_PIXELS)
    except FrameDecodeError as exc:  # the library's type: a frame error of the labeller here
        raise ImageDecodeError(str(exc)) from exc


def is_rosbag(path: Path) -> bool:
    """True for a rosbag2 folder (``metadata.yaml`` or ``*.db3``/``*.mcap`` inside) or a bare
    ``.mcap``/``.db3`` file."""
    path = Path(path)
    if path.is_file():
        return path.suffix in (".mcap", ".db3")
    if path.is_dir():
        return (path / "metadata.yaml").is_file() or any(
            p.suffix in (".db3", ".mcap") for p in path.iterdir()
        )
    return False


@dataclass
class PoseSeries:
    """A time series of poses of ``child_frame`` in ``frame``.

    Attributes:
        frame: the parent frame (e.g. ``odom``).
        child_frame: the frame whose pose this is (e.g. ``base_link``).
        stamps_s: (M,) strictly increasing times.
        positions_m: (M, 3).
        quats_wxyz: (M, 4) child-to-parent rotations.
        duplicates: samples dropped because their stamp repeated an earlier one.
    """

    frame: str
    child_frame: str
    stamps_s: np.ndarray
    positions_m: np.ndarray
    quats_wxyz: np.ndarray
    duplicates: int = 0

    @classmethod
    def from_samples(
        cls, frame: str, child_frame: str, samples: list[tuple[float, np.ndarray, np.ndarray]]
    ) -> PoseSeries:
        """Sort ``(stamp, position, quat_wxyz)`` samples by time and drop repeated stamps."""
        samples = sorted(samples, key=lambda s: s[0])
        kept: list[tuple[float, np.ndarray, np.ndarray]] = []
        for sample in samples:
            if kept and sample[0] <= kept[-1][0]:
                continue
            kept.append(sample)
        if not kept:
            return cls(frame, child_frame, np.zeros(0), np.zeros((0, 3)), np.zeros((0, 4)))
        return cls(
            frame,
            child_frame,
            np.array([s[0] for s in kept]),
            np.array([s[1] for s in kept], dtype=np.float64),
            quat_normalize(np.array([s[2] for s in kept], dtype=np.float64)),
            duplicates=len(samples) - len(kept),
        )

    def span(self) -> tuple[float, float] | None:
        """(first, last) stamp, or None when empty."""
        return (float(self.stamps_s[0]), float(self.stamps_s[-1])) if len(self.stamps_s) else None

    def interpolate(
        self, query_s: np.ndarray, max_gap_s: float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """4x4 poses ``(N, 4, 4)`` at ``query_s`` and the valid mask (see interpolate_poses)."""
        positions, quats, valid = interpolate_poses(
            self.stamps_s, self.positions_m, self.quats_wxyz, query_s, max_gap_s=max_gap_s
        )
        return _matrices(positions, quats, valid), valid


def _matrices(positions: np.ndarray, quats: np.ndarray, valid: np.ndarray) -> np.ndarray:
    out = np.full((len(positions), 4, 4), np.nan)
    if valid.any():
        out[valid] = np.eye(4)
        out[valid, :3, :3] = quat_to_matrix(quats[valid])
        out[valid, :3, 3] = positions[valid]
    return out


@dataclass
class TransformBuffer:
    """The TF tree of a bag: static links and time series of dynamic links.

    ``links[child] = (parent, series)``; a static link's series has one sample and is valid at
    all times.
    """

    links: dict[str, tuple[str, PoseSeries, bool]] = field(default_factory=dict)

    @classmethod
    def from_transforms(
        cls, transforms: list[tuple[str, str, float, np.ndarray, np.ndarray, bool]]
    ) -> TransformBuffer:
        """Build from ``(parent, child, stamp_s, position_m, quat_wxyz, is_static)`` tuples.

        Raises SfmError when a frame has two different parents (not a tree).
        """
        grouped: dict[str, tuple[str, bool, list]] = {}
        for parent, child, stamp, position, quat, static in transforms:
            parent = parent.lstrip("/")
            child = child.lstrip("/")
            if child in grouped and grouped[child][0] != parent:
                raise SfmError(
                    f"TF frame {child!r} has two parents in the bag, {grouped[child][0]!r} and"
                    f" {parent!r}; TF must be a tree"
                )
            entry = grouped.setdefault(child, (parent, static, []))
            if static and not entry[1]:
                grouped[child] = (parent, True, entry[2])
            grouped[child][2].append((stamp, position, quat))
        links = {}
        for child, (parent, static, samples) in grouped.items():
            if static:
                samples = [max(samples, key=lambda s: s[0])]  # latest static value wins
            links[child] = (parent, PoseSeries.from_samples(parent, child, samples), static)
        return cls(links)

    @property
    def frames(self) -> list[str]:
        """Every frame named in the tree, sorted."""
        names = set(self.links)
        names.update(parent for parent, _, _ in self.links.values())
        return sorted(names)

    def _chain(self, frame: str) -> list[str]:
        chain = [frame]
        while chain[-1] in self.links:
            chain.append(self.links[chain[-1]][0])
            if len(chain) > len(self.links) + 1:
                raise SfmError(f"TF has a cycle through frame {frame!r}")
        return chain

    def _up(self, chain: list[str], query_s: np.ndarray, max_gap_s: float):
        """Pose of chain[0] in chain[-1] at the query times (N, 4, 4) and its valid mask."""
        n = len(query_s)
        result = np.tile(np.eye(4), (n, 1, 1))
        valid = np.ones(n, dtype=bool)
        for child in chain[:-1]:
            _, series, static = self.links[child]
            if static:
                t = np.eye(4)
                t[:3, :3] = quat_to_matrix(series.quats_wxyz[0])
                t[:3, 3] = series.positions_m[0]
                link = np.broadcast_to(t, (n, 4, 4))
                link_valid = np.ones(n, dtype=bool)
            else:
                link, link_valid = series.interpolate(query_s, max_gap_s)
            valid &= link_valid
            result = np.where(valid[:, None, None], link @ result, np.nan)
        return result, valid

    def lookup(
        self, target_frame: str, source_frame: str, query_s: np.ndarray, *, max_gap_s: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """``T_target_source`` (pose of ``source_frame`` in ``target_frame``) at ``query_s``.

        Returns ``(matrices (N, 4, 4), valid (N,))``; rows where a dynamic link has no sample
        around the time (or a gap longer than ``max_gap_s``) are invalid (NaN). Raises SfmError
        when a frame is unknown or the two frames are not connected.
        """
        target_frame = target_frame.lstrip("/")
        source_frame = source_frame.lstrip("/")
        known = self.frames
        for name in (target_frame, source_frame):
            if name not in known:
                raise SfmError(
                    f"TF frame {name!r} is not in the bag's /tf or /tf_static; frames there: "
                    + (", ".join(known) if known else "none")
                )
        query = np.asarray(query_s, dtype=np.float64).reshape(-1)
        up_source = self._chain(source_frame)
        up_target = self._chain(target_frame)
        common = next((f for f in up_source if f in up_target), None)
        if common is None:
            raise SfmError(
                f"TF frames {target_frame!r} and {source_frame!r} are not connected (roots"
                f" {up_target[-1]!r} and {up_source[-1]!r})"
            )
        root_source, valid_s = self._up(up_source[: up_source.index(common) + 1], query, max_gap_s)
        root_target, valid_t = self._up(up_target[: up_target.index(common) + 1], query, max_gap_s)
        valid = valid_s & valid_t
        out = np.full((len(query), 4, 4), np.nan)
        if valid.any():
            out[valid] = np.linalg.inv(root_target[valid]) @ root_source[valid]
        return out, valid

    def span(self, frame_a: str, frame_b: str) -> tuple[float, float] | None:
        """Time span covered by every dynamic link between two frames (None if all static)."""
        chain = self._chain(frame_a.lstrip("/")) + self._chain(frame_b.lstrip("/"))
        spans = [
            self.links[f][1].span() for f in set(chain) if f in self.links and not self.links[f][2]
        ]
        spans = [s for s in spans if s is not None]
        if not spans:
            return None
        return max(s[0] for s in spans), min(s[1] for s in spans)


def _vector(v) -> np.ndarray:
    return np.array([float(v.x), float(v.y), float(v.z)])


def _quat_wxyz(q) -> np.ndarray:
    return np.array([float(q.w), float(q.x), float(q.y), float(q.z)])


class Bag:
    """A rosbag2 opened for reading (use as a context manager).

    Args:
        path: the bag folder (with ``metadata.yaml``), a file inside it, or a bare ``.mcap``.

    Raises SfmError when the bag cannot be opened.
    """

    def __init__(self, path: str | Path) -> None:
        from rosbags.rosbag2 import Reader
        from rosbags.typesys import Stores, get_typestore

        self.path = Path(path)
        target = self.path
        if target.is_file() and target.suffix != ".mcap":
            target = target.parent  # a .db3 (or metadata.yaml) inside the bag folder
        if target.is_dir() and not (target / "metadata.yaml").exists():
            mcaps = sorted(target.glob("*.mcap"))
            if len(mcaps) == 1:
                target = mcaps[0]  # an MCAP file whose metadata.yaml was not copied along
        if not target.exists():
            raise SfmError(f"rosbag2 not found: {self.path}")
        try:
            self._reader = Reader(target)
            self._reader.open()
        except Exception as exc:  # rosbags raises ReaderError, FileNotFoundError, KeyError ...
            raise SfmError(f"cannot open rosbag2 {self.path}: {exc}") from exc
        self._typestore = get_typestore(Stores.ROS2_JAZZY)

    def __enter__(self) -> Bag:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        """Close the bag's files."""
        self._reader.close()

    @property
    def topics(self) -> dict[str, str]:
        """``{topic: message type}`` of every topic in the bag."""
        return {topic: info.msgtype for topic, info in self._reader.topics.items()}

    def message_count(self, topic: str) -> int:
        """Number of messages on ``topic`` (0 if absent)."""
        info = self._reader.topics.get(topic)
        return int(info.msgcount) if info is not None else 0

    def _describe_topics(self, types: tuple[str, ...] | None = None) -> str:
        items = [
            f"{t} ({m})" for t, m in sorted(self.topics.items()) if types is None or m in types
        ]
        return ", ".join(items) if items else "none"

    def require_topic(self, topic: str, types: tuple[str, ...], what: str) -> str:
        """Return the message type of ``topic``; SfmError naming the bag's topics if it is
        missing or of another type."""
        topics = self.topics
        if topic not in topics:
            raise SfmError(
                f"rosbag2 {self.path} has no {what} topic {topic!r}; {what} topics in it: "
                f"{self._describe_topics(types)}"
            )
        if topics[topic] not in types:
            raise SfmError(
                f"topic {topic!r} in {self.path} has type {topics[topic]}; a {what} topic must"
                f" be {' or '.join(types)}"
            )
        return topics[topic]

    def image_topic(self, topic: str | None) -> str:
        """The image topic to read: ``topic``, or the bag's only image topic when None."""
        if topic is not None:
            self.require_topic(topic, IMAGE_TYPES, "image")
            return topic
        candidates = sorted(t for t, m in self.topics.items() if m in IMAGE_TYPES)
        if len(candidates) != 1:
            raise SfmError(
                f"rosbag2 {self.path} has {len(candidates)} image topics"
                f" ({', '.join(candidates) if candidates else 'none'}); name one with"
                " --image-topic"
            )
        return candidates[0]

    def messages(self, topic: str) -> Iterator[tuple[object, int]]:
        """Deserialised messages of ``topic`` in bag order, with the receive time (ns)."""
        connections = [c for c in self._reader.connections if c.topic == topic]
        for connection, bag_time_ns, raw in self._reader.messages(connections=connections):
            try:
                msg = self._typestore.deserialize_cdr(raw, connection.msgtype)
            except Exception as exc:  # a truncated or foreign-typed message
                raise SfmError(
                    f"{self.path}: cannot deserialise a {connection.msgtype} message on"
                    f" {topic} at bag time {bag_time_ns} ns: {exc}"
                ) from exc
            yield msg, bag_time_ns

    @staticmethod
    def header_time(msg, bag_time_ns: int) -> float:
        """Header stamp in seconds, or the receive time when the stamp is zero."""
        stamp = stamp_to_seconds(msg.header.stamp)
        return stamp if stamp > 0.0 else bag_time_ns * 1e-9

    def read_images(self, topic: str) -> Iterator[tuple[int, float, str, object]]:
        """``(index, stamp_s, frame_id, message)`` of every image message on ``topic``; decode
        with :meth:`decode`."""
        for index, (msg, bag_time_ns) in enumerate(self.messages(topic)):
            yield index, self.header_time(msg, bag_time_ns), str(msg.header.frame_id), msg

    @staticmethod
    def decode(msg) -> np.ndarray:
        """RGB uint8 of an Image or CompressedImage message."""
        if msg.__msgtype__ == COMPRESSED_IMAGE_TYPE:
            return decode_compressed_image(msg)
        return decode_image(msg)

    def read_odometry(self, topic: str) -> PoseSeries:
        """Poses of ``nav_msgs/msg/Odometry`` on ``topic`` (child frame in header frame)."""
        self.require_topic(topic, (ODOMETRY_TYPE,), "odometry")
        samples = []
        frame = child = ""
        for msg, bag_time_ns in self.messages(topic):
            frame, child = str(msg.header.frame_id).lstrip("/"), str(msg.child_frame_id)
            pose = msg.pose.pose
            quat = _quat_wxyz(pose.orientation)
            position = _vector(pose.position)
            if not (np.all(np.isfinite(position)) and np.linalg.norm(quat) > 1e-6):
                continue  # a driver's "no pose" placeholder
            samples.append((self.header_time(msg, bag_time_ns), position, quat))
        if not samples:
            raise SfmError(f"odometry topic {topic!r} in {self.path} has no valid messages")
        return PoseSeries.from_samples(frame, child.lstrip("/"), samples)

    def read_tf(self, tf_topic: str = "/tf", static_topic: str = "/tf_static") -> TransformBuffer:
        """All transforms of the bag's TF topics (either may be absent)."""
        transforms = []
        for topic, static in ((tf_topic, False), (static_topic, True)):
            if topic not in self.topics:
                continue
            self.require_topic(topic, (TF_TYPE,), "TF")
            for msg, _ in self.messages(topic):
                for tr in msg.transforms:
                    transforms.append(
                        (
                            str(tr.header.frame_id),
                            str(tr.child_frame_id),
                            stamp_to_seconds(tr.header.stamp),
                            _vector(tr.transform.translation),
                            _quat_wxyz(tr.transform.rotation),
                            static,
                        )
                    )
        return TransformBuffer.from_transforms(transforms)

    def read_camera_info(self, topic: str) -> dict:
        """The first ``sensor_msgs/msg/CameraInfo`` on ``topic`` as a dict (width, height,
        distortion_model, d, k)."""
        self.require_topic(topic, (CAMERA_INFO_TYPE,), "camera info")
        for msg, _ in self.messages(topic):
            return {
                "width": int(msg.width),
                "height": int(msg.height),
                "distortion_model": str(msg.distortion_model),
                "d": [float(v) for v in msg.d],
                "k": [float(v) for v in msg.k],
            }
        raise SfmError(f"camera info topic {topic!r} in {self.path} has no messages")
