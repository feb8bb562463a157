"""TensorRT engines for a model file: build, cache key, sidecar, load (the project's trtexec).

A package of small modules (read one at a time)::

    options.py      precisions, defaults, BuildOptions
    key.py          the cache key (model content, TensorRT version, GPU, precision)
    gpu.py          the installed TensorRT and the GPU (driver API; no GPU needed to test)
    cache.py        engine/sidecar file names, sidecars, the cache look-up
    calibration.py  INT8 calibration images in batches
    prepare.py      the cache policy (use, build, or refuse a stale engine)
    cuda.py         cuda-python calls                      (UNTESTED ON A GPU HERE)
    build.py        the TensorRT builder, INT8 calibrator  (UNTESTED ON A GPU HERE)
    run.py          EngineRunner: one engine on one stream (UNTESTED ON A GPU HERE)
    cli.py          build_engine


An engine is specific to the GPU and the TensorRT version that built it, so it is built on the
target from the portable ``.onnx`` model file and cached. Each engine file is named by its
**cache key** -- the SHA-256 of the ONNX file's bytes, the TensorRT version, the GPU (name and
compute capability) and the precision -- and has a JSON **sidecar** that records that key, the
build options and the model's ``posenet.*`` metadata::

    <cache dir>/<model stem>.<precision>.<key digest>.engine
    <cache dir>/<model stem>.<precision>.<key digest>.engine.json
    <cache dir>/<model stem>.<precision>.<key digest>.calibration.cache     (int8 only)

The cache directory defaults to the model file's folder. :func:`prepare_engine` is the policy
the node and the CLI share: a cached engine whose sidecar matches the current key is loaded; with
no engine for the model it is built (announced in the log; minutes on a Jetson); an engine of the
same model and precision whose key does **not** match (the ONNX file changed, TensorRT was
upgraded, another GPU) is refused with :class:`StaleEngineError` naming what differs -- never
rebuilt silently -- unless a rebuild is asked for (node parameter ``rebuild_engine``, or the CLI).

Command line (installed as ``ros2 run posenet_ros build_engine``)::

    python -m posenet_ros.tensorrt --model dino.onnx                   # FP16
    python -m posenet_ros.tensorrt --model dino.onnx --precision int8  # dino_calibration.npy
    python -m posenet_ros.tensorrt --model dino.onnx --dla-core 0      # Jetson DLA

Supported TensorRT: 8.5 to 10.x (JetPack 5.1 and 6), through the name-based tensor API
(``set_input_shape``, ``set_tensor_address``, ``execute_async_v3``). TensorRT 11 removed the
FP16/INT8 builder flags: with it only ``fp32`` engines can be built from a plain FP32 model file.
Device memory and the CUDA stream come from cuda-python (``cuda.bindings.runtime``, or the older
``cuda.cudart``); PyTorch is not needed. ``tensorrt`` and ``cuda`` are imported only inside the
functions that need them, so this package imports (and its cache logic is tested) without them.

What cannot be tested on the development machines (no GPU, no TensorRT) is kept in cuda.py,
build.py and run.py and written against NVIDIA's API reference; everything else -- keys,
sidecars, cache look-up, the stale-engine policy, calibration batching, the CLI -- is
unit-tested, and test/test_tensorrt_backend.py holds the on-device tests (skipped without a GPU).
"""

from posenet_ros.tensorrt.build import (
    build_engine_file,
    build_serialized_engine,
)
from posenet_ros.tensorrt.cache import (
    CacheLookup,
    Sidecar,
    calibration_cache_path_for,
    engine_path_for,
    find_cached_engine,
    make_sidecar,
    read_engine_bytes,
    read_sidecar,
    resolve_cache_dir,
    sidecar_path_for,
    write_json_atomic,
)
from posenet_ros.tensorrt.calibration import (
    CalibrationBatcher,
    load_calibration_images,
)
from posenet_ros.tensorrt.cli import (
    build_parser,
    cli,
    main,
)
from posenet_ros.tensorrt.cuda import (
    CudaRuntime,
)
from posenet_ros.tensorrt.errors import (
    EngineError,
    StaleEngineError,
)
from posenet_ros.tensorrt.gpu import (
    check_tensorrt_version,
    import_tensorrt,
    parse_version,
    query_gpu,
)
from posenet_ros.tensorrt.key import (
    EngineKey,
    current_key,
    file_sha256,
)
from posenet_ros.tensorrt.options import (
    DEFAULT_PRECISION,
    PRECISIONS,
    BuildOptions,
)
from posenet_ros.tensorrt.prepare import (
    prepare_engine,
)
from posenet_ros.tensorrt.run import (
    EngineRunner,
)

__all__ = [
    "DEFAULT_PRECISION",
    "PRECISIONS",
    "BuildOptions",
    "CacheLookup",
    "CalibrationBatcher",
    "CudaRuntime",
    "EngineError",
    "EngineKey",
    "EngineRunner",
    "Sidecar",
    "StaleEngineError",
    "build_engine_file",
    "build_parser",
    "build_serialized_engine",
    "calibration_cache_path_for",
    "check_tensorrt_version",
    "cli",
    "current_key",
    "engine_path_for",
    "file_sha256",
    "find_cached_engine",
    "import_tensorrt",
    "load_calibration_images",
    "main",
    "make_sidecar",
    "parse_version",
    "prepare_engine",
    "query_gpu",
    "read_engine_bytes",
    "read_sidecar",
    "resolve_cache_dir",
    "sidecar_path_for",
    "write_json_atomic",
]
