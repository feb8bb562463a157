"""Frames for structure from motion: read a video, an image folder or a rosbag2; select frames.

Selection (:class:`FrameSelection`), in this order:

1. **Blocks.** The stream is cut into blocks of ``every_nth`` consecutive frames; with
   ``min_interval_s`` a block also lasts at least that long (both rules hold together). When
   ``max_frames`` is set and the source knows its length, the block size grows so that about
   ``max_frames`` blocks result (decoding everything and writing only what is kept).
2. **Sharpest of each block.** With blur rejection on, the frame of a block with the highest
   sharpness (variance of the Laplacian of the grey image, measured at most 640 px wide) is kept,
   else the block's first frame.
3. **Blur rejection.** A kept frame whose sharpness is below ``blur_ratio`` times the median
   sharpness of its ``2 * blur_window + 1`` neighbours (kept frames) is dropped: a relative test,
   so it works for any scene texture.
4. **Cap.** More than ``max_frames`` left: an evenly spaced subset is kept.

Frames are written as ``frame_{index:06d}.png`` (or ``.jpg``), ``index`` being the frame's
index in the source (video frame number, message number on the bag's image topic, position of
the file in the sorted image folder), so names sort in capture order. ``frames.csv`` lists them
with their timestamps.

Timestamps: video — frame number / frame rate; rosbag — the image header stamp; image folder —
index / ``image_rate_hz`` when given, else none (then time-based selection and odometry
alignment are unavailable).
"""

from __future__ import annotations

import csv
import math
import os
import shutil
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from posenet_core.checks import check_fields
from posenet_train.sfm.errors import SfmError
from posenet_train.sfm.rosbag import Bag, ImageDecodeError, is_rosbag

__all__ = [
    "IMAGE_EXTENSIONS",
    "INPUT_KINDS",
    "FrameInfo",
    "FrameSelection",
    "FrameSource",
    "detect_input_kind",
    "extract_frames",
    "open_source",
    "read_frames_csv",
    "sharpness",
]

INPUT_KINDS = ("video", "images", "rosbag")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
FRAME_IMAGE_FORMATS = ("png", "jpg")
FRAMES_CSV = "frames.csv"
_SHARPNESS_WIDTH = 640


@dataclass(frozen=True)
class FrameSelection:
    """How frames are chosen from the source (see the module doc).

    Attributes:
        every_nth: block size in frames (>= 1; 1 keeps every frame).
        min_interval_s: minimum block duration in seconds (None: no time rule).
        reject_blur: keep the sharpest frame of each block and drop relatively blurred ones.
        blur_ratio: a frame is blurred below this fraction of its neighbours' median sharpness.
        blur_window: neighbours on each side for that median.
        max_frames: cap on the number of frames (None: no cap).
    """

    every_nth: int = 1
    min_interval_s: float | None = None
    reject_blur: bool = True
    blur_ratio: float = 0.5
    blur_window: int = 4
    max_frames: int | None = None

    def __post_init__(self) -> None:
        check_fields(self, SfmError, integers={"every_nth": 1, "blur_window": 1})
        if self.min_interval_s is not None and not (
            math.isfinite(self.min_interval_s) and self.min_interval_s > 0
        ):
            raise SfmError(f"min_interval_s must be a positive number, got {self.min_interval_s}")
        if not (math.isfinite(self.blur_ratio) and 0.0 <= self.blur_ratio < 1.0):
            raise SfmError(f"blur_ratio must be in [0, 1), got {self.blur_ratio}")
        if self.max_frames is not None and (
            isinstance(self.max_frames, bool)
            or not isinstance(self.max_frames, int)
            or self.max_frames < 2
        ):
            raise SfmError(f"max_frames must be an integer >= 2, got {self.max_frames!r}")


@dataclass(frozen=True)
class FrameInfo:
    """One selected frame.

    Attributes:
        name: file name in the images folder (``frame_000123.png``).
        source_index: index of the frame in the source.
        timestamp_s: capture time in seconds, or None.
        sharpness: variance of the Laplacian (see :func:`sharpness`).
        source: where it came from (file name, or the bag topic).
    """

    name: str
    source_index: int
    timestamp_s: float | None
    sharpness: float
    source: str


@dataclass
class FrameSource:
    """An opened input: its kind, length if known, and a generator of decoded frames.

    ``frames()`` yields ``(index, timestamp_s | None, rgb_HWC uint8 | None, source name)``;
    ``None`` for a frame that could not be decoded (counted in ``undecodable``).
    """

    kind: str
    path: Path
    frame_count: int | None
    frames: Callable[[], Iterator[tuple[int, float | None, np.ndarray | None, str]]]
    description: dict = field(default_factory=dict)
    undecodable: list[str] = field(default_factory=list)


def detect_input_kind(path: str | Path) -> str:
    """``"rosbag"``, ``"images"`` or ``"video"`` for an input path.

    A folder with ``metadata.yaml`` or ``.db3``/``.mcap`` files, or such a file, is a rosbag2; any
    other folder an image folder; any other file a video. Raises SfmError if the path is missing.
    """
    p = Path(path)
    if not p.exists():
        raise SfmError(f"input not found: {p}")
    if is_rosbag(p):
        return "rosbag"
    if p.is_dir():
        return "images"
    return "video"


def sharpness(rgb: np.ndarray) -> float:
    """Variance of the Laplacian of the grey image, measured at most 640 px wide (so values of
    different resolutions compare)."""
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    if gray.shape[1] > _SHARPNESS_WIDTH:
        scale = _SHARPNESS_WIDTH / gray.shape[1]
        gray = cv2.resize(
            gray, (_SHARPNESS_WIDTH, max(1, round(gray.shape[0] * scale))), cv2.INTER_AREA
        )
    return float(cv2.Laplacian(gray, cv2.CV_64F).var())


def _open_video(path: Path) -> FrameSource:
    capture = cv2.VideoCapture(str(path))
    ok = capture.isOpened()
    first = capture.read()[1] if ok else None
    if first is None:
        capture.release()
        raise SfmError(
            f"cannot read video {path}: OpenCV (FFmpeg) cannot decode a frame from it; expected"
            " a video file (mp4, avi, mkv, ...), an image folder or a rosbag2"
        )
    fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    capture.release()
    rate = fps if math.isfinite(fps) and 0.0 < fps < 10000.0 else None

    def frames() -> Iterator[tuple[int, float | None, np.ndarray | None, str]]:
        cap = cv2.VideoCapture(str(path))
        try:
            index = 0
            while True:
                ok, bgr = cap.read()
                if not ok or bgr is None:
                    break
                rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                yield index, (index / rate if rate else None), rgb, path.name
                index += 1
        finally:
            cap.release()

    return FrameSource(
        "video",
        path,
        count if count > 0 else None,
        frames,
        {"frame_rate_hz": rate, "frame_count_header": count or None},
    )


def _open_images(path: Path, rate_hz: float | None) -> FrameSource:
    files = sorted(
        p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
    )
    if not files:
        raise SfmError(
            f"image folder {path} holds no images (looked for {', '.join(IMAGE_EXTENSIONS)})"
        )
    if rate_hz is not None and not (math.isfinite(rate_hz) and rate_hz > 0):
        raise SfmError(f"image_rate_hz must be a positive number, got {rate_hz}")

    def frames() -> Iterator[tuple[int, float | None, np.ndarray | None, str]]:
        for index, file in enumerate(files):
            bgr = cv2.imread(str(file), cv2.IMREAD_COLOR)
            rgb = None if bgr is None else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            yield index, (index / rate_hz if rate_hz else None), rgb, file.name

    return FrameSource("images", path, len(files), frames, {"image_rate_hz": rate_hz})


def _open_bag(path: Path, image_topic: str | None) -> FrameSource:
    with Bag(path) as bag:
        topic = bag.image_topic(image_topic)
        count = bag.message_count(topic)
        msgtype = bag.topics[topic]
    if count == 0:
        raise SfmError(f"image topic {topic!r} in rosbag2 {path} has no messages")
    description = {"image_topic": topic, "image_type": msgtype, "frame_ids": {}}
    source: FrameSource

    def frames() -> Iterator[tuple[int, float | None, np.ndarray | None, str]]:
        frame_ids: Counter = Counter()
        with Bag(path) as bag:
            for index, stamp, frame_id, msg in bag.read_images(topic):
                frame_ids[frame_id] += 1
                try:
                    rgb = Bag.decode(msg)
                except ImageDecodeError as exc:
                    source.undecodable.append(f"{topic} message {index}: {exc}")
                    rgb = None
                yield index, stamp, rgb, topic
        description["frame_ids"] = dict(frame_ids)

    source = FrameSource("rosbag", path, count, frames, description)
    return source


def open_source(
    path: str | Path,
    *,
    kind: str | None = None,
    image_topic: str | None = None,
    image_rate_hz: float | None = None,
) -> FrameSource:
    """Open a video, image folder or rosbag2 for frame extraction.

    Args:
        path: the input.
        kind: one of :data:`INPUT_KINDS`; detected from the path when None.
        image_topic: rosbag2 only: the image topic (default: the bag's only image topic).
        image_rate_hz: image folder only: frame rate that gives the images timestamps.

    Raises SfmError naming the problem: missing input, unreadable video, empty image folder,
    unreadable bag, a bag without the image topic.
    """
    p = Path(path)
    if kind is None:
        kind = detect_input_kind(p)
    elif kind not in INPUT_KINDS:
        raise SfmError(f"unknown input kind {kind!r}; expected one of {', '.join(INPUT_KINDS)}")
    elif not p.exists():
        raise SfmError(f"input not found: {p}")
    if image_topic is not None and kind != "rosbag":
        raise SfmError(f"an image topic ({image_topic!r}) only applies to a rosbag2 input")
    if image_rate_hz is not None and kind != "images":
        raise SfmError("image_rate_hz only applies to an image folder input")
    if kind == "video":
        if p.is_dir():
            raise SfmError(f"video input {p} is a folder")
        return _open_video(p)
    if kind == "images":
        if not p.is_dir():
            raise SfmError(f"image folder input {p} is not a folder")
        return _open_images(p, image_rate_hz)
    return _open_bag(p, image_topic)


def _write_image(path: Path, rgb: np.ndarray) -> None:
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    params = (
        [cv2.IMWRITE_PNG_COMPRESSION, 1]
        if path.suffix == ".png"
        else [cv2.IMWRITE_JPEG_QUALITY, 95]
    )
    if not cv2.imwrite(str(path), bgr, params):
        raise SfmError(f"could not write image {path}")


def _relative_blur_rejects(values: np.ndarray, ratio: float, window: int) -> np.ndarray:
    """Bool mask of frames whose sharpness is below ``ratio`` x their neighbourhood's median."""
    rejects = np.zeros(len(values), dtype=bool)
    if ratio <= 0.0 or len(values) < 3:
        return rejects
    for i in range(len(values)):
        lo, hi = max(0, i - window), min(len(values), i + window + 1)
        rejects[i] = values[i] < ratio * float(np.median(values[lo:hi]))
    return rejects


def extract_frames(
    source: FrameSource,
    images_dir: str | Path,
    selection: FrameSelection | None = None,
    *,
    image_format: str = "png",
    progress: bool = True,
) -> tuple[list[FrameInfo], dict]:
    """Select frames from ``source`` and write them into ``images_dir`` (created; must not exist).

    Returns ``(frames, stats)``: the kept frames in capture order, and counts for the report
    (decoded, undecodable, candidates, rejected as blurred, removed by the cap, effective block
    size). Raises SfmError when no frame can be decoded, frame sizes differ, time-based selection
    is asked for without timestamps, or fewer than 2 frames remain.
    """
    from tqdm import tqdm

    selection = selection or FrameSelection()
    if image_format not in FRAME_IMAGE_FORMATS:
        raise SfmError(
            f"image_format must be one of {', '.join(FRAME_IMAGE_FORMATS)}, got {image_format!r}"
        )
    out = Path(images_dir)
    out.mkdir(parents=True)
    block = selection.every_nth
    if selection.max_frames is not None and source.frame_count:
        block = max(block, source.frame_count // selection.max_frames)
    kept: list[FrameInfo] = []
    size: tuple[int, int] | None = None
    decoded = 0
    best: tuple[float, int, float | None, np.ndarray, str] | None = None
    block_start_s: float | None = None
    seen_in_block = 0  # frames in the current block; 0 before the first frame

    def flush() -> None:
        nonlocal best
        if best is None:
            return
        value, index, stamp, rgb, name = best
        file_name = f"frame_{index:06d}.{image_format}"
        _write_image(out / file_name, rgb)
        kept.append(FrameInfo(file_name, index, stamp, value, name))
        best = None

    bar = tqdm(total=source.frame_count, desc="frames", unit="frame", disable=not progress)
    try:
        for index, stamp, rgb, name in source.frames():
            bar.update()
            if rgb is None:
                if source.kind != "rosbag":
                    source.undecodable.append(f"{name}: cannot decode")
                continue
            if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
                source.undecodable.append(f"{name} ({index}): not an 8-bit colour image")
                continue
            if size is None:
                size = rgb.shape[:2]
            elif rgb.shape[:2] != size:
                raise SfmError(
                    f"frame {index} ({name}) is {rgb.shape[1]}x{rgb.shape[0]} but earlier frames"
                    f" are {size[1]}x{size[0]}; all frames must have one size (one camera)"
                )
            if selection.min_interval_s is not None and stamp is None:
                raise SfmError(
                    f"time-based frame selection (min_interval_s={selection.min_interval_s}) needs"
                    f" timestamps, but the {source.kind} input {source.path} has none"
                    + (" (pass image_rate_hz)" if source.kind == "images" else "")
                )
            decoded += 1
            if seen_in_block == 0:
                new_block = True
            else:
                long_enough = (
                    selection.min_interval_s is None
                    or stamp - block_start_s >= selection.min_interval_s
                )
                new_block = seen_in_block >= block and long_enough
            if new_block:
                flush()
                block_start_s = stamp
                seen_in_block = 0
            seen_in_block += 1
            if best is None:
                best = (sharpness(rgb) if selection.reject_blur else 0.0, index, stamp, rgb, name)
            elif selection.reject_blur:
                value = sharpness(rgb)
                if value > best[0]:
                    best = (value, index, stamp, rgb, name)
        flush()
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    finally:
        bar.close()
    if decoded == 0:
        shutil.rmtree(out, ignore_errors=True)
        reasons = "; ".join(source.undecodable[:3])
        raise SfmError(
            f"no frame of {source.kind} input {source.path} could be decoded"
            + (f" ({reasons})" if reasons else " (it is empty)")
        )
    candidates = len(kept)
    values = np.array([f.sharpness for f in kept])
    blurred = (
        _relative_blur_rejects(values, selection.blur_ratio, selection.blur_window)
        if selection.reject_blur
        else np.zeros(len(kept), dtype=bool)
    )
    remaining = [f for f, b in zip(kept, blurred, strict=True) if not b]
    capped: list[FrameInfo] = []
    if selection.max_frames is not None and len(remaining) > selection.max_frames:
        keep_idx = set(
            np.round(np.linspace(0, len(remaining) - 1, selection.max_frames)).astype(int)
        )
        capped = [f for i, f in enumerate(remaining) if i not in keep_idx]
        remaining = [f for i, f in enumerate(remaining) if i in keep_idx]
    for frame in [f for f, b in zip(kept, blurred, strict=True) if b] + capped:
        os.unlink(out / frame.name)
    if len(remaining) < 2:
        shutil.rmtree(out, ignore_errors=True)
        raise SfmError(
            f"only {len(remaining)} frame(s) of {source.path} remain after selection"
            f" ({decoded} decoded, {candidates} candidates); structure from motion needs many"
        )
    stats = {
        "input_kind": source.kind,
        "decoded": decoded,
        "undecodable": len(source.undecodable),
        "undecodable_examples": source.undecodable[:5],
        "block_size_frames": block,
        "candidates": candidates,
        "rejected_blurred": int(blurred.sum()),
        "rejected_blurred_names": [f.name for f, b in zip(kept, blurred, strict=True) if b],
        "removed_by_cap": len(capped),
        "selected": len(remaining),
        "image_size_wh": [int(size[1]), int(size[0])] if size else None,
        "selection": asdict(selection),
        "source": source.description,
    }
    return remaining, stats


def write_frames_csv(path: str | Path, frames: list[FrameInfo]) -> None:
    """Write ``frames.csv`` (name, source_index, timestamp_s, sharpness, source)."""
    tmp = Path(str(path) + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["name", "source_index", "timestamp_s", "sharpness", "source"])
        for fr in frames:
            stamp = "" if fr.timestamp_s is None else repr(float(fr.timestamp_s))
            writer.writerow([fr.name, fr.source_index, stamp, repr(fr.sharpness), fr.source])
    os.replace(tmp, path)


def read_frames_csv(path: str | Path) -> list[FrameInfo]:
    """Read ``frames.csv`` back; SfmError naming the line of a malformed row."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SfmError(f"cannot read {path}: {exc}") from exc
    rows = list(csv.reader(text.splitlines()))
    expected = ["name", "source_index", "timestamp_s", "sharpness", "source"]
    if not rows or rows[0] != expected:
        raise SfmError(f"{path}:1: expected the header {','.join(expected)}")
    frames = []
    for lineno, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) != 5:
            raise SfmError(f"{path}:{lineno}: expected 5 fields, got {len(row)}: {row}")
        try:
            stamp = float(row[2]) if row[2] else None
            frames.append(FrameInfo(row[0], int(row[1]), stamp, float(row[3]), row[4]))
        except ValueError as exc:
            raise SfmError(f"{path}:{lineno}: bad number in {row}: {exc}") from None
    if not frames:
        raise SfmError(f"{path}: lists no frames")
    return frames
