"""Bundle manifests: every file is verified before use, and damage is a one-line error."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from ecmf_edge.build.bundle import export_bundle
from ecmf_edge.errors import DeviceError, InputError, ModelError
from ecmf_edge.runtime.bundle import bundle_dir, load_bundle
from ecmf_edge.runtime.sessions import SessionConfig, create_session


@pytest.fixture(scope="module")
def vad_bundle(tmp_path_factory):
    """A real, partial bundle holding only the VAD (quick to export and to damage)."""
    return export_bundle(tmp_path_factory.mktemp("b") / "vad-only", keys=["vad"], progress=False)


@pytest.fixture
def copy(vad_bundle, tmp_path):
    target = tmp_path / "bundle"
    shutil.copytree(vad_bundle, target)
    return target


def test_manifest_records_hash_size_provenance_and_parity(vad_bundle):
    manifest = json.loads((vad_bundle / "manifest.json").read_text())
    assert manifest["labels"] == ["neutral", "angry", "happy", "sad", "worried", "surprise"]
    spec = manifest["models"]["vad"]
    assert manifest["files"]["vad.onnx"]["bytes"] == (vad_bundle / "vad.onnx").stat().st_size
    assert len(manifest["files"]["vad.onnx"]["sha256"]) == 64
    assert spec["provenance"]["package"] == "silero-vad" and spec["provenance"]["licence"] == "MIT"
    assert spec["inputs"][0]["name"] == "input"
    assert spec["parity"]["speech_segments"], "parity check found no speech"


def test_verified_bundle_opens_and_runs(copy):
    bundle = load_bundle(copy)
    assert bundle.verify() == ["vad.onnx"]
    session = bundle.session("vad.onnx")
    out = session.run(None, {"input": np.zeros((1, 576), np.float32), "state": np.zeros((2, 1, 128), np.float32), "sr": np.array(16000, np.int64)})
    assert out[0].shape == (1, 1)


def test_corrupt_file_is_named_with_rebuild_command(copy):
    path = copy / "vad.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ModelError, match=r"vad\.onnx is corrupt \(sha256 mismatch\): run `ecmf-edge export --force`"):
        load_bundle(copy).session("vad.onnx")


def test_truncated_file(copy):
    path = copy / "vad.onnx"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ModelError, match=r"vad\.onnx is truncated or altered \(1000 bytes"):
        load_bundle(copy).verify()


def test_missing_file(copy):
    (copy / "vad.onnx").unlink()
    with pytest.raises(ModelError, match=r"vad\.onnx is missing: run `ecmf-edge export --force`"):
        load_bundle(copy).verify("vad")


def test_git_lfs_pointer(copy):
    (copy / "vad.onnx").write_text("version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 2327524\n")
    with pytest.raises(ModelError, match="Git LFS pointer"):
        load_bundle(copy).verify()


def test_unreadable_manifest(copy):
    (copy / "manifest.json").write_text("{not json")
    with pytest.raises(ModelError, match=r"manifest\.json is not valid JSON"):
        load_bundle(copy)


def test_manifest_without_hash_record(copy):
    manifest = json.loads((copy / "manifest.json").read_text())
    del manifest["files"]["vad.onnx"]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match="has no sha256 record"):
        load_bundle(copy)


def test_absent_bundle_and_model(tmp_path, copy):
    with pytest.raises(ModelError, match="build it with `ecmf-edge export --out"):
        load_bundle(tmp_path / "nowhere", build_if_missing=False)
    with pytest.raises(ModelError, match="has no model 'face_encoder'"):
        load_bundle(copy).spec("face_encoder")


def test_unknown_backend_or_precision():
    with pytest.raises(InputError, match="unknown precision 'int4'"):
        bundle_dir("default", "onnxruntime", "int4")
    with pytest.raises(InputError, match="unknown backend 'openvino'"):
        bundle_dir("default", "openvino", "fp32")


def test_missing_provider_is_a_clear_error(copy):
    from ecmf_edge.runtime.sessions import available_providers

    if "CUDAExecutionProvider" in available_providers():
        pytest.skip("this onnxruntime build has CUDA")
    with pytest.raises(DeviceError, match="execution provider 'cuda' is not available"):
        create_session(copy / "vad.onnx", SessionConfig(providers=("cuda",)))
    with pytest.warns(RuntimeWarning, match="not available"):
        session = create_session(copy / "vad.onnx", SessionConfig(providers=("cuda", "cpu"), strict_providers=False))
    assert session.get_providers() == ["CPUExecutionProvider"]


def test_sessions_do_not_spin_idle_threads_unless_asked(copy):
    quiet = create_session(copy / "vad.onnx", SessionConfig(intra_op_threads=2)).get_session_options()
    assert quiet.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert quiet.get_session_config_entry("session.inter_op.allow_spinning") == "0"
    busy = create_session(copy / "vad.onnx", SessionConfig(intra_op_threads=2, allow_spinning=True)).get_session_options()
    assert busy.get_session_config_entry("session.intra_op.allow_spinning") == "1"


def test_garbage_model_file_is_a_model_error(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(ModelError, match=r"model\.onnx could not be loaded by ONNX Runtime .*ecmf-edge export --force"):
        create_session(path)
