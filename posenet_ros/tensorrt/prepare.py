"""The cache policy the node and the CLI share: use a matching engine, build a missing one,
refuse a stale one (unless a rebuild is asked for)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from posenet_core.contract import ModelInfo
from posenet_ros.tensorrt.build import build_engine_file
from posenet_ros.tensorrt.cache import (
    Sidecar,
    calibration_cache_path_for,
    find_cached_engine,
    resolve_cache_dir,
    sidecar_path_for,
)
from posenet_ros.tensorrt.errors import EngineError, Log, StaleEngineError, emit
from posenet_ros.tensorrt.key import EngineKey, current_key
from posenet_ros.tensorrt.options import BuildOptions

__all__ = ["prepare_engine"]


def _remove_stale(stale: list[tuple[Path, list[str]]], log: Log | None) -> None:
    for engine, reasons in stale:
        for path in (engine, sidecar_path_for(engine), calibration_cache_path_for(engine)):
            try:
                path.unlink(missing_ok=True)
            except OSError as exc:
                emit(log, f"could not remove stale {path}: {exc}")
                continue
        emit(log, f"removed stale engine {engine} ({'; '.join(reasons)})")


def prepare_engine(
    model_path: str | Path,
    info: ModelInfo,
    *,
    engine_cache_dir: str | Path | None = None,
    options: BuildOptions | None = None,
    rebuild: bool = False,
    allow_build: bool = True,
    log: Log | None = None,
    key: EngineKey | None = None,
    build: Callable[..., Sidecar] = build_engine_file,
) -> tuple[Path, Sidecar]:
    """Find or build the engine of ``model_path`` for this TensorRT, GPU and precision.

    * a matching cached engine is used (``rebuild`` builds it again);
    * with no engine of this model and precision in the cache, one is built (``allow_build``
      False raises EngineError instead);
    * when only engines with another key exist (stale), StaleEngineError says what differs and
      how to rebuild -- unless ``rebuild``, which builds the new engine and then removes the
      stale ones.

    ``key`` defaults to :func:`current_key` (tensorrt and the CUDA driver); ``build`` is the
    builder (default :func:`build_engine_file`). Returns ``(engine path, sidecar)``.
    """
    options = options or BuildOptions()
    model_path = Path(model_path)
    cache_dir = resolve_cache_dir(model_path, engine_cache_dir)
    key = key or current_key(model_path, options.precision)
    if key.precision != options.precision:
        raise EngineError(
            f"key precision {key.precision} differs from the build precision {options.precision}"
        )
    lookup = find_cached_engine(cache_dir, model_path, key)
    if lookup.status == "hit" and not rebuild:
        emit(log, f"using cached TensorRT engine {lookup.engine_path} ({key.describe()})")
        assert lookup.sidecar is not None
        return lookup.engine_path, lookup.sidecar
    if lookup.status == "stale" and not rebuild:
        raise StaleEngineError(
            f"the cached TensorRT engine(s) for {model_path.name} ({key.precision}) in "
            f"{cache_dir} do not match this model file, TensorRT and GPU:\n"
            f"{lookup.stale_message()}\n"
            "An engine is never rebuilt silently: set the node parameter rebuild_engine:=true "
            "(or run `ros2 run posenet_ros build_engine --model "
            f"{model_path} --precision {key.precision}"
            + (f" --engine-cache-dir {cache_dir}" if engine_cache_dir else "")
            + "`) to build a new one, which takes minutes on a Jetson; or delete the files above"
        )
    if not allow_build:
        raise EngineError(
            f"no TensorRT {key.precision} engine for {model_path.name} in {cache_dir} "
            f"({key.describe()}); build it first with `ros2 run posenet_ros build_engine "
            f"--model {model_path} --precision {key.precision}`"
        )
    if lookup.status == "hit":
        emit(log, f"rebuild requested: replacing {lookup.engine_path}")
    elif lookup.status == "stale":
        emit(log, "rebuild requested: replacing stale engine(s)\n" + lookup.stale_message())
    else:
        emit(log, f"no cached TensorRT engine for {model_path.name} in {cache_dir}")
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EngineError(
            f"cannot create the engine cache folder {cache_dir}: {exc}; set engine_cache_dir "
            "to a writable folder"
        ) from exc
    if not os.access(cache_dir, os.W_OK):
        raise EngineError(
            f"the engine cache folder {cache_dir} is not writable; set engine_cache_dir "
            "(--engine-cache-dir) to a writable folder, e.g. ~/.cache/posenet_ros"
        )
    sidecar = build(model_path, info, key, options, lookup.engine_path, log)
    if lookup.stale:
        _remove_stale(lookup.stale, log)
    return lookup.engine_path, sidecar
