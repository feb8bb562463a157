"""Local features of the map and of the live frames: one extractor, one matcher, both sides.

The map builder (``posenet_train.map``) and the node's refinement stage must describe images the
same way, or a frame's descriptors cannot be matched to the map's. So the extractor is defined
once, here, by a :class:`FeatureConfig` that the map file stores (its ``feature`` entry) and the
refiner reads back. OpenCV only (the node has no pycolmap and no torch); ``cv2`` is imported on
first use so that ``import posenet_core`` stays light.

Feature types:

- ``sift``: OpenCV SIFT (Lowe 2004), 128-byte descriptors. Stored as uint8 without loss (OpenCV
  computes them as integers 0..255). Matched as RootSIFT (Arandjelovic & Zisserman 2012:
  L1-normalise, square root, i.e. the Hellinger kernel) when ``root_sift`` is true, else as
  L2-normalised SIFT; either way by the cosine similarity of unit vectors, which makes one
  matrix product the whole nearest-neighbour search.
- ``orb``: OpenCV ORB (oriented FAST + rotated BRIEF), 32-byte binary descriptors, Hamming
  distance.

Optional contrast normalisation (``clahe_clip_limit`` > 0): CLAHE on the grey image before
detection, which brings out the shading of weakly textured surfaces (white plaster, painted
walls) that a global threshold misses.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from posenet_core.checks import check_fields
from posenet_core.errors import PoseNetError

__all__ = [
    "FEATURE_TYPES",
    "DESCRIPTOR_BYTES",
    "FeatureConfig",
    "FeatureError",
    "Features",
    "extract_features",
    "match_descriptors",
    "to_gray",
]

FEATURE_TYPES = ("sift", "orb")
#: Descriptor length in bytes (uint8 columns) of each feature type.
DESCRIPTOR_BYTES = {"sift": 128, "orb": 32}


class FeatureError(PoseNetError):
    """A feature configuration or an image cannot be used (names the value and what is allowed)."""


@dataclass(frozen=True)
class FeatureConfig:
    """How local features are detected and described; stored in the map file.

    Attributes:
        type: ``"sift"`` or ``"orb"``.
        max_keypoints: keep at most this many keypoints per image (strongest first).
        sift_contrast_threshold: SIFT's contrast threshold (OpenCV default 0.04); lower finds
            more keypoints on weak texture.
        sift_edge_threshold: SIFT's edge-response threshold (OpenCV default 10).
        root_sift: match SIFT as RootSIFT (Hellinger); ignored for ORB.
        orb_fast_threshold: ORB's FAST threshold (OpenCV default 20).
        orb_scale_factor, orb_levels: ORB's image pyramid.
        clahe_clip_limit: CLAHE contrast limit before detection; 0 disables it.
        clahe_tile_grid: CLAHE tiles per image side.
        max_image_side: frames whose longer side exceeds this are shrunk for detection (keypoints
            are returned in the original pixels); 0 keeps every size.
    """

    type: str = "sift"
    max_keypoints: int = 2048
    sift_contrast_threshold: float = 0.02
    sift_edge_threshold: float = 10.0
    root_sift: bool = True
    orb_fast_threshold: int = 20
    orb_scale_factor: float = 1.2
    orb_levels: int = 8
    clahe_clip_limit: float = 0.0
    clahe_tile_grid: int = 8
    max_image_side: int = 0

    def __post_init__(self) -> None:
        if self.type not in FEATURE_TYPES:
            raise FeatureError(
                f"feature type {self.type!r} is not supported; allowed: {', '.join(FEATURE_TYPES)}"
            )
        check_fields(
            self,
            FeatureError,
            integers={
                "max_keypoints": 8,
                "orb_fast_threshold": 1,
                "orb_levels": 1,
                "clahe_tile_grid": 1,
                "max_image_side": 0,
            },
            numbers={
                "sift_contrast_threshold": (0.0, 1.0),
                "sift_edge_threshold": (1.0, 1000.0),
                "orb_scale_factor": (1.01, 4.0),
                "clahe_clip_limit": (0.0, 1000.0),
            },
            prefix="feature ",
        )
        if not isinstance(self.root_sift, bool):
            raise FeatureError(f"feature root_sift must be true or false, got {self.root_sift!r}")

    @property
    def descriptor_bytes(self) -> int:
        """Bytes (uint8 columns) of one descriptor."""
        return DESCRIPTOR_BYTES[self.type]

    @property
    def binary(self) -> bool:
        """True for binary descriptors (Hamming distance)."""
        return self.type == "orb"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (what the map file stores)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: object) -> FeatureConfig:
        """From :meth:`to_dict`'s form; unknown keys are an error (a newer extractor's option
        that this one would silently ignore would describe images differently)."""
        if not isinstance(data, dict):
            raise FeatureError(
                f"feature configuration must be an object, got {type(data).__name__}"
            )
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise FeatureError(
                f"unknown feature option(s) {', '.join(unknown)}; "
                f"known: {', '.join(sorted(known))}"
            )
        values = dict(data)
        # JSON has one number type: whole floats for integer options are fine.
        for f in fields(cls):
            if f.name in values and f.type == "int" and isinstance(values[f.name], float):
                if values[f.name].is_integer():
                    values[f.name] = int(values[f.name])
        return cls(**values)


@dataclass(frozen=True)
class Features:
    """Keypoints and descriptors of one image.

    Attributes:
        xy: (N, 2) float32 keypoint positions, pixels, OpenCV convention (pixel centres at
            integer coordinates), in the input image's own size.
        descriptors: (N, D) uint8.
        scale: (N,) float32 keypoint size (diameter, pixels); for diagnostics.
    """

    xy: np.ndarray
    descriptors: np.ndarray
    scale: np.ndarray

    def __len__(self) -> int:
        return int(self.xy.shape[0])


def _cv2():
    try:
        import cv2  # lazy: importing posenet_core must not need OpenCV
    except ImportError as exc:
        raise FeatureError(
            f"local features need OpenCV ({exc}): pip install 'opencv-python-headless<5' "
            "(or pip install './core[refine]')"
        ) from None
    return cv2


def to_gray(image: np.ndarray) -> np.ndarray:
    """uint8 grey image (H, W) from an RGB (H, W, 3), RGBA (H, W, 4) or grey (H, W[, 1]) array.

    16-bit and float images are not accepted: features are defined on 8-bit intensities.
    """
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise FeatureError(f"image must be uint8, got {array.dtype}")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 2:
        gray = array
    elif array.ndim == 3 and array.shape[2] in (3, 4):
        cv2 = _cv2()
        code = cv2.COLOR_RGB2GRAY if array.shape[2] == 3 else cv2.COLOR_RGBA2GRAY
        gray = cv2.cvtColor(np.ascontiguousarray(array), code)
    else:
        raise FeatureError(f"image must be (H, W), (H, W, 3) or (H, W, 4), got {array.shape}")
    if gray.shape[0] < 16 or gray.shape[1] < 16:
        raise FeatureError(f"image of {gray.shape[1]}x{gray.shape[0]} is too small (>= 16x16)")
    return np.ascontiguousarray(gray)


def create_detector(config: FeatureConfig):
    """A new OpenCV detector/descriptor for ``config`` (not shared between threads)."""
    cv2 = _cv2()
    if config.type == "sift":
        return cv2.SIFT_create(
            nfeatures=config.max_keypoints,
            contrastThreshold=float(config.sift_contrast_threshold),
            edgeThreshold=float(config.sift_edge_threshold),
        )
    return cv2.ORB_create(
        nfeatures=config.max_keypoints,
        scaleFactor=float(config.orb_scale_factor),
        nlevels=int(config.orb_levels),
        fastThreshold=int(config.orb_fast_threshold),
    )


def extract_features(image: np.ndarray, config: FeatureConfig, detector=None) -> Features:
    """Detect and describe the local features of ``image`` (RGB/RGBA/grey uint8).

    ``detector`` (from :func:`create_detector`) may be passed to reuse one per thread. An image
    without texture gives zero keypoints, not an error.
    """
    cv2 = _cv2()
    gray = to_gray(image)
    scale = 1.0
    if config.max_image_side and max(gray.shape) > config.max_image_side:
        scale = config.max_image_side / float(max(gray.shape))
        size = (max(16, round(gray.shape[1] * scale)), max(16, round(gray.shape[0] * scale)))
        gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
    if config.clahe_clip_limit > 0:
        clahe = cv2.createCLAHE(
            clipLimit=float(config.clahe_clip_limit),
            tileGridSize=(config.clahe_tile_grid, config.clahe_tile_grid),
        )
        gray = clahe.apply(gray)
    if detector is None:
        detector = create_detector(config)
    keypoints, descriptors = detector.detectAndCompute(gray, None)
    width = config.descriptor_bytes
    if descriptors is None or not keypoints:
        return Features(
            np.zeros((0, 2), np.float32), np.zeros((0, width), np.uint8), np.zeros(0, np.float32)
        )
    # OpenCV's SIFT may return a few more than nfeatures (ties) and ORB fewer; keep the cap.
    responses = np.array([k.response for k in keypoints], dtype=np.float32)
    order = np.argsort(-responses, kind="stable")[: config.max_keypoints]
    xy = np.array([keypoints[i].pt for i in order], dtype=np.float32).reshape(-1, 2)
    sizes = np.array([keypoints[i].size for i in order], dtype=np.float32)
    if scale != 1.0:
        # Pixel centres at integers: x_full = (x_small + 0.5) / scale - 0.5.
        xy = (xy + 0.5) / np.float32(scale) - 0.5
        sizes = sizes / np.float32(scale)
    desc = descriptors[order]
    if desc.dtype != np.uint8:
        desc = np.clip(np.rint(desc), 0, 255).astype(np.uint8)
    return Features(xy.astype(np.float32), np.ascontiguousarray(desc), sizes)


def normalized_descriptors(descriptors: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """float32 unit-length rows for a float feature (RootSIFT when ``config.root_sift``)."""
    d = np.asarray(descriptors, dtype=np.float32)
    if config.root_sift:
        d = np.sqrt(d / np.maximum(d.sum(axis=1, keepdims=True), 1e-6))
    norms = np.linalg.norm(d, axis=1, keepdims=True)
    return d / np.maximum(norms, 1e-6)


def _hamming_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    # Hamming distance of bit vectors as one matrix product: |a xor b| = |a| + |b| - 2 a.b.
    bits_a = np.unpackbits(a, axis=1).astype(np.float32)
    bits_b = np.unpackbits(b, axis=1).astype(np.float32)
    return bits_a.sum(1, keepdims=True) + bits_b.sum(1)[None, :] - 2.0 * (bits_a @ bits_b.T)


def match_descriptors(
    query: np.ndarray,
    reference: np.ndarray,
    config: FeatureConfig,
    *,
    ratio: float = 0.8,
    mutual: bool = True,
    query_normalized: np.ndarray | None = None,
    reference_normalized: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nearest-neighbour matches ``query -> reference`` with Lowe's ratio test.

    Returns ``(query_index, reference_index, distance)`` arrays. A match is kept when its
    distance is below ``ratio`` times the second nearest's (``ratio >= 1`` disables the test) and,
    with ``mutual``, when the query descriptor is also the reference descriptor's nearest.
    Distances: Euclidean between unit (Root)SIFT vectors, Hamming bits for ORB. Pre-normalised
    float descriptors may be passed to skip that step (the refiner caches the map's).
    """
    empty = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32))
    if len(query) == 0 or len(reference) == 0:
        return empty
    # A score where larger is better (cosine similarity, or minus the Hamming distance): two
    # max passes find the best and second best, much faster than a partial sort.
    if config.binary:
        score = -_hamming_matrix(np.ascontiguousarray(query), np.ascontiguousarray(reference))
    else:
        q = (
            query_normalized
            if query_normalized is not None
            else normalized_descriptors(query, config)
        )
        r = (
            reference_normalized
            if reference_normalized is not None
            else normalized_descriptors(reference, config)
        )
        score = q @ r.T
    rows = np.arange(score.shape[0])
    reverse = np.argmax(score, axis=0) if mutual else None
    best = np.argmax(score, axis=1)
    best_score = score[rows, best]
    if score.shape[1] >= 2:
        score[rows, best] = -np.inf
        second_score = score.max(axis=1)
    else:
        second_score = np.full(len(rows), -np.inf, np.float32)

    def to_distance(values: np.ndarray) -> np.ndarray:
        if config.binary:
            return -values
        return np.sqrt(np.maximum(2.0 - 2.0 * values, 0.0))

    best_d = to_distance(best_score)
    keep = np.ones(len(rows), bool)
    if ratio < 1.0 and score.shape[1] >= 2:
        keep = best_d < ratio * to_distance(second_score)
    if mutual:
        keep &= reverse[best] == rows
    qi = rows[keep]
    return qi.astype(np.int64), best[keep].astype(np.int64), best_d[keep].astype(np.float32)
