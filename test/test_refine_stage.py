"""The node's refinement stage without ROS: CameraInfo -> intrinsics, stamp matching, the
refine.* parameters, the output choice, the worker's rate and the counters."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from posenet_core.refine import RefineError, RefinementResult, Refiner, RefinerConfig
from posenet_ros.gating import GateConfig, GateDecision
from posenet_ros.refine_stage import (
    AUTO_LIMIT,
    FAILURE_ERROR,
    FAILURE_GATED,
    REFINE_PARAMETERS,
    SKIP_CAMERA_INFO_INVALID,
    SKIP_CAMERA_INFO_SIZE,
    SKIP_NO_CAMERA_INFO,
    SOURCE_PRIOR,
    SOURCE_REFINED,
    STAGE_PARAMETERS,
    CameraInfoBook,
    CameraInfoError,
    PoseOutput,
    RefineJob,
    RefineStage,
    RefineStats,
    choose_output,
    intrinsics_from_camera_info,
    limit_native_threads,
    refiner_config_from_parameters,
)

CORE_TESTS = Path(__file__).resolve().parents[1] / "core" / "tests"


def camera_info(
    width=640,
    height=480,
    k=(500.0, 0.0, 319.5, 0.0, 500.0, 239.5, 0.0, 0.0, 1.0),
    d=(),
    model="plumb_bob",
    binning=(0, 0),
    roi=(0, 0, 0, 0),
):
    """A duck-typed sensor_msgs/CameraInfo (roi: x_offset, y_offset, width, height)."""
    return SimpleNamespace(
        width=width,
        height=height,
        k=list(k),
        d=list(d),
        distortion_model=model,
        binning_x=binning[0],
        binning_y=binning[1],
        roi=SimpleNamespace(x_offset=roi[0], y_offset=roi[1], width=roi[2], height=roi[3]),
    )


# ----------------------------------------------------------------------- CameraInfo -> K


INTRINSICS_CASES = [
    # (name, CameraInfo fields, expected (fx, fy, cx, cy), expected (width, height), has dist)
    ("plain", {}, (500, 500, 319.5, 239.5), (640, 480), False),
    ("zero distortion", {"d": (0, 0, 0, 0, 0)}, (500, 500, 319.5, 239.5), (640, 480), False),
    ("plumb_bob", {"d": (-0.2, 0.05, 0, 0, 0)}, (500, 500, 319.5, 239.5), (640, 480), True),
    (
        "rational",
        {"d": [0.1] * 8, "model": "rational_polynomial"},
        (500,) * 2 + (319.5, 239.5),
        (640, 480),
        True,
    ),  # fmt: skip
    # binning 2: pixel (0, 0) covers full-resolution pixels 0 and 1 (centre 0.5)
    ("binning 2", {"binning": (2, 2)}, (250, 250, 159.5, 119.5), (320, 240), False),
    ("roi", {"roi": (100, 40, 320, 240)}, (500, 500, 219.5, 199.5), (320, 240), False),
]


@pytest.mark.parametrize(("name", "fields", "focal_centre", "size", "has_dist"), INTRINSICS_CASES)
def test_intrinsics_from_camera_info(name, fields, focal_centre, size, has_dist):
    got = intrinsics_from_camera_info(camera_info(**fields))
    fx, fy, cx, cy = focal_centre
    np.testing.assert_allclose(got.K, [[fx, 0, cx], [0, fy, cy], [0, 0, 1]], atol=1e-9)
    assert (got.width, got.height) == size
    assert (got.dist_coeffs is not None) == has_dist


BAD_CAMERA_INFOS = [
    ("uncalibrated", {"k": [0.0] * 9}, "not calibrated"),
    ("nan in k", {"k": (500.0, 0, 319.5, 0, float("nan"), 239.5, 0, 0, 1)}, "finite"),
    ("short k", {"k": (500.0, 0, 319.5)}, "9 finite"),
    ("fisheye", {"d": (0.1, 0.0, 0.0, 0.0), "model": "equidistant"}, "equidistant"),
    ("roi outside", {"roi": (400, 0, 320, 240)}, "exceeds"),
    ("zero size", {"width": 0}, "positive"),
]


@pytest.mark.parametrize(("name", "fields", "words"), BAD_CAMERA_INFOS)
def test_unusable_camera_info_says_why(name, fields, words):
    with pytest.raises(CameraInfoError, match=words):
        intrinsics_from_camera_info(camera_info(**fields))


def test_camera_info_book_matches_by_stamp_then_latest():
    book = CameraInfoBook(keep=4)
    assert book.lookup(10, 640, 480).problem == SKIP_NO_CAMERA_INFO
    book.add(10, camera_info())
    book.add(20, camera_info(k=(600.0, 0, 319.5, 0, 600.0, 239.5, 0, 0, 1)))
    exact = book.lookup(10, 640, 480)
    assert exact.exact_stamp and exact.intrinsics.K[0, 0] == 500.0
    newest = book.lookup(15, 640, 480)  # no info of that stamp: the newest
    assert not newest.exact_stamp and newest.intrinsics.K[0, 0] == 600.0
    size = book.lookup(20, 320, 240)
    assert size.intrinsics is None and size.problem == SKIP_CAMERA_INFO_SIZE
    assert "640x480" in size.detail and "320x240" in size.detail
    book.add(30, camera_info(k=[0.0] * 9))
    bad = book.lookup(30, 640, 480)
    assert bad.problem == SKIP_CAMERA_INFO_INVALID and "calibrated" in bad.detail
    book.add(40, SimpleNamespace(width=640))  # not a CameraInfo at all
    assert book.lookup(40, 640, 480).problem == SKIP_CAMERA_INFO_INVALID
    for stamp in range(50, 60):
        book.add(stamp, camera_info())
    assert book.lookup(10, 640, 480).exact_stamp is False  # forgotten: keeps 4
    assert book.received == 14


# --------------------------------------------------------------------------- parameters


def test_every_refiner_setting_but_the_seed_is_a_parameter_with_its_default():
    names = {spec.name for spec in REFINE_PARAMETERS}
    fields = set(RefinerConfig.__dataclass_fields__) - {"seed"}
    assert names == set(STAGE_PARAMETERS) | {f"refine.{f}" for f in fields}
    defaults = {spec.name: spec.default for spec in REFINE_PARAMETERS}
    assert refiner_config_from_parameters(defaults) == RefinerConfig()
    for spec in REFINE_PARAMETERS:
        assert spec.description.endswith(".")
        if spec.low is not None:
            assert spec.low <= spec.default <= spec.high, spec.name


def test_parameter_values_map_onto_the_refiner_config():
    config = refiner_config_from_parameters(
        {"refine.rate_hz": 2.0, "refine.min_inliers": 30, "refine.max_prior_distance_m": 2}
    )
    assert config.min_inliers == 30
    assert config.max_prior_distance_m == 2.0 and isinstance(config.max_prior_distance_m, float)


@pytest.mark.parametrize(
    ("median_error", "values", "expected_m_deg"),
    [
        # auto (the default): 5x the model's median error, floors 1 m / 20 deg
        ("0.026 m, 2.22 deg", {}, (1.0, 20.0)),
        ("1.780 m, 3.10 deg", {}, (8.9, 20.0)),
        ("0.500 m, 9.00 deg", {}, (2.5, 45.0)),
        ("3 m, 90 deg", {}, (15.0, 180.0)),
        ("unknown", {}, (1.0, 20.0)),
        ("", {}, (1.0, 20.0)),
        ("garbage", {}, (1.0, 20.0)),
        ("nan m, 2 deg", {}, (1.0, 20.0)),
        ("1.780 m, 3.10 deg", {"refine.max_prior_distance_m": -1}, (8.9, 20.0)),
        # given limits are used as they are, whatever the model's error
        ("1.780 m, 3.10 deg", {"refine.max_prior_distance_m": 2}, (2.0, 20.0)),
        ("1.780 m, 3.10 deg", {"refine.max_prior_distance_m": 0.0}, (0.0, 20.0)),
        ("0.1 m, 1 deg", {"refine.max_prior_angle_deg": 0.0}, (1.0, 0.0)),
        ("0.1 m, 1 deg", {"refine.max_prior_angle_deg": 5.0}, (1.0, 5.0)),
    ],
)
def test_prior_limits_auto_scale_with_the_model_median_error(median_error, values, expected_m_deg):
    config = refiner_config_from_parameters(values, model_median_error=median_error)
    assert (config.max_prior_distance_m, config.max_prior_angle_deg) == pytest.approx(
        expected_m_deg
    )


@pytest.mark.parametrize(
    "values",
    [{"refine.max_prior_distance_m": -2.0}, {"refine.max_prior_angle_deg": -0.5}],
)
def test_negative_prior_limits_other_than_auto_are_refused(values):
    with pytest.raises(RefineError, match=r"allowed: -1 \(auto"):
        refiner_config_from_parameters(values, model_median_error="0.1 m, 1 deg")


def test_the_default_prior_limits_are_auto():
    defaults = {spec.name: spec.default for spec in REFINE_PARAMETERS}
    assert defaults["refine.max_prior_distance_m"] == AUTO_LIMIT
    assert defaults["refine.max_prior_angle_deg"] == AUTO_LIMIT
    config = refiner_config_from_parameters(defaults, model_median_error="2.0 m, 10 deg")
    assert (config.max_prior_distance_m, config.max_prior_angle_deg) == (10.0, 50.0)


@pytest.mark.parametrize(
    ("values", "words"),
    [
        ({"refine.min_inliers": 2}, "min_inliers"),
        ({"refine.ratio": 1.5}, "ratio"),
        ({"refine.nonsense": 1}, "refine.nonsense"),
    ],
)
def test_bad_parameter_values_name_the_parameter(values, words):
    with pytest.raises(RefineError, match=words):
        refiner_config_from_parameters(values)


# -------------------------------------------------------------------------- output choice


def prior_output(accepted: bool = True) -> PoseOutput:
    decision = GateDecision(True) if accepted else GateDecision(False, "speed", "jumped")
    return PoseOutput(
        position_m=np.array([1.0, 2.0, 3.0]),
        quat_wxyz=np.array([1.0, 0.0, 0.0, 0.0]),
        covariance=np.diag([0.25] * 3 + [0.01] * 3),
        covariance_from_model=True,
        stddev=np.array([0.5] * 3 + [0.1] * 3),
        decision=decision,
    )


def refinement(success: bool, failure: str = "", sigma_m: float = 0.002) -> RefinementResult:
    T = np.eye(4)
    T[:3, 3] = (1.01, 2.0, 3.0)
    return RefinementResult(
        success=success,
        failure=failure,
        message=failure or "refined",
        T_world_camera=T if success else None,
        covariance=np.diag([sigma_m**2] * 3 + [1e-6] * 3) if success else None,
        num_inliers=80 if success else 7,
        time_s=0.05,
    )


OUTPUT_CASES = [
    # (name, prior accepted, refinement, gate config, source, failure, accepted)
    ("refined", True, refinement(True), GateConfig(), SOURCE_REFINED, "", True),
    (
        "refined although prior gated",
        False,
        refinement(True),
        GateConfig(),
        SOURCE_REFINED,
        "",
        True,
    ),  # fmt: skip
    (
        "failed",
        True,
        refinement(False, "too_few_inliers"),
        GateConfig(),
        SOURCE_PRIOR,
        "too_few_inliers",
        True,
    ),  # fmt: skip
    (
        "failed, prior gated",
        False,
        refinement(False, "no_texture"),
        GateConfig(),
        SOURCE_PRIOR,
        "no_texture",
        False,
    ),  # fmt: skip
    (
        "refined but gated",
        True,
        refinement(True, sigma_m=0.5),
        GateConfig(max_position_stddev_m=0.1),
        SOURCE_PRIOR,
        FAILURE_GATED,
        True,
    ),  # fmt: skip
    ("refiner raised", True, None, GateConfig(), SOURCE_PRIOR, FAILURE_ERROR, True),
]


@pytest.mark.parametrize(
    ("name", "prior_ok", "result", "gates", "source", "failure", "accepted"), OUTPUT_CASES
)
def test_choose_output(name, prior_ok, result, gates, source, failure, accepted):
    prior = prior_output(prior_ok)
    out = choose_output(
        prior, result, gates, failure_override=FAILURE_ERROR if result is None else ""
    )
    assert out.source == source
    assert out.refinement_failure == failure
    assert out.decision.accepted == accepted
    assert out.refinement_attempted
    if source == SOURCE_REFINED:
        np.testing.assert_allclose(out.position_m, [1.01, 2.0, 3.0])
        np.testing.assert_allclose(out.stddev[:3], 0.002)
        assert not out.covariance_from_model
        assert out.refinement_inliers == 80 and out.refinement_time_s == 0.05
    else:
        np.testing.assert_array_equal(out.position_m, prior.position_m)
        assert out.covariance is prior.covariance and out.covariance_from_model


# ------------------------------------------------------------------------- worker and stats


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


class GatedRefiner:
    """Refines when released, so a test controls when the worker is busy."""

    def __init__(self, raises: bool = False) -> None:
        self.release = threading.Event()
        self.calls = 0
        self.raises = raises

    def refine(self, rgb_HWC, K, prior_T_world_camera, *, dist_coeffs=None):
        self.calls += 1
        self.release.wait(5.0)
        if self.raises:
            raise ValueError("boom")
        return refinement(True)


def job(n: int) -> RefineJob:
    intrinsics = intrinsics_from_camera_info(camera_info())
    return RefineJob(np.zeros((480, 640, 3), np.uint8), intrinsics, np.eye(4), prior_output(), n)


def test_stage_refines_at_most_rate_hz_and_one_frame_at_a_time():
    clock, refiner = FakeClock(), GatedRefiner()
    done: list = []
    finished = threading.Event()

    def on_done(j, result, error):
        done.append((j.context, result.success, error))
        finished.set()

    stage = RefineStage(refiner, rate_hz=5.0, on_done=on_done, clock=clock)
    try:
        assert stage.due() and stage.offer(job(1))
        assert not stage.due() and not stage.offer(job(2))  # busy and too soon
        clock.t += 0.3
        assert not stage.offer(job(3))  # still busy
        refiner.release.set()
        assert finished.wait(5.0)
        clock.t += 0.1  # 0.1 s after job 1 started + 0.3: past the period
        for _ in range(100):
            if stage.due():
                break
            threading.Event().wait(0.01)
        assert stage.offer(job(4))
        assert not stage.offer(job(5))  # the period counts from job 4's start
    finally:
        stage.stop()
    assert [d[0] for d in done] == [1, 4]
    assert refiner.calls == 2


def test_limit_native_threads_caps_opencv_and_the_blas():
    import cv2
    from threadpoolctl import threadpool_info, threadpool_limits

    before = cv2.getNumThreads()
    with threadpool_limits():  # restores the BLAS pools on exit
        try:
            note = limit_native_threads(1)
            assert cv2.getNumThreads() == 1
            blas = [pool for pool in threadpool_info() if pool["user_api"] == "blas"]
            assert blas and all(pool["num_threads"] == 1 for pool in blas)
            assert note == "OpenCV and BLAS threads 1"
        finally:
            cv2.setNumThreads(before)
    assert "defaults" in limit_native_threads(0)
    assert cv2.getNumThreads() == before


def test_stage_keeps_rate_hz_on_average_with_frames_on_their_own_clock():
    # 30 Hz frames, rate 7 Hz (4.3 frames apart), a refiner that keeps up: 7 starts a second,
    # not one per 5 frames (6 a second), which "period_s since the last start" gave.
    clock, refiner = FakeClock(), GatedRefiner()
    refiner.release.set()
    finished = threading.Event()
    stage = RefineStage(refiner, rate_hz=7.0, on_done=lambda j, r, e: finished.set(), clock=clock)
    starts = []
    try:
        for frame in range(90):  # 3 s
            clock.t = frame / 30.0
            if stage.offer(job(frame)):
                starts.append(frame)
                assert finished.wait(5.0)
                finished.clear()
                for _ in range(500):  # until the worker thread is idle again
                    if not stage._worker.busy:
                        break
                    threading.Event().wait(0.001)
    finally:
        stage.stop()
    assert len(starts) == 21
    assert min(b - a for a, b in zip(starts[:-1], starts[1:], strict=True)) >= 4  # never a burst


def test_stage_reports_a_refiner_exception_and_keeps_working():
    refiner = GatedRefiner(raises=True)
    refiner.release.set()
    done: list = []
    event = threading.Event()
    stage = RefineStage(
        refiner, rate_hz=1000.0, on_done=lambda j, r, e: (done.append((r, e)), event.set())
    )
    try:
        assert stage.offer(job(1))
        assert event.wait(5.0)
    finally:
        stage.stop()
    assert done == [(None, "ValueError: boom")]


@pytest.mark.skipif(not hasattr(os, "setpriority"), reason="POSIX thread priorities")
def test_the_worker_thread_runs_nicer_than_the_caller():
    seen: list[int] = []
    event = threading.Event()

    class Recorder:
        def refine(self, *args, **kwargs):
            seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
            return refinement(True)

    before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    stage = RefineStage(Recorder(), 1000.0, lambda *a: event.set(), thread_nice=5)
    try:
        assert stage.offer(job(1)) and event.wait(5.0)
    finally:
        stage.stop()
    assert seen == [min(before + 5, 19)]
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == before  # caller's


@pytest.mark.parametrize("rate", [0.0, -1.0, float("nan"), True])
def test_stage_refuses_a_bad_rate(rate):
    with pytest.raises(RefineError, match="rate_hz"):
        RefineStage(GatedRefiner(), rate_hz=rate, on_done=lambda *a: None)


def test_stats_count_successes_failures_and_skips():
    clock = FakeClock()
    stats = RefineStats(clock=clock)
    gates = GateConfig()
    stats.on_done(choose_output(prior_output(), refinement(True), gates), "ok", 120.0)
    stats.on_done(choose_output(prior_output(), refinement(True), gates), "ok", 140.0)
    failed = choose_output(prior_output(), refinement(False, "no_texture"), gates)
    stats.on_done(failed, "3 keypoints", 60.0, cpu_ms=20.0)
    stats.on_skipped(SKIP_NO_CAMERA_INFO)
    clock.t += 2.0
    snap = stats.snapshot()
    assert (snap.attempted, snap.refined) == (3, 2)
    assert snap.success_share == pytest.approx(2 / 3)
    assert snap.refined_rate_hz == pytest.approx(1.0)
    assert snap.attempt_rate_hz == pytest.approx(1.5)
    assert snap.failures["no_texture"] == 1 and snap.skipped[SKIP_NO_CAMERA_INFO] == 1
    assert snap.latency_ms_median == pytest.approx(120.0)
    assert snap.refine_ms_median == pytest.approx(50.0)
    assert snap.refine_cpu_ms_median == pytest.approx(20.0)
    assert snap.last_failure == "3 keypoints"
    clock.t += 1.0
    empty = stats.snapshot()
    assert empty.attempt_rate_hz == 0.0 and np.isnan(empty.success_share)
    assert empty.attempted == 3  # lifetime counters stay


def test_stage_with_the_real_refiner_on_the_planar_scene():
    """The whole stage on an exact scene: a prior 8 cm / 3 deg off comes back within 5 mm."""
    sys.path.insert(0, str(CORE_TESTS))
    try:
        import planar_scene
    finally:
        sys.path.remove(str(CORE_TESTS))
    import cv2

    scene = planar_scene.PlanarScene()
    T_true = planar_scene.look_at(np.array([0.15, 0.1, -1.9]), np.array([0.05, 0.0, 0.0]))
    rgb = scene.render(T_true, planar_scene.K_640)
    prior_T = T_true.copy()
    prior_T[:3, 3] += (0.05, -0.05, 0.04)
    prior_T[:3, :3] = (
        cv2.Rodrigues(np.array([[0.0], [np.radians(3.0)], [0.0]]))[0] @ T_true[:3, :3]
    )
    book = CameraInfoBook()
    book.add(7, camera_info())
    found = book.lookup(7, rgb.shape[1], rgb.shape[0])
    results: list = []
    jobs: list = []
    event = threading.Event()
    stage = RefineStage(
        Refiner(planar_scene.build_site_map(scene)),
        rate_hz=5.0,
        on_done=lambda j, r, e: (
            results.append(choose_output(j.prior, r, GateConfig())),
            jobs.append(j),
            event.set(),
        ),
    )
    try:
        assert stage.offer(RefineJob(rgb, found.intrinsics, prior_T, prior_output(), 7))
        assert event.wait(30.0)
    finally:
        stage.stop()
    (out,) = results
    assert out.source == SOURCE_REFINED, out.refinement_failure
    assert np.linalg.norm(out.position_m - T_true[:3, 3]) < 0.005
    assert out.refinement_inliers >= 50
    (job_done,) = jobs
    assert 0.0 < job_done.cpu_s < 30.0
