"""PyTorch dataset of posed images, and the helpers that make loading fast and deterministic.

Randomness (crop offsets, colour jitter) is drawn from torch's RNG only. PyTorch seeds the torch
RNG of every DataLoader worker from the loader's ``generator``, so a loader built by
:func:`make_dataloader` with a seed gives the same batches on every run, for any worker count
that stays the same. :func:`seed_worker` seeds numpy and ``random`` in workers too, for any
library code that uses them.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from posenet_core.datasets import CameraIntrinsics, PoseRecord
from posenet_core.images import read_rgb
from posenet_core.preprocess import center_crop, resize_shorter, resized_shape
from posenet_train.errors import DatasetError, PoseNetTrainError
from posenet_train.preprocess import random_crop, to_tensor_chw
from posenet_train.view_jitter import ViewJitter, scaled_camera_matrix

__all__ = [
    "PoseDataset",
    "color_jitter",
    "make_dataloader",
    "position_stats",
    "seed_worker",
]


def color_jitter(
    image_chw: torch.Tensor, strength: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Random brightness, contrast and saturation change of a 0..1 float CHW image.

    Each factor is drawn uniformly from ``[1 - strength, 1 + strength]`` (torch RNG), applied in
    that order as in torchvision's ColorJitter, and the result is clipped to 0..1.
    """
    if strength <= 0.0:
        return image_chw
    factors = 1.0 + strength * (2.0 * torch.rand(3, generator=generator) - 1.0)
    brightness, contrast, saturation = (float(f) for f in factors)
    out = image_chw * brightness
    grey_weights = torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)
    mean_grey = (out.clamp(0.0, 1.0) * grey_weights).sum(0).mean()
    out = (out - mean_grey) * contrast + mean_grey
    grey = (out.clamp(0.0, 1.0) * grey_weights).sum(0, keepdim=True)
    out = (out - grey) * saturation + grey
    return out.clamp_(0.0, 1.0)


class PoseDataset(Dataset):
    """Images and poses as tensors for training (random crop) or evaluation (centre crop).

    In training, ``view_jitter`` (when active) first turns the camera by a small random rotation
    about its centre (:mod:`posenet_train.view_jitter`): the resized image is warped and the
    returned quat_wxyz is the turned camera's, exactly. Pan and tilt need ``intrinsics`` (the
    camera of the original images); images whose size does not match them are only rolled.

    ``__getitem__`` returns ``(image_CHW float32 0..1 RGB, position_m float32 (3,),
    quat_wxyz float32 (4,))``; the image is not normalised (the model does that).

    With ``cache_resized`` every image is decoded and resized once, here in the constructor (in
    threads; OpenCV releases the GIL), and kept as uint8: a few hundred images take tens of MB,
    and DataLoader workers started later share the cache instead of decoding PNGs each epoch.
    """

    def __init__(
        self,
        records: Sequence[PoseRecord],
        *,
        resize_shorter: int = 256,
        crop_hw: tuple[int, int] = (224, 224),
        train: bool,
        color_jitter: float = 0.0,
        cache_resized: bool = True,
        max_shift_px: int | None = None,
        view_jitter: ViewJitter | None = None,
        intrinsics: CameraIntrinsics | None = None,
    ) -> None:
        if len(records) == 0:
            raise DatasetError("PoseDataset needs at least one record, got none")
        # The node's rule: the shorter side must cover the crop's shorter side; whether a
        # non-square crop fits the other side depends on each image's aspect ratio and is
        # checked when it is cut.
        if int(resize_shorter) < min(int(crop_hw[0]), int(crop_hw[1])):
            raise PoseNetTrainError(
                f"resize_shorter={resize_shorter} must be >= the crop's shorter side "
                f"{tuple(crop_hw)}"
            )
        if max_shift_px is not None and int(max_shift_px) < 0:
            raise PoseNetTrainError(f"max_shift_px must be >= 0 or None, got {max_shift_px}")
        self.max_shift_px = None if max_shift_px is None else int(max_shift_px)
        if not 0.0 <= float(color_jitter) < 1.0:
            raise PoseNetTrainError(f"color_jitter must be in [0, 1), got {color_jitter}")
        self.records = list(records)
        self.resize_shorter = int(resize_shorter)
        self.crop_hw = (int(crop_hw[0]), int(crop_hw[1]))
        self.train = bool(train)
        self.color_jitter = float(color_jitter)
        self.view_jitter = view_jitter if view_jitter is not None else ViewJitter()
        self.intrinsics = intrinsics
        self._camera_matrices: dict[tuple[int, int], np.ndarray | None] = {}
        self.positions_m = torch.from_numpy(
            np.stack([r.position_m for r in self.records]).astype(np.float32)
        )
        self.quats_wxyz = torch.from_numpy(
            np.stack([r.quat_wxyz for r in self.records]).astype(np.float32)
        )
        self._cache: list[np.ndarray] | None = None
        if cache_resized:
            threads = max(1, min(4, torch.get_num_threads()))
            with ThreadPoolExecutor(max_workers=threads) as pool:
                self._cache = list(pool.map(self._load_resized, range(len(self.records))))

    def __len__(self) -> int:
        return len(self.records)

    def _load_resized(self, index: int) -> np.ndarray:
        return resize_shorter(read_rgb(self.records[index].image_path), self.resize_shorter)

    def resized_image(self, index: int) -> np.ndarray:
        """The image resized to the shorter side (uint8 HWC RGB), from the cache when enabled."""
        if self._cache is not None:
            return self._cache[index]
        return self._load_resized(index)

    def center_crop_image(self, index: int) -> torch.Tensor:
        """The centre crop as a CHW float tensor (0..1 RGB), whatever ``train`` says: the same
        bytes as preprocess.resize_shorter_and_center_crop on the original image."""
        return to_tensor_chw(center_crop(self.resized_image(index), self.crop_hw))

    def camera_matrix(self, resized_hw: tuple[int, int]) -> np.ndarray | None:
        """K of a resized image of ``resized_hw`` pixels, or None when the intrinsics are unknown
        or describe another image size or orientation (a resize gives another shape)."""
        key = (int(resized_hw[0]), int(resized_hw[1]))
        if key not in self._camera_matrices:
            k = None
            intr = self.intrinsics
            if intr is not None:
                expected = resized_shape(intr.height, intr.width, self.resize_shorter)
                if expected == key:
                    k = scaled_camera_matrix(intr.K, (intr.height, intr.width), key)
            self._camera_matrices[key] = k
        return self._camera_matrices[key]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        quat_wxyz = self.quats_wxyz[index]
        if self.train:
            resized = self.resized_image(index)
            if self.view_jitter.active:
                resized, turned = self.view_jitter.apply(
                    resized, quat_wxyz.numpy(), self.camera_matrix(resized.shape[:2])
                )
                quat_wxyz = torch.from_numpy(np.asarray(turned, dtype=np.float32))
            image = to_tensor_chw(
                random_crop(resized, self.crop_hw, max_shift_px=self.max_shift_px)
            )
            image = color_jitter(image, self.color_jitter)
        else:
            image = self.center_crop_image(index)
        return image, self.positions_m[index], quat_wxyz


def position_stats(records: Sequence[PoseRecord]) -> tuple[np.ndarray, float]:
    """``(mean (3,), scale)`` of the camera centres, for the models' position normalisation.

    ``scale`` is the RMS distance of the centres from their mean (metres); 1.0 when all centres
    coincide (e.g. a single record), so dividing by it is always safe.
    """
    if len(records) == 0:
        raise DatasetError("position_stats needs at least one record, got none")
    positions = np.stack([np.asarray(r.position_m, dtype=np.float64) for r in records])
    mean = positions.mean(axis=0)
    scale = float(np.sqrt(np.mean(np.sum((positions - mean) ** 2, axis=1))))
    return mean, (scale if scale > 1e-9 else 1.0)


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: seed numpy and ``random`` from the worker's torch seed."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def make_dataloader(
    dataset: Dataset,
    *,
    batch_size: int,
    shuffle: bool,
    seed: int | None = None,
    num_workers: int = 0,
    drop_last: bool = False,
) -> DataLoader:
    """A DataLoader that is deterministic given ``seed`` (shuffling and augmentation).

    With ``num_workers == 0`` augmentation draws from the main process's torch RNG, which the
    caller seeds (``torch.manual_seed``); with workers, from per-worker RNGs seeded from ``seed``.
    """
    generator = None
    if seed is not None:
        generator = torch.Generator()
        generator.manual_seed(int(seed))
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
        drop_last=drop_last,
        generator=generator,
        worker_init_fn=seed_worker if num_workers > 0 else None,
        persistent_workers=num_workers > 0,
    )
