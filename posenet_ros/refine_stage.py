"""The node's refinement stage: camera intrinsics, scheduling, worker, output choice, counters.

ROS-free (duck-typed ``sensor_msgs/CameraInfo``), so all of it has plain unit tests; the node
wires it to topics. The heavy lifting is :class:`posenet_core.refine.Refiner` (local features,
2D-3D matching against the map file, PnP-RANSAC).

How a frame flows when a map is given (``map_path``):

1. the inference worker estimates the PoseNet prior of every frame (unchanged);
2. it asks :meth:`RefineStage.offer` whether *this* frame is refined: only when the refine worker
   is idle, ``refine.rate_hz`` allows another start, and a usable CameraInfo of the image's size
   is known (:class:`CameraInfoBook`, matched by stamp). Otherwise the prior is published at once,
   so the prior's rate and latency never wait on refinement;
3. a refined frame's outputs are published once, by the refine worker, when refinement is done:
   the refined pose with the PnP covariance when it succeeded (:func:`choose_output`), else the
   prior. Its stamp is then older than frames published meanwhile; the speed gate (which needs
   stamps in order) is therefore applied to priors only, on the inference worker, and a refined
   pose is checked against its own prior instead (``refine.max_prior_distance_m`` /
   ``refine.max_prior_angle_deg``) and by the stateless uncertainty gates.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from posenet_core.covariance import stddev_from_covariance
from posenet_core.errors import PoseNetError
from posenet_core.geometry import matrix_to_pose
from posenet_core.refine import FAILURE_REASONS, RefineError, RefinementResult, RefinerConfig
from posenet_core.refine.limits import AUTO_FACTOR, AUTO_LIMIT, auto_prior_limits
from posenet_ros.frame_worker import LatestFrameWorker
from posenet_ros.gating import GateConfig, GateDecision, uncertainty_decision
from posenet_ros.stats import Window, window_median, window_percentile

SOURCE_PRIOR = "prior"
SOURCE_REFINED = "refined"
# A refinement that raised (a bug or an argument the checks missed): counted, prior published.
FAILURE_ERROR = "error"
# A refined pose whose PnP covariance an uncertainty gate refused: the prior is published.
FAILURE_GATED = "gated"
REFINE_FAILURES: tuple[str, ...] = (*FAILURE_REASONS, FAILURE_GATED, FAILURE_ERROR)

# Why a frame could not be offered for refinement at all (prior only, said once in the log).
SKIP_NO_CAMERA_INFO = "no_camera_info"
SKIP_CAMERA_INFO_SIZE = "camera_info_size"
SKIP_CAMERA_INFO_INVALID = "camera_info_invalid"
SKIP_REASONS: tuple[str, ...] = (
    SKIP_NO_CAMERA_INFO,
    SKIP_CAMERA_INFO_SIZE,
    SKIP_CAMERA_INFO_INVALID,
)

# Distortion models OpenCV's undistortPoints takes as they are (REP-104 names).
_OPENCV_MODELS = ("", "plumb_bob", "rational_polynomial")


class CameraInfoError(PoseNetError):
    """A CameraInfo message cannot give usable intrinsics (names the field and the value)."""


@dataclass(frozen=True)
class CameraIntrinsics:
    """Pinhole intrinsics of the images as they arrive (after binning / region of interest)."""

    K: np.ndarray  # noqa: N815 - (3, 3) camera matrix, OpenCV pixel convention
    dist_coeffs: np.ndarray | None  # OpenCV order; None when there is no distortion
    width: int
    height: int


def intrinsics_from_camera_info(msg: Any) -> CameraIntrinsics:
    """The intrinsics a ``sensor_msgs/CameraInfo`` gives for its images.

    ``k`` and ``d`` are those of the full calibrated resolution; ``binning_x/y`` and ``roi``
    (REP-104) shrink and crop it, and the image then has the binned ROI's size. Raises
    :class:`CameraInfoError` for an uncalibrated (all-zero) K, non-finite numbers, a distortion
    model OpenCV cannot undo from K and D alone (e.g. ``equidistant``), or sizes that do not fit.
    """
    width, height = int(msg.width), int(msg.height)
    k = np.asarray(msg.k, dtype=np.float64).reshape(-1)
    if k.size != 9 or not np.all(np.isfinite(k)):
        raise CameraInfoError(f"CameraInfo k must be 9 finite numbers, got {k.tolist()}")
    K = k.reshape(3, 3)
    if K[0, 0] <= 0 or K[1, 1] <= 0:
        raise CameraInfoError(
            f"CameraInfo k has fx {K[0, 0]:g}, fy {K[1, 1]:g}: the camera is not calibrated "
            "(calibrate it, e.g. with camera_calibration, and publish its camera_info)"
        )
    if width <= 0 or height <= 0:
        raise CameraInfoError(f"CameraInfo size {width}x{height} must be positive")
    model = str(msg.distortion_model)
    d = np.asarray(msg.d, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(d)):
        raise CameraInfoError(f"CameraInfo d must be finite, got {d.tolist()}")
    if model not in _OPENCV_MODELS and np.any(d != 0):
        raise CameraInfoError(
            f"CameraInfo distortion_model {model!r} is not supported (plumb_bob or "
            "rational_polynomial); publish rectified images with zero d instead"
        )
    bin_x, bin_y = max(int(msg.binning_x), 1), max(int(msg.binning_y), 1)
    roi = msg.roi
    x0, y0 = int(roi.x_offset), int(roi.y_offset)
    roi_w = int(roi.width) or width
    roi_h = int(roi.height) or height
    if x0 + roi_w > width or y0 + roi_h > height:
        raise CameraInfoError(
            f"CameraInfo roi {roi_w}x{roi_h}+{x0}+{y0} exceeds the calibrated {width}x{height}"
        )
    K = K.copy()
    if (x0, y0, bin_x, bin_y) != (0, 0, 1, 1):
        K[0, 2] -= x0
        K[1, 2] -= y0
        # Binning averages bin_x pixels into one: centres move from (b-1)/2 to 0.
        K[0] /= bin_x
        K[1] /= bin_y
        K[0, 2] -= (bin_x - 1) / (2.0 * bin_x)
        K[1, 2] -= (bin_y - 1) / (2.0 * bin_y)
        K[2] = (0.0, 0.0, 1.0)
    dist = d.copy() if d.size and np.any(d != 0) else None
    return CameraIntrinsics(K, dist, roi_w // bin_x, roi_h // bin_y)


@dataclass(frozen=True)
class IntrinsicsLookup:
    """What :meth:`CameraInfoBook.lookup` found for one image: intrinsics, or why there are none
    (``problem`` one of ``SKIP_REASONS``, ``detail`` one line for the log)."""

    intrinsics: CameraIntrinsics | None
    problem: str = ""
    detail: str = ""
    exact_stamp: bool = False


class CameraInfoBook:
    """The recent CameraInfo messages by stamp; thread-safe (subscription writes, worker reads).

    An image is matched to the CameraInfo of its own stamp (a camera driver publishes the pair
    with one stamp); when that one has not arrived, the newest is used (intrinsics rarely change,
    and a player or driver may stamp the two a little apart).
    """

    def __init__(self, keep: int = 64) -> None:
        self._keep = keep
        self._lock = threading.Lock()
        self._by_stamp: OrderedDict[int, CameraIntrinsics | CameraInfoError] = OrderedDict()
        self._latest: CameraIntrinsics | CameraInfoError | None = None
        self.received = 0

    def add(self, stamp_ns: int, msg: Any) -> None:
        """Store the CameraInfo ``msg`` stamped ``stamp_ns`` (an unusable one is remembered as
        such, so frames of that stamp say why they are not refined)."""
        try:
            entry: CameraIntrinsics | CameraInfoError = intrinsics_from_camera_info(msg)
        except CameraInfoError as exc:
            entry = exc
        except (TypeError, ValueError, AttributeError) as exc:
            entry = CameraInfoError(f"CameraInfo is malformed: {exc}")
        with self._lock:
            self.received += 1
            self._by_stamp[int(stamp_ns)] = entry
            self._by_stamp.move_to_end(int(stamp_ns))
            while len(self._by_stamp) > self._keep:
                self._by_stamp.popitem(last=False)
            self._latest = entry

    def lookup(self, stamp_ns: int, width: int, height: int) -> IntrinsicsLookup:
        """The intrinsics for an image of ``width`` x ``height`` stamped ``stamp_ns``."""
        with self._lock:
            entry = self._by_stamp.get(int(stamp_ns))
            exact = entry is not None
            if entry is None:
                entry = self._latest
        if entry is None:
            return IntrinsicsLookup(
                None,
                SKIP_NO_CAMERA_INFO,
                "no CameraInfo received on camera_info (the image's topic pair): refinement "
                "needs the camera's intrinsics; publish camera_info or remap it",
            )
        if isinstance(entry, CameraInfoError):
            return IntrinsicsLookup(None, SKIP_CAMERA_INFO_INVALID, str(entry), exact)
        if (entry.width, entry.height) != (int(width), int(height)):
            return IntrinsicsLookup(
                None,
                SKIP_CAMERA_INFO_SIZE,
                f"CameraInfo is for {entry.width}x{entry.height} images but the image is "
                f"{width}x{height}: publish the camera_info of this image stream (binning and "
                "roi are applied)",
                exact,
            )
        return IntrinsicsLookup(entry, exact_stamp=exact)


# ------------------------------------------------------------------------------- parameters


@dataclass(frozen=True)
class ParameterSpec:
    """One ``refine.*`` node parameter: name, default, type, description and allowed range."""

    name: str
    default: Any
    description: str
    low: float | None = None
    high: float | None = None


_CONFIG_DEFAULTS = RefinerConfig()
RATE_PARAMETER = "refine.rate_hz"
NICE_PARAMETER = "refine.thread_nice"
OPENCV_THREADS_PARAMETER = "refine.opencv_threads"
DISTANCE_LIMIT_PARAMETER = "refine.max_prior_distance_m"
ANGLE_LIMIT_PARAMETER = "refine.max_prior_angle_deg"
# The stage's own parameters; every other refine.* one is a RefinerConfig field.
STAGE_PARAMETERS = (RATE_PARAMETER, NICE_PARAMETER, OPENCV_THREADS_PARAMETER)
DEFAULT_RATE_HZ = 5.0
# refine.<field> -> RefinerConfig.<field>; every field but the seed (fixed for repeatable runs).
REFINE_PARAMETERS: tuple[ParameterSpec, ...] = (
    ParameterSpec(
        RATE_PARAMETER,
        DEFAULT_RATE_HZ,
        "Most refinements started per second (on the latest frame); each takes one CPU core for "
        "its duration, so the real rate is min(rate_hz, 1 / refinement time).",
        0.01,
        1000.0,
    ),
    ParameterSpec(
        NICE_PARAMETER,
        10,
        "Niceness added to the refine worker thread (Linux), so the prior's thread wins the CPU "
        "when both want it: the prior's latency stays, refinement takes what is left. 0: same "
        "priority as the prior.",
        0,
        19,
    ),
    ParameterSpec(
        OPENCV_THREADS_PARAMETER,
        1,
        "Threads of OpenCV (cv2.setNumThreads, the feature extraction) and of numpy's BLAS "
        "(threadpoolctl, the descriptor matching) in the whole process: 1 keeps refinement on "
        "one core, leaving the others to the prior; 0: the libraries' defaults (all cores).",
        0,
        256,
    ),
    ParameterSpec(
        "refine.num_keyframes",
        _CONFIG_DEFAULTS.num_keyframes,
        "Map keyframes overlapping the prior's view whose points are matched per frame.",
        1,
        1000,
    ),
    ParameterSpec(
        "refine.max_view_angle_deg",
        _CONFIG_DEFAULTS.max_view_angle_deg,
        "Keyframes whose optical axis differs more than this from the prior's are not used, deg.",
        0.001,
        180.0,
    ),
    ParameterSpec(
        "refine.min_overlap",
        _CONFIG_DEFAULTS.min_overlap,
        "Share of a keyframe's points that must project into the frame at the prior pose.",
        0.0,
        1.0,
    ),
    ParameterSpec(
        "refine.ratio",
        _CONFIG_DEFAULTS.ratio,
        "Lowe's ratio test threshold for descriptor matches (1 disables it).",
        0.001,
        1.0,
    ),
    ParameterSpec(
        "refine.mutual", _CONFIG_DEFAULTS.mutual, "Keep only mutual nearest-neighbour matches."
    ),
    ParameterSpec(
        "refine.min_keypoints",
        _CONFIG_DEFAULTS.min_keypoints,
        "Fewer local features in the frame is a failure 'no_texture'.",
        0,
        100000,
    ),
    ParameterSpec(
        "refine.min_matches",
        _CONFIG_DEFAULTS.min_matches,
        "Fewer 2D-3D matches is a failure 'too_few_matches' (PnP is not tried).",
        4,
        100000,
    ),
    ParameterSpec(
        "refine.ransac_threshold_px",
        _CONFIG_DEFAULTS.ransac_threshold_px,
        "PnP-RANSAC inlier threshold, pixels of the frame.",
        0.01,
        1000.0,
    ),
    ParameterSpec(
        "refine.ransac_iterations",
        _CONFIG_DEFAULTS.ransac_iterations,
        "PnP-RANSAC's most iterations.",
        1,
        1000000,
    ),
    ParameterSpec(
        "refine.ransac_confidence",
        _CONFIG_DEFAULTS.ransac_confidence,
        "PnP-RANSAC's confidence (stops early when reached).",
        0.001,
        1.0,
    ),
    ParameterSpec(
        "refine.min_inliers",
        _CONFIG_DEFAULTS.min_inliers,
        "Fewer PnP inliers is a failure 'too_few_inliers' (the prior is published).",
        4,
        100000,
    ),
    ParameterSpec(
        DISTANCE_LIMIT_PARAMETER,
        AUTO_LIMIT,
        "A refined pose further than this from its PoseNet prior is refused "
        "('too_far_from_prior'), m; 0: no limit; -1: auto, 5x the model file's median position "
        "error (posenet.median_error), at least 1 m.",
        AUTO_LIMIT,
        1e6,
    ),
    ParameterSpec(
        ANGLE_LIMIT_PARAMETER,
        AUTO_LIMIT,
        "A refined pose rotated more than this from its prior is refused, deg; 0: no limit; "
        "-1: auto, 5x the model file's median rotation error, at least 20 deg.",
        AUTO_LIMIT,
        180.0,
    ),
    ParameterSpec(
        "refine.covariance_scale",
        _CONFIG_DEFAULTS.covariance_scale,
        "Factor on the PnP covariance (measured on your site with "
        "training/benchmarks/bench_refine.py).",
        1e-6,
        1e6,
    ),
    ParameterSpec(
        "refine.min_sigma_px",
        _CONFIG_DEFAULTS.min_sigma_px,
        "Floor of the reprojection sigma in the PnP covariance, pixels (0: none).",
        0.0,
        1000.0,
    ),
)
_CONFIG_FIELDS = {f.name for f in fields(RefinerConfig)}


def refiner_config_from_parameters(
    values: Mapping[str, Any], model_median_error: str = "unknown"
) -> RefinerConfig:
    """The RefinerConfig of the node's ``refine.*`` parameter values (name -> value).

    The stage's own parameters (``STAGE_PARAMETERS``: rate, thread niceness, OpenCV threads) are
    ignored here. The prior limits' ``-1`` (auto) is resolved with ``model_median_error`` (the
    model file's ``posenet.median_error``, see :func:`auto_prior_limits`). Raises RefineError
    naming the first bad value.
    """
    auto = dict(
        zip(
            (DISTANCE_LIMIT_PARAMETER, ANGLE_LIMIT_PARAMETER),
            auto_prior_limits(model_median_error),
            strict=True,
        )
    )
    config: dict[str, Any] = {}
    for name, value in values.items():
        if not name.startswith("refine.") or name in STAGE_PARAMETERS:
            continue
        key = name[len("refine.") :]
        if key not in _CONFIG_FIELDS:
            raise RefineError(f"unknown parameter {name}")
        default = getattr(_CONFIG_DEFAULTS, key)
        # ROS gives 5 for a double parameter written as an integer in YAML, never the reverse.
        if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if name in auto and isinstance(value, float) and value < 0:
            if value != AUTO_LIMIT:
                raise RefineError(
                    f"{name} is {value!r}; allowed: -1 (auto: {AUTO_FACTOR:g}x the model's "
                    "median error), 0 (no limit) or a positive limit"
                )
            value = auto[name]
        config[key] = value
    for name, value in auto.items():
        config.setdefault(name[len("refine.") :], value)
    return RefinerConfig.from_dict(config)


def limit_native_threads(threads: int) -> str:
    """Cap the thread pools of OpenCV and of numpy's BLAS in this process at ``threads``.

    0 leaves both as they are. Why both: the matcher's descriptor products run in the BLAS
    (OpenBLAS with PyPI's numpy), whose worker threads spin after each call; on 2 cores they
    took 0.45 of a core from the prior and the refine thread (``bench_refine_node``, idle VM:
    node 1.60 -> 1.16 cores busy, refinement 179 -> 144 ms, 4.8 -> 5.0 refined frames/s).
    Returns what was done, for the log (threadpoolctl missing is said, not raised: the
    refinement works without it, only slower).
    """
    if threads <= 0:
        return "OpenCV and BLAS threads left at the libraries' defaults"
    import cv2

    cv2.setNumThreads(int(threads))
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return (
            f"OpenCV threads {threads}; BLAS threads not limited (threadpoolctl is not "
            "installed: pip install threadpoolctl)"
        )
    # Called as a function (not a context manager) the limit stays for the process.
    threadpool_limits(limits=int(threads), user_api="blas")
    return f"OpenCV and BLAS threads {threads}"


def check_rate_hz(value: Any) -> str:
    """Empty string when ``value`` is a usable ``refine.rate_hz``, else the reason."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"{RATE_PARAMETER} must be a number, got {value!r}"
    if not math.isfinite(value) or value <= 0:
        return f"{RATE_PARAMETER} must be > 0 (refinements per second), got {value!r}"
    return ""


# ----------------------------------------------------------------------------- output choice


@dataclass(frozen=True)
class PoseOutput:
    """What the node publishes for one frame (pose, covariance, verdict, provenance)."""

    position_m: np.ndarray
    quat_wxyz: np.ndarray
    covariance: np.ndarray  # (6, 6), project convention
    covariance_from_model: bool
    stddev: np.ndarray  # (6,)
    decision: GateDecision
    source: str = SOURCE_PRIOR
    refinement_attempted: bool = False
    refinement_inliers: int = 0
    refinement_time_s: float = 0.0
    refinement_failure: str = ""


def choose_output(
    prior: PoseOutput,
    refinement: RefinementResult | None,
    gate_config: GateConfig,
    failure_override: str = "",
) -> PoseOutput:
    """The refined pose when ``refinement`` succeeded (and its covariance passes the uncertainty
    gates), else ``prior`` with the refinement's inliers, time and failure reason.

    A refined pose is accepted even when its prior was gated: it was verified against the map
    (``refine.min_inliers`` inliers, within ``refine.max_prior_*`` of the prior).
    ``failure_override`` names a failure that produced no result (``FAILURE_ERROR``).
    """
    if refinement is None:
        return _with(prior, refinement_attempted=True, refinement_failure=failure_override)
    if refinement.success:
        covariance = np.asarray(refinement.covariance, dtype=np.float64)
        stddev = stddev_from_covariance(covariance)
        decision = uncertainty_decision(gate_config, stddev)
        if decision.accepted:
            position_m, quat_wxyz = matrix_to_pose(refinement.T_world_camera)
            return PoseOutput(
                position_m=position_m,
                quat_wxyz=quat_wxyz,
                covariance=covariance,
                covariance_from_model=False,
                stddev=stddev,
                decision=decision,
                source=SOURCE_REFINED,
                refinement_attempted=True,
                refinement_inliers=refinement.num_inliers,
                refinement_time_s=refinement.time_s,
            )
        failure = FAILURE_GATED
    else:
        failure = refinement.failure
    return _with(
        prior,
        refinement_attempted=True,
        refinement_inliers=refinement.num_inliers,
        refinement_time_s=refinement.time_s,
        refinement_failure=failure,
    )


def _with(output: PoseOutput, **changes) -> PoseOutput:
    values = {f.name: getattr(output, f.name) for f in fields(PoseOutput)}
    values.update(changes)
    return PoseOutput(**values)


# ----------------------------------------------------------------------------------- stats


@dataclass(frozen=True)
class RefineSnapshot:
    """Refinement numbers for one diagnostics period (rates over it) and lifetime counters."""

    window_s: float
    attempt_rate_hz: float
    refined_rate_hz: float
    success_share: float  # of the attempts in the window; nan without attempts
    refine_ms_median: float
    refine_ms_p99: float
    refine_cpu_ms_median: float  # CPU time of the refine thread per refinement
    latency_ms_median: float  # image stamp -> publish, refined-path frames
    latency_ms_p99: float
    attempted: int
    refined: int
    failures: dict[str, int]
    skipped: dict[str, int]
    last_failure: str


class RefineStats:
    """Thread-safe refinement counters and windows (reset by :meth:`snapshot`)."""

    def __init__(self, window_len: int = 256, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._lock = threading.Lock()
        self.attempted = 0
        self.refined = 0
        self.failures = dict.fromkeys(REFINE_FAILURES, 0)
        self.skipped = dict.fromkeys(SKIP_REASONS, 0)
        self.last_failure = ""
        self._window = Window(
            clock(),
            window_len,
            counts=("attempted", "refined"),
            samples=("refine_ms", "cpu_ms", "latency_ms"),
        )

    def on_skipped(self, reason: str) -> None:
        with self._lock:
            self.skipped[reason] += 1

    def on_done(
        self, output: PoseOutput, message: str, latency_ms: float, cpu_ms: float = float("nan")
    ) -> None:
        """Count one finished refinement (success or failure) of the published ``output``."""
        with self._lock:
            self.attempted += 1
            self._window.counts["attempted"] += 1
            self._window.samples["refine_ms"].append(output.refinement_time_s * 1e3)
            if math.isfinite(cpu_ms):
                self._window.samples["cpu_ms"].append(cpu_ms)
            self._window.samples["latency_ms"].append(latency_ms)
            if output.source == SOURCE_REFINED:
                self.refined += 1
                self._window.counts["refined"] += 1
            else:
                self.failures[output.refinement_failure or FAILURE_ERROR] += 1
                self.last_failure = message

    def snapshot(self, reset_window: bool = True) -> RefineSnapshot:
        now = self._clock()
        with self._lock:
            window = self._window
            window_s, samples = window.seconds(now), window.samples
            attempts, refined = window.counts["attempted"], window.counts["refined"]
            snap = RefineSnapshot(
                window_s=window_s,
                attempt_rate_hz=attempts / window_s,
                refined_rate_hz=refined / window_s,
                success_share=refined / attempts if attempts else float("nan"),
                refine_ms_median=window_median(samples["refine_ms"]),
                refine_ms_p99=window_percentile(samples["refine_ms"], 99),
                refine_cpu_ms_median=window_median(samples["cpu_ms"]),
                latency_ms_median=window_median(samples["latency_ms"]),
                latency_ms_p99=window_percentile(samples["latency_ms"], 99),
                attempted=self.attempted,
                refined=self.refined,
                failures=dict(self.failures),
                skipped=dict(self.skipped),
                last_failure=self.last_failure,
            )
            if reset_window:
                window.restart(now)
        return snap


# ------------------------------------------------------------------------------ the stage


@dataclass
class RefineJob:
    """One frame handed to the refine worker; ``context`` is the node's (stamp, ...)."""

    rgb_HWC: np.ndarray  # noqa: N815
    intrinsics: CameraIntrinsics
    prior_T_world_camera: np.ndarray
    prior: PoseOutput
    context: Any = None
    # CPU time of the refinement on the worker thread, s (set by the stage before on_done; with
    # refine.opencv_threads 1 all of its work runs on that thread).
    cpu_s: float = 0.0


class RefineStage:
    """Chooses the frames to refine and refines them on a worker thread of its own.

    Args:
        refiner: a :class:`posenet_core.refine.Refiner` (or anything with its ``refine``).
        rate_hz: most refinement starts per second.
        on_done: called on the worker thread with ``(job, result, error)`` after each
            refinement: ``result`` the RefinementResult, or None and ``error`` the exception
            text when the refiner raised.
        clock: monotonic seconds (tests pass their own).
        thread_nice: niceness added to the worker thread (Linux; elsewhere ignored).
    """

    def __init__(
        self,
        refiner: Any,
        rate_hz: float,
        on_done: Callable[[RefineJob, RefinementResult | None, str], None],
        clock: Callable[[], float] = time.monotonic,
        thread_nice: int = 0,
    ) -> None:
        reason = check_rate_hz(rate_hz)
        if reason:
            raise RefineError(reason)
        self.refiner = refiner
        self.period_s = 1.0 / float(rate_hz)
        self._on_done = on_done
        self._clock = clock
        # When the next start is due. Starts follow a grid of period_s steps (each due time is
        # the previous one + period_s), not "period_s after the last start": frames arrive on
        # their own clock, so the latter waits for the first frame after each period and gave
        # 4.3 refinements a second at rate_hz 5 with 30 Hz frames.
        self._next_start: float | None = None
        self._lock = threading.Lock()
        self._thread_nice = int(thread_nice)
        self.thread_nice_applied: int | None = None
        self.cameras = CameraInfoBook()
        self._worker: LatestFrameWorker[RefineJob] = LatestFrameWorker(
            self._run, name="posenet-refine"
        )

    def due(self) -> bool:
        """Whether a frame offered now would be taken (worker idle, rate allows a start)."""
        with self._lock:
            if self._worker.busy:
                return False
            return self._next_start is None or self._clock() >= self._next_start

    def offer(self, job: RefineJob) -> bool:
        """Start refining ``job`` if :meth:`due`; False (nothing kept) otherwise."""
        with self._lock:
            now = self._clock()
            if self._next_start is not None and now < self._next_start:
                return False
            if not self._worker.submit(job):
                return False
            if self._next_start is None or now - self._next_start >= self.period_s:
                # A whole period late (the worker was busy, or no frames came): start a new
                # grid here instead of catching up with a burst.
                self._next_start = now + self.period_s
            else:
                self._next_start += self.period_s
            return True

    def _lower_priority(self) -> None:
        """Once, on the worker thread: add ``thread_nice`` to its niceness (Linux threads have
        their own; POSIX setpriority on a thread id). Unprivileged users may raise it."""
        self.thread_nice_applied = 0
        if self._thread_nice <= 0 or not hasattr(os, "setpriority"):
            return
        try:
            tid = threading.get_native_id()
            current = os.getpriority(os.PRIO_PROCESS, tid)
            os.setpriority(os.PRIO_PROCESS, tid, min(current + self._thread_nice, 19))
            self.thread_nice_applied = os.getpriority(os.PRIO_PROCESS, tid) - current
        except OSError:
            pass

    def _run(self, job: RefineJob) -> None:
        if self.thread_nice_applied is None:
            self._lower_priority()
        cpu0 = time.thread_time()
        try:
            result = self.refiner.refine(
                job.rgb_HWC,
                job.intrinsics.K,
                job.prior_T_world_camera,
                dist_coeffs=job.intrinsics.dist_coeffs,
            )
        except Exception as exc:  # noqa: BLE001 - the frame must still be published
            job.cpu_s = time.thread_time() - cpu0
            self._on_done(job, None, f"{type(exc).__name__}: {exc}")
            return
        job.cpu_s = time.thread_time() - cpu0
        self._on_done(job, result, "")

    def stop(self, timeout_s: float = 5.0) -> None:
        """Finish the refinement in flight (its frame is published) and end the worker."""
        self._worker.stop(timeout_s)
