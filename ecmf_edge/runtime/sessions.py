"""The one place that builds ONNX Runtime inference sessions.

Every model of a bundle is opened through :func:`create_session`, so thread counts,
graph optimisation and execution providers are set explicitly and the same way
everywhere, and a provider that is not available is a clear error instead of a silent
fallback.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ecmf_edge.errors import DeviceError, ModelError
from ecmf_edge.modalities import REBUILD_COMMAND

__all__ = ["SessionConfig", "create_session", "available_providers", "backend_session_config", "PROVIDER_ALIASES"]

logger = logging.getLogger("ecmf_edge")

# Short names accepted on the command line and in options.
PROVIDER_ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
}


@dataclass(frozen=True)
class SessionConfig:
    """How ONNX Runtime sessions are built."""

    # Threads used inside one operator; 0 lets ONNX Runtime choose (one per physical core).
    intra_op_threads: int = 0
    # Threads used across independent operators (only with parallel execution).
    inter_op_threads: int = 1
    # Execution providers in priority order, as full names or aliases ("cpu", "cuda", ...).
    providers: tuple[str, ...] = ("cpu",)
    # Graph optimisation: "disable", "basic", "extended" or "all".
    optimization: str = "all"
    # Fail when a requested provider is missing (True) or drop it with a warning (False).
    strict_providers: bool = True
    # Let idle worker threads spin waiting for work (ONNX Runtime's default). Off: a stream's many small
    # calls do not keep cores busy between frames (measured in docs/benchmarks.md, "CPU per stream").
    allow_spinning: bool = False


def available_providers() -> list[str]:
    """Execution providers this onnxruntime build offers."""
    import onnxruntime as ort

    return list(ort.get_available_providers())


def backend_session_config(backend: str, model_threads: int = 1) -> SessionConfig:
    """The session settings for a backend choice: ``model_threads`` threads per model on the CPU; ``"auto"``
    adds CUDA first where this onnxruntime build offers it (falling back to the CPU, never failing)."""
    if backend == "auto" and "CUDAExecutionProvider" in available_providers():
        return SessionConfig(intra_op_threads=model_threads, providers=("cuda", "cpu"), strict_providers=False)
    return SessionConfig(intra_op_threads=model_threads)


def _resolve_providers(requested: Sequence[str], strict: bool) -> list[str]:
    available = available_providers()
    resolved: list[str] = []
    for name in requested:
        full = PROVIDER_ALIASES.get(name.lower(), name)
        if full not in available:
            message = (
                f"execution provider '{name}' is not available in this onnxruntime build "
                f"(available: {', '.join(available)}); install onnxruntime-gpu for CUDA or choose --providers cpu"
            )
            if strict:
                raise DeviceError(message)
            import warnings

            warnings.warn(message, RuntimeWarning, stacklevel=3)
            continue
        if full not in resolved:
            resolved.append(full)
    if "CPUExecutionProvider" not in resolved:
        resolved.append("CPUExecutionProvider")  # ONNX Runtime's own fallback for unsupported nodes
    return resolved


_OPT_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}


def create_session(path: str | Path, config: SessionConfig | None = None):
    """Open an ONNX model file as an ``onnxruntime.InferenceSession``.

    Raises:
        ModelError: the file is missing or is not a valid ONNX model.
        DeviceError: a requested execution provider is not available (with ``strict_providers``).
    """
    import onnxruntime as ort

    config = config or SessionConfig()
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file {path} does not exist: run `ecmf-edge export` to build the bundle")
    if config.optimization not in _OPT_LEVELS:
        raise ModelError(f"unknown graph optimisation '{config.optimization}': use one of {', '.join(_OPT_LEVELS)}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(config.intra_op_threads)
    options.inter_op_num_threads = int(config.inter_op_threads)
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _OPT_LEVELS[config.optimization])
    options.log_severity_level = 3  # errors only; ecmf-edge reports its own problems
    spin = "1" if config.allow_spinning else "0"
    options.add_session_config_entry("session.intra_op.allow_spinning", spin)
    options.add_session_config_entry("session.inter_op.allow_spinning", spin)
    providers = _resolve_providers(config.providers, config.strict_providers)
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as exc:  # onnxruntime raises its own exception types with long messages
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(
            f"{path.name} could not be loaded by ONNX Runtime ({first[:200]}): "
            f"run `{REBUILD_COMMAND}` to rebuild it"
        ) from None
    logger.debug("opened %s with %s", path.name, session.get_providers())
    return session
