"""posenet_train.map: the map of a small dino subset, intrinsics sources, reuse, CLI errors;
and posenet_train.evaluate --map on it (prior and refined side by side, bad maps)."""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import shutil
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from posenet_core.contract import format_median_error
from posenet_core.datasets import find_intrinsics, write_cambridge
from posenet_core.errors import DatasetError
from posenet_core.features import FeatureConfig
from posenet_core.geometry import pose_to_matrix
from posenet_core.mapfile import (
    MapCamera,
    dataset_fingerprint,
    read_map,
    split_fingerprint,
    write_map,
)
from posenet_core.refine import Refiner, RefinerConfig, with_auto_prior_limits
from posenet_train import evaluate
from posenet_train import map as map_step
from posenet_train.datasets import FORMATS, dataset_intrinsics, load_split
from posenet_train.errors import PoseNetTrainError

# Consecutive dino images on one ring of the gantry's hemisphere (train and test interleaved as in
# the full set: every 4th image is a test image).
SUBSET = range(2, 20)


def _dino_dir() -> Path:
    override = os.environ.get("POSENET_DINO_DIR")
    if override:
        return Path(override)
    return Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "middlebury_dino"


@pytest.fixture(scope="module")
def dino_subset(tmp_path_factory) -> Path:
    """A Cambridge dataset of 18 dino images (14 train, 4 test) with the original calibration."""
    source = _dino_dir()
    if not (source / "dataset_train.txt").is_file():
        pytest.skip(f"middlebury_dino not found at {source} (or set POSENET_DINO_DIR)")
    folder = tmp_path_factory.mktemp("dino_subset")
    wanted = {f"dino{i:04d}.png" for i in SUBSET}
    for split in ("train", "test"):
        records = [r for r in load_split(source, split) if r.image_path.name in wanted]
        write_cambridge(folder, split, records)
    shutil.copy(source / "dino_par.txt", folder / "dino_par.txt")
    return folder


@pytest.fixture(scope="module")
def dino_map(dino_subset, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("maps") / "dino.map.npz"
    return map_step.main(str(dino_subset), out, progress=False)


def test_map_holds_the_training_split_only(dino_subset, dino_map):
    site_map = read_map(dino_map)
    train = load_split(dino_subset, "train")
    test_names = {r.image_path.name for r in load_split(dino_subset, "test")}
    assert site_map.num_keyframes == len(train) == 14
    assert not {Path(n).name for n in site_map.keyframe_names} & test_names
    assert site_map.dataset == dino_subset.name
    # images outside the dataset folder are named by file name (see map._relative_name)
    names = [map_step._relative_name(r.image_path, dino_subset) for r in train]
    assert site_map.dataset_fingerprint == dataset_fingerprint(
        (n, r.position_m, r.quat_wxyz) for n, r in zip(names, train, strict=True)
    )
    assert site_map.camera == MapCamera(640, 480, 3310.4, 3325.5, 316.73, 200.55)
    assert site_map.provenance["camera_source"] == "dino_par.txt"
    assert site_map.num_points > 300
    assert dino_map.stat().st_size < 2_000_000
    for i, record in enumerate(train):
        np.testing.assert_allclose(
            site_map.keyframe_T_world_camera[i],
            pose_to_matrix(record.position_m, record.quat_wxyz),
            atol=1e-12,
        )


def test_points_reproject_onto_their_keypoints(dino_map):
    """The triangulation kept the given poses: every observation reprojects within pixels."""
    from posenet_core.refine.pnp import project

    site_map = read_map(dino_map)
    errors = []
    for i in range(site_map.num_keyframes):
        s = site_map.keyframe_slice(i)
        xyz = site_map.point_xyz_m[site_map.obs_point_id[s]]
        uv = project(xyz, site_map.keyframe_T_world_camera[i], site_map.camera.K)
        errors.append(np.linalg.norm(uv - site_map.obs_xy[s], axis=1))
    errors = np.concatenate(errors)
    assert np.median(errors) < 1.0
    assert np.percentile(errors, 99) < 4.5


def test_the_map_refines_an_unseen_test_image(dino_subset, dino_map):
    import cv2

    refiner = Refiner.from_file(dino_map)
    record = load_split(dino_subset, "test")[2]
    T_true = pose_to_matrix(record.position_m, record.quat_wxyz)
    prior = T_true.copy()
    prior[:3, 3] += [0.02, -0.01, 0.01]
    prior[:3, :3] = cv2.Rodrigues(np.radians([1.5, -1.0, 0.5]).reshape(3, 1))[0] @ T_true[:3, :3]
    rgb = cv2.cvtColor(cv2.imread(str(record.image_path)), cv2.COLOR_BGR2RGB)
    result = refiner.refine(rgb, refiner.map.camera.K, prior)
    assert result.success, result.message
    assert np.linalg.norm(result.T_world_camera[:3, 3] - T_true[:3, 3]) < 0.01
    cos = (np.trace(result.T_world_camera[:3, :3].T @ T_true[:3, :3]) - 1) / 2
    assert np.degrees(np.arccos(np.clip(cos, -1, 1))) < 0.5


def test_existing_map_is_kept_unless_overwrite(dino_subset, dino_map, capsys):
    before = dino_map.stat().st_mtime_ns
    assert map_step.main(str(dino_subset), dino_map, progress=False) == dino_map
    assert dino_map.stat().st_mtime_ns == before
    assert "exists: kept" in capsys.readouterr().err
    other = map_step.MatchOptions(pairs_per_image=3)
    map_step.main(str(dino_subset), dino_map, match=other, progress=False)
    assert "other parameters" in capsys.readouterr().err
    assert dino_map.stat().st_mtime_ns == before
    # --overwrite rebuilds (the feature cache beside it is reused for the same features)
    map_step.main(str(dino_subset), dino_map, match=other, overwrite=True, progress=False)
    assert dino_map.stat().st_mtime_ns != before
    assert read_map(dino_map).provenance["build"]["match"]["pairs_per_image"] == 3


def test_corrupt_existing_map_is_an_error(dino_subset, tmp_path):
    out = tmp_path / "broken.npz"
    out.write_bytes(b"not a map")
    with pytest.raises(map_step.MapBuildError, match="--overwrite"):
        map_step.main(str(dino_subset), out, progress=False)


def test_map_of_a_colmap_dataset_keeps_its_poses_and_camera(dino_subset, tmp_path):
    """A COLMAP model (what posenet_train.sfm writes) as input: its camera, its train split."""
    from posenet_core.geometry import matrix_to_quat, quat_to_matrix

    root = tmp_path / "colmap_dino"
    (root / "images").mkdir(parents=True)
    (root / "sparse" / "0").mkdir(parents=True)
    records = load_split(dino_subset, "train")[:8]
    lines = []
    for i, r in enumerate(records, start=1):
        (root / "images" / r.image_path.name).symlink_to(r.image_path.resolve())
        R_cw = quat_to_matrix(r.quat_wxyz).T
        t = -R_cw @ r.position_m
        q = matrix_to_quat(R_cw)
        lines += [" ".join(map(str, [i, *q, *t, 1, r.image_path.name])), ""]
    (root / "sparse" / "0" / "images.txt").write_text("\n".join(lines) + "\n")
    # COLMAP pixel centres at half-integers: +0.5 on the principal point
    (root / "sparse" / "0" / "cameras.txt").write_text(
        "1 PINHOLE 640 480 3310.4 3325.5 317.23 201.05\n"
    )
    (root / "sparse" / "0" / "points3D.txt").write_text("")
    out = map_step.main(str(root), tmp_path / "colmap.npz", progress=False)
    site_map = read_map(out)
    train = load_split(str(root), "train")  # every 8th image (sorted by name) is a test image
    assert site_map.num_keyframes == len(train) == 7
    assert site_map.camera.cx == pytest.approx(316.73) and site_map.camera.fx == 3310.4
    assert "COLMAP" in site_map.provenance["camera_source"]
    for i, r in enumerate(train):
        np.testing.assert_allclose(
            site_map.keyframe_T_world_camera[i],
            pose_to_matrix(r.position_m, r.quat_wxyz),
            atol=1e-9,
        )
    assert site_map.num_points > 100


# ------------------------------------------------------------------------------ intrinsics


def _cambridge(folder: Path, size=(64, 48)) -> Path:
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(folder / "a.png"), np.zeros((size[1], size[0], 3), np.uint8))
    (folder / "dataset_train.txt").write_text("h\nh\n\na.png 0 0 0 1 0 0 0\n")
    return folder


def _colmap_text_model(folder: Path) -> None:
    sparse = folder / "sparse" / "0"
    sparse.mkdir(parents=True)
    (sparse / "cameras.txt").write_text("1 SIMPLE_RADIAL 64 48 50.0 32.5 24.5 0.01\n")
    (sparse / "images.txt").write_text("1 1 0 0 0 0 0 0 1 a.png\n\n")
    (sparse / "points3D.txt").write_text("")


def _case_json(folder: Path) -> tuple[str, dict]:
    _cambridge(folder)
    (folder / "intrinsics.json").write_text(
        json.dumps({"width": 64, "height": 48, "fx": 40.0, "fy": 41.0, "cx": 31.5, "cy": 23.5})
    )
    return str(folder), {"fx": 40.0, "fy": 41.0, "cx": 31.5, "distortion": ()}


def _case_colmap(folder: Path) -> tuple[str, dict]:
    _cambridge(folder)
    _colmap_text_model(folder)
    # COLMAP's principal point (pixel centres at half-integers) -> OpenCV's
    return str(folder), {"fx": 50.0, "cx": 32.0, "cy": 24.0, "distortion": (0.01, 0.0, 0.0, 0.0)}


def _case_sevenscenes(folder: Path) -> tuple[str, dict]:
    (folder / "seq-01").mkdir(parents=True)
    (folder / "TrainSplit.txt").write_text("sequence1\n")
    return str(folder), {"fx": 585.0, "cx": 320.0, "width": 640}


INTRINSICS_CASES = [("intrinsics.json", _case_json), ("colmap", _case_colmap)]


@pytest.mark.parametrize(("name", "make"), INTRINSICS_CASES)
def test_intrinsics_from_the_dataset(tmp_path, name, make):
    dataset, expected = make(tmp_path / name)
    camera, source = dataset_intrinsics(dataset)
    for key, value in expected.items():
        assert getattr(camera, key) == pytest.approx(value) if key != "distortion" else True
        if key == "distortion":
            assert camera.distortion == value
    assert source


def test_sevenscenes_published_calibration(tmp_path):
    dataset, _ = _case_sevenscenes(tmp_path / "7s")
    camera, source = find_intrinsics(dataset, lambda: (640, 480), FORMATS)
    assert (camera.fx, camera.cx, camera.cy) == (585.0, 320.0, 240.0)
    assert "7-Scenes" in source


def test_explicit_intrinsics_win_and_size_must_match(tmp_path):
    folder = _cambridge(tmp_path / "plain")
    with pytest.raises(DatasetError, match="no intrinsics found.*--intrinsics"):
        dataset_intrinsics(str(folder))
    path = tmp_path / "cam.json"
    path.write_text(json.dumps({"width": 64, "height": 48, "fx": 9, "fy": 9, "cx": 1, "cy": 2}))
    camera, _ = dataset_intrinsics(str(folder), override=path)
    assert camera.fx == 9.0
    big = _cambridge(tmp_path / "big", size=(640, 480))
    with pytest.raises(DatasetError, match="64x48 images but the train images are 640x480"):
        dataset_intrinsics(str(big), override=path)
    path.write_text("{broken")
    with pytest.raises(DatasetError, match="not valid JSON"):
        dataset_intrinsics(str(folder), override=path)
    path.write_text(
        json.dumps(
            {
                "width": 64,
                "height": 48,
                "fx": 9,
                "fy": 9,
                "cx": 1,
                "cy": 2,
                "distortion_model": "equidistant",
                "distortion": [0.1] * 4,
            }
        )
    )
    with pytest.raises(DatasetError, match="'equidistant' is not supported; allowed: none"):
        dataset_intrinsics(str(folder), override=path)


# ----------------------------------------------------------------------------- pairs, epipolar


def test_pairs_join_nearest_views_within_the_angle():
    from posenet_core.refine.pnp import T_world_camera_from_rvec_tvec

    # five cameras along x looking along z, and one looking back
    poses = [T_world_camera_from_rvec_tvec(np.zeros(3), [-x, 0.0, 0.0]) for x in range(5)]
    poses.append(T_world_camera_from_rvec_tvec([0.0, np.pi, 0.0], [0.0, 0.0, 0.0]))
    pairs = map_step.select_pairs(np.stack(poses), pairs_per_image=1, max_angle_deg=30)
    assert pairs == [(0, 1), (1, 2), (2, 3), (3, 4)]
    assert all(5 not in p for p in map_step.select_pairs(np.stack(poses), 4, 30))


def test_sampson_distance_is_zero_for_true_correspondences():
    from posenet_core.refine.pnp import T_world_camera_from_rvec_tvec, project

    K = np.array([[500.0, 0, 320], [0, 500.0, 240], [0, 0, 1]])
    T_a = np.eye(4)
    T_b = T_world_camera_from_rvec_tvec([0.0, 0.1, 0.0], [-0.5, 0.0, 0.1])
    rng = np.random.default_rng(0)
    X = rng.uniform([-1, -1, 4], [1, 1, 6], (20, 3))
    F = map_step._fundamental(T_a, T_b, K)
    a, b = project(X, T_a, K), project(X, T_b, K)
    assert map_step.sampson_distance(F, a, b).max() < 1e-6
    assert map_step.sampson_distance(F, a, b + [0.0, 5.0]).min() > 1.0


# ------------------------------------------------------------------------------------- CLI


def _tiny_model(path: Path, dataset: str, fingerprint: str = "") -> Path:
    import onnx
    from onnx import TensorProto, helper

    node = helper.make_node("Identity", ["x"], ["y"])
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(graph)
    metadata = {"posenet.dataset": dataset, "posenet.scene_frame": "site"}
    if fingerprint:
        metadata["posenet.dataset_fingerprint"] = fingerprint
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))
    return path


CLI_CASES = [
    # (argv builder, exit status, words in stderr)
    (lambda d, t: ["--output", str(t / "m.npz")], 2, "--dataset"),
    (lambda d, t: ["--dataset", str(d), "--output", str(t / "m.txt")], 1, "must end in .npz"),
    (lambda d, t: ["--dataset", str(d), "--output", str(t / "m.npz"), "--ratio", "2"], 2, "ratio"),
    (lambda d, t: ["--dataset", str(d), "--output", str(t / "m.npz"), "--feature", "surf"], 2, "surf"),  # noqa: E501
    (lambda d, t: ["--dataset", str(t / "nope"), "--output", str(t / "m.npz")], 1, "not found"),
    (
        lambda d, t: [
            "--dataset", str(d), "--output", str(t / "m.npz"),
            "--model", str(_tiny_model(t / "other.onnx", "kings_college")),
        ],
        1,
        "trained on dataset 'kings_college'",
    ),
    (
        lambda d, t: [
            "--dataset", str(d), "--output", str(t / "m.npz"),
            "--model", str(_tiny_model(t / "v2.onnx", d.name, fingerprint="e" * 64)),
        ],
        1,
        "another version of dataset",
    ),
    (
        lambda d, t: ["--dataset", str(d), "--output", str(t / "m.npz"), "--model", str(t / "x.onnx")],  # noqa: E501
        1,
        "cannot read the model file",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("argv", "status", "words"), CLI_CASES)
def test_cli_errors(dino_subset, tmp_path, capsys, argv, status, words):
    if status == 2:
        with pytest.raises(SystemExit) as info:
            map_step.cli(argv(dino_subset, tmp_path))
        assert info.value.code == 2
    else:
        assert map_step.cli(argv(dino_subset, tmp_path)) == 1
    assert words in capsys.readouterr().err
    assert not (tmp_path / "m.npz").exists()


def test_cli_builds_with_model_scene_frame_and_orb(dino_subset, tmp_path, capsys):
    model = _tiny_model(tmp_path / "model.onnx", dino_subset.name)
    out = tmp_path / "orb.npz"
    argv = ["--dataset", str(dino_subset), "--output", str(out), "--model", str(model)]
    argv += ["--feature", "orb", "--max-keyframes", "6", "--no-progress"]
    assert map_step.cli(argv) == 0
    assert capsys.readouterr().out.strip() == str(out)
    site_map = read_map(out)
    assert site_map.scene_frame == "site"
    assert site_map.feature == FeatureConfig(type="orb")
    assert site_map.num_keyframes == 6
    assert len(site_map.provenance["model_sha256"]) == 64
    # The whole training split's fingerprint, not the 6 keyframes': the model file's is that.
    assert site_map.dataset_fingerprint == split_fingerprint(
        load_split(dino_subset, "train"), dino_subset
    )


def test_help_documents_every_flag(capsys):
    with pytest.raises(SystemExit):
        map_step.cli(["--help"])
    text = capsys.readouterr().out
    parser = map_step.build_parser()
    for action in parser._actions:
        assert action.help, f"{action.option_strings} has no help"
    assert "--epipolar-threshold-px" in text


@pytest.mark.parametrize("kind", ["sift", "orb"])
def test_point_descriptor_is_the_medoid_of_its_track(kind):
    feature = FeatureConfig(type=kind)
    rng = np.random.default_rng(0)
    width = feature.descriptor_bytes
    base = rng.integers(0, 120, width).astype(np.uint8)
    near = base.copy()
    near[:4] += 3
    far = rng.integers(0, 255, width).astype(np.uint8)
    single = rng.integers(0, 255, width).astype(np.uint8)
    descriptors = np.stack([far, near, base, single, base])
    point_ids = np.array([0, 0, 0, 1, 0])
    out = map_step.point_descriptors(descriptors, point_ids, 2, feature)
    assert out.shape == (2, width) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[0], base)  # closest to the others of point 0
    np.testing.assert_array_equal(out[1], single)


def test_observation_descriptors_are_larger_and_refine_too(dino_subset, dino_map, tmp_path):
    out = tmp_path / "per_observation.npz"
    shutil.copy(  # the feature cache of the same images and features: no re-extraction
        dino_map.with_name("dino.map.features.npz"), tmp_path / "per_observation.features.npz"
    )
    map_step.main(str(dino_subset), out, descriptors="observation", progress=False)
    per_obs, per_point = read_map(out), read_map(dino_map)
    assert len(per_obs.descriptor) == per_obs.num_observations
    assert len(per_point.descriptor) == per_point.num_points
    assert len(per_obs.descriptor) > 2 * len(per_point.descriptor)
    assert out.stat().st_size > dino_map.stat().st_size
    with pytest.raises(map_step.MapBuildError, match="descriptors must be one of"):
        map_step.main(str(dino_subset), tmp_path / "x.npz", descriptors="mean", progress=False)


# ------------------------------------------------------------------ evaluate --map (the dino)

PRIOR_OFFSET_M = np.array([0.02, -0.01, 0.01])
PRIOR_TILT = np.array([math.cos(math.radians(0.75)), 0.0, math.sin(math.radians(0.75)), 0.0])


@pytest.fixture
def gt_prior(monkeypatch, tmp_path) -> Path:
    """A stand-in checkpoint whose prediction is the ground truth moved by 2.4 cm and turned by
    1.5 deg: the dino model's error, without training one."""
    from posenet_core.geometry import quat_multiply

    def predict(model, records, **kwargs):
        position = np.stack([r.position_m for r in records]) + PRIOR_OFFSET_M
        quat = quat_multiply(PRIOR_TILT[None], np.stack([r.quat_wxyz for r in records]))
        return position, quat, None

    fake = types.ModuleType("posenet_train.checkpoint")
    fake.model_from_checkpoint = lambda path: (torch.nn.Identity(), {})
    monkeypatch.setitem(sys.modules, "posenet_train.checkpoint", fake)
    monkeypatch.setattr(evaluate, "predict", predict)
    checkpoint = tmp_path / "prior.pt"
    checkpoint.write_bytes(b"stand-in")
    return checkpoint


def test_evaluate_with_map_reports_prior_and_refined(dino_subset, dino_map, gt_prior, tmp_path):
    out = tmp_path / "eval"
    argv = ["--dataset", str(dino_subset), "--checkpoint", str(gt_prior), "--map", str(dino_map)]
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        assert evaluate.cli([*argv, "--output", str(out), "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    r = summary["refinement"]
    assert summary["count"] == 4
    assert summary["median_translation_m"] == pytest.approx(np.linalg.norm(PRIOR_OFFSET_M))
    assert r["refined_count"] >= 3 and r["refined_share"] == r["refined_count"] / 4
    assert sum(r["failures"].values()) == 4 - r["refined_count"]
    assert set(r["failures"]) >= {"no_texture", "too_few_inliers", "too_far_from_prior"}
    assert r["refined_only"]["median_translation_m"] < 0.01
    assert r["refined_only"]["median_rotation_deg"] < 0.5
    assert r["published"]["count"] == 4 and r["intrinsics_source"] == "dino_par.txt"
    for name in ("refined_error_cdf.png", "refined_trajectory.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    rows = (out / "refined_predictions.csv").read_text().splitlines()
    assert len(rows) == 5 and rows[0].startswith("image,source,failure,inliers")
    text = printed.getvalue()
    assert "| prior | 4 | 0.0245 |" in text
    assert "| refined, else prior (the node's output) | 4 |" in text
    assert f"refined {r['refined_count']} of 4 frames" in text


@pytest.mark.parametrize(
    ("validation", "limits"),
    [
        (None, (1.0, 20.0)),  # the checkpoint does not know its error: the floors
        ({"median_translation_m": 0.3, "median_rotation_deg": 5.0}, (1.5, 25.0)),
        ({"median_translation_m": 0.05, "median_rotation_deg": 1.0}, (1.0, 20.0)),
    ],
)
def test_evaluate_map_limits_follow_the_model_like_the_node(
    dino_subset, dino_map, gt_prior, tmp_path, monkeypatch, validation, limits
):
    """The prior limits offline are the node's auto ones for the model file export writes:
    5x the checkpoint's validation median (posenet.median_error), at least 1 m / 20 deg; a
    fixed limit offline refused frames the node refined live."""
    ckpt = {"extra": {"val": validation}} if validation else {}
    fake = sys.modules["posenet_train.checkpoint"]
    monkeypatch.setattr(fake, "model_from_checkpoint", lambda path: (torch.nn.Identity(), ckpt))
    out = tmp_path / "eval"
    argv = ["--dataset", str(dino_subset), "--checkpoint", str(gt_prior), "--map", str(dino_map)]
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        assert evaluate.cli([*argv, "--output", str(out), "--quiet"]) == 0
    got = json.loads((out / "summary.json").read_text())["refinement"]["prior_limits"]
    assert (got["max_prior_distance_m"], got["max_prior_angle_deg"]) == pytest.approx(limits)
    assert got["model_median_error"] == format_median_error(validation)
    assert f"prior limits {limits[0]:.3g} m / {limits[1]:.3g} deg (auto" in printed.getvalue()


@pytest.mark.parametrize("median_error", ["unknown", "0.400 m, 8.00 deg", "0.010 m, 0.50 deg"])
def test_evaluate_refines_as_the_node_does(dino_subset, dino_map, median_error):
    """The node's refine.* defaults are RefinerConfig's with the prior limits resolved from the
    model file's median error, and its K from the player's camera_info is the K evaluation
    refines with: the same pose to the last bit."""
    import cv2

    refine_stage = pytest.importorskip("posenet_ros.refine_stage")
    player = pytest.importorskip("posenet_ros.player_node")
    defaults = {spec.name: spec.default for spec in refine_stage.REFINE_PARAMETERS}
    node_config = refine_stage.refiner_config_from_parameters(defaults, median_error)
    assert node_config == with_auto_prior_limits(RefinerConfig(), median_error)
    camera, _ = dataset_intrinsics(dino_subset, "test")
    node_camera = refine_stage.intrinsics_from_camera_info(player.camera_info_msg(camera))
    records = load_split(dino_subset, "test")[:2]
    prior_position = np.stack([r.position_m for r in records]) + PRIOR_OFFSET_M
    prior_quat = np.stack([r.quat_wxyz for r in records])
    site_map = evaluate.load_refinement_map(dino_map, dino_subset)
    ours = evaluate.refine_poses(
        site_map, records, prior_position, prior_quat, camera, model_median_error=median_error
    )
    cv2.setNumThreads(1)  # refine.opencv_threads
    refiner = Refiner(site_map, node_config)
    for i, record in enumerate(records):
        rgb = cv2.cvtColor(cv2.imread(str(record.image_path)), cv2.COLOR_BGR2RGB)
        prior = pose_to_matrix(prior_position[i], prior_quat[i])
        node = refiner.refine(rgb, node_camera.K, prior, dist_coeffs=node_camera.dist_coeffs)
        assert node.success == ours.refined[i]
        expected = node.T_world_camera if node.success else prior
        np.testing.assert_array_equal(
            pose_to_matrix(ours.position_m[i], ours.quat_wxyz[i])[:3, 3], expected[:3, 3]
        )


def _copy_dataset(source: Path, folder: Path, move_first_m: float = 0.0) -> Path:
    import dataclasses

    for split in ("train", "test"):
        records = load_split(source, split)
        if split == "train" and move_first_m:
            first = records[0]
            moved = first.position_m + [move_first_m, 0.0, 0.0]
            records[0] = dataclasses.replace(first, position_m=moved)
        write_cambridge(folder, split, records)
    shutil.copy(source / "dino_par.txt", folder / "dino_par.txt")
    return folder


def _foreign_maps(dino_subset: Path, dino_map: Path, tmp: Path) -> dict[str, tuple]:
    """name -> (dataset, map path, the error's text)."""
    import dataclasses

    site_map = read_map(dino_map)
    world = tmp / "world.map.npz"
    write_map(world, dataclasses.replace(site_map, scene_frame="world"))
    other = _copy_dataset(dino_subset, tmp / "other_dino")
    # the same name, one training pose moved by 1 mm: another version of the dataset
    moved = _copy_dataset(dino_subset, tmp / "v2" / dino_subset.name, move_first_m=0.001)
    corrupt = tmp / "corrupt.map.npz"
    corrupt.write_bytes(dino_map.read_bytes()[:5000])
    return {
        "missing": (dino_subset, tmp / "missing.map.npz", "missing.map.npz"),
        "corrupt": (dino_subset, corrupt, "corrupt.map.npz"),
        "other dataset": (
            other,
            dino_map,
            f"built from dataset '{dino_subset.name}', but --dataset is 'other_dino'; allowed:",
        ),
        "other version": (moved, dino_map, "another version of the dataset"),
        "other scene frame": (dino_subset, world, "scene frame 'world' but the model's is 'map'"),
    }


@pytest.mark.parametrize(
    "case", ["missing", "corrupt", "other dataset", "other version", "other scene frame"]
)
def test_evaluate_refuses_a_bad_map(dino_subset, dino_map, gt_prior, tmp_path, case, capsys):
    dataset, map_path, message = _foreign_maps(dino_subset, dino_map, tmp_path)[case]
    argv = ["--dataset", str(dataset), "--map", str(map_path), "--output", str(tmp_path / "o")]
    if case == "other scene frame":  # a model file (scene frame 'map') is what names the frame
        sys.path.insert(0, str(Path(__file__).parent))
        from test_evaluate import CONTRACT, export_onnx

        metadata = {**CONTRACT, "posenet.dataset": dino_subset.name}
        argv += ["--onnx", str(export_onnx(tmp_path / "model.onnx", metadata))]
    else:
        argv += ["--checkpoint", str(gt_prior)]
    with pytest.raises(SystemExit) as exit_info:
        evaluate.cli([*argv, "--quiet"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "posenet_train.evaluate: error:" in err and message in err, err
    assert not (tmp_path / "o" / "summary.json").exists()


def test_evaluate_map_needs_a_prior(dino_subset, dino_map, tmp_path):
    with pytest.raises(PoseNetTrainError, match="--map refines the node's prior"):
        evaluate.main(dino_subset, tmp_path, baseline="nn", map_path=dino_map, progress=False)
    with pytest.raises(PoseNetTrainError, match="intrinsics are for refinement"):
        evaluate.main(dino_subset, tmp_path, baseline="nn", intrinsics="x.json", progress=False)
