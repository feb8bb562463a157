"""posenet_core.cli: the argparse value types and running a tool's main() from parsed options."""

from __future__ import annotations

import argparse

import pytest

from posenet_core.cli import (
    int_at_least,
    main_arguments,
    non_negative_float,
    number,
    positive_float,
    positive_int,
    run_main,
)
from posenet_core.errors import DatasetError


@pytest.mark.parametrize(
    "parse, text, expected",
    [
        (positive_int, "3", 3),
        (int_at_least(0), "0", 0),
        (positive_float, "0.5", 0.5),
        (non_negative_float, "0", 0.0),
        (number(low=-1.0, high=1.0), "-1", -1.0),
    ],
)
def test_types_accept(parse, text, expected):
    assert parse(text) == expected


@pytest.mark.parametrize(
    "parse, text, message",
    [
        (positive_int, "0", "must be >= 1, got 0"),
        (positive_int, "two", "expected an integer, got 'two'"),
        (int_at_least(2), "1.5", "expected an integer, got '1.5'"),
        (positive_float, "0", "must be a positive number, got '0'"),
        (positive_float, "inf", "must be a positive number, got 'inf'"),
        (non_negative_float, "-0.1", "must be >= 0.0, got '-0.1'"),
        (non_negative_float, "nan", "must be finite, got 'nan'"),
        (number(high=1.0), "2", "must be <= 1.0, got '2'"),
        (number(), "x", "expected a number, got 'x'"),
    ],
)
def test_types_name_the_bad_value(parse, text, message):
    with pytest.raises(argparse.ArgumentTypeError, match=message):
        parse(text)


def tool(dataset: str, *, batch_size: int = 1, progress: bool = True) -> dict:
    if dataset == "missing":
        raise DatasetError(f"dataset folder not found: {dataset}")
    return {"dataset": dataset, "batch_size": batch_size, "progress": progress}


def parsed(**values) -> argparse.Namespace:
    return argparse.Namespace(**values)


def test_main_arguments_pass_options_by_name_and_overrides():
    args = parsed(dataset="d", batch_size=4, no_progress=True)
    kwargs = main_arguments(tool, args, handled=("no_progress",), progress=not args.no_progress)
    assert kwargs == {"dataset": "d", "batch_size": 4, "progress": False}


@pytest.mark.parametrize(
    "args, handled, overrides, message",
    [
        (parsed(dataset="d", threads=2), (), {}, "threads reach no parameter of tool"),
        (parsed(dataset="d"), (), {"num_threads": 2}, r"tool\(\) takes no argument\(s\) num_"),
    ],
)
def test_main_arguments_refuse_options_that_reach_nothing(args, handled, overrides, message):
    with pytest.raises(TypeError, match=message):
        main_arguments(tool, args, handled=handled, **overrides)


def test_run_main_statuses(capsys):
    results = []
    assert run_main("tool", tool, parsed(dataset="d"), then=results.append) == 0
    assert results == [{"dataset": "d", "batch_size": 1, "progress": True}]
    assert run_main("tool", tool, parsed(dataset="d"), then=lambda result: 1) == 1
    assert run_main("tool", tool, parsed(dataset="missing"), error_status=3) == 3
    assert capsys.readouterr().err == "tool: error: dataset folder not found: missing\n"
