"""Tests of posenet_train.data: PoseDataset, loaders' determinism, position statistics."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from posenet_core.datasets import PoseRecord
from posenet_core.images import read_rgb
from posenet_core.preprocess import resize_shorter_and_center_crop
from posenet_train.data import (
    PoseDataset,
    color_jitter,
    make_dataloader,
    position_stats,
)
from posenet_train.errors import DatasetError, PoseNetTrainError

sys.path.insert(0, str(Path(__file__).parent))
from tiny_scene import random_records  # noqa: E402


@pytest.mark.parametrize("cache_resized", [True, False])
def test_eval_items_are_the_node_preprocessing(tmp_path: Path, cache_resized: bool) -> None:
    records = random_records(tmp_path)
    dataset = PoseDataset(
        records, resize_shorter=24, crop_hw=(20, 22), train=False, cache_resized=cache_resized
    )
    assert len(dataset) == len(records)
    for index, record in enumerate(records):
        image, position, quat = dataset[index]
        expected = resize_shorter_and_center_crop(read_rgb(record.image_path), 24, (20, 22))
        assert image.dtype == torch.float32 and image.shape == (3, 20, 22)
        assert torch.equal(image, torch.from_numpy(expected.transpose(2, 0, 1).copy()) / 255.0)
        assert position.dtype == torch.float32 and quat.dtype == torch.float32
        np.testing.assert_allclose(position.numpy(), record.position_m, rtol=1e-6)
        np.testing.assert_allclose(quat.numpy(), record.quat_wxyz, rtol=1e-6)


def test_train_items_are_random_crops_and_seeded(tmp_path: Path) -> None:
    records = random_records(tmp_path, count=2)
    dataset = PoseDataset(records, resize_shorter=24, crop_hw=(16, 16), train=True)
    resized = dataset.resized_image(0)
    torch.manual_seed(3)
    first = [dataset[0][0] for _ in range(8)]
    torch.manual_seed(3)
    again = [dataset[0][0] for _ in range(8)]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert len({a.numpy().tobytes() for a in first}) > 1
    for image in first:  # each is a window of the resized image
        window = (image.numpy().transpose(1, 2, 0) * 255.0).round().astype(np.uint8)
        found = any(
            np.array_equal(resized[t : t + 16, s : s + 16], window)
            for t in range(resized.shape[0] - 15)
            for s in range(resized.shape[1] - 15)
        )
        assert found


def test_color_jitter_range_and_identity() -> None:
    image = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(0))
    assert color_jitter(image, 0.0) is image
    jittered = color_jitter(image, 0.4, torch.Generator().manual_seed(1))
    assert jittered.shape == image.shape and not torch.equal(jittered, image)
    assert float(jittered.min()) >= 0.0 and float(jittered.max()) <= 1.0
    again = color_jitter(image, 0.4, torch.Generator().manual_seed(1))
    assert torch.equal(jittered, again)


def test_dataloader_with_workers_is_deterministic(tmp_path: Path) -> None:
    records = random_records(tmp_path, count=6)
    dataset = PoseDataset(
        records, resize_shorter=24, crop_hw=(16, 16), train=True, color_jitter=0.2
    )

    def epoch_batches(seed: int) -> list[torch.Tensor]:
        loader = make_dataloader(dataset, batch_size=3, shuffle=True, seed=seed, num_workers=2)
        return [images for images, _, _ in loader]

    first, again, other = epoch_batches(5), epoch_batches(5), epoch_batches(6)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, other, strict=True))


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"records": []}, DatasetError, "at least one record"),
        ({"resize_shorter": 10}, PoseNetTrainError, r"resize_shorter=10 must be >= the crop"),
        ({"max_shift_px": -2}, PoseNetTrainError, r"max_shift_px must be >= 0"),
        ({"color_jitter": 1.5}, PoseNetTrainError, r"color_jitter must be in \[0, 1\)"),
    ],
)
def test_pose_dataset_bad_arguments(tmp_path: Path, kwargs, error, message) -> None:
    arguments = {"records": random_records(tmp_path, count=1), "crop_hw": (16, 16), "train": True}
    arguments.update(kwargs)
    with pytest.raises(error, match=message):
        PoseDataset(**arguments)


def test_pose_dataset_names_unreadable_image(tmp_path: Path) -> None:
    records = random_records(tmp_path, count=2)
    records[1].image_path.write_bytes(b"broken")
    with pytest.raises(DatasetError, match="img1.png: cannot read image"):
        PoseDataset(records, train=False, resize_shorter=24, crop_hw=(16, 16))


def test_position_stats() -> None:
    def record(position):
        return PoseRecord(Path("x.png"), position, [1.0, 0.0, 0.0, 0.0])

    mean, scale = position_stats([record([0, 0, 0]), record([2, 0, 0]), record([1, 3, 0])])
    np.testing.assert_allclose(mean, [1, 1, 0])
    # Distances from the mean: sqrt(2), sqrt(2), 2 -> RMS sqrt((2 + 2 + 4) / 3).
    assert scale == pytest.approx(np.sqrt(8 / 3))
    assert position_stats([record([5, 5, 5])])[1] == 1.0
    with pytest.raises(DatasetError, match="at least one"):
        position_stats([])
