"""The few CUDA runtime calls the engine code needs, from cuda-python, with checked errors.

UNTESTED ON A GPU HERE: no GPU and no cuda-python exist on the development machines; it is
exercised against test/fake_tensorrt.py's doubles (see the package docstring).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from posenet_ros.tensorrt.errors import EngineError

__all__ = ["CudaRuntime"]


def _load_cuda_runtime_module() -> Any:
    try:
        from cuda.bindings import runtime  # noqa: PLC0415  cuda-python >= 12.6 layout
    except ImportError:
        try:
            from cuda import cudart as runtime  # noqa: PLC0415  older cuda-python layout
        except ImportError as exc:
            raise EngineError(
                f"cuda-python cannot be imported ({exc}); install the release matching your "
                "CUDA major version, e.g. `pip install 'cuda-python>=12,<13'` on JetPack 6 "
                "(CUDA 12) or `pip install 'cuda-python>=11.8,<12'` on JetPack 5 (CUDA 11)"
            ) from exc
    return runtime


class CudaRuntime:
    """The few CUDA runtime calls the engine code needs, from cuda-python, with checked errors.

    cuda-python's functions return tuples ``(cudaError_t, *results)``; every call here checks
    the error and raises EngineError naming the call and CUDA's message. UNTESTED ON A GPU HERE.
    """

    def __init__(self, module: Any) -> None:
        self.rt = module

    @classmethod
    def load(cls) -> CudaRuntime:
        """cuda-python's runtime module (``cuda.bindings.runtime`` or ``cuda.cudart``)."""
        return cls(_load_cuda_runtime_module())

    def call(self, what: str, result: Any) -> Any:
        """Check a cuda-python result tuple; return its value(s) (None when it has none)."""
        if not isinstance(result, tuple):
            result = (result,)
        error, values = result[0], result[1:]
        if error != self.rt.cudaError_t.cudaSuccess:
            name = getattr(error, "name", str(error))
            detail = ""
            try:
                message = self.rt.cudaGetErrorString(error)
                message = message[1] if isinstance(message, tuple) else message
                detail = message.decode() if isinstance(message, bytes) else str(message)
            except Exception:  # the message is a courtesy; the error name is enough
                detail = ""
            raise EngineError(f"CUDA {what} failed: {name}" + (f" ({detail})" if detail else ""))
        if not values:
            return None
        return values[0] if len(values) == 1 else values

    def malloc(self, nbytes: int) -> int:
        """Device allocation of ``nbytes``; returns the device pointer as an int."""
        return int(self.call("cudaMalloc", self.rt.cudaMalloc(int(nbytes))))

    def free(self, pointer: int) -> None:
        """Free a device allocation."""
        self.call("cudaFree", self.rt.cudaFree(pointer))

    def stream_create(self) -> Any:
        """A new CUDA stream."""
        return self.call("cudaStreamCreate", self.rt.cudaStreamCreate())

    def stream_destroy(self, stream: Any) -> None:
        """Destroy a stream made by stream_create."""
        self.call("cudaStreamDestroy", self.rt.cudaStreamDestroy(stream))

    def stream_synchronize(self, stream: Any) -> None:
        """Wait until all work queued on ``stream`` has finished."""
        self.call("cudaStreamSynchronize", self.rt.cudaStreamSynchronize(stream))

    def copy_to_device(self, device: int, host: np.ndarray, stream: Any = None) -> None:
        """Copy a C-contiguous host array to ``device`` (on ``stream``, or synchronously)."""
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        if stream is None:
            result = self.rt.cudaMemcpy(device, host.ctypes.data, host.nbytes, kind)
            self.call("cudaMemcpy", result)
        else:
            self.call(
                "cudaMemcpyAsync",
                self.rt.cudaMemcpyAsync(device, host.ctypes.data, host.nbytes, kind, stream),
            )

    def copy_to_host(self, host: np.ndarray, device: int, stream: Any) -> None:
        """Queue a copy of ``host.nbytes`` from ``device`` into the C-contiguous ``host``."""
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self.call(
            "cudaMemcpyAsync",
            self.rt.cudaMemcpyAsync(host.ctypes.data, device, host.nbytes, kind, stream),
        )
