"""A prebuilt bundle runs where only the runtime is installed, and loading never builds.

The device scenarios run in a subprocess where torch, transformers and the package's build
and train layers cannot be imported (``tests/without_build.py``), from a bundle copied to a
new folder, as one exported on a workstation and copied to a device.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ecmf_edge import Recognizer
from ecmf_edge.errors import ModelError
from ecmf_edge.runtime import bundle as bundle_module
from ecmf_edge.runtime.bundle import BUILDER_GROUP, ensure_default_bundle, load_bundle

HERE = Path(__file__).parent


def run_slim(tmp_path: Path, code: str, *args: str, keep_build_layer: bool = False, timeout: float = 600) -> subprocess.CompletedProcess:
    script = tmp_path / "scenario.py"
    script.write_text(code, encoding="utf-8")
    env = dict(os.environ, ECMF_EDGE_ENGINES=str(tmp_path / "no-engines"), PYTHONWARNINGS="ignore",
               ECMF_EDGE_KEEP_BUILD_LAYER="1" if keep_build_layer else "0")
    return subprocess.run([sys.executable, str(HERE / "without_build.py"), str(script), *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def device_bundle(bundle_root, tmp_path_factory) -> Path:
    """The exported bundle copied to a new folder (nothing refers to where it was built)."""
    target = tmp_path_factory.mktemp("device") / "my-bundle"
    shutil.copytree(bundle_root, target)
    return target


PREDICT_AND_STREAM = r'''
import json, sys
import cv2
from ecmf_edge import Recognizer
from ecmf_edge.audio.io import load_audio

bundle, image, wav, video = sys.argv[1:5]
with Recognizer(bundle=bundle, backend="onnxruntime") as rec:
    one = rec.predict(frame=cv2.imread(image), audio=load_audio(wav), sample_rate=16000, text="I am so happy that you came to visit me today.")
    events = list(rec.stream(video=video, audio=wav, realtime=False))
    llm_opened = rec.models.is_loaded("enricher")
print(json.dumps({
    "predict": one.to_dict(),
    "events": len(events),
    "present": sorted({m for e in events for m in e.present}),
    "labels": sorted({e.label for e in events if e.label}),
    "transcripts": sorted({e.transcript for e in events if e.transcript}),
    "llm_opened": llm_opened,
    "torch_loaded": "torch" in sys.modules,
}))
'''


def test_predict_and_stream_without_torch_from_a_copied_bundle(tmp_path, device_bundle, astronaut_bgr, speech_wav, face_video):
    import cv2

    image = tmp_path / "frame.png"
    cv2.imwrite(str(image), astronaut_bgr)
    done = run_slim(tmp_path, PREDICT_AND_STREAM, device_bundle, image, speech_wav, face_video)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    labels = set(load_bundle(device_bundle).labels)
    assert result["predict"]["label"] in labels
    assert set(result["predict"]["present"]) == {"frame", "face", "audio", "text"}
    assert result["events"] >= 10
    assert {"face", "frame", "audio", "text"} <= set(result["present"]), result
    assert result["labels"] and set(result["labels"]) <= labels
    assert any("happy" in t.lower() for t in result["transcripts"]), result["transcripts"]
    # the shipped text branch does not read the LLM's answer, so the LLM is never opened
    assert result["llm_opened"] is False and result["torch_loaded"] is False


CLI = r'''
import sys
from ecmf_edge.cli import main
sys.exit(main(sys.argv[1:]))
'''


def test_run_command_without_torch_from_a_copied_bundle(tmp_path, device_bundle, speech_wav, face_video):
    done = run_slim(tmp_path, CLI, "run", "--bundle", device_bundle, "--video", face_video, "--audio", speech_wav,
                    "--json", "--no-realtime")
    assert done.returncode == 0, done.stderr[-3000:]
    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(events) >= 10
    assert any(e["label"] for e in events) and any("face" in e["present"] for e in events)


def test_without_a_bundle_or_the_build_extra_the_error_names_the_command_and_the_extra(tmp_path):
    done = run_slim(tmp_path, CLI, "run", "--video", "clip.mp4", "--json")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ecmf-edge: error:"), done.stderr
    assert "`ecmf-edge export`" in lines[0] and "ecmf-edge[build]" in lines[0] and "--bundle DIR" in lines[0]

    api = run_slim(tmp_path, "from ecmf_edge import Recognizer\nRecognizer()\n")
    assert api.returncode != 0 and "ModelError" in api.stderr and "ecmf-edge export" in api.stderr


def test_with_the_build_layer_but_no_torch_the_export_stops_before_it_starts(tmp_path):
    done = run_slim(tmp_path, CLI, "run", "--video", "clip.mp4", "--json", keep_build_layer=True)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "export:" not in done.stderr, done.stderr
    assert "torch is not installed" in done.stderr and "ecmf-edge[build]" in done.stderr


def test_load_bundle_never_builds(tmp_path, monkeypatch):
    monkeypatch.setenv("ECMF_EDGE_ENGINES", str(tmp_path))
    with pytest.raises(ModelError, match=r"no bundle at .* build it with `ecmf-edge export --out"):
        load_bundle("default")
    with pytest.warns(DeprecationWarning, match="no longer builds"), pytest.raises(ModelError):
        load_bundle("default", build_if_missing=True)
    assert not any(tmp_path.iterdir()), "load_bundle wrote something"


def test_the_build_layer_registers_the_default_builder():
    from importlib.metadata import entry_points

    (entry,) = [e for e in entry_points(group=BUILDER_GROUP) if e.name == "default"]
    assert entry.value == "ecmf_edge.build.bundle:export_bundle"


def test_recognizer_builds_the_default_bundle_on_first_use_where_a_builder_is_installed(tmp_path, monkeypatch, bundle_root):
    monkeypatch.setenv("ECMF_EDGE_ENGINES", str(tmp_path))
    built = []

    class Entry:
        def load(self):
            def build(target, progress=True):
                built.append(Path(target))
                shutil.copytree(bundle_root, target)
                return target
            return build

    monkeypatch.setattr(bundle_module, "_installed_builder", lambda: Entry())
    with Recognizer(backend="onnxruntime") as rec:
        assert rec.bundle.root == tmp_path / "default" / "onnxruntime-fp32"
        assert rec.predict(text="I did it!").present == ("text",)
    assert built == [tmp_path / "default" / "onnxruntime-fp32"]
    assert ensure_default_bundle() == built[0] and len(built) == 1  # built once, then only loaded


def test_a_bundle_from_a_newer_ecmf_edge_is_refused_with_the_fix(tmp_path, device_bundle):
    copy = tmp_path / "newer"
    shutil.copytree(device_bundle, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["format"] = 99
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match=r"newer ecmf-edge .*pip install -U ecmf-edge.*--out"):
        load_bundle(copy)


def test_speech_token_graph_matches_the_full_encoder(device_bundle, speech):
    from ecmf_edge.audio.speech_encoder import SpeechEncoder

    bundle = load_bundle(device_bundle)
    spec = bundle.spec("audio_encoder")
    assert spec["attributes"]["token_file"] in spec["extra_files"]
    encoder = SpeechEncoder.from_bundle(bundle)
    assert encoder.token_session is not None
    full = SpeechEncoder(bundle.session(spec["file"]), spec)
    for seconds in (1, 4):
        pcm = np.resize(speech, seconds * 16000)
        np.testing.assert_allclose(encoder.encode(pcm, 16000), full.encode(pcm, 16000), atol=1e-4)
    assert spec["parity"]["token_graph"]["max_abs_diff"] <= 1e-4
