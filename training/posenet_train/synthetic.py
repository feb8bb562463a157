"""Embedded scenes rendered from known poses, written as pose datasets: a room and a street.

The room (default 8 m x 6 m x 3 m) is built only from planar textured rectangles: walls cut
into segments that each carry a different real photograph (scikit-image's bundled sample images;
nothing is downloaded), a floor mosaic, a ceiling, and boxes, pillars and hanging panels inside the
room so that views are distinguishable and show parallax. Everything is deterministic from a seed.

The street (:func:`build_street`) is the same kind of scene, open to a uniform sky: two rows of
photo facades 14 m apart, a material mosaic on the ground, parked cars and posts. Its camera path
(:func:`make_drive`) is what a robot mapping a site records: a wide camera (default 960x320,
90° horizontal field of view) driving straight ahead, frames about 1.2 m apart, every N-th frame
held out for testing (:func:`write_drive_dataset`).

Frames (conventions used everywhere in the project):

- World frame: z up, x "forward/east", y "left/north" (REP-103), metres; the room floor is z = 0
  and the room is centred on x = y = 0.
- Poses are ``T_world_camera``: the camera centre in the world and the camera-to-world rotation;
  camera axes are optical (x right, y down, z forward).
- Pinhole camera without distortion; pixel centres at integer coordinates (OpenCV): a
  camera-frame point ``(X, Y, Z)`` is seen at ``x = fx X / Z + cx``, ``y = fy Y / Z + cy``. The
  default principal point is the image centre ``((width - 1) / 2, (height - 1) / 2)``.

The renderer casts one ray per pixel: for every rectangle in view it solves the ray-plane
intersection for all pixels of the rectangle's screen bounding box at once (numpy, float32), keeps
the nearest hit (z-buffer), then samples the winning rectangle's texture bilinearly with
``cv2.remap``. ``render`` returns the RGB image and the depth (camera-frame z, metres) of every
pixel.

Command line::

    python -m posenet_train.synthetic --output DIR [--seed 0] [--train-frames 600]
        [--test-frames 150] [--width 640 --height 480] [--workers 2] [--overwrite]
    python -m posenet_train.synthetic --scene drive --output DIR [--frames 51]
        [--spacing-m 1.2] [--test-every 4] [--width 960 --height 320] [--focal-px F]

writes a Cambridge Landmarks dataset (``images/``, ``dataset_train.txt``, ``dataset_test.txt``;
read it with ``posenet_train.datasets.load_split``), plus ``intrinsics.json``, ``poses_train.csv``
and ``poses_test.csv`` (exact ``T_world_camera`` poses with timestamps), ``scene.json`` (seed,
parameters, geometry) and, last, the completion marker ``synthetic_complete.json``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import csv
import functools
import hashlib
import json
import math
import multiprocessing
import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from posenet_core.cli import int_at_least, positive_float, run_main
from posenet_core.datasets import (
    POSES_CSV_COLUMNS,
    CameraIntrinsics,
    PoseRecord,
    write_cambridge,
)
from posenet_core.geometry import matrix_to_quat, pose_to_matrix
from posenet_train.errors import PoseNetTrainError

__all__ = [
    "COMPLETE_MARKER",
    "DRIVE_HFOV_DEG",
    "FORMAT_VERSION",
    "IN_PROGRESS_MARKER",
    "SCENES",
    "SCENE_DEFAULTS",
    "STREET_AHEAD_M",
    "STREET_BEHIND_M",
    "Face",
    "PinholeCamera",
    "RaycastResult",
    "Scene",
    "SyntheticSceneError",
    "Trajectory",
    "build_scene",
    "build_street",
    "cli",
    "drive_length_m",
    "drive_test_indices",
    "look_at_rotation",
    "main",
    "make_drive",
    "make_trajectories",
    "raycast",
    "render",
    "rotation_from_yaw_pitch_roll",
    "street_for_drive",
    "write_dataset",
    "write_drive_dataset",
]

FORMAT_VERSION = 1
COMPLETE_MARKER = "synthetic_complete.json"
IN_PROGRESS_MARKER = "synthetic_in_progress"
IMAGE_FORMATS = ("png", "jpg")
NEAR_PLANE_M = 0.05
# Hits within this fraction of a rectangle's edge still count, so rectangles that share an edge
# (wall segments, room corners) leave no one-pixel cracks from float32 rounding; the z-buffer
# decides between the overlapping candidates.
_EDGE_TOLERANCE = 1e-4
_PNG_COMPRESSION = 1
_JPEG_QUALITY = 95
_MAX_IMAGE_SIDE = 8192
# Texture resolution: about one texel per pixel at 2-3 m with the default 500 px focal length;
# finer textures would only alias.
_WALL_TEXELS_PER_M = 128
_FLOOR_TEXELS_PER_M = 64
# Directional light baked into every face's texture (faces of different orientation get different
# brightness, so edges stay visible where two photos have similar colours).
_LIGHT_DIRECTION = np.array([0.35, 0.55, 0.76])
_AMBIENT = 0.6


class SyntheticSceneError(PoseNetTrainError):
    """Bad parameters for the synthetic scene, or an output folder it must not write into."""


# --------------------------------------------------------------------------------------------
# Scene description


@dataclass(frozen=True, eq=False)
class Face:
    """One textured rectangle, visible from the side its normal points to.

    Attributes:
        name: unique, human-readable name (e.g. ``"wall_north_2"``).
        origin_m: (3,) world position of the corner where texture pixel (0, 0) sits.
        edge_u_m: (3,) world vector along the texture's x axis (image columns), full length.
        edge_v_m: (3,) world vector along the texture's y axis (image rows, "down"), full length,
            perpendicular to ``edge_u_m``.
        texture_rgb: (H, W, 3) uint8 texture covering the whole rectangle, shading baked in.
        source: where the texture came from (sample image name, crop, tint), for scene.json.
    """

    name: str
    origin_m: np.ndarray
    edge_u_m: np.ndarray
    edge_v_m: np.ndarray
    texture_rgb: np.ndarray
    source: str = ""

    def __post_init__(self) -> None:
        for attr in ("origin_m", "edge_u_m", "edge_v_m"):
            value = np.asarray(getattr(self, attr), dtype=np.float64).reshape(-1)
            if value.shape != (3,) or not np.all(np.isfinite(value)):
                raise SyntheticSceneError(
                    f"face {self.name!r}: {attr} must be 3 finite numbers, got {value.tolist()}"
                )
            object.__setattr__(self, attr, value)
        length_u = float(np.linalg.norm(self.edge_u_m))
        length_v = float(np.linalg.norm(self.edge_v_m))
        if length_u <= 0.0 or length_v <= 0.0:
            raise SyntheticSceneError(
                f"face {self.name!r}: edges must have positive length, got {length_u} m and"
                f" {length_v} m"
            )
        if abs(float(np.dot(self.edge_u_m, self.edge_v_m))) > 1e-9 * length_u * length_v:
            raise SyntheticSceneError(f"face {self.name!r}: edge_u_m and edge_v_m must be at 90°")
        tex = np.asarray(self.texture_rgb)
        if tex.ndim != 3 or tex.shape[2] != 3 or tex.dtype != np.uint8 or min(tex.shape[:2]) < 1:
            raise SyntheticSceneError(
                f"face {self.name!r}: texture_rgb must be (H, W, 3) uint8, got {tex.shape}"
                f" {tex.dtype}"
            )
        object.__setattr__(self, "texture_rgb", np.ascontiguousarray(tex))

    @property
    def normal(self) -> np.ndarray:
        """Unit normal of the visible side: ``edge_v x edge_u`` (texture appears upright)."""
        n = np.cross(self.edge_v_m, self.edge_u_m)
        return n / np.linalg.norm(n)

    @property
    def corners_m(self) -> np.ndarray:
        """(4, 3) world corners: origin, +u, +u+v, +v."""
        o, u, v = self.origin_m, self.edge_u_m, self.edge_v_m
        return np.stack([o, o + u, o + u + v, o + v])


@dataclass(frozen=True, eq=False)
class Scene:
    """A scene (the room, or the street): its faces, and the solid objects that cameras must
    stay out of.

    Attributes:
        seed: the seed it was built from (None for a hand-made scene).
        room_size_m: (length along x, width along y, height). The room spans
            ``[-L/2, L/2] x [-W/2, W/2] x [0, H]``; the street (``kind == "street"``) spans
            ``[-STREET_BEHIND_M, L] x [-W/2, W/2]`` between its facades, H is their height.
        faces: every textured rectangle.
        obstacles_m: axis-aligned boxes ``(min_xyz, max_xyz)`` of the solid objects inside.
        kind: ``"room"`` (closed; :func:`build_scene`) or ``"street"`` (open to the sky;
            :func:`build_street`).
        background_rgb: colour of pixels that hit no face (the street's sky).
    """

    seed: int | None
    room_size_m: tuple[float, float, float]
    faces: tuple[Face, ...]
    obstacles_m: tuple[tuple[tuple[float, float, float], tuple[float, float, float]], ...] = ()
    kind: str = "room"
    background_rgb: tuple[int, int, int] = (0, 0, 0)

    def describe(self) -> dict:
        """JSON-ready description (geometry and texture sources, no pixels)."""
        return {
            "kind": self.kind,
            "seed": self.seed,
            "room_size_m": list(self.room_size_m),
            "background_rgb": list(self.background_rgb),
            "faces": [
                {
                    "name": f.name,
                    "corners_m": np.round(f.corners_m, 6).tolist(),
                    "texture_size_wh": [int(f.texture_rgb.shape[1]), int(f.texture_rgb.shape[0])],
                    "source": f.source,
                }
                for f in self.faces
            ],
            "obstacles_m": [[list(lo), list(hi)] for lo, hi in self.obstacles_m],
        }


@dataclass(frozen=True)
class PinholeCamera(CameraIntrinsics):
    """Pinhole intrinsics (no distortion) and image size: the camera of ``intrinsics.json``."""

    @classmethod
    def default(
        cls, width: int = 640, height: int = 480, focal_px: float | None = None
    ) -> PinholeCamera:
        """Principal point at the image centre; focal length 500 px at 640 px width by default
        (about 65° horizontal field of view), scaled with the width."""
        _check_image_size(width, height)
        f = 500.0 * width / 640.0 if focal_px is None else float(focal_px)
        if not (math.isfinite(f) and f > 0.0):
            raise SyntheticSceneError(f"focal length must be a positive number of pixels, got {f}")
        return cls(int(width), int(height), f, f, (width - 1) / 2.0, (height - 1) / 2.0)

    def to_json(self) -> dict:
        """The content of intrinsics.json (:meth:`CameraIntrinsics.to_dict` and what it means)."""
        return {
            "model": "pinhole",
            **self.to_dict(),
            "distortion": [0.0, 0.0, 0.0, 0.0, 0.0],
            "pixel_convention": "pixel centres at integer coordinates (OpenCV)",
        }


# --------------------------------------------------------------------------------------------
# Textures from scikit-image's bundled sample images

# Every one of these ships inside the scikit-image wheel (skimage/data/); none triggers a pooch
# download (checked with the network disabled).
_COLOR_PHOTOS = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
)
_GRAY_PHOTOS = ("camera", "coins", "moon", "cell", "clock", "text", "page")
_GRAY_MATERIALS = ("brick", "grass", "gravel")


@functools.cache
def _sample_image(name: str) -> np.ndarray:
    """RGB uint8 copy of one of scikit-image's bundled sample images (read-only, cached)."""
    import skimage.data  # lazy: only the scene builder needs it, not render workers

    image = np.asarray(getattr(skimage.data, name)())
    if image.dtype != np.uint8:
        raise SyntheticSceneError(f"sample image {name!r} has dtype {image.dtype}, expected uint8")
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    image = np.ascontiguousarray(image[:, :, :3])
    image.flags.writeable = False
    return image


def _random_tint(rng: np.random.Generator) -> np.ndarray:
    tint = rng.uniform(0.35, 1.0, size=3)
    return tint / tint.max()


def _texture_from_photo(
    rng: np.random.Generator,
    name: str,
    size_m: tuple[float, float],
    texels_per_m: float,
    *,
    tint: np.ndarray | None = None,
    min_crop: float = 0.6,
) -> tuple[np.ndarray, str]:
    """A random crop of a sample image with the face's aspect ratio, resized to the face's texel
    size, optionally tinted and mirrored. Returns (texture float32 0..255, description)."""
    photo = _sample_image(name)
    h, w = photo.shape[:2]
    aspect = size_m[0] / size_m[1]
    crop_h_max = min(float(h), w / aspect)
    crop_h = crop_h_max * rng.uniform(min_crop, 1.0)
    crop_w = crop_h * aspect
    x0 = int(rng.uniform(0.0, w - crop_w))
    y0 = int(rng.uniform(0.0, h - crop_h))
    crop_w_px, crop_h_px = max(1, int(crop_w)), max(1, int(crop_h))
    crop = photo[y0 : y0 + crop_h_px, x0 : x0 + crop_w_px]
    mirror = bool(rng.integers(2))
    if mirror:
        crop = crop[:, ::-1]
    out_w = max(2, int(round(size_m[0] * texels_per_m)))
    out_h = max(2, int(round(size_m[1] * texels_per_m)))
    interpolation = cv2.INTER_AREA if out_w < crop_w_px else cv2.INTER_LINEAR
    texture = cv2.resize(np.ascontiguousarray(crop), (out_w, out_h), interpolation=interpolation)
    texture = texture.astype(np.float32)
    description = f"skimage.data.{name} crop x={x0} y={y0} w={crop_w_px} h={crop_h_px}"
    if mirror:
        description += " mirrored"
    if tint is not None:
        texture *= tint.astype(np.float32)
        description += " tint=" + ",".join(f"{c:.3f}" for c in tint)
    return texture, description


def _shade(texture: np.ndarray, normal: np.ndarray) -> np.ndarray:
    light = _LIGHT_DIRECTION / np.linalg.norm(_LIGHT_DIRECTION)
    factor = _AMBIENT + (1.0 - _AMBIENT) * abs(float(np.dot(normal, light)))
    return np.clip(texture * factor + 0.5, 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------------------------
# Scene construction


def _make_face(
    name: str,
    center_m: Sequence[float],
    right: Sequence[float],
    up: Sequence[float],
    size_m: tuple[float, float],
    texture: np.ndarray,
    source: str,
) -> Face:
    """A face seen upright from the side ``right x up`` points to."""
    center = np.asarray(center_m, dtype=np.float64)
    right_v = np.asarray(right, dtype=np.float64)
    up_v = np.asarray(up, dtype=np.float64)
    origin = center - right_v * size_m[0] / 2.0 + up_v * size_m[1] / 2.0
    normal = np.cross(right_v, up_v)
    normal /= np.linalg.norm(normal)
    shaded = _shade(texture, normal)
    return Face(name, origin, right_v * size_m[0], -up_v * size_m[1], shaded, source)


def _box_faces(
    rng: np.random.Generator,
    name: str,
    lo: np.ndarray,
    hi: np.ndarray,
    sources: Sequence[str],
    *,
    top: bool = True,
) -> list[Face]:
    """Outward-facing sides (and top) of an axis-aligned box, each with its own texture."""
    cx, cy, cz = (lo + hi) / 2.0
    sx, sy, sz = hi - lo
    sides = [
        ("px", (hi[0], cy, cz), (0, 1, 0), (sy, sz)),
        ("nx", (lo[0], cy, cz), (0, -1, 0), (sy, sz)),
        ("py", (cx, hi[1], cz), (-1, 0, 0), (sx, sz)),
        ("ny", (cx, lo[1], cz), (1, 0, 0), (sx, sz)),
    ]
    faces = []
    for side, center, right, size in sides:
        photo = sources[int(rng.integers(len(sources)))]
        tint = _random_tint(rng) if photo not in _COLOR_PHOTOS else None
        tex, desc = _texture_from_photo(rng, photo, size, _WALL_TEXELS_PER_M, tint=tint)
        faces.append(_make_face(f"{name}_{side}", center, right, (0, 0, 1), size, tex, desc))
    if top:
        photo = sources[int(rng.integers(len(sources)))]
        tex, desc = _texture_from_photo(
            rng, photo, (sx, sy), _WALL_TEXELS_PER_M, tint=_random_tint(rng)
        )
        # Seen from above: texture right = +x, texture up = +y, normal = +z.
        faces.append(
            _make_face(f"{name}_top", (cx, cy, hi[2]), (1, 0, 0), (0, 1, 0), (sx, sy), tex, desc)
        )
    return faces


def _check_room_size(room_size_m: Sequence[float]) -> tuple[float, float, float]:
    size = tuple(float(v) for v in room_size_m)
    if len(size) != 3 or not all(math.isfinite(v) for v in size):
        raise SyntheticSceneError(f"room_size_m must be 3 finite numbers, got {room_size_m!r}")
    length, width, height = size
    # The layout (objects near the walls, camera loops in between) needs this much room.
    if not (6.0 <= length <= 30.0 and 5.0 <= width <= 30.0 and 2.5 <= height <= 6.0):
        raise SyntheticSceneError(
            f"room_size_m = {list(size)} is outside what the scene layout supports:"
            " length 6..30 m, width 5..30 m, height 2.5..6 m"
        )
    return length, width, height


def build_scene(seed: int = 0, room_size_m: Sequence[float] = (8.0, 6.0, 3.0)) -> Scene:
    """Build the textured room, deterministically from ``seed``.

    Each wall is cut into segments about 2 m wide and every segment shows a different photograph
    (7 colour photos and 7 tinted greyscale photos, assigned by the seed), so the position along a
    wall can be told from the image. Inside the room: a box in the centre, a pillar in each corner,
    a two-sided panel hanging in front of each wall and crates along the walls, all placed away
    from the camera paths of :func:`make_trajectories`. The floor is a mosaic of tinted materials.

    Raises SyntheticSceneError for a negative seed or an unsupported room size.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise SyntheticSceneError(f"seed must be a non-negative integer, got {seed!r}")
    length, width, height = _check_room_size(room_size_m)
    rng = np.random.default_rng([int(seed), 0x5CE7E])
    hx, hy = length / 2.0, width / 2.0
    faces: list[Face] = []
    obstacles: list[tuple[tuple[float, ...], tuple[float, ...]]] = []

    # Walls: each segment gets a distinct photo; greyscale ones get a per-segment tint.
    wall_photos = list(_COLOR_PHOTOS + _GRAY_PHOTOS)
    walls = [
        # name, left end of the wall seen from inside, direction to the right seen from inside
        # (so that right x up points into the room), length
        ("north", (-hx, hy), (1.0, 0.0), length),
        ("west", (-hx, -hy), (0.0, 1.0), width),
        ("south", (hx, -hy), (-1.0, 0.0), length),
        ("east", (hx, hy), (0.0, -1.0), width),
    ]
    n_segments = [max(1, int(round(wall_len / 2.0))) for *_, wall_len in walls]
    order = rng.permutation(len(wall_photos))
    photo_for_segment = [wall_photos[order[i % len(order)]] for i in range(sum(n_segments))]
    segment_index = 0
    for (wall_name, start, right, wall_len), count in zip(walls, n_segments, strict=True):
        seg_len = wall_len / count
        for k in range(count):
            photo = photo_for_segment[segment_index]
            segment_index += 1
            tint = _random_tint(rng) if photo in _GRAY_PHOTOS else None
            tex, desc = _texture_from_photo(
                rng, photo, (seg_len, height), _WALL_TEXELS_PER_M, tint=tint
            )
            along = (k + 0.5) * seg_len
            center = (start[0] + right[0] * along, start[1] + right[1] * along, height / 2.0)
            faces.append(
                _make_face(
                    f"wall_{wall_name}_{k}",
                    center,
                    (*right, 0.0),
                    (0, 0, 1),
                    (seg_len, height),
                    tex,
                    desc,
                )
            )

    # Floor: a mosaic of tinted material patches (about 2 m each), one texture for the whole floor.
    cells_x, cells_y = max(1, int(round(length / 2.0))), max(1, int(round(width / 2.0)))
    floor_w = int(round(length * _FLOOR_TEXELS_PER_M))
    floor_h = int(round(width * _FLOOR_TEXELS_PER_M))
    floor = np.zeros((floor_h, floor_w, 3), np.float32)
    floor_desc = []
    xs = np.linspace(0, floor_w, cells_x + 1).round().astype(int)
    ys = np.linspace(0, floor_h, cells_y + 1).round().astype(int)
    for i in range(cells_y):
        for j in range(cells_x):
            cell_size = (
                (xs[j + 1] - xs[j]) / _FLOOR_TEXELS_PER_M,
                (ys[i + 1] - ys[i]) / _FLOOR_TEXELS_PER_M,
            )
            material = _GRAY_MATERIALS[int(rng.integers(len(_GRAY_MATERIALS)))]
            tex, desc = _texture_from_photo(
                rng, material, cell_size, _FLOOR_TEXELS_PER_M, tint=_random_tint(rng)
            )
            floor[ys[i] : ys[i + 1], xs[j] : xs[j + 1]] = tex
            floor_desc.append(desc)
    # Seen from above: texture right = +x, up = +y.
    faces.append(
        _make_face(
            "floor",
            (0.0, 0.0, 0.0),
            (1, 0, 0),
            (0, 1, 0),
            (length, width),
            floor,
            "mosaic: " + "; ".join(floor_desc),
        )
    )

    # Ceiling: one photo stretched over it, seen from below (right = +x, up = -y, normal = -z).
    tex, desc = _texture_from_photo(
        rng, "page", (length, width), _FLOOR_TEXELS_PER_M, tint=_random_tint(rng) * 0.9
    )
    faces.append(
        _make_face(
            "ceiling", (0.0, 0.0, height), (1, 0, 0), (0, -1, 0), (length, width), tex, desc
        )
    )

    all_photos = _COLOR_PHOTOS + _GRAY_PHOTOS + _GRAY_MATERIALS

    # Central box (the camera loops go round it).
    half = np.array([rng.uniform(0.35, 0.5), rng.uniform(0.3, 0.4)])
    box_h = rng.uniform(0.7, 1.0)
    lo, hi = np.array([-half[0], -half[1], 0.0]), np.array([half[0], half[1], box_h])
    faces += _box_faces(rng, "box_center", lo, hi, all_photos)
    obstacles.append((tuple(lo), tuple(hi)))

    # Pillars in the corners, floor to ceiling.
    for name, (sx, sy) in (("ne", (1, 1)), ("nw", (-1, 1)), ("sw", (-1, -1)), ("se", (1, -1))):
        size = rng.uniform(0.3, 0.45)
        center = np.array([sx * (hx - 0.65), sy * (hy - 0.65)])
        lo = np.array([center[0] - size / 2, center[1] - size / 2, 0.0])
        hi = np.array([center[0] + size / 2, center[1] + size / 2, height])
        faces += _box_faces(rng, f"pillar_{name}", lo, hi, all_photos, top=False)
        obstacles.append((tuple(lo), tuple(hi)))

    # A two-sided panel hanging 0.35-0.45 m in front of each wall, at a random place along it.
    for wall_name, start, right, wall_len in walls:
        panel_w = rng.uniform(0.9, 1.4)
        panel_h = rng.uniform(1.0, 1.5)
        along = rng.uniform(1.2 + panel_w / 2, wall_len - 1.2 - panel_w / 2)
        offset = rng.uniform(0.35, 0.45)
        inward = np.array([right[1], -right[0]])  # the wall's right turned 90° clockwise
        c = np.array(start) + np.array(right) * along + inward * offset
        z_mid = rng.uniform(0.5, height - 0.5 - panel_h) + panel_h / 2
        center = (c[0], c[1], z_mid)
        for side, r in (("front", (*right, 0.0)), ("back", (-right[0], -right[1], 0.0))):
            photo = all_photos[int(rng.integers(len(all_photos)))]
            tint = _random_tint(rng) if photo not in _COLOR_PHOTOS else None
            tex, desc = _texture_from_photo(
                rng, photo, (panel_w, panel_h), _WALL_TEXELS_PER_M, tint=tint
            )
            faces.append(
                _make_face(
                    f"panel_{wall_name}_{side}",
                    center,
                    r,
                    (0, 0, 1),
                    (panel_w, panel_h),
                    tex,
                    desc,
                )
            )
        corner_a = c - np.array(right) * panel_w / 2
        corner_b = c + np.array(right) * panel_w / 2
        obstacles.append(
            (
                (
                    min(corner_a[0], corner_b[0]),
                    min(corner_a[1], corner_b[1]),
                    z_mid - panel_h / 2,
                ),
                (
                    max(corner_a[0], corner_b[0]),
                    max(corner_a[1], corner_b[1]),
                    z_mid + panel_h / 2,
                ),
            )
        )

    # Crates against three walls, between the pillars and away from the panels' centres.
    for k, (_, start, right, wall_len) in enumerate(walls[:3]):
        size = np.array([rng.uniform(0.5, 0.8), rng.uniform(0.4, 0.6), rng.uniform(0.7, 1.1)])
        along = rng.uniform(1.3, wall_len - 1.3)
        inward = np.array([right[1], -right[0]])
        c = np.array(start) + np.array(right) * along + inward * (0.05 + size[1] / 2)
        # Box extents: "size[0]" along the wall, "size[1]" away from it.
        ext = np.abs(np.array(right)) * size[0] + np.abs(inward) * size[1]
        lo = np.array([c[0] - ext[0] / 2, c[1] - ext[1] / 2, 0.0])
        hi = np.array([c[0] + ext[0] / 2, c[1] + ext[1] / 2, size[2]])
        faces += _box_faces(rng, f"crate_{k}", lo, hi, all_photos)
        obstacles.append((tuple(lo), tuple(hi)))

    return Scene(
        seed=int(seed),
        room_size_m=(length, width, height),
        faces=tuple(faces),
        obstacles_m=tuple(
            (tuple(float(v) for v in lo), tuple(float(v) for v in hi)) for lo, hi in obstacles
        ),
    )


# --------------------------------------------------------------------------------------------
# Rendering


@dataclass
class RaycastResult:
    """Per-pixel result of :func:`raycast`.

    Attributes:
        depth_m: (H, W) float32 camera-frame z of the nearest hit, ``inf`` where no face is hit.
        face_index: (H, W) int32 index into ``scene.faces`` of the nearest hit, -1 where none.
        u: (H, W) float32 position of the hit along the face's ``edge_u`` (0..1).
        v: (H, W) float32 position of the hit along the face's ``edge_v`` (0..1).
        boxes: per face index, the (row0, row1, col0, col1) screen box that was ray-cast.
    """

    depth_m: np.ndarray
    face_index: np.ndarray
    u: np.ndarray
    v: np.ndarray
    boxes: dict[int, tuple[int, int, int, int]] = field(default_factory=dict)


def _check_image_size(width: int, height: int) -> None:
    for name, value in (("width", width), ("height", height)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise SyntheticSceneError(f"{name} must be an integer number of pixels, got {value!r}")
        if not 1 <= value <= _MAX_IMAGE_SIDE:
            raise SyntheticSceneError(f"{name} must be 1..{_MAX_IMAGE_SIDE} pixels, got {value}")


def _check_pose(t_world_camera: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(t_world_camera, dtype=np.float64)
    if t.shape not in ((4, 4), (3, 4)) or not np.all(np.isfinite(t)):
        raise SyntheticSceneError(
            f"T_world_camera must be a finite 4x4 (or 3x4) matrix, got shape {t.shape}"
        )
    rotation = t[:3, :3]
    if np.max(np.abs(rotation.T @ rotation - np.eye(3))) > 1e-6 or np.linalg.det(rotation) <= 0:
        raise SyntheticSceneError("T_world_camera[:3, :3] must be a rotation matrix")
    return rotation, t[:3, 3]


def _check_camera_matrix(camera_matrix: np.ndarray) -> np.ndarray:
    k = np.asarray(camera_matrix, dtype=np.float64)
    if k.shape != (3, 3) or not np.all(np.isfinite(k)):
        raise SyntheticSceneError(f"K must be a finite 3x3 matrix, got shape {k.shape}")
    if k[0, 0] <= 0 or k[1, 1] <= 0 or k[0, 1] != 0 or np.any(k[2] != (0.0, 0.0, 1.0)):
        raise SyntheticSceneError(
            f"K must be [[fx, 0, cx], [0, fy, cy], [0, 0, 1]] with fx, fy > 0, got {k.tolist()}"
        )
    return k


def _clip_near(points_camera: np.ndarray, near: float) -> np.ndarray:
    """Clip a convex polygon (N, 3) in the camera frame to z >= near (Sutherland-Hodgman)."""
    out = []
    n = len(points_camera)
    for i in range(n):
        a, b = points_camera[i], points_camera[(i + 1) % n]
        a_in, b_in = a[2] >= near, b[2] >= near
        if a_in:
            out.append(a)
        if a_in != b_in:
            s = (near - a[2]) / (b[2] - a[2])
            out.append(a + s * (b - a))
    return np.array(out).reshape(-1, 3)


def _screen_box(
    face: Face, rotation: np.ndarray, center: np.ndarray, k: np.ndarray, width: int, height: int
) -> tuple[int, int, int, int] | None:
    """Pixel rows/cols (r0, r1, c0, c1), end exclusive, that can see the face; None if none."""
    corners_camera = (face.corners_m - center) @ rotation
    clipped = _clip_near(corners_camera, NEAR_PLANE_M)
    if len(clipped) < 3:
        return None
    x = k[0, 0] * clipped[:, 0] / clipped[:, 2] + k[0, 2]
    y = k[1, 1] * clipped[:, 1] / clipped[:, 2] + k[1, 2]
    # One pixel of margin: a pixel centre counts when its ray hits the face, and the projected
    # outline is only used to skip pixels that cannot.
    c0 = max(0, int(math.floor(x.min())) - 1)
    c1 = min(width, int(math.ceil(x.max())) + 2)
    r0 = max(0, int(math.floor(y.min())) - 1)
    r1 = min(height, int(math.ceil(y.max())) + 2)
    if c0 >= c1 or r0 >= r1:
        return None
    return r0, r1, c0, c1


def raycast(
    scene: Scene, T_world_camera: np.ndarray, K: np.ndarray, width: int, height: int
) -> RaycastResult:
    """Nearest face, its depth and texture position for every pixel (see module doc).

    Faces are one-sided (seen only from the side their normal points to). Raises
    SyntheticSceneError for a malformed pose, camera matrix or image size.
    """
    _check_image_size(width, height)
    rotation, center = _check_pose(T_world_camera)
    k = _check_camera_matrix(K)
    fx, fy, cx, cy = k[0, 0], k[1, 1], k[0, 2], k[1, 2]
    # Normalised image coordinates of the pixel centres; a ray (xn, yn, 1) has camera z = 1, so
    # the ray parameter of a hit is its depth.
    xn_all = ((np.arange(width) - cx) / fx).astype(np.float32)
    yn_all = ((np.arange(height) - cy) / fy).astype(np.float32)
    depth = np.full((height, width), np.inf, np.float32)
    index = np.full((height, width), -1, np.int32)
    u_buf = np.zeros((height, width), np.float32)
    v_buf = np.zeros((height, width), np.float32)
    boxes: dict[int, tuple[int, int, int, int]] = {}
    lo, hi = np.float32(-_EDGE_TOLERANCE), np.float32(1.0 + _EDGE_TOLERANCE)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for i, face in enumerate(scene.faces):
            offset = face.origin_m - center
            numerator = float(np.dot(face.normal, offset))
            if numerator >= 0.0:  # camera behind (or in) the face's plane: back side
                continue
            box = _screen_box(face, rotation, center, k, width, height)
            if box is None:
                continue
            r0, r1, c0, c1 = box
            boxes[i] = box
            xn = xn_all[c0:c1][None, :]
            yn = yn_all[r0:r1][:, None]
            # Every quantity below is affine in (xn, yn): dot products with the ray (xn, yn, 1)
            # of vectors expressed in the camera frame. float32 throughout (numpy keeps float64
            # scalars float64, hence the explicit casts).
            inv_u2 = 1.0 / float(np.dot(face.edge_u_m, face.edge_u_m))
            inv_v2 = 1.0 / float(np.dot(face.edge_v_m, face.edge_v_m))
            n_c = (rotation.T @ face.normal).astype(np.float32)
            eu_c = (rotation.T @ face.edge_u_m * inv_u2).astype(np.float32)
            ev_c = (rotation.T @ face.edge_v_m * inv_v2).astype(np.float32)
            denom = n_c[0] * xn + (n_c[1] * yn + n_c[2])
            lam = np.float32(numerator) / denom
            # Hit point minus origin = lam * ray - offset, projected on the (scaled) edges.
            s = lam * (eu_c[0] * xn + (eu_c[1] * yn + eu_c[2]))
            s -= np.float32(np.dot(face.edge_u_m, offset) * inv_u2)
            t = lam * (ev_c[0] * xn + (ev_c[1] * yn + ev_c[2]))
            t -= np.float32(np.dot(face.edge_v_m, offset) * inv_v2)
            depth_view = depth[r0:r1, c0:c1]
            mask = lam < depth_view
            mask &= lam > np.float32(NEAR_PLANE_M)
            mask &= s >= lo
            mask &= s <= hi
            mask &= t >= lo
            mask &= t <= hi
            np.copyto(depth_view, lam, where=mask)
            np.copyto(index[r0:r1, c0:c1], np.int32(i), where=mask)
            np.copyto(u_buf[r0:r1, c0:c1], s, where=mask)
            np.copyto(v_buf[r0:r1, c0:c1], t, where=mask)
    return RaycastResult(depth, index, u_buf, v_buf, boxes)


def render(
    scene: Scene,
    T_world_camera: np.ndarray,
    K: np.ndarray,
    width: int,
    height: int,
    *,
    background_rgb: tuple[int, int, int] = (0, 0, 0),
) -> tuple[np.ndarray, np.ndarray]:
    """Render the scene from a pose.

    Args:
        scene: from :func:`build_scene` (or hand-made).
        T_world_camera: 4x4 camera-to-world pose (optical camera axes).
        K: 3x3 pinhole camera matrix.
        width, height: image size in pixels.
        background_rgb: colour of pixels that hit no face.

    Returns:
        ``(rgb_HWC uint8, depth_m float32 (H, W))``; depth is the camera-frame z of the visible
        surface, ``inf`` where no face is hit. Texture lookup is bilinear, texel centres at
        half-integer texture coordinates.
    """
    hits = raycast(scene, T_world_camera, K, width, height)
    rgb = np.empty((height, width, 3), np.uint8)
    rgb[...] = np.asarray(background_rgb, np.uint8)
    for i, (r0, r1, c0, c1) in hits.boxes.items():
        won = hits.face_index[r0:r1, c0:c1] == i
        if not won.any():
            continue
        # Shrink to the rows/columns this face actually won before sampling its texture.
        rows = np.flatnonzero(won.any(axis=1))
        cols = np.flatnonzero(won.any(axis=0))
        rr0, rr1 = r0 + rows[0], r0 + rows[-1] + 1
        cc0, cc1 = c0 + cols[0], c0 + cols[-1] + 1
        won = won[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
        texture = scene.faces[i].texture_rgb
        tex_h, tex_w = texture.shape[:2]
        map_x = hits.u[rr0:rr1, cc0:cc1] * np.float32(tex_w) - np.float32(0.5)
        map_y = hits.v[rr0:rr1, cc0:cc1] * np.float32(tex_h) - np.float32(0.5)
        patch = cv2.remap(texture, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        np.copyto(rgb[rr0:rr1, cc0:cc1], patch, where=won[:, :, None])
    return rgb, hits.depth_m


# --------------------------------------------------------------------------------------------
# Camera orientation helpers and trajectories


def look_at_rotation(
    forward_world: Sequence[float], up_world: Sequence[float] = (0.0, 0.0, 1.0)
) -> np.ndarray:
    """Camera-to-world rotation (columns = optical x right, y down, z forward in the world) of a
    camera looking along ``forward_world`` with no roll relative to ``up_world``.

    Raises SyntheticSceneError when the two directions are (nearly) parallel.
    """
    z_axis = np.asarray(forward_world, dtype=np.float64)
    up = np.asarray(up_world, dtype=np.float64)
    if z_axis.shape != (3,) or up.shape != (3,) or np.linalg.norm(z_axis) == 0:
        raise SyntheticSceneError("forward_world and up_world must be non-zero 3-vectors")
    z_axis = z_axis / np.linalg.norm(z_axis)
    x_axis = np.cross(z_axis, up)
    norm = np.linalg.norm(x_axis)
    if norm < 1e-6 * max(1.0, float(np.linalg.norm(up))):
        raise SyntheticSceneError(
            f"forward {z_axis.tolist()} is parallel to up {up.tolist()}: roll is undefined"
        )
    x_axis /= norm
    y_axis = np.cross(z_axis, x_axis)
    return np.stack([x_axis, y_axis, z_axis], axis=1)


def rotation_from_yaw_pitch_roll(yaw_rad: float, pitch_rad: float, roll_rad: float) -> np.ndarray:
    """Camera-to-world rotation of an optical camera in a z-up world.

    ``yaw`` is the heading of the optical axis (0 = looking along +x, counter-clockwise seen from
    above), ``pitch`` its elevation (positive looks up, |pitch| < 90°), ``roll`` a rotation about
    the optical axis (positive turns the image clockwise as seen by the camera).
    """
    forward = np.array(
        [
            math.cos(pitch_rad) * math.cos(yaw_rad),
            math.cos(pitch_rad) * math.sin(yaw_rad),
            math.sin(pitch_rad),
        ]
    )
    r = look_at_rotation(forward)
    c, s = math.cos(roll_rad), math.sin(roll_rad)
    roll = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    return r @ roll


@dataclass(frozen=True, eq=False)
class Trajectory:
    """A sequence of exact camera poses at a fixed rate.

    Attributes:
        timestamps_s: (N,) seconds from the start of the sequence.
        positions_m: (N, 3) camera centres in the world frame.
        quats_wxyz: (N, 4) camera-to-world rotations, unit, ``w >= 0``.
    """

    timestamps_s: np.ndarray
    positions_m: np.ndarray
    quats_wxyz: np.ndarray

    def __len__(self) -> int:
        return len(self.timestamps_s)

    def T_world_camera(self, i: int) -> np.ndarray:  # noqa: N802 - the project's pose name
        """4x4 pose of frame ``i`` (built from the stored quaternion, so it is what was saved)."""
        return pose_to_matrix(self.positions_m[i], self.quats_wxyz[i])

    def digest(self) -> str:
        """SHA-256 of the poses and timestamps (identifies the trajectory in the marker)."""
        h = hashlib.sha256()
        for a in (self.timestamps_s, self.positions_m, self.quats_wxyz):
            h.update(np.ascontiguousarray(a, dtype=np.float64).tobytes())
        return h.hexdigest()


@dataclass(frozen=True)
class _Loop:
    radius_fraction: float  # of the room's half length / half width (an ellipse)
    height_m: float
    height_wobble_m: float
    heading_offset_deg: float  # 0 = looking straight away from the room's centre
    heading_swing_deg: float  # amplitude of a slow heading oscillation around the offset
    phase_rad: float
    direction: int  # +1 counter-clockwise
    radius_wobble: float = 0.0  # amplitude, same unit as radius_fraction
    radius_cycles: int = 0  # radius oscillations per loop
    height_cycles: int = 3
    heading_cycles: int = 2
    heading_phase_rad: float = 0.0


def _woven_loops(count: int) -> tuple[_Loop, ...]:
    """``count`` training loops whose radius, height and heading weave at their own rates.

    Loop ``i`` leans its heading by up to 35° either side of "outward" (a full sine over the
    loops), swings it by 25-45°, wobbles its radius by 10-14 % of the half room around 46-54 %
    and its height by 15 cm around 1.40-1.60 m, with cycle counts and phases spread by
    multiplying ``i`` by 3, 5, 7 and 11 modulo ``count`` (a permutation of the loops when
    ``count`` shares no factor with them, as 16 does not). Together the loops criss-cross the
    band the test loop runs through, as several walks of a site with a hand-held camera would.
    """
    loops = []
    for i in range(count):
        f = (i + 0.5) / count
        loops.append(
            _Loop(
                radius_fraction=0.50 + 0.04 * math.sin(2.0 * math.pi * 3.0 * f),
                height_m=1.50 + 0.10 * math.cos(2.0 * math.pi * 2.0 * f),
                height_wobble_m=0.15,
                heading_offset_deg=35.0 * math.sin(2.0 * math.pi * f),
                heading_swing_deg=25.0 + 20.0 * ((7 * i) % count) / count,
                phase_rad=2.0 * math.pi * ((5 * i) % count) / count,
                direction=+1 if i % 2 == 0 else -1,
                radius_wobble=0.10 + 0.04 * ((3 * i) % count) / count,
                radius_cycles=3 + i % 5,
                height_cycles=2 + (2 * i) % 5,
                heading_cycles=2 + (3 * i) % 6,
                heading_phase_rad=2.0 * math.pi * ((11 * i) % count) / count,
            )
        )
    return tuple(loops)


# Sixteen woven loops. History, measured with the demo's training settings (BENCHMARKS.md):
# parallel loops at fixed radius and heading (the first design) left the test poses in gaps that
# only retrieval-like answers could fill; four hand-set woven loops gave the regressor views
# around the test poses (0.21 m on 2400 frames); eight generated loops on the same frames spread
# those views over more positions and headings (0.145 m); with 4800 frames, sixteen loops keep
# about 300 frames per loop, and the regressor uses the extra paths better than retrieval does.
_TRAIN_LOOPS = _woven_loops(16)
_TEST_LOOP = _Loop(0.50, 1.55, 0.10, 0.0, 30.0, 0.9, +1)
_MAX_PITCH_DEG = 12.0


def _loop_poses(
    loop: _Loop,
    count: int,
    half_extent: tuple[float, float],
    rng: np.random.Generator,
    jitter: bool,
) -> tuple[np.ndarray, np.ndarray]:
    phases = loop.phase_rad + loop.direction * 2.0 * np.pi * np.arange(count) / max(count, 1)
    positions = np.empty((count, 3))
    quats = np.empty((count, 4))
    for i, phi in enumerate(phases):
        radius = loop.radius_fraction + loop.radius_wobble * math.sin(loop.radius_cycles * phi)
        x = radius * half_extent[0] * math.cos(phi)
        y = radius * half_extent[1] * math.sin(phi)
        z = loop.height_m + loop.height_wobble_m * math.sin(loop.height_cycles * phi)
        yaw = math.atan2(y, x) + math.radians(
            loop.heading_offset_deg
            + loop.heading_swing_deg * math.sin(loop.heading_cycles * phi + loop.heading_phase_rad)
        )
        pitch = math.radians(-4.0 + 6.0 * math.sin(3.0 * phi + 1.0))
        roll = 0.0
        if jitter:
            x, y, z = np.array([x, y, z]) + rng.normal(0.0, 0.03, 3)
            yaw += math.radians(rng.normal(0.0, 2.0))
            pitch += math.radians(rng.normal(0.0, 2.0))
            roll += math.radians(rng.normal(0.0, 1.0))
        pitch = float(np.clip(pitch, -math.radians(_MAX_PITCH_DEG), math.radians(_MAX_PITCH_DEG)))
        positions[i] = (x, y, z)
        quats[i] = matrix_to_quat(rotation_from_yaw_pitch_roll(yaw, pitch, roll))
    return positions, quats


def _check_count(name: str, value: int, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise SyntheticSceneError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_rate(rate_hz: float) -> float:
    rate = float(rate_hz)
    if not (math.isfinite(rate) and rate > 0.0):
        raise SyntheticSceneError(f"rate_hz must be a positive number, got {rate_hz!r}")
    return rate


def make_trajectories(
    scene: Scene,
    train_frames: int = 600,
    test_frames: int = 150,
    *,
    rate_hz: float = 10.0,
) -> dict[str, Trajectory]:
    """Camera paths for the room, deterministic from ``scene.seed``.

    Train: sixteen loops round the room's centre whose radius (33-65 % of the half room), height
    (1.26-1.74 m) and heading (up to 76° either side of looking straight at the walls) weave at
    different rates, so the loops cross each other; small random jitter (3 cm, 2°). The frames are
    shared between the loops.
    Test: a separate smooth loop at an intermediate radius and height, starting at a different
    phase, without jitter, inside the space the training poses span. Timestamps run at
    ``rate_hz`` from 0 in each split.

    Returns ``{"train": Trajectory, "test": Trajectory}``.
    """
    train_frames = _check_count("train_frames", train_frames)
    test_frames = _check_count("test_frames", test_frames)
    rate = _check_rate(rate_hz)
    seed = 0 if scene.seed is None else scene.seed
    rng = np.random.default_rng([seed, 0x7FA9])
    half_extent = (scene.room_size_m[0] / 2.0, scene.room_size_m[1] / 2.0)
    counts = np.full(len(_TRAIN_LOOPS), train_frames // len(_TRAIN_LOOPS))
    counts[: train_frames % len(_TRAIN_LOOPS)] += 1
    parts = [
        _loop_poses(loop, int(n), half_extent, rng, jitter=True)
        for loop, n in zip(_TRAIN_LOOPS, counts, strict=True)
        if n > 0
    ]
    train_pos = np.concatenate([p for p, _ in parts])
    train_quat = np.concatenate([q for _, q in parts])
    test_pos, test_quat = _loop_poses(_TEST_LOOP, test_frames, half_extent, rng, jitter=False)
    return {
        "train": Trajectory(np.arange(train_frames) / rate, train_pos, train_quat),
        "test": Trajectory(np.arange(test_frames) / rate, test_pos, test_quat),
    }


# --------------------------------------------------------------------------------------------
# The street and the forward drive

#: How far the street reaches behind the drive's start (x = 0): the wide camera sees the
#: facades from about its own distance to them onwards.
STREET_BEHIND_M = 6.0
#: How far the street goes on past the drive's last frame, up to the building across its end.
STREET_AHEAD_M = 60.0
_STREET_WIDTH_M = 14.0  # facade to facade
_FACADE_HEIGHT_M = 9.0
_SIDEWALK_M = 2.0
_STREET_TEXELS_PER_M = 48  # about one texel per pixel at 10 m with a 480 px focal length
_SKY_RGB = (186, 202, 218)
# The drive: the camera rides in the right-hand lane, 1.45 m up, weaving a little within it.
_LANE_Y_M = -1.6
_CAMERA_HEIGHT_M = 1.45
_LANE_WEAVE_M = 0.12
_LANE_WEAVE_PERIOD_M = 35.0
_DRIVE_PITCH_DEG = -1.0
#: Horizontal field of view of the drive's default camera (a wide automotive camera).
DRIVE_HFOV_DEG = 90.0


def build_street(seed: int = 0, length_m: float = 90.0) -> Scene:
    """A straight street between two rows of facades, deterministically from ``seed``.

    The street runs along +x from ``-STREET_BEHIND_M`` to ``length_m``, where a building closes
    it; it is 14 m wide facade to facade (y = -7 .. 7), the facades 9 m high. Each facade is cut
    into 3-5 m segments, each a different crop of a sample photo (tinted when greyscale, never
    the same photo twice in a row); the ground is a mosaic of tinted materials (road and
    sidewalks in 4 m cells). Parked cars (boxes) stand along both kerbs and posts on the
    sidewalks, away from the right-hand lane the drive uses (:func:`make_drive`). Above the
    facades is a uniform sky (``background_rgb``): nothing to match there, as in a real street.

    Raises SyntheticSceneError for a negative seed or a street shorter than 20 m or longer than
    2 km.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise SyntheticSceneError(f"seed must be a non-negative integer, got {seed!r}")
    length = float(length_m)
    if not (math.isfinite(length) and 20.0 <= length <= 2000.0):
        raise SyntheticSceneError(f"street length_m must be 20..2000 m, got {length_m!r}")
    rng = np.random.default_rng([int(seed), 0x57EE7])
    x0, x1 = -STREET_BEHIND_M, length
    half_w, height = _STREET_WIDTH_M / 2.0, _FACADE_HEIGHT_M
    texels = _STREET_TEXELS_PER_M
    faces: list[Face] = []
    obstacles: list[tuple[tuple[float, ...], tuple[float, ...]]] = []
    photos = list(_COLOR_PHOTOS + _GRAY_PHOTOS)
    all_photos = _COLOR_PHOTOS + _GRAY_PHOTOS + _GRAY_MATERIALS

    def facade_photo(previous: str | None) -> str:
        choices = [p for p in photos if p != previous]
        return choices[int(rng.integers(len(choices)))]

    # Facades: right side (y = -W/2, seen from +y) and left side (y = +W/2, seen from -y).
    for side, y, right in (("right", -half_w, (-1.0, 0.0, 0.0)), ("left", half_w, (1.0, 0, 0))):
        x, k, previous = x0, 0, None
        while x < x1 - 1e-9:
            seg = min(float(rng.uniform(3.0, 5.0)), x1 - x)
            if x1 - x - seg < 1.0:  # no sliver at the end
                seg = x1 - x
            photo = facade_photo(previous)
            previous = photo
            tint = _random_tint(rng) if photo in _GRAY_PHOTOS else None
            tex, desc = _texture_from_photo(rng, photo, (seg, height), texels, tint=tint)
            center = (x + seg / 2.0, y, height / 2.0)
            faces.append(
                _make_face(
                    f"facade_{side}_{k}", center, right, (0, 0, 1), (seg, height), tex, desc
                )
            )
            x += seg
            k += 1
    # The far end: a plain wall, as far as the view goes (a street recedes into the haze; a
    # poster there would be one big plane in the middle of every frame, which real drives lack).
    far = np.full((8, 8, 3), 150.0, np.float32)
    tex, desc = far * (0.8 + 0.2 * _random_tint(rng)), "plain"
    faces.append(
        _make_face(
            "facade_end",
            (x1, 0.0, height / 2.0),
            (0.0, -1.0, 0.0),
            (0, 0, 1),
            (_STREET_WIDTH_M, height),
            tex,
            desc,
        )
    )

    # Ground: road and sidewalks, 4 m cells of tinted materials, one texture.
    ground_w = int(round((x1 - x0) * texels))
    ground_h = int(round(_STREET_WIDTH_M * texels))
    ground = np.zeros((ground_h, ground_w, 3), np.float32)
    # Texture rows run from y = +W/2 (row 0, "up" is +y) to y = -W/2.
    bands = [half_w, half_w - _SIDEWALK_M, 0.0, -half_w + _SIDEWALK_M, -half_w]
    rows = [int(round((half_w - b) * texels)) for b in bands]
    cols = np.linspace(0, ground_w, max(1, int(round((x1 - x0) / 4.0))) + 1).round().astype(int)
    ground_desc = []
    for i in range(len(rows) - 1):
        for j in range(len(cols) - 1):
            size = ((cols[j + 1] - cols[j]) / texels, (rows[i + 1] - rows[i]) / texels)
            material = _GRAY_MATERIALS[int(rng.integers(len(_GRAY_MATERIALS)))]
            tex, desc = _texture_from_photo(rng, material, size, texels, tint=_random_tint(rng))
            ground[rows[i] : rows[i + 1], cols[j] : cols[j + 1]] = tex
            ground_desc.append(desc)
    faces.append(
        _make_face(
            "ground",
            ((x0 + x1) / 2.0, 0.0, 0.0),
            (1, 0, 0),
            (0, 1, 0),
            (x1 - x0, _STREET_WIDTH_M),
            ground,
            "mosaic: " + "; ".join(ground_desc),
        )
    )

    # Parked cars along both kerbs, posts on both sidewalks.
    kerb = half_w - _SIDEWALK_M
    for side, sign in (("right", -1.0), ("left", 1.0)):
        x, k = x0 + float(rng.uniform(0.0, 6.0)), 0
        while x + 4.5 < x1 - 2.0:
            size = np.array([rng.uniform(3.8, 4.8), rng.uniform(1.7, 1.9), rng.uniform(1.4, 1.8)])
            inner, outer = kerb - 0.2 - size[1], kerb - 0.2
            y_lo, y_hi = (-outer, -inner) if sign < 0 else (inner, outer)
            lo = np.array([x, y_lo, 0.0])
            hi = np.array([x + size[0], y_hi, size[2]])
            faces += _box_faces(rng, f"car_{side}_{k}", lo, hi, all_photos)
            obstacles.append((tuple(lo), tuple(hi)))
            x += size[0] + float(rng.uniform(2.0, 12.0))
            k += 1
        x, k = x0 + float(rng.uniform(2.0, 8.0)), 0
        while x < x1 - 2.0:
            y_mid = sign * (half_w - 0.8)
            lo = np.array([x - 0.15, y_mid - 0.15, 0.0])
            hi = np.array([x + 0.15, y_mid + 0.15, float(rng.uniform(3.0, 4.5))])
            faces += _box_faces(rng, f"post_{side}_{k}", lo, hi, all_photos)
            obstacles.append((tuple(lo), tuple(hi)))
            x += float(rng.uniform(7.0, 13.0))
            k += 1

    return Scene(
        seed=int(seed),
        room_size_m=(length, _STREET_WIDTH_M, height),
        faces=tuple(faces),
        obstacles_m=tuple(
            (tuple(float(v) for v in lo), tuple(float(v) for v in hi)) for lo, hi in obstacles
        ),
        kind="street",
        background_rgb=_SKY_RGB,
    )


def drive_length_m(frames: int, spacing_m: float) -> float:
    """Length of the drive's path: ``(frames - 1) * spacing_m``."""
    return (frames - 1) * spacing_m


def street_for_drive(seed: int, frames: int, spacing_m: float) -> Scene:
    """The street a drive of ``frames`` frames ``spacing_m`` apart needs (it ends
    ``STREET_AHEAD_M`` past the last frame)."""
    return build_street(seed, max(20.0, drive_length_m(frames, spacing_m) + STREET_AHEAD_M))


def make_drive(
    scene: Scene, frames: int = 51, spacing_m: float = 1.2, *, rate_hz: float = 10.0
) -> Trajectory:
    """A robot (or car) driving straight down the street, a camera looking ahead.

    Frame ``i`` is ``i * spacing_m`` along +x from x = 0 in the right-hand lane (y = -1.6 m), the
    camera 1.45 m up and pitched 1° down. The path weaves 0.12 m either side of the lane centre
    over 35 m and the heading follows it (at most 1.3°); small random jitter (5 mm, 0.2°) is
    added, deterministic from ``scene.seed``. Nearly pure forward motion: what a robot mapping a
    corridor or a street records, and what a default structure-from-motion initialisation finds
    hardest. Timestamps run at ``rate_hz`` from 0.

    Raises SyntheticSceneError when the scene is not a street long enough for the drive, or for
    bad counts.
    """
    frames = _check_count("frames", frames, 2)
    spacing = _check_spacing(spacing_m)
    rate = _check_rate(rate_hz)
    if scene.kind != "street":
        raise SyntheticSceneError(f"a drive needs the street scene, got a {scene.kind}")
    length = drive_length_m(frames, spacing)
    if length + 5.0 > scene.room_size_m[0]:
        raise SyntheticSceneError(
            f"the drive ({length:.1f} m) does not fit the street ({scene.room_size_m[0]:.1f} m);"
            " build it with street_for_drive()"
        )
    seed = 0 if scene.seed is None else scene.seed
    rng = np.random.default_rng([seed, 0xD21FE])
    phase = float(rng.uniform(0.0, 2.0 * math.pi))
    omega = 2.0 * math.pi / _LANE_WEAVE_PERIOD_M
    positions = np.empty((frames, 3))
    quats = np.empty((frames, 4))
    for i in range(frames):
        x = i * spacing
        y = _LANE_Y_M + _LANE_WEAVE_M * math.sin(omega * x + phase)
        yaw = math.atan(_LANE_WEAVE_M * omega * math.cos(omega * x + phase))
        z = _CAMERA_HEIGHT_M + rng.normal(0.0, 0.005)
        yaw += math.radians(rng.normal(0.0, 0.2))
        pitch = math.radians(_DRIVE_PITCH_DEG + rng.normal(0.0, 0.2))
        roll = math.radians(rng.normal(0.0, 0.2))
        positions[i] = (x, y + rng.normal(0.0, 0.005), z)
        quats[i] = matrix_to_quat(rotation_from_yaw_pitch_roll(yaw, pitch, roll))
    return Trajectory(np.arange(frames) / rate, positions, quats)


def _check_spacing(spacing_m: float) -> float:
    if isinstance(spacing_m, bool) or not isinstance(spacing_m, (int, float, np.floating)):
        raise SyntheticSceneError(f"spacing_m must be a number of metres, got {spacing_m!r}")
    spacing = float(spacing_m)
    if not (math.isfinite(spacing) and 0.01 <= spacing <= 20.0):
        raise SyntheticSceneError(f"spacing_m must be 0.01..20 m, got {spacing_m!r}")
    return spacing


def drive_test_indices(frames: int, test_every: int) -> list[int]:
    """The frames held out for testing: every ``test_every``-th, starting with frame
    ``test_every - 1`` (so the first frame and, mostly, the last are training frames)."""
    frames = _check_count("frames", frames, 2)
    test_every = _check_count("test_every", test_every, 2)
    indices = list(range(test_every - 1, frames, test_every))
    if not indices:
        raise SyntheticSceneError(
            f"test_every = {test_every} holds out no frame of {frames}; use at most {frames}"
        )
    return indices


# --------------------------------------------------------------------------------------------
# Writing a dataset

_worker_state: dict = {}


def _init_worker(scene: Scene, k: np.ndarray, width: int, height: int, threads: int) -> None:
    # Each worker process renders whole frames; OpenCV's own threads would only compete with the
    # other workers for the same cores.
    cv2.setNumThreads(threads)
    _worker_state.update(scene=scene, k=k, width=width, height=height)


def _render_and_save(job: tuple[str, np.ndarray]) -> str:
    path, t_world_camera = job
    s = _worker_state
    scene = s["scene"]
    rgb, _ = render(
        scene, t_world_camera, s["k"], s["width"], s["height"], background_rgb=scene.background_rgb
    )
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    if path.endswith(".png"):
        params = [cv2.IMWRITE_PNG_COMPRESSION, _PNG_COMPRESSION]
    else:
        params = [cv2.IMWRITE_JPEG_QUALITY, _JPEG_QUALITY]
    if not cv2.imwrite(path, bgr, params):
        raise SyntheticSceneError(f"could not write image {path}")
    return path


_OWN_FILES = (
    "dataset_train.txt",
    "dataset_test.txt",
    "intrinsics.json",
    "poses_train.csv",
    "poses_test.csv",
    "scene.json",
)


def _fingerprint(
    scene: Scene,
    trajectories: dict[str, Trajectory],
    camera: PinholeCamera,
    image_format: str,
) -> dict:
    """What identifies a written dataset: parameters, and digests of poses and textures."""
    texture_digest = hashlib.sha256()
    for f in scene.faces:
        texture_digest.update(f.name.encode())
        texture_digest.update(np.concatenate([f.origin_m, f.edge_u_m, f.edge_v_m]).tobytes())
        texture_digest.update(f.texture_rgb.tobytes())
    return {
        "generator": "posenet_train.synthetic",
        "format_version": FORMAT_VERSION,
        "seed": scene.seed,
        "room_size_m": list(scene.room_size_m),
        "camera": camera.to_json(),
        "image_format": image_format,
        "frames": {split: len(traj) for split, traj in trajectories.items()},
        "trajectory_sha256": {split: traj.digest() for split, traj in trajectories.items()},
        "scene_sha256": texture_digest.hexdigest(),
    }


def _read_marker(folder: Path) -> dict | None:
    try:
        return json.loads((folder / COMPLETE_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _prepare_folder(folder: Path, fingerprint: dict, overwrite: bool) -> bool:
    """Return True if ``folder`` already holds this exact dataset (reuse it); otherwise make it
    ready for writing (create it, or delete a previous synthetic dataset in it)."""
    if not folder.exists():
        folder.mkdir(parents=True)
    elif not folder.is_dir():
        raise SyntheticSceneError(f"output {folder} exists and is not a folder")
    marker = _read_marker(folder)
    if marker is not None and not overwrite:
        if marker == json.loads(json.dumps(fingerprint)):
            return True
        differs = sorted(
            k for k in set(marker) | set(fingerprint) if marker.get(k) != fingerprint.get(k)
        )
        raise SyntheticSceneError(
            f"{folder} holds a synthetic dataset made with different parameters"
            f" ({', '.join(differs)} differ); pass --overwrite (overwrite=True) to replace it,"
            " or choose another folder"
        )
    # A marker that exists but cannot be read is still ours (e.g. a crash while writing it).
    ours = (folder / COMPLETE_MARKER).exists() or (folder / IN_PROGRESS_MARKER).exists()
    entries = list(folder.iterdir())
    if entries and not ours:
        raise SyntheticSceneError(
            f"output folder {folder} is not empty and was not written by posenet_train.synthetic"
            f" (it holds {', '.join(sorted(e.name for e in entries)[:5])}"
            f"{', ...' if len(entries) > 5 else ''}); choose a new or empty folder"
        )
    # Ours (complete with --overwrite, or interrupted): remove the marker first, so that a crash
    # while deleting or rewriting never leaves a folder that looks complete.
    (folder / COMPLETE_MARKER).unlink(missing_ok=True)
    (folder / IN_PROGRESS_MARKER).touch()
    shutil.rmtree(folder / "images", ignore_errors=True)
    for name in _OWN_FILES:
        (folder / name).unlink(missing_ok=True)
    return False


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _write_poses_csv(path: Path, folder: Path, image_paths: list[Path], traj: Trajectory) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(POSES_CSV_COLUMNS)
        for i, image_path in enumerate(image_paths):
            row = [image_path.relative_to(folder).as_posix()]
            row += [
                repr(float(v))
                for v in (traj.timestamps_s[i], *traj.positions_m[i], *traj.quats_wxyz[i])
            ]
            writer.writerow(row)


def write_dataset(
    output: str | Path,
    scene: Scene,
    trajectories: dict[str, Trajectory],
    camera: PinholeCamera,
    *,
    workers: int = 2,
    image_format: str = "png",
    overwrite: bool = False,
    progress: bool = True,
    extra_parameters: dict | None = None,
) -> Path:
    """Render every pose of every split and write the dataset folder (see module doc).

    An existing complete dataset with the same fingerprint (parameters, poses, scene) is reused
    unless ``overwrite``; one with a different fingerprint is an error unless ``overwrite``. A
    folder left half-written by an interrupted run is rewritten. A non-empty folder that this
    module did not write is never touched. The completion marker is written last.

    Args:
        output: dataset folder.
        scene: from :func:`build_scene`.
        trajectories: ``{"train": ..., "test": ...}`` from :func:`make_trajectories`.
        camera: intrinsics and image size.
        workers: processes rendering in parallel (1 renders in this process).
        image_format: "png" (lossless, fast low compression) or "jpg" (quality 95).
        overwrite: replace an existing dataset.
        progress: show a tqdm progress bar.
        extra_parameters: recorded in scene.json (e.g. the CLI's arguments).

    Returns the dataset folder.
    """
    if set(trajectories) != {"train", "test"}:
        raise SyntheticSceneError(
            "trajectories must have exactly the splits 'train' and 'test', got"
            f" {sorted(trajectories)}"
        )
    names = {
        split: [f"{split}_{i:05d}.{image_format}" for i in range(len(traj))]
        for split, traj in trajectories.items()
    }
    return _write_splits(
        Path(output),
        scene,
        trajectories,
        names,
        camera,
        fingerprint_extra={},
        rate_hz=_rate_of(trajectories["train"]),
        workers=workers,
        image_format=image_format,
        overwrite=overwrite,
        progress=progress,
        extra_parameters=extra_parameters,
    )


def write_drive_dataset(
    output: str | Path,
    scene: Scene,
    drive: Trajectory,
    camera: PinholeCamera,
    *,
    test_every: int = 4,
    workers: int = 2,
    image_format: str = "png",
    overwrite: bool = False,
    progress: bool = True,
    extra_parameters: dict | None = None,
) -> Path:
    """Render a drive (:func:`make_drive`) as one sequence and split it by frame.

    Every frame is ``images/frame_NNNNNN.<ext>`` (its index in the drive), so ``images/`` is the
    whole recording in order, as ``posenet_train.sfm`` takes an image folder; every
    ``test_every``-th frame (:func:`drive_test_indices`) is in the test split, the others in the
    training split. Otherwise as :func:`write_dataset` (reuse, overwrite, markers).
    """
    test = set(drive_test_indices(len(drive), test_every))
    indices = {
        "train": [i for i in range(len(drive)) if i not in test],
        "test": sorted(test),
    }
    trajectories = {
        split: Trajectory(drive.timestamps_s[idx], drive.positions_m[idx], drive.quats_wxyz[idx])
        for split, idx in indices.items()
    }
    names = {
        split: [f"frame_{i:06d}.{image_format}" for i in idx] for split, idx in indices.items()
    }
    return _write_splits(
        Path(output),
        scene,
        trajectories,
        names,
        camera,
        fingerprint_extra={
            "scene_kind": scene.kind,
            "background_rgb": list(scene.background_rgb),
            "drive_frames": len(drive),
            "test_every": int(test_every),
        },
        rate_hz=_rate_of(drive),
        workers=workers,
        image_format=image_format,
        overwrite=overwrite,
        progress=progress,
        extra_parameters=extra_parameters,
    )


def _write_splits(
    folder: Path,
    scene: Scene,
    trajectories: dict[str, Trajectory],
    names: dict[str, list[str]],
    camera: PinholeCamera,
    *,
    fingerprint_extra: dict,
    rate_hz: float | None,
    workers: int,
    image_format: str,
    overwrite: bool,
    progress: bool,
    extra_parameters: dict | None,
) -> Path:
    workers = _check_count("workers", workers)
    if image_format not in IMAGE_FORMATS:
        raise SyntheticSceneError(
            f"image_format must be one of {', '.join(IMAGE_FORMATS)}, got {image_format!r}"
        )
    fingerprint = _fingerprint(scene, trajectories, camera, image_format) | fingerprint_extra
    if _prepare_folder(folder, fingerprint, overwrite):
        return folder
    images_dir = folder / "images"
    images_dir.mkdir()

    paths: dict[str, list[Path]] = {}
    jobs: list[tuple[str, np.ndarray]] = []
    for split in ("train", "test"):
        traj = trajectories[split]
        paths[split] = [images_dir / name for name in names[split]]
        jobs += [(str(p), traj.T_world_camera(i)) for i, p in enumerate(paths[split])]
    _render_jobs(jobs, scene, camera, workers, progress)

    for split in ("train", "test"):
        traj = trajectories[split]
        records = [
            PoseRecord(p, traj.positions_m[i], traj.quats_wxyz[i], float(traj.timestamps_s[i]))
            for i, p in enumerate(paths[split])
        ]
        write_cambridge(folder, split, records)
        _write_poses_csv(folder / f"poses_{split}.csv", folder, paths[split], traj)
    _write_json(folder / "intrinsics.json", camera.to_json())
    description = {
        "generator": "posenet_train.synthetic",
        "format_version": FORMAT_VERSION,
        "world_frame": "z up (REP-103: x forward/east, y left/north), metres, floor z = 0",
        "pose_convention": "T_world_camera: camera centre in the world, camera-to-world rotation,"
        " optical camera axes (x right, y down, z forward); dataset_*.txt are Cambridge Landmarks"
        " (centre + world-to-camera quaternion), poses_*.csv are T_world_camera (wxyz)",
        "rate_hz": rate_hz,
        "parameters": extra_parameters or {},
        "fingerprint": fingerprint,
        "scene": scene.describe(),
    }
    _write_json(folder / "scene.json", description)
    _write_json(folder / COMPLETE_MARKER, fingerprint)
    (folder / IN_PROGRESS_MARKER).unlink(missing_ok=True)
    return folder


def _rate_of(traj: Trajectory) -> float | None:
    if len(traj) < 2:
        return None
    return float(1.0 / (traj.timestamps_s[1] - traj.timestamps_s[0]))


def _render_jobs(
    jobs: list[tuple[str, np.ndarray]],
    scene: Scene,
    camera: PinholeCamera,
    workers: int,
    progress: bool,
) -> None:
    from tqdm import tqdm

    bar = tqdm(total=len(jobs), desc="rendering", unit="frame", disable=not progress)
    try:
        if workers == 1:
            _init_worker(scene, camera.K, camera.width, camera.height, cv2.getNumThreads())
            try:
                for job in jobs:
                    _render_and_save(job)
                    bar.update()
            finally:
                _worker_state.clear()
            return
        # "spawn": a forked child of a process that already runs threads (torch, OpenCV) can
        # deadlock; spawning costs about a second per worker.
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(
            max_workers=workers,
            mp_context=context,
            initializer=_init_worker,
            initargs=(scene, camera.K, camera.width, camera.height, 1),
        ) as pool:
            chunk = max(1, min(16, len(jobs) // (4 * workers)))
            for _ in pool.map(_render_and_save, jobs, chunksize=chunk):
                bar.update()
    finally:
        bar.close()


# --------------------------------------------------------------------------------------------
# Command line


SCENES = ("room", "drive")
#: Defaults of :func:`main` that depend on the scene (None there means "this one").
SCENE_DEFAULTS = {
    "room": {"train_frames": 600, "test_frames": 150, "width": 640, "height": 480},
    "drive": {"frames": 51, "spacing_m": 1.2, "test_every": 4, "width": 960, "height": 320},
}


def main(
    output: str | Path,
    *,
    scene: str = "room",
    seed: int = 0,
    train_frames: int | None = None,
    test_frames: int | None = None,
    frames: int | None = None,
    spacing_m: float | None = None,
    test_every: int | None = None,
    width: int | None = None,
    height: int | None = None,
    focal_px: float | None = None,
    rate_hz: float = 10.0,
    workers: int = 2,
    image_format: str = "png",
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Build a scene from ``seed``, make its camera path and write the dataset to ``output``.

    ``scene="room"`` (default): the textured room, ``train_frames`` (600) on sixteen woven
    loops and ``test_frames`` (150) on a separate loop, 640x480, focal length 500 px at 640 px.
    ``scene="drive"``: a forward drive down a street (:func:`make_drive`), ``frames`` (51)
    frames ``spacing_m`` (1.2 m) apart, every ``test_every``-th (4th) held out as the test
    split, 960x320 (3:1), focal length for a 90° horizontal field of view.
    Options of the other scene are refused. Options left at None take :data:`SCENE_DEFAULTS`.

    Returns the dataset folder (reused as it is when it already holds this exact dataset).
    Raises SyntheticSceneError for bad parameters or an output folder it must not write into.
    """
    if scene not in SCENES:
        raise SyntheticSceneError(f"scene must be one of {', '.join(SCENES)}, got {scene!r}")
    given = {
        "train_frames": train_frames,
        "test_frames": test_frames,
        "frames": frames,
        "spacing_m": spacing_m,
        "test_every": test_every,
    }
    foreign = [k for k, v in given.items() if v is not None and k not in SCENE_DEFAULTS[scene]]
    if foreign:
        raise SyntheticSceneError(
            f"{', '.join(foreign)} do(es) not apply to the {scene} scene (room: train_frames,"
            " test_frames; drive: frames, spacing_m, test_every)"
        )
    values = {**SCENE_DEFAULTS[scene], **{k: v for k, v in given.items() if v is not None}}
    width = values["width"] if width is None else width
    height = values["height"] if height is None else height
    _check_count("workers", workers)
    rate = _check_rate(rate_hz)
    parameters: dict = {"scene": scene, "seed": seed}
    if scene == "room":
        _check_count("train_frames", values["train_frames"])
        _check_count("test_frames", values["test_frames"])
        camera = PinholeCamera.default(width, height, focal_px)
        built = build_scene(seed)
        trajectories = make_trajectories(
            built, values["train_frames"], values["test_frames"], rate_hz=rate
        )
    else:
        count = _check_count("frames", values["frames"], 2)
        drive_test_indices(count, values["test_every"])
        spacing = _check_spacing(values["spacing_m"])
        if focal_px is None:
            _check_image_size(width, height)
            focal_px = width / 2.0 / math.tan(math.radians(DRIVE_HFOV_DEG) / 2.0)
        camera = PinholeCamera.default(width, height, focal_px)
        if drive_length_m(count, spacing) > 2000.0 - STREET_AHEAD_M:
            raise SyntheticSceneError(
                f"a drive of {count} frames {spacing} m apart is"
                f" {drive_length_m(count, spacing):.0f} m long; at most"
                f" {2000.0 - STREET_AHEAD_M:.0f} m are supported"
            )
        built = street_for_drive(seed, count, spacing)
        drive = make_drive(built, count, spacing, rate_hz=rate)
    parameters.update(
        {k: values[k] for k in SCENE_DEFAULTS[scene] if k not in ("width", "height")}
    )
    parameters.update(
        {
            "width": width,
            "height": height,
            "focal_px": camera.fx,
            "rate_hz": rate,
            "image_format": image_format,
        }
    )
    if scene == "room":
        # The room's parameters stay as they were before scenes existed (scene.json only).
        parameters.pop("scene")
        return write_dataset(
            output,
            built,
            trajectories,
            camera,
            workers=workers,
            image_format=image_format,
            overwrite=overwrite,
            progress=progress,
            extra_parameters=parameters,
        )
    return write_drive_dataset(
        output,
        built,
        drive,
        camera,
        test_every=values["test_every"],
        workers=workers,
        image_format=image_format,
        overwrite=overwrite,
        progress=progress,
        extra_parameters=parameters,
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m posenet_train.synthetic``."""
    parser = argparse.ArgumentParser(
        prog="python -m posenet_train.synthetic",
        description="Render an embedded scene from known poses and write it as a Cambridge"
        " Landmarks dataset (plus intrinsics.json, poses_*.csv and scene.json): the textured"
        " room (--scene room) or a forward drive down a street with a wide camera (--scene"
        " drive).",
    )
    parser.add_argument("--output", required=True, type=Path, help="dataset folder to write")
    parser.add_argument(
        "--scene",
        choices=SCENES,
        default="room",
        help="room: camera loops in a textured room (default); drive: a camera driving"
        " straight down a street, every --test-every-th frame held out",
    )
    parser.add_argument(
        "--seed", type=int_at_least(0), default=0, help="scene and jitter seed (default 0)"
    )
    room, drive = SCENE_DEFAULTS["room"], SCENE_DEFAULTS["drive"]
    parser.add_argument(
        "--train-frames",
        type=int_at_least(1),
        help=f"room: training images, shared by 16 camera loops (default {room['train_frames']})",
    )
    parser.add_argument(
        "--test-frames",
        type=int_at_least(1),
        help=f"room: test images (default {room['test_frames']})",
    )
    parser.add_argument(
        "--frames",
        type=int_at_least(2),
        help=f"drive: frames in the whole drive, train and test (default {drive['frames']})",
    )
    parser.add_argument(
        "--spacing-m",
        type=positive_float,
        help=f"drive: distance between consecutive frames in metres (default"
        f" {drive['spacing_m']})",
    )
    parser.add_argument(
        "--test-every",
        type=int_at_least(2),
        help=f"drive: hold out every N-th frame as the test split (default {drive['test_every']})",
    )
    parser.add_argument(
        "--width",
        type=int_at_least(1),
        help=f"image width in pixels (default: room {room['width']}, drive {drive['width']})",
    )
    parser.add_argument(
        "--height",
        type=int_at_least(1),
        help=f"image height in pixels (default: room {room['height']}, drive {drive['height']})",
    )
    parser.add_argument(
        "--focal-px",
        type=positive_float,
        default=None,
        help="focal length fx = fy in pixels (default: room 500 * width / 640, drive a 90°"
        " horizontal field of view, width / 2)",
    )
    parser.add_argument(
        "--rate-hz",
        type=positive_float,
        default=10.0,
        help="frame rate of the timestamps in poses_*.csv (default 10)",
    )
    parser.add_argument(
        "--workers",
        type=int_at_least(1),
        default=2,
        help="rendering processes (default 2; 1 renders in this process)",
    )
    parser.add_argument(
        "--image-format",
        choices=IMAGE_FORMATS,
        default="png",
        help="png (lossless, fast low compression; default) or jpg (quality 95)",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing dataset in --output"
    )
    parser.add_argument("--no-progress", action="store_true", help="do not show a progress bar")
    return parser


def cli(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (0 ok, 1 error, 2 bad arguments)."""
    args = build_parser().parse_args(argv)
    return run_main(
        "posenet_train.synthetic",
        main,
        args,
        then=print,
        error_status=1,
        handled=("no_progress",),
        progress=not args.no_progress,
    )


if __name__ == "__main__":
    # Run the importable module's cli, not this __main__ copy's: render workers are spawned
    # processes that unpickle Scene and the worker functions by their module name.
    from posenet_train.synthetic import cli as _cli

    sys.exit(_cli())
