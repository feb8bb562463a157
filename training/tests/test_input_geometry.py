"""The network input size from the data (issue 15): whole frame by the camera's aspect ratio,
square for sets of both orientations, and the crop that cannot fit names the resize that does."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from posenet_core.contract import parse_metadata
from posenet_core.errors import PreprocessError
from posenet_core.images import read_rgb
from posenet_core.preprocess import preprocess, resize_shorter_and_center_crop
from posenet_train.errors import PoseNetTrainError
from posenet_train.input_geometry import (
    check_fits,
    choose_input_geometry,
    image_size_hw,
    resize_that_fits,
)
from posenet_train.train import cli
from posenet_train.train import main as train_main

sys.path.insert(0, str(Path(__file__).parent))
from tiny_scene import write_tiny_cambridge  # noqa: E402


@pytest.mark.parametrize(
    ("sizes", "resize", "crop_hw"),
    [
        ([(480, 640)], 128, (128, 168)),  # middlebury_dino: the measured recipe's input
        ([(320, 960)], 128, (128, 384)),  # the rendered 3:1 forward drive: the whole frame
        ([(384, 1280)], 128, (128, 424)),  # 3.3:1 (the issue's automotive camera)
        ([(640, 480)], 128, (168, 128)),  # portrait only: the whole portrait frame
        ([(480, 640), (640, 480)], 128, (128, 128)),  # both orientations: square
        ([(480, 640), (360, 640)], 128, (128, 168)),  # 4:3 and 16:9: the crop fits both
        ([(300, 2000)], 99, (99, 656)),  # wider than 4:1: the pixel budget shrinks the side
        ([(64, 64)], 128, (128, 128)),
    ],
)
def test_choose_input_geometry(sizes, resize, crop_hw):
    chosen = choose_input_geometry(sizes)
    assert (chosen.resize, chosen.crop_hw) == (resize, crop_hw)
    # The contract's own preprocessing takes every image of the set to exactly that input.
    for h, w in sizes:
        rgb = np.zeros((h, w, 3), np.uint8)
        assert resize_shorter_and_center_crop(rgb, resize, crop_hw).shape == (*crop_hw, 3)
    check_fits(sizes, resize, crop_hw)


def test_choose_input_geometry_rejects_no_images():
    with pytest.raises(PoseNetTrainError, match="no images"):
        choose_input_geometry([])


def test_resize_that_fits_the_issues_portrait_image():
    # The issue: 128x168 from a resize to 128 on a portrait image (192x128 after the resize).
    sizes = [(480, 640), (960, 640)]
    with pytest.raises(PoseNetTrainError, match=r"--resize 168 fits every image") as info:
        check_fits(sizes, 128, (128, 168))
    assert "960x640" in str(info.value) and "square --crop 128" in str(info.value)
    assert resize_that_fits(sizes, (128, 168)) == 168
    portrait = np.zeros((960, 640, 3), np.uint8)
    with pytest.raises(PreprocessError):
        resize_shorter_and_center_crop(portrait, 167, (128, 168))
    assert resize_shorter_and_center_crop(portrait, 168, (128, 168)).shape == (128, 168, 3)


def test_image_size_follows_the_exif_orientation(tmp_path):
    from PIL import Image

    # A phone photo stored landscape with "rotate 90" in EXIF: OpenCV (read_rgb) turns it.
    path = tmp_path / "phone.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.full((30, 40, 3), 128, np.uint8)).save(path, exif=exif)
    assert image_size_hw(path) == read_rgb(path).shape[:2] == (40, 30)
    plain = tmp_path / "plain.png"
    cv2.imwrite(str(plain), np.zeros((30, 40, 3), np.uint8))
    assert image_size_hw(plain) == (30, 40)


def _mixed_dataset(root: Path) -> Path:
    """The tiny scene with every other image turned to portrait (phone photos)."""
    dataset = write_tiny_cambridge(root / "mixed")
    for i, path in enumerate(sorted((dataset / "seq1").glob("*.png"))):
        if i % 2:
            cv2.imwrite(str(path), cv2.rotate(cv2.imread(str(path)), cv2.ROTATE_90_CLOCKWISE))
    return dataset


TINY = {"model": "posenet-tiny", "epochs": 1, "threads": 1, "progress": False, "max_steps": 2}


def test_crop_that_cannot_fit_a_portrait_image_names_the_resize(tmp_path, capsys):
    # The issue's crash with that input: a landscape crop on a set with portrait images stopped
    # at the first portrait image; now it stops before training and says what fits.
    dataset = _mixed_dataset(tmp_path)
    out = tmp_path / "run"
    argv = ["--dataset", str(dataset), "--output", str(out), "--model", "posenet-tiny"]
    argv += ["--resize", "32", "--crop", "32,42", "--no-progress", "--threads", "1"]
    assert cli(argv) == 2
    err = capsys.readouterr().err
    assert "posenet-train: error: --crop 32,42 does not fit a 64x48 image" in err
    assert "--resize 42 fits every image" in err
    assert not (out / "last.pt").exists()
    # The resize it names does fit, and a crop alone gets that resize itself.
    assert (
        cli(
            [
                *argv[:6],
                "--model",
                "posenet-tiny",
                "--resize",
                "42",
                "--crop",
                "32,42",
                "--epochs",
                "1",
                "--max-steps",
                "1",
                "--no-progress",
                "--threads",
                "1",
            ]
        )
        == 0
    )
    result = train_main(dataset, tmp_path / "crop_only", crop=(32, 42), **TINY)
    config = json.loads((Path(result["output"]) / "config.json").read_text())
    assert (config["resize"], config["crop"]) == (42, [32, 42])


def test_defaults_train_on_both_orientations_and_export_a_square_input(tmp_path):
    from posenet_train.export import main as export_main

    dataset = _mixed_dataset(tmp_path)
    result = train_main(dataset, tmp_path / "run", **TINY)
    config = json.loads((Path(result["output"]) / "config.json").read_text())
    assert (config["resize"], config["crop"]) == (128, [128, 128])
    model_file = tmp_path / "mixed.onnx"
    export_main(result["last"], model_file, dataset=str(dataset), calibration_images=2)
    import onnx

    props = {p.key: p.value for p in onnx.load(str(model_file)).metadata_props}
    info = parse_metadata(props, str(model_file))
    assert info.input_hw == (128, 128) and info.resize_shorter == 128
    # What the node does with such a model: every frame, in its own orientation, to 128x128.
    for shape in ((48, 64, 3), (64, 48, 3), (1080, 1920, 3), (1920, 1080, 3)):
        assert preprocess(np.zeros(shape, np.uint8), 128, (128, 128)).shape == (1, 3, 128, 128)


def test_defaults_follow_a_wide_camera(tmp_path):
    dataset = write_tiny_cambridge(tmp_path / "wide")
    for path in (dataset / "seq1").glob("*.png"):
        cv2.imwrite(str(path), cv2.resize(cv2.imread(str(path)), (96, 32)))  # 3:1
    result = train_main(dataset, tmp_path / "run", **TINY)
    config = json.loads((Path(result["output"]) / "config.json").read_text())
    assert (config["resize"], config["crop"]) == (128, [128, 384])
    result = train_main(dataset, tmp_path / "small", resize=32, **TINY)
    config = json.loads((Path(result["output"]) / "config.json").read_text())
    assert (config["resize"], config["crop"]) == (32, [32, 96])
