"""posenet_train.subset: evenly spread subsets of a dataset's splits, read back by the loaders."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from posenet_train.datasets import load_split
from posenet_train.errors import DatasetError, PoseNetTrainError
from posenet_train.subset import MARKER, cli, evenly_spread, main

sys.path.insert(0, str(Path(__file__).parent))
from tiny_scene import write_tiny_cambridge  # noqa: E402


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return write_tiny_cambridge(tmp_path_factory.mktemp("tiny") / "scene")


@pytest.mark.parametrize(
    ("total", "count", "expected"),
    [
        (10, 10, list(range(10))),
        (10, 1, [0]),
        (10, 2, [0, 9]),
        (10, 4, [0, 3, 6, 9]),
        (273, 3, [0, 136, 272]),
        (7, 6, [0, 1, 2, 4, 5, 6]),
    ],
)
def test_evenly_spread(total, count, expected):
    assert evenly_spread(total, count) == expected


@pytest.mark.parametrize("total", [1, 2, 39, 273])
def test_evenly_spread_is_distinct_sorted_and_spans_the_split(total):
    for count in range(1, total + 1):
        picked = evenly_spread(total, count)
        assert picked == sorted(set(picked)) and len(picked) == count
        assert picked[0] == 0 and (count == 1 or picked[-1] == total - 1)


@pytest.mark.parametrize(
    ("total", "count", "message"),
    [
        (10, 0, "need 1 <= count <= 10"),
        (10, 11, "cannot pick 11 of 10"),
        (0, 1, "cannot pick 1 of 0"),
        (10, -2, "need 1 <= count"),
        (10, 2.5, "count must be an integer"),
        (10, True, "count must be an integer"),
    ],
)
def test_evenly_spread_rejects_bad_counts(total, count, message):
    with pytest.raises(DatasetError, match=message):
        evenly_spread(total, count)


def test_subset_reads_back_with_the_source_poses_and_images(dataset, tmp_path):
    source = {s: load_split(dataset, s) for s in ("train", "test")}
    out = main(dataset, tmp_path / "sub", train=5, test=2)
    picked = {"train": evenly_spread(len(source["train"]), 5), "test": [0, 3]}
    for split, indices in picked.items():
        records = load_split(out, split)
        assert len(records) == len(indices)
        for record, i in zip(records, indices, strict=True):
            original = source[split][i]
            # The original image, not a copy.
            assert record.image_path.resolve() == original.image_path.resolve()
            np.testing.assert_allclose(record.position_m, original.position_m, atol=1e-9)
            np.testing.assert_allclose(record.quat_wxyz, original.quat_wxyz, atol=1e-9)
    marker = json.loads((out / MARKER).read_text())
    assert marker["indices"] == picked and marker["source_sizes"] == {"train": 12, "test": 4}
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["dataset_train.txt", "dataset_test.txt", MARKER]
    )
    # Default: the whole test split.
    whole = main(dataset, tmp_path / "whole", train=3)
    assert len(load_split(whole, "test")) == len(source["test"])


def test_existing_subset_needs_overwrite_and_foreign_folders_are_left_alone(dataset, tmp_path):
    out = main(dataset, tmp_path / "sub", train=3)
    with pytest.raises(DatasetError, match="already holds a subset"):
        main(dataset, out, train=4)
    main(dataset, out, train=4, overwrite=True)
    assert len(load_split(out, "train")) == 4
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep")
    with pytest.raises(DatasetError, match="holds files a subset does not write"):
        main(dataset, foreign, train=3, overwrite=True)
    assert (foreign / "notes.txt").read_text() == "keep"
    assert not (foreign / "dataset_train.txt").exists()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"train": 13}, "cannot pick 13 of 12"),
        ({"train": 0}, "need 1 <= count"),
        ({"train": 3, "test": 5}, "cannot pick 5 of 4"),
    ],
)
def test_bad_counts_write_nothing(dataset, tmp_path, kwargs, message):
    with pytest.raises(DatasetError, match=message):
        main(dataset, tmp_path / "sub", **kwargs)
    assert not (tmp_path / "sub").exists()


def test_missing_or_malformed_dataset_is_a_dataset_error(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        main(tmp_path / "missing", tmp_path / "sub", train=1)
    scene = write_tiny_cambridge(tmp_path / "scene", n_train=4, n_test=2)
    train_file = scene / "dataset_train.txt"
    train_file.write_text(train_file.read_text() + "seq1/frame00000.png 1 2 3 not numbers\n")
    with pytest.raises(DatasetError, match="dataset_train.txt"):
        main(scene, tmp_path / "sub", train=2)


def test_cli_writes_and_reports(dataset, tmp_path, capsys):
    out = tmp_path / "sub"
    assert cli(["--dataset", str(dataset), "--output", str(out), "--train", "6"]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert len(load_split(out, "train")) == 6
    assert cli(["--dataset", str(dataset), "--output", str(out), "--train", "6"]) == 1
    assert "posenet_train.subset: error: " in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["--train", "0"],
        ["--train", "-3"],
        ["--train", "many"],
        ["--train", "3", "--test", "0"],
        ["--train", "3", "--test", "1.5"],
        [],
    ],
)
def test_cli_rejects_bad_arguments(dataset, tmp_path, capsys, argv):
    with pytest.raises(SystemExit) as info:
        cli(["--dataset", str(dataset), "--output", str(tmp_path / "sub"), *argv])
    assert info.value.code == 2
    assert "error" in capsys.readouterr().err
    assert not (tmp_path / "sub").exists()


def test_errors_are_project_errors():
    assert issubclass(DatasetError, PoseNetTrainError)
