"""Running a deserialized engine on one CUDA stream: the node's inference on a GPU.

UNTESTED ON A GPU HERE: written against NVIDIA's API reference and exercised against
test/fake_tensorrt.py's doubles; the on-device tests run it for real (see the package docstring).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from posenet_ros.tensorrt.cuda import CudaRuntime
from posenet_ros.tensorrt.errors import EngineError
from posenet_ros.tensorrt.gpu import import_tensorrt

__all__ = ["EngineRunner"]


def _stream_handle(stream: Any) -> int:
    """The integer handle TensorRT's ``execute_async_v3`` takes, from a cudaStream_t."""
    try:
        return int(stream)
    except TypeError:
        return int(stream.getPtr())


class EngineRunner:
    """Runs a deserialized TensorRT engine on one CUDA stream: the node's inference on a GPU.

    Uses only the name-based tensor API of TensorRT >= 8.5 (``num_io_tensors``,
    ``get_tensor_name/mode/dtype``, ``set_input_shape``, ``get_tensor_shape``,
    ``set_tensor_address``, ``execute_async_v3``). Device buffers are allocated on first use
    and grown when a larger batch arrives. Not thread-safe: one caller at a time (the node's
    inference worker). UNTESTED ON A GPU HERE.
    """

    def __init__(
        self,
        engine_bytes: bytes,
        input_name: str,
        output_names: Sequence[str],
        *,
        dla_core: int | None = None,
        trt: Any = None,
        cuda: CudaRuntime | None = None,
    ) -> None:
        self._trt = trt if trt is not None else import_tensorrt()
        self._cuda = cuda if cuda is not None else CudaRuntime.load()
        self._buffers: dict[str, tuple[int, int]] = {}
        self._stream = None
        self._logger = self._trt.Logger(self._trt.Logger.WARNING)
        self._runtime = self._trt.Runtime(self._logger)
        if dla_core is not None:
            self._runtime.DLA_core = int(dla_core)
        self.engine = self._runtime.deserialize_cuda_engine(engine_bytes)
        if self.engine is None:
            raise EngineError(
                "TensorRT cannot deserialize the engine (built by another TensorRT version or "
                "for another GPU, or corrupt); rebuild it"
            )
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        input_mode = self._trt.TensorIOMode.INPUT
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == input_mode]
        self._all_outputs = [n for n in names if n not in inputs]
        if inputs != [input_name]:
            raise EngineError(
                f"the engine's inputs are {inputs}; the model file's contract has one, "
                f"{input_name!r}"
            )
        missing = [n for n in output_names if n not in self._all_outputs]
        if missing:
            raise EngineError(
                f"the engine has no output(s) {missing}; its outputs are {self._all_outputs}"
            )
        self.input_name = input_name
        self.output_names = list(output_names)
        self._dtypes = {n: self._numpy_dtype(self.engine.get_tensor_dtype(n)) for n in names}
        if self._dtypes[input_name] != np.float32:
            raise EngineError(
                f"the engine's input {input_name!r} is {self._dtypes[input_name]}; "
                "expected float32"
            )
        self.context = self.engine.create_execution_context()
        if self.context is None:
            raise EngineError("TensorRT could not create an execution context (out of memory?)")
        self._stream = self._cuda.stream_create()

    def _numpy_dtype(self, trt_dtype: Any) -> np.dtype:
        try:
            return np.dtype(self._trt.nptype(trt_dtype))
        except TypeError:  # BF16/FP8/INT4 have no numpy type: raw bytes of the right size
            return np.dtype((np.void, int(trt_dtype.itemsize)))

    def _device_buffer(self, name: str, nbytes: int) -> int:
        pointer, capacity = self._buffers.get(name, (0, 0))
        if capacity < nbytes:
            if pointer:
                self._cuda.free(pointer)
                del self._buffers[name]
            pointer = self._cuda.malloc(max(nbytes, 1))
            self._buffers[name] = (pointer, max(nbytes, 1))
        return pointer

    def run(self, image_BCHW: np.ndarray) -> dict[str, np.ndarray]:
        """Outputs (``output_names``) for one C-contiguous float32 ``[N,3,H,W]`` batch."""
        image = np.ascontiguousarray(image_BCHW, dtype=np.float32)
        shape = tuple(int(d) for d in image.shape)
        if not self.context.set_input_shape(self.input_name, shape):
            raise EngineError(
                f"input shape {list(shape)} is outside the engine's optimisation profile"
            )
        input_pointer = self._device_buffer(self.input_name, image.nbytes)
        self.context.set_tensor_address(self.input_name, input_pointer)
        host_outputs: dict[str, tuple[np.ndarray, int]] = {}
        for name in self._all_outputs:  # every I/O tensor needs an address, wanted or not
            out_shape = tuple(int(d) for d in self.context.get_tensor_shape(name))
            if any(d < 0 for d in out_shape):
                raise EngineError(f"output {name!r} has unresolved shape {list(out_shape)}")
            host = np.empty(out_shape, dtype=self._dtypes[name])
            pointer = self._device_buffer(name, host.nbytes)
            self.context.set_tensor_address(name, pointer)
            host_outputs[name] = (host, pointer)
        self._cuda.copy_to_device(input_pointer, image, self._stream)
        if not self.context.execute_async_v3(_stream_handle(self._stream)):
            raise EngineError("TensorRT execute_async_v3 failed (see TensorRT's messages)")
        for name in self.output_names:
            host, pointer = host_outputs[name]
            self._cuda.copy_to_host(host, pointer, self._stream)
        self._cuda.stream_synchronize(self._stream)
        return {name: host_outputs[name][0] for name in self.output_names}

    def close(self) -> None:
        """Free the device buffers and the stream (also done when garbage-collected)."""
        buffers, self._buffers = self._buffers, {}
        for pointer, _ in buffers.values():
            try:
                self._cuda.free(pointer)
            except EngineError:
                pass  # shutting down: nothing useful to do with a failed free
        if self._stream is not None:
            stream, self._stream = self._stream, None
            try:
                self._cuda.stream_destroy(stream)
            except EngineError:
                pass

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # never raise from a finaliser
            pass
