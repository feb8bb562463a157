"""The shared extractor and matcher: configuration checks, extraction, matching."""

from __future__ import annotations

import numpy as np
import pytest

from posenet_core.features import (
    FeatureConfig,
    FeatureError,
    extract_features,
    match_descriptors,
    to_gray,
)

BAD_CONFIGS = [
    ({"type": "surf"}, "surf"),
    ({"max_keypoints": 3}, "max_keypoints"),
    ({"max_keypoints": 100.0}, "max_keypoints"),
    ({"sift_contrast_threshold": -0.1}, "sift_contrast_threshold"),
    ({"sift_contrast_threshold": float("nan")}, "sift_contrast_threshold"),
    ({"orb_scale_factor": 1.0}, "orb_scale_factor"),
    ({"clahe_clip_limit": True}, "clahe_clip_limit"),
    ({"root_sift": 1}, "root_sift"),
]


@pytest.mark.parametrize(("values", "words"), BAD_CONFIGS)
def test_bad_configuration_is_named(values, words):
    with pytest.raises(FeatureError, match=words):
        FeatureConfig(**values)


def test_configuration_round_trips_through_json_numbers():
    config = FeatureConfig(type="orb", max_keypoints=500, clahe_clip_limit=2.0)
    data = config.to_dict()
    assert FeatureConfig.from_dict(data) == config
    assert FeatureConfig.from_dict({**data, "max_keypoints": 500.0}) == config
    with pytest.raises(FeatureError, match="unknown feature option"):
        FeatureConfig.from_dict({**data, "nfeatures": 3})
    with pytest.raises(FeatureError, match="object"):
        FeatureConfig.from_dict([1, 2])


@pytest.mark.parametrize(
    ("shape", "ok"),
    [
        ((48, 64), True),
        ((48, 64, 1), True),
        ((48, 64, 3), True),
        ((48, 64, 4), True),
        ((48, 64, 2), False),
        ((8, 8), False),
        ((4,), False),
    ],
)
def test_to_gray_shapes(shape, ok):
    image = np.zeros(shape, np.uint8)
    if ok:
        assert to_gray(image).shape == (48, 64)
    else:
        with pytest.raises(FeatureError):
            to_gray(image)


@pytest.mark.parametrize("kind", ["sift", "orb"])
def test_blank_image_has_no_keypoints(kind):
    config = FeatureConfig(type=kind)
    features = extract_features(np.full((120, 160, 3), 77, np.uint8), config)
    assert len(features) == 0
    assert features.descriptors.shape == (0, config.descriptor_bytes)


@pytest.mark.parametrize("kind", ["sift", "orb"])
def test_extraction_caps_keypoints_and_matches_itself(planar_scene, scene_tools, kind):
    config = FeatureConfig(type=kind, max_keypoints=300)
    image = planar_scene.render(scene_tools.keyframe_poses()[4], scene_tools.K_640)
    f = extract_features(image, config)
    assert 100 <= len(f) <= 300
    assert f.descriptors.dtype == np.uint8 and f.descriptors.shape[1] == config.descriptor_bytes
    q, r, d = match_descriptors(f.descriptors, f.descriptors, config, ratio=0.9)
    # every mutual, unambiguous match of an image with itself is the identity
    assert len(q) > 0.8 * len(f)
    np.testing.assert_array_equal(q, r)
    assert np.all(d < 0.01)  # float32 cosine: sqrt(2 - 2s) near s = 1 is ~1e-3


def test_shrunk_detection_reports_full_size_pixels(planar_scene, scene_tools):
    image = planar_scene.render(scene_tools.keyframe_poses()[4], scene_tools.K_640)
    full = extract_features(image, FeatureConfig(max_keypoints=200))
    half = extract_features(image, FeatureConfig(max_keypoints=200, max_image_side=320))
    assert half.xy[:, 0].max() > 400  # keypoints in the 640-wide frame's pixels
    q, r, _ = match_descriptors(half.descriptors, full.descriptors, FeatureConfig())
    distance = np.linalg.norm(half.xy[q] - full.xy[r], axis=1)
    assert np.median(distance) < 1.5


def test_hamming_distances_are_exact():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (20, 32), dtype=np.uint8)
    b = rng.integers(0, 256, (30, 32), dtype=np.uint8)
    b[7] = a[3]
    b[8] = a[3] ^ 1  # one bit off
    q, r, d = match_descriptors(a, b, FeatureConfig(type="orb"), ratio=1.0, mutual=False)
    brute = np.unpackbits(a[:, None] ^ b[None], axis=2).sum(axis=2)
    np.testing.assert_array_equal(d, brute[q, r])
    np.testing.assert_array_equal(r, brute.argmin(axis=1)[q])
    assert r[list(q).index(3)] == 7 and d[list(q).index(3)] == 0


def test_ratio_test_drops_ambiguous_matches():
    config = FeatureConfig()
    rng = np.random.default_rng(1)
    reference = rng.integers(0, 100, (10, 128)).astype(np.uint8)
    query = reference[[2]].copy()
    assert list(match_descriptors(query, reference, config)[1]) == [2]
    twins = np.vstack([reference, reference[[2]]])  # the same descriptor twice
    assert len(match_descriptors(query, twins, config)[0]) == 0
    assert len(match_descriptors(query[:0], reference, config)[0]) == 0
