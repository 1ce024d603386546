"""TensorRT backend: profiles, engine keys, the builder's use of the TensorRT 10 API, the
runner's buffer handling, the INT8 calibrator, and clear errors without TensorRT.

TensorRT cannot be installed on the CI machines (no NVIDIA GPU or driver): the builder and
runner logic is exercised through a recording stand-in of the ``tensorrt`` module and a
host-memory stand-in of the CUDA device; the tests that need the real library skip.
"""
from __future__ import annotations

import importlib.util
import types

import numpy as np
import pytest

from ecmf_edge.build.calibration import CalibrationBatcher
from ecmf_edge.build.tensorrt_build import build_engine, make_entropy_calibrator, optimization_profile
from ecmf_edge.cli import main
from ecmf_edge.errors import DependencyError, InputError, ModelError
from ecmf_edge.runtime.tensorrt import EngineKey, TensorRTRunner, import_tensorrt

HAS_TRT = importlib.util.find_spec("tensorrt") is not None
NO_TRT = "TensorRT is not installed (it needs an NVIDIA GPU and driver; not installable on this machine)"


# ----------------------------------------------------------------------------- stand-ins

class HostDevice:
    """CUDA device stand-in: 'device pointers' index host byte arrays."""

    def __init__(self, name: str = "NVIDIA H100 80GB HBM3", capability: str = "9.0") -> None:
        self.memory: dict[int, np.ndarray] = {}
        self.next = 4096
        self.info = (name, capability)

    def name_and_capability(self):
        return self.info

    def malloc(self, nbytes):
        pointer, self.next = self.next, self.next + nbytes + 256
        self.memory[pointer] = np.zeros(nbytes, np.uint8)
        return pointer

    def free(self, pointer):
        del self.memory[pointer]

    def stream(self):
        return 7

    def copy_to_device(self, pointer, host, stream):
        self.memory[pointer][: host.nbytes] = np.ascontiguousarray(host).reshape(-1).view(np.uint8)

    def copy_to_host(self, host, pointer, stream):
        host.reshape(-1).view(np.uint8)[:] = self.memory[pointer][: host.nbytes]

    def synchronize(self, stream):
        pass


def fake_trt(version: str = "10.3.0", calls: list | None = None, device: HostDevice | None = None,
             parse_ok: bool = True, build_ok: bool = True):
    """A recording stand-in of the TensorRT 10 Python API (only what ecmf-edge calls)."""
    calls = calls if calls is not None else []
    trt = types.SimpleNamespace(__version__=version)

    class Logger:
        WARNING = 2

        def __init__(self, level):
            pass

    class Input:
        def __init__(self, name, shape):
            self.name, self.shape = name, shape

    class Network:
        def __init__(self):
            self.inputs = []

        @property
        def num_inputs(self):
            return len(self.inputs)

        def get_input(self, i):
            return self.inputs[i]

    class Error:
        def desc(self):
            return "Unsupported ONNX operator: LSTM"

    class OnnxParser:
        num_errors = 1

        def __init__(self, network, log):
            self.network = network

        def parse_from_file(self, path):
            calls.append(("parse", path.rsplit("/", 1)[-1]))
            self.network.inputs = [Input("mel", [1, 80, -1])]
            return parse_ok

        def get_error(self, i):
            return Error()

    class Profile:
        def set_shape(self, name, lo, opt, hi):
            calls.append(("set_shape", name, tuple(lo), tuple(opt), tuple(hi)))

    class Cache:
        def serialize(self):
            return b"timing-cache"

    class Config:
        int8_calibrator = None

        def set_memory_pool_limit(self, pool, size):
            calls.append(("pool", pool, size))

        def set_flag(self, flag):
            calls.append(("flag", flag))

        def add_optimization_profile(self, profile):
            calls.append(("add_profile",))

        def set_calibration_profile(self, profile):
            calls.append(("calibration_profile",))

        def create_timing_cache(self, data):
            calls.append(("timing_cache_in", bytes(data)))
            return Cache()

        def set_timing_cache(self, cache, ignore_mismatch):
            calls.append(("set_timing_cache", ignore_mismatch))

        def get_timing_cache(self):
            return Cache()

    class Builder:
        def __init__(self, log):
            pass

        def create_network(self, flags):
            calls.append(("network", flags))
            return Network()

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            calls.append(("build", config.int8_calibrator is not None))
            return b"ENGINE" if build_ok else None

    # --- runtime side: an "engine" whose output is 2 * input + 1
    class Context:
        def __init__(self):
            self.shapes, self.addresses = {}, {}

        def set_input_shape(self, name, shape):
            if shape[-1] > 8:
                return False  # outside the profile
            self.shapes[name] = shape
            return True

        def get_tensor_shape(self, name):
            return self.shapes["x"]

        def set_tensor_address(self, name, pointer):
            self.addresses[name] = pointer

        def execute_async_v3(self, stream):
            n = int(np.prod(self.shapes["x"]))
            x = device.memory[self.addresses["x"]][: 4 * n].view(np.float32)
            device.memory[self.addresses["y"]][: 4 * n] = (2 * x + 1).astype(np.float32).view(np.uint8)
            calls.append(("execute", stream))
            return True

    class Engine:
        num_io_tensors = 2

        def get_tensor_name(self, i):
            return ("x", "y")[i]

        def get_tensor_dtype(self, name):
            return "float32"

        def get_tensor_shape(self, name):
            return [-1, 4]

        def get_tensor_mode(self, name):
            return "in" if name == "x" else "out"

        def create_execution_context(self):
            return Context()

    class Runtime:
        def __init__(self, log):
            pass

        def deserialize_cuda_engine(self, data):
            return Engine() if data == b"ENGINE" else None

    class Calibrator:
        def __init__(self):
            pass

    trt.Logger, trt.Builder, trt.OnnxParser, trt.Runtime = Logger, Builder, OnnxParser, Runtime
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="workspace")
    trt.BuilderFlag = types.SimpleNamespace(FP16="fp16", INT8="int8")
    trt.TensorIOMode = types.SimpleNamespace(INPUT="in")
    trt.IInt8EntropyCalibrator2 = Calibrator
    trt.nptype = np.dtype
    return trt


# ----------------------------------------------------------------------------- tests

def test_profiles_cover_every_dynamic_axis_of_the_bundle(bundle):
    audio = optimization_profile("audio_encoder", bundle.spec("audio_encoder")["inputs"])
    assert audio == {"mel": ((1, 80, 50), (1, 80, 400), (1, 80, 3000))}
    text = optimization_profile("text_encoder", bundle.spec("text_encoder")["inputs"])
    assert set(text) == {"input_ids", "attention_mask", "token_type_ids"}
    assert text["input_ids"] == ((1, 1), (1, 32), (8, 256))
    face = optimization_profile("face_encoder", bundle.spec("face_encoder")["inputs"])
    side = bundle.spec("face_encoder")["preprocessing"]["size"][0]
    assert face == {"face": ((1, 1, side, side), (1, 1, side, side), (8, 1, side, side))}
    detector = optimization_profile("face_detector", bundle.spec("face_detector")["inputs"])
    assert detector["image"][2] == (256, 3, 1080, 1920)
    # the parsed network's fixed sizes win over names in the manifest
    assert optimization_profile("x", [{"name": "a", "shape": ["batch", "frames"]}], {"a": [1, -1]}) == {
        "a": ((1, 50), (1, 400), (1, 3000))}
    with pytest.raises(ModelError, match="no known range"):
        optimization_profile("x", [{"name": "a", "shape": ["batch", "mystery"]}])


def test_engine_keys_tell_what_does_not_match():
    built = EngineKey("10.3.0", "Orin (nvgpu)", "8.7")
    assert built.slug == "trt10.3.0-sm87-orin--nvgpu"
    assert built.mismatch(EngineKey("10.3.0", "Orin (nvgpu)", "8.7")) is None
    assert "TensorRT 10.7.0" in built.mismatch(EngineKey("10.7.0", "Orin (nvgpu)", "8.7"))
    assert "compute capability 9.0" in built.mismatch(EngineKey("10.3.0", "NVIDIA H100", "9.0"))
    assert EngineKey.from_dict(built.to_dict()) == built
    with pytest.raises(ModelError, match="records no TensorRT/GPU key"):
        EngineKey.from_dict({"tensorrt": "10.3.0"})


def test_builder_sets_precision_pool_profile_and_timing_cache(tmp_path):
    onnx_file = tmp_path / "audio_encoder.onnx"
    onnx_file.write_bytes(b"onnx")
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"old")
    calls: list = []
    trt = fake_trt(calls=calls)
    record = build_engine(onnx_file, tmp_path / "audio_encoder.engine", key="audio_encoder",
                          inputs=[{"name": "mel", "shape": [1, 80, "frames"]}], precision="int8", workspace_mb=256,
                          calibrator=object(), timing_cache=cache, trt=trt)
    assert ("network", 0) in calls and ("pool", "workspace", 256 << 20) in calls
    assert ("flag", "fp16") in calls and ("flag", "int8") in calls
    assert ("set_shape", "mel", (1, 80, 50), (1, 80, 400), (1, 80, 3000)) in calls
    assert ("calibration_profile",) in calls and ("build", True) in calls
    assert ("timing_cache_in", b"old") in calls and ("set_timing_cache", False) in calls
    assert (tmp_path / "audio_encoder.engine").read_bytes() == b"ENGINE" and cache.read_bytes() == b"timing-cache"
    assert record["flags"] == ["FP16", "INT8"] and record["profile"]["mel"]["opt"] == [1, 80, 400]
    fp16: list = []
    build_engine(onnx_file, tmp_path / "b.engine", key="audio_encoder", inputs=[{"name": "mel", "shape": [1, 80, "frames"]}],
                 precision="fp16", trt=fake_trt(calls=fp16))
    assert ("flag", "int8") not in fp16 and ("build", False) in fp16


def test_builder_failures_are_one_line_model_errors(tmp_path):
    onnx_file = tmp_path / "vad.onnx"
    onnx_file.write_bytes(b"onnx")
    spec = [{"name": "mel", "shape": [1, 80, "frames"]}]
    with pytest.raises(ModelError, match="cannot parse vad.onnx .Unsupported ONNX operator: LSTM") as err:
        build_engine(onnx_file, tmp_path / "x.engine", key="vad", inputs=spec, precision="fp16", trt=fake_trt(parse_ok=False))
    assert "\n" not in str(err.value)
    with pytest.raises(ModelError, match="could not build vad.onnx as fp16.*--workspace"):
        build_engine(onnx_file, tmp_path / "x.engine", key="vad", inputs=spec, precision="fp16", trt=fake_trt(build_ok=False))
    assert not (tmp_path / "x.engine").exists()


def test_runner_runs_named_tensors_and_owns_its_buffers(tmp_path):
    device = HostDevice()
    calls: list = []
    trt = fake_trt(calls=calls, device=device)
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"ENGINE")
    runner = TensorRTRunner(engine, EngineKey("10.3.0", "NVIDIA H100 80GB HBM3", "9.0"), trt=trt, device=device)
    assert [i.name for i in runner.get_inputs()] == ["x"] and [o.name for o in runner.get_outputs()] == ["y"]
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    (y,) = runner.run(["y"], {"x": x})
    np.testing.assert_array_equal(y, 2 * x + 1)
    assert ("execute", 7) in calls
    buffers = dict(device.memory)
    runner.run(None, {"x": x[:1]})  # smaller input: buffers are reused
    assert device.memory.keys() == buffers.keys()
    (y,) = runner.run(["y"], {"x": np.ones((3, 4), np.float64)})  # larger: grown, converted to the engine's dtype
    np.testing.assert_array_equal(y, np.full((3, 4), 3, np.float32))
    assert len(device.memory) == 2
    with pytest.raises(InputError, match="outside the engine's optimization profile"):
        runner.run(["y"], {"x": np.ones((1, 16), np.float32)})
    with pytest.raises(InputError, match="needs input 'x'"):
        runner.run(["y"], {})
    with pytest.raises(InputError, match="has no output 'z'"):
        runner.run(["z"], {"x": x})
    runner.close()
    assert device.memory == {}
    with pytest.raises(ModelError, match="closed"):
        runner.run(["y"], {"x": x})


def test_runner_refuses_engines_built_elsewhere(tmp_path):
    device = HostDevice("Orin (nvgpu)", "8.7")
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"ENGINE")
    with pytest.raises(ModelError, match=r"built for NVIDIA H100 \(compute capability 9.0\).*build-engine --precision int8"):
        TensorRTRunner(engine, EngineKey("10.3.0", "NVIDIA H100", "9.0"), precision="int8", trt=fake_trt(device=device),
                       device=device)
    with pytest.raises(ModelError, match="built with TensorRT 10.0.1"):
        TensorRTRunner(engine, EngineKey("10.0.1", "Orin (nvgpu)", "8.7"), trt=fake_trt(device=device), device=device)
    engine.write_bytes(b"garbage")
    with pytest.raises(ModelError, match="could not be deserialized"):
        TensorRTRunner(engine, EngineKey("10.3.0", "Orin (nvgpu)", "8.7"), trt=fake_trt(device=device), device=device)


def test_entropy_calibrator_feeds_the_shared_batcher(bundle, tmp_path):
    from ecmf_edge.build.calibration import face_crops

    device = HostDevice()
    batcher = CalibrationBatcher("face_encoder", bundle.spec("face_encoder"), face_crops("calibration")[:10])
    cache = tmp_path / "face.calib"
    side = bundle.spec("face_encoder")["preprocessing"]["size"][0]
    calibrator = make_entropy_calibrator(fake_trt(device=device), batcher, {"face": (4, 1, side, side)}, cache, device)
    assert calibrator.get_batch_size() == 4
    first = calibrator.get_batch(["face"])
    got = device.memory[first[0]][: 4 * side * side * 4].view(np.float32).reshape(4, 1, side, side)
    np.testing.assert_array_equal(got, batcher.inputs[:4])
    assert calibrator.get_batch(["face"]) and calibrator.get_batch(["face"])  # 10 faces -> 3 batches of 4
    assert calibrator.get_batch(["face"]) is None and calibrator.batches == 3
    assert calibrator.read_calibration_cache() is None
    calibrator.write_calibration_cache(memoryview(b"scales"))
    assert calibrator.read_calibration_cache() == b"scales"
    calibrator.release()
    assert device.memory == {}


@pytest.mark.skipif(HAS_TRT, reason="TensorRT is installed here")
def test_without_tensorrt_every_entry_point_says_how_to_get_it(bundle, tmp_path, capsys):
    with pytest.raises(DependencyError, match=r"needs TensorRT 10 .*ecmf-edge\[trt\]"):
        import_tensorrt()
    code = main(["build-engine", "--precision", "fp16", "--bundle", str(bundle.root), "--out", str(tmp_path / "e")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("ecmf-edge: error: backend 'tensorrt' needs TensorRT 10") and "\n" not in err
    assert not (tmp_path / "e").exists()


@pytest.mark.skipif(not HAS_TRT, reason=NO_TRT)
def test_real_fp16_engine_matches_onnx_runtime(bundle, tmp_path):
    from ecmf_edge.build.calibration import face_crops
    from ecmf_edge.build.tensorrt_build import build_engine_bundle
    from ecmf_edge.runtime.bundle import load_bundle
    from ecmf_edge.vision.face_encoder import FaceEncoder

    out = build_engine_bundle(bundle, "fp16", tmp_path / "tensorrt-fp16", models=["face_encoder"], workspace_mb=512)
    engines = load_bundle(out)
    faces = face_crops("held_out")[:8]
    ref = FaceEncoder.from_bundle(bundle).encode(faces).probs
    new = FaceEncoder.from_bundle(engines).encode(faces).probs
    assert np.abs(ref - new).max() < 1e-2


def test_cuda_provider_runs_the_fp16_bundle_when_a_gpu_is_present(bundle, tmp_path):
    from ecmf_edge.runtime.sessions import available_providers

    if "CUDAExecutionProvider" not in available_providers():
        pytest.skip("ONNX Runtime has no CUDA provider here (install onnxruntime-gpu on a machine with an NVIDIA GPU)")
    import warnings

    from ecmf_edge.build.calibration import face_crops
    from ecmf_edge.build.quantize import quantize_bundle
    from ecmf_edge.runtime.bundle import load_bundle
    from ecmf_edge.runtime.sessions import SessionConfig
    from ecmf_edge.vision.face_encoder import FaceEncoder

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = quantize_bundle(bundle, "fp16", tmp_path / "fp16", models=["face_encoder"])
    gpu = load_bundle(out, session_config=SessionConfig(providers=("cuda", "cpu")))
    session = gpu.session(gpu.spec("face_encoder")["file"])
    assert session.get_providers()[0] == "CUDAExecutionProvider"
    faces = face_crops("held_out")[:16]
    ref = FaceEncoder.from_bundle(bundle).encode(faces).probs
    assert np.abs(FaceEncoder.from_bundle(gpu).encode(faces).probs - ref).max() < 1e-2
