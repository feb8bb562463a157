"""Test doubles of the TensorRT Python API and cuda-python's runtime, for machines without a GPU.

They implement only the calls posenet_ros uses, with the names and signatures of NVIDIA's
Python API reference (TensorRT 8.5-10.x name-based tensor API; cuda-python's tuple-returning
runtime functions), and they are strict where the real ones are: TensorRT 8.x needs an
explicit-batch network for ONNX, a dynamic batch needs an optimisation profile, INT8 with a
dynamic batch needs a calibration profile whose shape the calibrator's batches match, every I/O
tensor needs an address before ``execute_async_v3``, TensorRT 11 has no FP16/INT8 flags and no
calibrator. Removed APIs (``build_engine``, ``max_workspace_size``, binding indices,
``execute_async_v2``) do not exist, so code that used them fails here.

The "engine" is the ONNX file run by ONNX Runtime on fake device memory (host bytes at fake
device addresses; copies go through the real host pointers the caller passes), so the plumbing
-- shapes, pointers, copies, output naming -- is exercised end to end. What this cannot check:
that NVIDIA's real implementation behaves as its documentation says. The on-device tests in
test_tensorrt_backend.py do that.
"""

from __future__ import annotations

import ctypes
import enum
import itertools
import json
import types

import numpy as np
import onnx
import onnxruntime as ort

PLAN_MAGIC = b"FAKEPLAN\n"


# ------------------------------------------------------------------------------- cuda-python


class cudaError_t(enum.IntEnum):  # noqa: N801  (cuda-python's name)
    cudaSuccess = 0
    cudaErrorInvalidValue = 1
    cudaErrorMemoryAllocation = 2
    cudaErrorNoDevice = 100


class cudaMemcpyKind(enum.IntEnum):  # noqa: N801
    cudaMemcpyHostToDevice = 1
    cudaMemcpyDeviceToHost = 2


class cudaStream_t:  # noqa: N801
    _ids = itertools.count(0x5000)

    def __init__(self) -> None:
        self._handle = next(self._ids)

    def __int__(self) -> int:
        return self._handle

    def getPtr(self) -> int:  # noqa: N802
        return self._handle


class FakeCudart(types.ModuleType):
    """``cuda.bindings.runtime`` double: (error, *values) tuples; device memory in a dict."""

    cudaError_t = cudaError_t
    cudaMemcpyKind = cudaMemcpyKind

    def __init__(self, fail: dict[str, cudaError_t] | None = None) -> None:
        super().__init__("fake_cudart")
        self.memory: dict[int, bytearray] = {}
        self.streams: set[int] = set()
        self.fail = dict(fail or {})
        self._next = 0x10000
        self.calls: list[str] = []

    def _error(self, name: str) -> cudaError_t:
        self.calls.append(name)
        return self.fail.get(name, cudaError_t.cudaSuccess)

    def cudaGetErrorString(self, error):  # noqa: N802
        return cudaError_t.cudaSuccess, f"fake message for {cudaError_t(error).name}".encode()

    def cudaMalloc(self, nbytes):  # noqa: N802
        error = self._error("cudaMalloc")
        if error:
            return error, None
        pointer = self._next
        self._next += (int(nbytes) + 0xFFF) & ~0xFFF
        self.memory[pointer] = bytearray(int(nbytes))
        return cudaError_t.cudaSuccess, pointer

    def cudaFree(self, pointer):  # noqa: N802
        error = self._error("cudaFree")
        if error:
            return (error,)
        if pointer not in self.memory:
            return (cudaError_t.cudaErrorInvalidValue,)
        del self.memory[pointer]
        return (cudaError_t.cudaSuccess,)

    def cudaStreamCreate(self):  # noqa: N802
        error = self._error("cudaStreamCreate")
        if error:
            return error, None
        stream = cudaStream_t()
        self.streams.add(int(stream))
        return cudaError_t.cudaSuccess, stream

    def cudaStreamDestroy(self, stream):  # noqa: N802
        self._error("cudaStreamDestroy")
        self.streams.discard(int(stream))
        return (cudaError_t.cudaSuccess,)

    def cudaStreamSynchronize(self, stream):  # noqa: N802
        error = self._error("cudaStreamSynchronize")
        return (error,)

    def _copy(self, dst, src, count, kind):
        if not isinstance(dst, int) or not isinstance(src, int):
            return (cudaError_t.cudaErrorInvalidValue,)
        if kind == cudaMemcpyKind.cudaMemcpyHostToDevice:
            buffer = self.memory.get(dst)
            if buffer is None or count > len(buffer):
                return (cudaError_t.cudaErrorInvalidValue,)
            buffer[:count] = ctypes.string_at(src, count)
        elif kind == cudaMemcpyKind.cudaMemcpyDeviceToHost:
            buffer = self.memory.get(src)
            if buffer is None or count > len(buffer):
                return (cudaError_t.cudaErrorInvalidValue,)
            ctypes.memmove(dst, bytes(buffer[:count]), count)
        else:
            return (cudaError_t.cudaErrorInvalidValue,)
        return (cudaError_t.cudaSuccess,)

    def cudaMemcpy(self, dst, src, count, kind):  # noqa: N802
        error = self._error("cudaMemcpy")
        return (error,) if error else self._copy(dst, src, count, kind)

    def cudaMemcpyAsync(self, dst, src, count, kind, stream):  # noqa: N802
        error = self._error("cudaMemcpyAsync")
        if error:
            return (error,)
        if int(stream) not in self.streams:
            return (cudaError_t.cudaErrorInvalidValue,)
        return self._copy(dst, src, count, kind)


# ---------------------------------------------------------------------------------- TensorRT


class _Dims(tuple):
    pass


class _Tensor:
    def __init__(self, name: str, shape) -> None:
        self.name = name
        self.shape = _Dims(shape)


class _Network:
    def __init__(self, flags: int, explicit_batch_required: bool) -> None:
        self.flags = flags
        self.explicit_batch_required = explicit_batch_required
        self.inputs: list[_Tensor] = []
        self.outputs: list[_Tensor] = []
        self.onnx_bytes = b""

    @property
    def num_inputs(self) -> int:
        return len(self.inputs)

    @property
    def num_outputs(self) -> int:
        return len(self.outputs)

    def get_input(self, index: int) -> _Tensor:
        return self.inputs[index]

    def get_output(self, index: int) -> _Tensor:
        return self.outputs[index]


def _dims(value_info) -> list[int]:
    return [
        d.dim_value if d.HasField("dim_value") else -1
        for d in value_info.type.tensor_type.shape.dim
    ]


class _Profile:
    def __init__(self) -> None:
        self.shapes: dict[str, tuple] = {}

    def set_shape(self, name, min, opt, max):  # noqa: A002  (TensorRT's argument names)
        self.shapes[name] = (tuple(min), tuple(opt), tuple(max))


def make_fake_tensorrt(version: str = "10.3.0", dla_cores: int = 2) -> types.ModuleType:
    """A ``tensorrt`` module double for ``version`` (8.5+, 10.x or 11.x behaviour)."""
    major = int(version.split(".")[0])
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.log: list[str] = []

    class Logger:
        VERBOSE, INFO, WARNING, ERROR = 4, 3, 2, 1

        def __init__(self, min_severity=2) -> None:
            self.min_severity = min_severity

    class NetworkDefinitionCreationFlag(enum.IntEnum):
        EXPLICIT_BATCH = 0
        STRONGLY_TYPED = 1

    class MemoryPoolType(enum.IntEnum):
        WORKSPACE = 0

    flags = {"GPU_FALLBACK": 3, "REFIT": 4}
    if major < 11:
        flags.update(FP16=0, INT8=1)
    BuilderFlag = enum.IntEnum("BuilderFlag", flags)

    class DeviceType(enum.IntEnum):
        GPU = 0
        DLA = 1

    class TensorIOMode(enum.IntEnum):
        NONE = 0
        INPUT = 1
        OUTPUT = 2

    class Config:
        def __init__(self) -> None:
            self.flags: set = set()
            self.pools: dict = {}
            self.profiles: list[_Profile] = []
            self.calibration_profile: _Profile | None = None
            self.int8_calibrator = None
            self.default_device_type = DeviceType.GPU
            self.DLA_core = -1

        def set_memory_pool_limit(self, pool, size):
            self.pools[pool] = int(size)

        def set_flag(self, flag):
            self.flags.add(flag)

        def add_optimization_profile(self, profile):
            self.profiles.append(profile)
            return len(self.profiles) - 1

        def set_calibration_profile(self, profile):
            if major >= 11:
                raise AttributeError("set_calibration_profile was removed in TensorRT 11")
            self.calibration_profile = profile

    class OnnxParser:
        def __init__(self, network: _Network, logger) -> None:
            self.network = network
            self.errors: list[str] = []

        @property
        def num_errors(self) -> int:
            return len(self.errors)

        def get_error(self, index: int) -> str:
            return self.errors[index]

        def parse(self, model: bytes, path=None) -> bool:
            if self.network.explicit_batch_required and not (
                self.network.flags & (1 << int(NetworkDefinitionCreationFlag.EXPLICIT_BATCH))
            ):
                self.errors.append("ONNX models need an explicit-batch network (TensorRT 8)")
                return False
            try:
                proto = onnx.load_from_string(bytes(model))
            except Exception as exc:  # noqa: BLE001  (the real parser reports, never raises)
                self.errors.append(f"not an ONNX model: {exc}")
                return False
            initializers = {t.name for t in proto.graph.initializer}
            self.network.inputs = [
                _Tensor(i.name, _dims(i)) for i in proto.graph.input if i.name not in initializers
            ]
            self.network.outputs = [_Tensor(o.name, _dims(o)) for o in proto.graph.output]
            self.network.onnx_bytes = bytes(model)
            return True

    class Builder:
        platform_has_fast_fp16 = True
        num_DLA_cores = dla_cores

        def __init__(self, logger) -> None:
            self.logger = logger

        def create_network(self, flags: int = 0) -> _Network:
            return _Network(int(flags), explicit_batch_required=major < 10)

        def create_builder_config(self) -> Config:
            return Config()

        def create_optimization_profile(self) -> _Profile:
            return _Profile()

        def build_serialized_network(self, network: _Network, config: Config):
            (image,) = network.inputs
            dynamic = any(d < 0 for d in image.shape)
            max_batch = image.shape[0]
            if dynamic:
                if not config.profiles or image.name not in config.profiles[0].shapes:
                    trt.log.append("dynamic input without an optimisation profile")
                    return None
                max_batch = config.profiles[0].shapes[image.name][2][0]
            calibrated = None
            if major < 11 and BuilderFlag.INT8 in config.flags:
                calibrated = self._calibrate(network, config, image, dynamic)
                if calibrated is None:
                    return None
            header = {
                "flags": sorted(int(f) for f in config.flags),
                "max_batch": int(max_batch),
                "device": int(config.default_device_type),
                "dla_core": int(config.DLA_core),
                "calibrated": calibrated,
                "workspace": config.pools.get(MemoryPoolType.WORKSPACE),
            }
            return PLAN_MAGIC + json.dumps(header).encode() + b"\n" + network.onnx_bytes

        @staticmethod
        def _calibrate(network, config, image, dynamic):
            calibrator = config.int8_calibrator
            if calibrator is None:
                trt.log.append("INT8 without a calibrator")
                return None
            cache = calibrator.read_calibration_cache()
            if cache:
                return {"from_cache": bytes(cache).decode()}
            if dynamic:
                if config.calibration_profile is None:
                    trt.log.append("INT8 with a dynamic input needs a calibration profile")
                    return None
                shape = config.calibration_profile.shapes[image.name][1]
            else:
                shape = tuple(image.shape)
            batches, total = 0, 0.0
            batch_size = calibrator.get_batch_size()
            if batch_size != shape[0]:
                trt.log.append(f"calibrator batch {batch_size} != profile batch {shape[0]}")
                return None
            memory = trt.cudart.memory
            nbytes = int(np.prod(shape)) * 4
            while True:
                pointers = calibrator.get_batch([image.name])
                if not pointers:
                    break
                (pointer,) = pointers
                data = np.frombuffer(bytes(memory[int(pointer)][:nbytes]), dtype=np.float32)
                total += float(data.sum())
                batches += 1
            calibrator.write_calibration_cache(f"batches={batches}".encode())
            return {"batches": batches, "sum": total}

    class Engine:
        def __init__(self, header: dict, onnx_bytes: bytes) -> None:
            self.header = header
            self.session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
            self._inputs = [i.name for i in self.session.get_inputs()]
            self._outputs = [o.name for o in self.session.get_outputs()]
            self._output_widths = {o.name: o.shape[1:] for o in self.session.get_outputs()}

        @property
        def num_io_tensors(self) -> int:
            return len(self._inputs) + len(self._outputs)

        def get_tensor_name(self, index: int) -> str:
            return (self._inputs + self._outputs)[index]

        def get_tensor_mode(self, name: str):
            if name in self._inputs:
                return TensorIOMode.INPUT
            return TensorIOMode.OUTPUT if name in self._outputs else TensorIOMode.NONE

        def get_tensor_dtype(self, name: str):
            return np.float32

        def create_execution_context(self):
            return Context(self)

    class Context:
        def __init__(self, engine: Engine) -> None:
            self.engine = engine
            self.shapes: dict[str, tuple] = {}
            self.addresses: dict[str, int] = {}

        def set_input_shape(self, name: str, shape) -> bool:
            if name not in self.engine._inputs or not all(isinstance(d, int) for d in shape):
                return False
            if not 1 <= shape[0] <= self.engine.header["max_batch"]:
                return False
            self.shapes[name] = tuple(shape)
            return True

        def get_tensor_shape(self, name: str):
            if name in self.shapes:
                return _Dims(self.shapes[name])
            batch = next(iter(self.shapes.values()), (-1,))[0]
            return _Dims((batch, *self.engine._output_widths[name]))

        def set_tensor_address(self, name: str, address: int) -> bool:
            if not isinstance(address, int):
                raise TypeError("set_tensor_address takes an int")
            self.addresses[name] = address
            return True

        def execute_async_v3(self, stream_handle: int) -> bool:
            if not isinstance(stream_handle, int):
                raise TypeError("execute_async_v3 takes an int stream handle")
            names = self.engine._inputs + self.engine._outputs
            if any(n not in self.addresses for n in names):
                trt.log.append("execute_async_v3 with an I/O tensor without address")
                return False
            memory = trt.cudart.memory
            (name,) = self.engine._inputs
            shape = self.shapes[name]
            nbytes = int(np.prod(shape)) * 4
            image = np.frombuffer(bytes(memory[self.addresses[name]][:nbytes]), np.float32)
            results = self.engine.session.run(None, {name: image.reshape(shape)})
            for out_name, value in zip(self.engine._outputs, results, strict=True):
                data = np.ascontiguousarray(value, dtype=np.float32).tobytes()
                memory[self.addresses[out_name]][: len(data)] = data
            return True

    class Runtime:
        def __init__(self, logger) -> None:
            self.DLA_core = -1

        def deserialize_cuda_engine(self, plan: bytes):
            plan = bytes(plan)
            if not plan.startswith(PLAN_MAGIC):
                trt.log.append("not a serialized engine")
                return None
            header, onnx_bytes = plan[len(PLAN_MAGIC) :].split(b"\n", 1)
            header = json.loads(header)
            trt.deserialized_with_dla_core = self.DLA_core
            return Engine(header, onnx_bytes)

    def nptype(dtype):
        return dtype

    trt.Logger = Logger
    trt.NetworkDefinitionCreationFlag = NetworkDefinitionCreationFlag
    trt.MemoryPoolType = MemoryPoolType
    trt.BuilderFlag = BuilderFlag
    trt.DeviceType = DeviceType
    trt.TensorIOMode = TensorIOMode
    trt.Builder = Builder
    trt.OnnxParser = OnnxParser
    trt.Runtime = Runtime
    trt.nptype = nptype
    if major < 11:

        class IInt8EntropyCalibrator2:
            def __init__(self) -> None:
                self._initialised = True

        trt.IInt8EntropyCalibrator2 = IInt8EntropyCalibrator2
    return trt


def plan_header(plan: bytes) -> dict:
    """The build settings a fake plan recorded (flags, max_batch, DLA, calibration...)."""
    assert plan.startswith(PLAN_MAGIC)
    return json.loads(plan[len(PLAN_MAGIC) :].split(b"\n", 1)[0])
