"""The map file contract: round trip, and a clear MapFileError for every kind of bad file."""

from __future__ import annotations

import dataclasses
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from posenet_core.features import FeatureConfig
from posenet_core.mapfile import (
    FORMAT_VERSION,
    MapCamera,
    MapFileError,
    check_compatible,
    dataset_fingerprint,
    read_map,
    write_map,
)


@pytest.fixture(scope="module")
def small_map(scene_tools, planar_scene):
    return scene_tools.build_site_map(planar_scene, FeatureConfig(max_keypoints=64))


def test_round_trip(tmp_path, small_map):
    path = write_map(tmp_path / "site.map.npz", small_map)
    loaded = read_map(path)
    assert loaded.scene_frame == "map" and loaded.dataset == "planar"
    assert loaded.feature == small_map.feature and loaded.camera == small_map.camera
    assert loaded.version == FORMAT_VERSION
    assert loaded.provenance == {"builder": "core/tests/conftest.py"}
    for name in ("keyframe_T_world_camera", "obs_xy", "descriptor", "point_xyz_m"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(small_map, name))
        assert not getattr(loaded, name).flags.writeable
    s = loaded.keyframe_slice(1)
    assert s.stop - s.start == np.diff(small_map.keyframe_obs_offset)[1]
    assert "keyframes" in loaded.summary()
    assert path.stat().st_mode & 0o044  # readable by others like any data file (umask 022)


def _rewrite(path: Path, out: Path, *, drop=(), replace=None, meta=None) -> Path:
    """Copy an .npz, dropping arrays, replacing arrays, or editing meta_json."""
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files if k not in drop}
    if meta is not None:
        data = json.loads(bytes(arrays["meta_json"]).decode())
        meta(data)
        arrays["meta_json"] = np.frombuffer(json.dumps(data).encode(), np.uint8)
    arrays.update(replace or {})
    np.savez(out, **arrays)
    return out


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _set(key, value):
    def edit(data):
        target = data
        keys = key.split(".")
        for k in keys[:-1]:
            target = target[k]
        target[keys[-1]] = value

    return edit


CORRUPTIONS = [
    # (name, how to make the file from a good one, expected words in the message)
    ("missing file", lambda good, out: out, "not found"),
    ("not a zip", lambda good, out: _write(out, b"hello world"), "not a valid map"),
    (
        "truncated",
        lambda good, out: _write(out, good.read_bytes()[: good.stat().st_size // 2]),
        "corrupt or truncated",
    ),
    ("lacks an array", lambda g, o: _rewrite(g, o, drop=("obs_point_id",)), "obs_point_id"),
    (
        "pickled object array",
        lambda g, o: _rewrite(g, o, replace={"point_rgb": np.array([{"x": 1}], dtype=object)}),
        "pickled",
    ),
    ("newer version", lambda g, o: _rewrite(g, o, meta=_set("version", 99)), "version 99"),
    ("another format", lambda g, o: _rewrite(g, o, meta=_set("format", "x")), "format"),
    (
        "meta not JSON",
        lambda g, o: _rewrite(g, o, replace={"meta_json": np.frombuffer(b"{nope", np.uint8)}),
        "JSON",
    ),
    ("counts disagree", lambda g, o: _rewrite(g, o, meta=_set("counts.points", 1)), "counts"),
    (
        "unknown feature option",
        lambda g, o: _rewrite(g, o, meta=_set("feature.colour", 1)),
        "colour",
    ),
    ("bad feature type", lambda g, o: _rewrite(g, o, meta=_set("feature.type", "surf")), "surf"),
    ("bad camera", lambda g, o: _rewrite(g, o, meta=_set("camera.fx", -1.0)), "fx"),
    (
        "empty scene frame",
        lambda g, o: _rewrite(g, o, meta=_set("scene_frame", "")),
        "scene_frame",
    ),
]


@pytest.mark.parametrize(("name", "make", "words"), CORRUPTIONS, ids=[c[0] for c in CORRUPTIONS])
def test_bad_files_raise_map_file_error(tmp_path, small_map, name, make, words):
    good = write_map(tmp_path / "good.npz", small_map)
    bad = make(good, tmp_path / "bad.npz")
    with pytest.raises(MapFileError) as info:
        read_map(bad)
    message = str(info.value)
    assert words in message
    assert "python -m posenet_train.map" in message  # says how to make a valid one
    assert str(bad) in message


def _inconsistent(small_map, name):
    m = small_map
    if name == "descriptor width":
        return {"descriptor": m.descriptor[:, :32]}
    if name == "descriptor index out of range":
        index = m.obs_descriptor_index.copy()
        index[-1] = len(m.descriptor)
        return {"obs_descriptor_index": index}
    if name == "point id out of range":
        ids = m.obs_point_id.copy()
        ids[0] = m.num_points
        return {"obs_point_id": ids}
    if name == "offsets do not end at the count":
        off = m.keyframe_obs_offset.copy()
        off[-1] -= 1
        return {"keyframe_obs_offset": off}
    if name == "NaN point":
        xyz = m.point_xyz_m.copy()
        xyz[3, 1] = np.nan
        return {"point_xyz_m": xyz}
    if name == "pose not rigid":
        T = m.keyframe_T_world_camera.copy()
        T[2, :3, :3] *= 2.0
        return {"keyframe_T_world_camera": T}
    if name == "wrong dtype":
        return {"obs_xy": m.obs_xy.astype(np.float64)}
    raise AssertionError(name)


INCONSISTENT = [
    ("descriptor width", "array descriptor"),
    ("descriptor index out of range", "obs_descriptor_index"),
    ("point id out of range", "obs_point_id"),
    ("offsets do not end at the count", "keyframe_obs_offset"),
    ("NaN point", "point_xyz_m"),
    ("pose not rigid", "keyframe 2"),
    ("wrong dtype", "obs_xy"),
]


@pytest.mark.parametrize(("name", "words"), INCONSISTENT, ids=[c[0] for c in INCONSISTENT])
def test_inconsistent_arrays_are_refused_on_read_and_write(tmp_path, small_map, name, words):
    replace = _inconsistent(small_map, name)
    good = write_map(tmp_path / "good.npz", small_map)
    with pytest.raises(MapFileError, match=words):
        read_map(_rewrite(good, tmp_path / "bad.npz", replace=replace))
    with pytest.raises(MapFileError, match=words):
        write_map(tmp_path / "never.npz", dataclasses.replace(small_map, **replace))
    assert not (tmp_path / "never.npz").exists()


def test_compatibility_checks(small_map):
    check_compatible(small_map, scene_frame="map", dataset="planar")
    check_compatible(small_map, scene_frame=None, dataset="unknown")
    with pytest.raises(MapFileError, match="scene frame 'map'.*'odom'"):
        check_compatible(small_map, scene_frame="odom")
    with pytest.raises(MapFileError, match="dataset 'planar'.*'dino'"):
        check_compatible(small_map, dataset="dino")
    with pytest.raises(MapFileError, match="fingerprint"):
        check_compatible(small_map, dataset_fingerprint="f" * 64)


def test_fingerprint_ignores_order_and_rounding_but_not_poses():
    a = [
        ("a.png", np.zeros(3), np.array([1.0, 0, 0, 0])),
        ("b.png", np.ones(3), np.array([0, 1.0, 0, 0])),
    ]
    b = [a[1], (a[0][0], a[0][1] + 1e-9, -a[0][2])]
    assert dataset_fingerprint(a) == dataset_fingerprint(b)
    c = [a[0], (a[1][0], a[1][1] + 0.01, a[1][2])]
    assert dataset_fingerprint(a) != dataset_fingerprint(c)


def test_camera_matrix():
    cam = MapCamera(640, 480, 500.0, 510.0, 320.0, 240.0)
    np.testing.assert_array_equal(cam.K, [[500, 0, 320], [0, 510, 240], [0, 0, 1]])
    assert MapCamera.from_dict(cam.to_dict(), "x") == cam
    with pytest.raises(MapFileError, match="distortion"):
        MapCamera.from_dict({**cam.to_dict(), "distortion": [0.1, 0.2]}, "x", MapFileError)


def test_npz_written_by_numpy_is_a_plain_zip(tmp_path, small_map):
    path = write_map(tmp_path / "m.npz", small_map)
    with zipfile.ZipFile(path) as z:
        names = sorted(z.namelist())
        assert "meta_json.npy" in names
        assert all(i.compress_type == zipfile.ZIP_DEFLATED for i in z.infolist())
