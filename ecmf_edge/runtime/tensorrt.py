"""TensorRT 10 runtime: engines that fit this GPU, device memory, and a session-like runner.

A TensorRT engine is specific to the TensorRT version, the GPU model and its compute
capability it was built with: every engine bundle records an :class:`EngineKey`, and an
engine is only opened when the key of this machine matches (otherwise a one-line
``ModelError`` says to rebuild with ``ecmf-edge build-engine``).

:class:`TensorRTRunner` answers the small part of ``onnxruntime.InferenceSession`` the
encoders use (``get_inputs``, ``get_outputs``, ``run``), so every encoder runs unchanged on
an engine. It executes with named I/O tensors and ``execute_async_v3`` on its own CUDA
stream; device buffers are owned by the runner, reused between calls, grown when an input
shape grows, and freed by :meth:`TensorRTRunner.close`.

Device memory goes through :class:`CudaDevice` (cuda-python's runtime bindings, or PyTorch's
CUDA allocator when cuda-python is absent), so the runner's logic does not depend on one
CUDA binding and can be exercised with any object offering the same five methods.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ecmf_edge.errors import DependencyError, DeviceError, InputError, ModelError

__all__ = ["import_tensorrt", "EngineKey", "current_engine_key", "CudaDevice", "TensorRTRunner", "MIN_TENSORRT_MAJOR"]

logger = logging.getLogger("ecmf_edge")

MIN_TENSORRT_MAJOR = 10
REBUILD = "ecmf-edge build-engine --precision {precision}"


def import_tensorrt() -> Any:
    """The ``tensorrt`` module (10.x or later).

    Raises:
        DependencyError: TensorRT is not installed or is older than 10.
    """
    try:
        import tensorrt as trt
    except ImportError:
        raise DependencyError(
            "backend 'tensorrt' needs TensorRT 10 (pip install 'ecmf-edge[trt]' on a machine with an NVIDIA GPU and "
            "driver; on Jetson it comes with JetPack 6): or use --backend onnxruntime"
        ) from None
    major = int(str(getattr(trt, "__version__", "0")).split(".")[0] or 0)
    if major < MIN_TENSORRT_MAJOR:
        raise DependencyError(f"TensorRT {trt.__version__} is too old: ecmf-edge builds engines with TensorRT "
                              f"{MIN_TENSORRT_MAJOR} or later (JetPack 6 on Jetson); upgrade it or use --backend onnxruntime")
    return trt


@dataclass(frozen=True)
class EngineKey:
    """What an engine is bound to: TensorRT version, GPU name and compute capability."""

    tensorrt: str
    gpu: str
    compute_capability: str

    @property
    def slug(self) -> str:
        """A folder-safe name, e.g. ``trt10.3.0-sm87-orin``."""
        gpu = "".join(c if c.isalnum() else "-" for c in self.gpu.lower()).strip("-")
        return f"trt{self.tensorrt}-sm{self.compute_capability.replace('.', '')}-{gpu}"

    def to_dict(self) -> dict[str, str]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> EngineKey:
        """The key recorded in a manifest.

        Raises:
            ModelError: the record is missing or incomplete.
        """
        if not isinstance(data, dict) or not all(isinstance(data.get(k), str) for k in ("tensorrt", "gpu", "compute_capability")):
            raise ModelError("the engine bundle records no TensorRT/GPU key: rebuild it with `ecmf-edge build-engine`")
        return cls(data["tensorrt"], data["gpu"], data["compute_capability"])

    def mismatch(self, other: EngineKey) -> str | None:
        """Why engines built for ``self`` cannot run where ``other`` holds; None when they can.

        TensorRT engines are tied to the exact TensorRT version and to the GPU's compute
        capability; a different GPU model of the same capability is accepted with a warning
        (the engine runs, but its tactics were timed on the other model).
        """
        if self.tensorrt != other.tensorrt:
            return f"built with TensorRT {self.tensorrt}, this machine has TensorRT {other.tensorrt}"
        if self.compute_capability != other.compute_capability:
            return (f"built for {self.gpu} (compute capability {self.compute_capability}), this GPU is {other.gpu} "
                    f"(compute capability {other.compute_capability})")
        return None


class CudaDevice:
    """The few CUDA runtime calls the runner needs, on one device."""

    def __init__(self, device: int = 0) -> None:
        """Bind to GPU ``device``.

        Raises:
            DeviceError: no CUDA binding is installed or no such GPU is visible.
        """
        self.device = int(device)
        # Exactly one is set: cuda-python's runtime module, else the torch module (Any: both are optional
        # dependencies, and each method uses the one that is set).
        self._cudart: Any = None
        self._torch: Any = None
        try:
            from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
        except ImportError:
            try:
                from cuda import cudart  # older cuda-python
            except ImportError:
                cudart = None
        if cudart is not None:
            self._cudart = cudart
            count = self._check(cudart.cudaGetDeviceCount())
            if self.device >= count:
                raise DeviceError(f"CUDA device {self.device} not found ({count} visible): pass --device 0..{count - 1}")
            self._check(cudart.cudaSetDevice(self.device))
            return
        torch: Any  # the module, or None without PyTorch
        try:
            import torch
        except ImportError:
            torch = None
        if torch is None or not torch.cuda.is_available():
            raise DeviceError("no CUDA device is usable (install cuda-python, or PyTorch with CUDA, and check the "
                              "NVIDIA driver with nvidia-smi): or use --backend onnxruntime")
        if self.device >= torch.cuda.device_count():
            raise DeviceError(f"CUDA device {self.device} not found: pass --device 0..{torch.cuda.device_count() - 1}")
        self._torch = torch
        self._blocks: dict[int, Any] = {}

    def _check(self, result: Any) -> Any:
        error, *rest = result if isinstance(result, tuple) else (result,)
        if int(error) != 0:
            raise DeviceError(f"CUDA call failed ({error}): check the GPU with nvidia-smi")
        return rest[0] if len(rest) == 1 else rest

    def name_and_capability(self) -> tuple[str, str]:
        """GPU name and compute capability ("8.7")."""
        if self._cudart is not None:
            props = self._check(self._cudart.cudaGetDeviceProperties(self.device))
            name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
            return name.strip("\x00 "), f"{props.major}.{props.minor}"
        major, minor = self._torch.cuda.get_device_capability(self.device)
        return self._torch.cuda.get_device_name(self.device), f"{major}.{minor}"

    def malloc(self, nbytes: int) -> int:
        if self._cudart is not None:
            return int(self._check(self._cudart.cudaMalloc(max(1, nbytes))))
        block = self._torch.empty(max(1, nbytes), dtype=self._torch.uint8, device=f"cuda:{self.device}")
        self._blocks[block.data_ptr()] = block
        return block.data_ptr()

    def free(self, pointer: int) -> None:
        if self._cudart is not None:
            self._check(self._cudart.cudaFree(pointer))
        else:
            self._blocks.pop(pointer, None)

    def stream(self) -> int:
        if self._cudart is not None:
            return int(self._check(self._cudart.cudaStreamCreate()))
        self._stream_obj = self._torch.cuda.Stream(device=self.device)
        return int(self._stream_obj.cuda_stream)

    def copy_to_device(self, pointer: int, host: np.ndarray, stream: int) -> None:
        if self._cudart is not None:
            kind = self._cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
            self._check(self._cudart.cudaMemcpyAsync(pointer, host.ctypes.data, host.nbytes, kind, stream))
        else:
            block = self._blocks[pointer]
            block[: host.nbytes].copy_(self._torch.from_numpy(host.reshape(-1).view(np.uint8)))

    def copy_to_host(self, host: np.ndarray, pointer: int, stream: int) -> None:
        if self._cudart is not None:
            kind = self._cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
            self._check(self._cudart.cudaMemcpyAsync(host.ctypes.data, pointer, host.nbytes, kind, stream))
        else:
            host.reshape(-1).view(np.uint8)[:] = self._blocks[pointer][: host.nbytes].cpu().numpy()

    def synchronize(self, stream: int) -> None:
        if self._cudart is not None:
            self._check(self._cudart.cudaStreamSynchronize(stream))
        else:
            self._torch.cuda.synchronize(self.device)


def current_engine_key(trt: Any = None, device: Any = None) -> EngineKey:
    """The key of this machine: installed TensorRT, and the name and capability of ``device``.

    Raises:
        DependencyError: TensorRT is missing.
        DeviceError: no usable CUDA device.
    """
    trt = trt or import_tensorrt()
    device = device or CudaDevice(0)
    name, capability = device.name_and_capability()
    return EngineKey(str(trt.__version__), name, capability)


@dataclass
class _TensorInfo:
    """What ``InferenceSession.get_inputs()`` items offer: name, shape (-1 = dynamic), type."""

    name: str
    shape: list[Any]
    type: str


class _Buffer:
    def __init__(self, pointer: int, nbytes: int) -> None:
        self.pointer, self.nbytes = pointer, nbytes


class TensorRTRunner:
    """Runs one serialized engine with the ``InferenceSession.run`` calling convention."""

    def __init__(self, engine_path: str | Path, expected: EngineKey | None = None, *, precision: str = "fp16",
                 trt: Any = None, device: Any = None) -> None:
        """Deserialize ``engine_path`` after checking ``expected`` against this machine.

        Raises:
            DependencyError: TensorRT is missing.
            DeviceError: no usable CUDA device.
            ModelError: the engine was built for another TensorRT/GPU, or does not deserialize.
        """
        self._trt = trt or import_tensorrt()
        self._device = device or CudaDevice(0)
        path = Path(engine_path)
        if expected is not None:
            here = current_engine_key(self._trt, self._device)
            reason = expected.mismatch(here)
            if reason:
                raise ModelError(f"{path.name} was {reason}: engines are not portable, rebuild them here with "
                                 f"`{REBUILD.format(precision=precision)}`")
            if expected.gpu != here.gpu:
                logger.warning("%s was built on %s, running on %s: rebuild for best speed", path.name, expected.gpu, here.gpu)
        self._logger = self._trt.Logger(self._trt.Logger.WARNING)
        self._runtime = self._trt.Runtime(self._logger)
        data = path.read_bytes()
        engine = self._runtime.deserialize_cuda_engine(data)
        if engine is None:
            raise ModelError(f"{path.name} could not be deserialized by TensorRT {self._trt.__version__}: rebuild it with "
                             f"`{REBUILD.format(precision=precision)}`")
        self._engine = engine
        self._context = engine.create_execution_context()
        if self._context is None:
            raise ModelError(f"{path.name}: TensorRT could not create an execution context (GPU memory?): "
                             "close other GPU programs or rebuild with a smaller --workspace")
        self.name = path.name
        self._inputs: list[_TensorInfo] = []
        self._outputs: list[_TensorInfo] = []
        self._dtypes: dict[str, Any] = {}
        for index in range(engine.num_io_tensors):
            name = engine.get_tensor_name(index)
            dtype = np.dtype(self._trt.nptype(engine.get_tensor_dtype(name)))
            info = _TensorInfo(name, list(engine.get_tensor_shape(name)), f"tensor({_ORT_TYPES.get(dtype.name, dtype.name)})")
            self._dtypes[name] = dtype
            is_input = engine.get_tensor_mode(name) == self._trt.TensorIOMode.INPUT
            (self._inputs if is_input else self._outputs).append(info)
        self._buffers: dict[str, _Buffer] = {}
        self._stream = self._device.stream()
        self._lock = threading.Lock()
        self._closed = False

    def get_inputs(self) -> list[_TensorInfo]:
        return list(self._inputs)

    def get_outputs(self) -> list[_TensorInfo]:
        return list(self._outputs)

    def get_providers(self) -> list[str]:
        return ["TensorRT"]

    def _buffer(self, name: str, nbytes: int) -> _Buffer:
        """The device buffer of one tensor, reallocated only when it must grow."""
        buffer = self._buffers.get(name)
        if buffer is None or buffer.nbytes < nbytes:
            if buffer is not None:
                self._device.free(buffer.pointer)
            buffer = _Buffer(self._device.malloc(nbytes), nbytes)
            self._buffers[name] = buffer
        return buffer

    def run(self, output_names: Sequence[str] | None, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Copy ``feed`` in, execute, and return the named outputs (all when None) as host arrays.

        Raises:
            InputError: a missing input, or a shape outside the engine's optimization profile.
            ModelError: the engine fails to execute, or the runner is closed.
        """
        with self._lock:
            if self._closed:
                raise ModelError(f"{self.name}: the TensorRT runner is closed")
            wanted = [o.name for o in self._outputs] if output_names is None else list(output_names)
            unknown = [n for n in wanted if n not in self._dtypes or n in {i.name for i in self._inputs}]
            if unknown:
                raise InputError(f"{self.name} has no output {unknown[0]!r}: outputs are {[o.name for o in self._outputs]}")
            for info in self._inputs:
                if info.name not in feed:
                    raise InputError(f"{self.name} needs input {info.name!r}: inputs are {[i.name for i in self._inputs]}")
                host = np.ascontiguousarray(feed[info.name], dtype=self._dtypes[info.name])
                if not self._context.set_input_shape(info.name, tuple(host.shape)):
                    raise InputError(f"{self.name}: input {info.name!r} of shape {list(host.shape)} is outside the engine's "
                                     "optimization profile: rebuild the engine with a wider profile (ecmf-edge build-engine)")
                buffer = self._buffer(info.name, host.nbytes)
                self._device.copy_to_device(buffer.pointer, host, self._stream)
                self._context.set_tensor_address(info.name, buffer.pointer)
            results: dict[str, np.ndarray] = {}
            for info in self._outputs:
                shape = tuple(int(d) for d in self._context.get_tensor_shape(info.name))
                if any(d < 0 for d in shape):
                    raise ModelError(f"{self.name}: output {info.name!r} shape {list(shape)} is unresolved after setting the inputs")
                results[info.name] = np.empty(shape, dtype=self._dtypes[info.name])
                buffer = self._buffer(info.name, max(results[info.name].nbytes, 1))
                self._context.set_tensor_address(info.name, buffer.pointer)
            if not self._context.execute_async_v3(self._stream):
                raise ModelError(f"{self.name}: TensorRT execution failed: rebuild the engine with `ecmf-edge build-engine`")
            for name in wanted:
                self._device.copy_to_host(results[name], self._buffers[name].pointer, self._stream)
            self._device.synchronize(self._stream)
            return [results[name] for name in wanted]

    def close(self) -> None:
        """Free the device buffers and release the engine (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for buffer in self._buffers.values():
                self._device.free(buffer.pointer)
            self._buffers.clear()
            self._context = None
            self._engine = None

    def __del__(self) -> None:  # buffers are device memory: never leak them with the object
        try:
            self.close()
        except Exception:  # interpreter shutdown: the CUDA context may already be gone
            pass


_ORT_TYPES = {"float32": "float", "float16": "float16", "int64": "int64", "int32": "int32", "int8": "int8",
              "uint8": "uint8", "bool": "bool"}
