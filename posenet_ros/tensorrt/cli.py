"""The ``build_engine`` command (``ros2 run posenet_ros build_engine``, ``python -m
posenet_ros.tensorrt``): build or reuse the engine of a model file on this machine."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path

from posenet_core.calibration import default_calibration_path
from posenet_core.cli import non_negative_int, positive_int, run_main
from posenet_ros.model_file import load_model_info
from posenet_ros.tensorrt.build import build_engine_file
from posenet_ros.tensorrt.cache import Sidecar, find_cached_engine, resolve_cache_dir
from posenet_ros.tensorrt.calibration import load_calibration_images
from posenet_ros.tensorrt.errors import Log
from posenet_ros.tensorrt.key import EngineKey, current_key
from posenet_ros.tensorrt.options import (
    DEFAULT_CALIBRATION_BATCH,
    DEFAULT_MAX_BATCH,
    DEFAULT_PRECISION,
    DEFAULT_WORKSPACE_MIB,
    PRECISIONS,
    BuildOptions,
)
from posenet_ros.tensorrt.prepare import prepare_engine

__all__ = ["add_engine_options", "build_parser", "cli", "main"]


def main(
    model: str | Path,
    *,
    engine_cache_dir: str | Path | None = None,
    precision: str = DEFAULT_PRECISION,
    workspace_mib: int = DEFAULT_WORKSPACE_MIB,
    max_batch: int = DEFAULT_MAX_BATCH,
    dla_core: int | None = None,
    calibration: str | Path | None = None,
    calibration_batch: int = DEFAULT_CALIBRATION_BATCH,
    overwrite: bool = False,
    log: Log = print,
    key: EngineKey | None = None,
    build: Callable[..., Sidecar] = build_engine_file,
) -> Path:
    """Build (or reuse) the TensorRT engine of the model file ``model``; returns its path.

    A cached engine with the same key is kept unless ``overwrite``; stale engines of this model
    and precision (another ONNX file content, TensorRT or GPU) are replaced -- running this
    command is the explicit rebuild. INT8 reads ``calibration`` (default: the
    ``<model stem>_calibration.npy`` posenet_train.export wrote beside the model). ``key`` and
    ``build`` exist for tests. Raises PoseNetError subclasses with a clear message.
    """
    model = Path(model)
    info = load_model_info(str(model))
    if precision == "int8" and calibration is None:
        calibration = default_calibration_path(model)
    options = BuildOptions(
        precision=precision,
        workspace_mib=workspace_mib,
        max_batch=max_batch,
        dla_core=dla_core,
        calibration=None if calibration is None else str(calibration),
        calibration_batch=calibration_batch,
    )
    if options.precision == "int8":
        load_calibration_images(str(options.calibration), info.input_hw)  # fail before building
    key = key or current_key(model, precision)
    cache_dir = resolve_cache_dir(model, engine_cache_dir)
    lookup = find_cached_engine(cache_dir, model, key)
    if lookup.status == "hit" and not overwrite:
        assert lookup.sidecar is not None
        built_with = {k: lookup.sidecar.build.get(k) for k in ("max_batch", "dla_core")}
        wanted = {"max_batch": max_batch, "dla_core": dla_core}
        note = (
            f" (it was built with {built_with}; you asked for {wanted})"
            if built_with != wanted
            else ""
        )
        log(
            f"{lookup.engine_path} exists for this model, TensorRT and GPU: kept{note} "
            "(pass --overwrite to build it again)"
        )
        return lookup.engine_path
    path, _ = prepare_engine(
        model,
        info,
        engine_cache_dir=engine_cache_dir,
        options=options,
        rebuild=True,
        log=log,
        key=key,
        build=build,
    )
    return path


def add_engine_options(parser: argparse.ArgumentParser, *, precision_help: str) -> None:
    """``--engine-cache-dir`` and ``--precision``, the way build_engine and verify_engine (and
    the node's parameters) name an engine in the cache."""
    parser.add_argument(
        "--engine-cache-dir",
        default=None,
        help="folder of the cached engines (default: the model file's folder); the node's "
        "engine_cache_dir parameter must name the same folder",
    )
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=DEFAULT_PRECISION,
        help=f"{precision_help} (default {DEFAULT_PRECISION})",
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``build_engine`` argument parser."""
    p = argparse.ArgumentParser(
        prog="build_engine",
        description="Build the TensorRT engine of a posenet model file (.onnx) on this machine "
        "and cache it, named by its key (model content, TensorRT version, GPU, precision).",
    )
    p.add_argument("--model", required=True, help="the model file (.onnx) to build an engine for")
    add_engine_options(
        p, precision_help="engine precision; int8 calibrates on the exported calibration images"
    )
    p.add_argument(
        "--workspace-mib",
        type=positive_int,
        default=DEFAULT_WORKSPACE_MIB,
        help=f"TensorRT workspace memory limit in MiB (default {DEFAULT_WORKSPACE_MIB})",
    )
    p.add_argument(
        "--max-batch",
        type=positive_int,
        default=DEFAULT_MAX_BATCH,
        help=f"largest batch the engine accepts (default {DEFAULT_MAX_BATCH}; the node sends 1)",
    )
    p.add_argument(
        "--dla-core",
        type=non_negative_int,
        default=None,
        help="run on this Jetson DLA core (0 or 1), GPU fallback for unsupported layers "
        "(default: GPU only)",
    )
    p.add_argument(
        "--calibration",
        default=None,
        help="int8 only: calibration images .npy (default <model stem>_calibration.npy beside "
        "the model, written by posenet_train.export)",
    )
    p.add_argument(
        "--calibration-batch",
        type=positive_int,
        default=DEFAULT_CALIBRATION_BATCH,
        help=f"int8 only: images per calibration batch (default {DEFAULT_CALIBRATION_BATCH})",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="build again even when an engine with the same key is cached",
    )
    return p


def cli(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``build_engine`` / ``python -m posenet_ros.tensorrt``; exit status."""
    return run_main("build_engine", main, build_parser().parse_args(argv))
