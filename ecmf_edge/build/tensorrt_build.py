"""``ecmf-edge build-engine``: TensorRT 10 engines from the bundle's ONNX models.

Per model: the ONNX parser reads the fp32 graph (or the INT8 QDQ graph, which TensorRT
builds with explicit quantization), the builder config gets the precision flags, a
workspace memory-pool limit, one optimization profile covering every dynamic axis
(:func:`optimization_profile`), for implicit INT8 an entropy calibrator fed by the same
:class:`~ecmf_edge.build.calibration.CalibrationBatcher` as ONNX Runtime (its cache is
kept beside the engine), and a timing cache shared by all builds on this machine.

Engines are not portable: the bundle folder ``<engines>/<bundle>/tensorrt-<precision>``
records the :class:`~ecmf_edge.runtime.tensorrt.EngineKey` (TensorRT version, GPU name,
compute capability), checked before any engine is opened. Models TensorRT has no use for
(the stateful Silero VAD at 0.08 ms per chunk on the CPU, the CTranslate2 Whisper folder,
the tokenizer) are carried over and keep running on ONNX Runtime / CTranslate2.
"""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ecmf_edge.build.common import link_or_copy, staged_dir
from ecmf_edge.errors import InputError, ModelError
from ecmf_edge.modalities import REBUILD_COMMAND
from ecmf_edge.runtime.bundle import MANIFEST, Bundle, bundle_dir, load_bundle, sha256_file
from ecmf_edge.runtime.tensorrt import current_engine_key, import_tensorrt

__all__ = ["build_engine", "build_engine_bundle", "optimization_profile", "make_entropy_calibrator",
           "ENGINE_MODELS", "PROFILE_DIMS", "DEFAULT_WORKSPACE_MB"]

logger = logging.getLogger("ecmf_edge")

DEFAULT_WORKSPACE_MB = 1024
# Models built as engines; every other model of the bundle is carried over unchanged.
ENGINE_MODELS = ("face_detector", "face_encoder", "frame_encoder", "audio_encoder", "text_encoder", "speech_head", "text_branch",
                 "fusion_head")
# (min, opt, max) for each named dynamic axis. "frames" are 10 ms mel frames of the Whisper
# encoder (0.5 s .. 30 s, opt 4 s: the live loop's window), "tokens" MiniLM word pieces.
PROFILE_DIMS: dict[str, tuple[int, int, int]] = {
    "batch": (1, 1, 8),
    "frames": (50, 400, 3000),
    "tokens": (1, 32, 256),
    "height": (12, 240, 1080),
    "width": (12, 320, 1920),
}
# Per model overrides: the MTCNN refinement nets see many candidate boxes at once.
PROFILE_OVERRIDES: dict[str, dict[str, tuple[int, int, int]]] = {
    "face_detector": {"batch": (1, 16, 256)},
}


def optimization_profile(key: str, inputs: Sequence[dict[str, Any]], network_shapes: dict[str, Sequence[int]] | None = None
                         ) -> dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
    """(min, opt, max) shapes for every input that has a dynamic axis.

    Args:
        key: manifest key of the model (selects overrides).
        inputs: the model's manifest ``inputs`` (name, shape with ints or axis names/None).
        network_shapes: the parsed network's input shapes (-1 = dynamic), when known; an axis
            the manifest names but the network fixes keeps the network's size.

    Raises:
        ModelError: a dynamic axis has no known range (rebuild the bundle or extend PROFILE_DIMS).
    """
    dims = {**PROFILE_DIMS, **PROFILE_OVERRIDES.get(key, {})}
    profile: dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]] = {}
    for spec in inputs:
        name, shape = spec["name"], list(spec["shape"])
        fixed = list(network_shapes.get(name, [])) if network_shapes else []
        if fixed and len(fixed) != len(shape):
            raise ModelError(f"{key}: input {name} has {len(fixed)} axes in the ONNX graph but {len(shape)} in the manifest: "
                             f"rebuild the bundle with `{REBUILD_COMMAND}`")
        if all(isinstance(d, int) for d in shape) and not any(int(d) < 0 for d in fixed):
            continue
        lo, opt, hi = [], [], []
        for axis, size in enumerate(shape):
            if fixed and int(fixed[axis]) >= 0:
                size = int(fixed[axis])
            if isinstance(size, int) and size >= 0:
                lo.append(size), opt.append(size), hi.append(size)
                continue
            axis_name = size if isinstance(size, str) else ("batch" if axis == 0 else None)
            if axis_name not in dims:
                raise ModelError(f"{key}: input {name} axis {axis} ({size!r}) is dynamic with no known range: "
                                 "add it to PROFILE_DIMS or rebuild the bundle")
            a, b, c = dims[axis_name]
            lo.append(a), opt.append(b), hi.append(c)
        if not lo:  # a scalar
            continue
        profile[name] = (tuple(lo), tuple(opt), tuple(hi))
    return profile


def make_entropy_calibrator(trt: Any, batcher: Any, shapes: dict[str, Sequence[int]], cache_path: Path, device: Any) -> Any:
    """An ``IInt8EntropyCalibrator2`` fed by ``batcher.fixed_feeds(shapes)`` (the same batcher
    ONNX Runtime's static quantization reads); it keeps its cache in ``cache_path``."""

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self._feeds = iter(batcher.fixed_feeds(shapes))
            self._batch = int(next(iter(shapes.values()))[0])
            self._pointers: dict[str, tuple[int, int]] = {}
            self.batches = 0

        def get_batch_size(self) -> int:
            return self._batch

        def get_batch(self, names: list[str]) -> list[int] | None:
            feed = next(self._feeds, None)
            if feed is None:
                return None
            pointers = []
            for name in names:
                host = feed[name]
                pointer, size = self._pointers.get(name, (0, 0))
                if size < host.nbytes:
                    if pointer:
                        device.free(pointer)
                    pointer, size = device.malloc(host.nbytes), host.nbytes
                    self._pointers[name] = (pointer, size)
                device.copy_to_device(pointer, host, 0)
                pointers.append(pointer)
            device.synchronize(0)
            self.batches += 1
            return pointers

        def read_calibration_cache(self) -> bytes | None:
            return cache_path.read_bytes() if cache_path.is_file() else None

        def write_calibration_cache(self, cache: Any) -> None:
            cache_path.write_bytes(bytes(cache))

        def release(self) -> None:
            for pointer, _ in self._pointers.values():
                device.free(pointer)
            self._pointers.clear()

    return EntropyCalibrator()


def build_engine(onnx_path: Path, engine_path: Path, *, key: str, inputs: Sequence[dict[str, Any]], precision: str,
                 workspace_mb: int = DEFAULT_WORKSPACE_MB, calibrator: Any = None, timing_cache: Path | None = None,
                 trt: Any = None) -> dict[str, Any]:
    """Build and write one serialized engine; returns its build record.

    Raises:
        ModelError: the ONNX parser or the builder fails (first parser error quoted).
    """
    trt = trt or import_tensorrt()
    log = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(log)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, log)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i).desc()) for i in range(parser.num_errors)]
        raise ModelError(f"TensorRT cannot parse {onnx_path.name} ({(errors or ['unknown error'])[0][:160]}): "
                         f"keep this model on ONNX Runtime or rebuild the bundle with `{REBUILD_COMMAND}`")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    flags = []
    if precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)  # int8 engines fall back to fp16, not fp32, where int8 has no kernel
        flags.append("FP16")
    if precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
        flags.append("INT8")
    network_shapes = {network.get_input(i).name: list(network.get_input(i).shape) for i in range(network.num_inputs)}
    ranges = optimization_profile(key, inputs, network_shapes)
    profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in ranges.items():
        profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(profile)
    if calibrator is not None:
        config.int8_calibrator = calibrator
        if ranges:
            config.set_calibration_profile(profile)
    cache = config.create_timing_cache(timing_cache.read_bytes() if timing_cache and timing_cache.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    started = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ModelError(f"TensorRT could not build {onnx_path.name} as {precision} (see the TensorRT log above): "
                         "try --workspace with more MB, or another precision")
    engine_path.write_bytes(bytes(serialized))
    if timing_cache is not None:
        timing_cache.write_bytes(bytes(config.get_timing_cache().serialize()))
    return {"precision": precision, "flags": flags, "workspace_mb": int(workspace_mb),
            "profile": {n: {"min": list(a), "opt": list(b), "max": list(c)} for n, (a, b, c) in ranges.items()},
            "calibrated": calibrator is not None, "build_seconds": round(time.perf_counter() - started, 1),
            "source": onnx_path.name}


def build_engine_bundle(src_bundle: Bundle | str | Path, precision: str, out_dir: Path | None = None, *,
                        workspace_mb: int = DEFAULT_WORKSPACE_MB, calibration: Any = None,
                        models: Sequence[str] | None = None, trt: Any = None, device: Any = None) -> Path:
    """Build the TensorRT bundle ``tensorrt-<precision>`` from the fp32 (fp16 engines) or the
    fp32 + INT8-calibrated models (int8 engines) of ``src_bundle``.

    Raises:
        DependencyError: TensorRT is missing.
        DeviceError: no usable CUDA device.
        InputError: unknown precision or model, or an unusable calibration set.
        ModelError: the source bundle is corrupt, or a model fails to parse/build.
    """
    if precision not in ("fp16", "int8"):
        raise InputError(f"unknown engine precision '{precision}': use fp16 or int8")
    wanted = tuple(models) if models is not None else ENGINE_MODELS
    unknown = [m for m in wanted if m not in ENGINE_MODELS]
    if unknown:
        raise InputError(f"cannot build engines for {', '.join(unknown)}: choose from {', '.join(ENGINE_MODELS)}")
    trt = trt or import_tensorrt()
    from ecmf_edge.runtime.tensorrt import CudaDevice

    device = device or CudaDevice(0)
    engine_key = current_engine_key(trt, device)
    bundle = src_bundle if isinstance(src_bundle, Bundle) else load_bundle(src_bundle)
    if bundle.precision != "fp32":
        raise InputError(f"bundle at {bundle.root} is {bundle.precision}: build engines from the fp32 bundle")
    bundle.verify()
    out = Path(out_dir) if out_dir else bundle_dir(bundle.name, "tensorrt", precision)
    timing_cache = out.parent / f"timing-{engine_key.slug}.cache"
    calibration_set = None
    with staged_dir(out) as partial:
        manifest = json.loads(json.dumps(bundle.manifest))
        manifest.update(precision=precision, backend="tensorrt", engine_key=engine_key.to_dict(),
                        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                        rebuild=f"ecmf-edge build-engine --precision {precision}", derived_from=str(bundle.root))
        files: dict[str, Any] = {}
        for key, spec in manifest["models"].items():
            sources = [spec["file"], *spec.get("extra_files", [])]
            onnx_files = [s for s in sources if s.endswith(".onnx")]
            if key not in wanted or not onnx_files:
                spec["tensorrt"] = {"kept": "runs on ONNX Runtime / CTranslate2" if key in ENGINE_MODELS else
                                    "not built as an engine (stateful or not a neural graph)"}
                for relative in sources:
                    link_or_copy(bundle.path(relative), partial / relative)
                continue
            calibrator = None
            model_precision = precision
            if precision == "int8":
                from ecmf_edge.build.calibration import CALIBRATION_KINDS, CalibrationBatcher
                from ecmf_edge.build.quantize import resolve_calibration

                if key in CALIBRATION_KINDS:
                    calibration_set = calibration_set or resolve_calibration(calibration)
                    batcher = CalibrationBatcher.from_set(bundle, key, calibration_set)
                    shapes = {n: r[1] for n, r in optimization_profile(key, spec["inputs"]).items()}
                    shapes = shapes or {i["name"]: tuple(i["shape"]) for i in spec["inputs"]}
                    calibrator = make_entropy_calibrator(trt, batcher, shapes, partial / f"{key}.calib", device)
                else:
                    model_precision = "fp16"  # no calibration inputs for it: fp16 inside the int8 bundle
            records, renamed = [], {}
            for relative in sources:
                if not relative.endswith(".onnx"):
                    link_or_copy(bundle.path(relative), partial / relative)
                    continue
                engine_name = relative[: -len(".onnx")] + ".engine"
                records.append(build_engine(bundle.path(relative), partial / engine_name, key=key,
                                            inputs=_inputs_of(bundle, key, relative, spec), precision=model_precision,
                                            workspace_mb=workspace_mb, calibrator=calibrator, timing_cache=timing_cache,
                                            trt=trt))
                renamed[relative] = engine_name
            if calibrator is not None:
                calibrator.release()
            spec["file"] = renamed.get(spec["file"], spec["file"])
            spec["extra_files"] = [renamed.get(r, r) for r in spec.get("extra_files", [])]
            stage_files = spec.get("attributes", {}).get("stage_files")
            if stage_files:
                spec["attributes"]["stage_files"] = {s: renamed.get(f, f) for s, f in stage_files.items()}
            spec["precision"] = model_precision
            spec["tensorrt"] = {"engines": records}
        for path in sorted(partial.rglob("*")):
            if path.is_file() and path.suffix != ".calib":
                relative = str(path.relative_to(partial))
                files[relative] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
        manifest["files"] = files
        (partial / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    logger.info("TensorRT %s bundle for %s written to %s", precision, engine_key.slug, out)
    return out


def _inputs_of(bundle: Bundle, key: str, relative: str, spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Manifest inputs of one ONNX file (the MTCNN stages have their own), read from the graph when not listed."""
    if relative == spec["file"]:
        return list(spec["inputs"])
    import onnx

    graph = onnx.load(str(bundle.path(relative)), load_external_data=False).graph
    initializers = {i.name for i in graph.initializer}
    found = []
    for value in graph.input:
        if value.name in initializers:
            continue
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in value.type.tensor_type.shape.dim]
        found.append({"name": value.name, "shape": dims})
    return found
