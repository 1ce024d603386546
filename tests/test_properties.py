"""Property-based misuse of every public entry point and file loader (hypothesis).

Whatever comes in (odd image shapes and dtypes, NaN/Inf audio, wrong rates, empty or
huge strings, truncated or random bytes as model, manifest, GGUF, video and audio files)
the result is either a valid answer or a one-line :class:`~ecmf_edge.errors.EcmfError`
that names a fix; never another exception, a hang, or a label made from garbage.
"""
from __future__ import annotations

import json
import math
import re
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ecmf_edge.errors import EcmfError

FAST = settings(max_examples=20, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large])
# How long one call may take before it counts as a hang.
HANG_S = 20.0
# Words that introduce the fix a message names ("...: pass 16000", "give either camera= or video=").
FIX_WORDS = re.compile(r"\b(pass|use|give|run|check|install|choose|convert|create|connect|pick|decode|scale|clean|"
                       r"record|resample|average|divide|re-encode|rebuild|restart|free|uncover|plug|call|set|leave|"
                       r"start|buffer|try|expected)\b", re.IGNORECASE)


def one_line_error(call, *args, **kwargs):
    """Run ``call``; return its result, or the EcmfError it raised after checking the message is one usable line."""
    started = time.monotonic()
    try:
        result = call(*args, **kwargs)
    except EcmfError as exc:
        message = str(exc)
        assert message and "\n" not in message and len(message) < 600, message
        assert FIX_WORDS.search(message), f"the message should say what to do: {message}"
        assert "Traceback" not in message
        result = exc
    assert time.monotonic() - started < HANG_S, f"{call} took {time.monotonic() - started:.1f} s"
    return result


@pytest.fixture(scope="module")
def rec(bundle):
    from ecmf_edge import Recognizer

    with Recognizer(bundle=bundle, text=False, use_llm=False) as recognizer:
        yield recognizer


def check_event(event, labels) -> None:
    """A returned event is self-consistent: a label only with present modalities, finite probabilities."""
    if event.label is None:
        assert event.present == () and event.probabilities == dict.fromkeys(labels, 0.0)
        return
    assert event.present and event.label in labels
    probs = np.array(list(event.probabilities.values()))
    assert np.all(np.isfinite(probs)) and abs(probs.sum() - 1) < 1e-3


# ---------------------------------------------------------------- images
DTYPES = st.sampled_from([np.uint8, np.int8, np.uint16, np.int32, np.float32, np.float64, np.bool_, np.complex64])
SHAPES = st.one_of(
    hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=12),
    st.tuples(st.integers(1, 300), st.integers(1, 300)),
    st.tuples(st.integers(1, 300), st.integers(1, 300), st.sampled_from([1, 2, 3, 4, 5])),
)


@st.composite
def images(draw):
    dtype = draw(DTYPES)
    shape = draw(SHAPES)
    if np.dtype(dtype).kind == "f":
        fill = draw(st.sampled_from([0.0, 0.5, 255.0, np.nan, np.inf, -np.inf]))
        return np.full(shape, fill, dtype=dtype)
    return draw(hnp.arrays(dtype, shape, elements=None, fill=st.just(np.zeros((), dtype)[()]) if np.prod(shape) > 4096 else None))


@FAST
@given(image=images(), as_face=st.booleans())
def test_predict_on_odd_images(rec, image, as_face):
    result = one_line_error(rec.predict, **({"face": image} if as_face else {"frame": image}))
    if isinstance(result, EcmfError):
        return
    check_event(result, rec.labels)
    # Frames must be uint8; face crops may also be float in [0, 1] (documented); anything else is refused.
    unit_float = image.dtype.kind == "f" and image.size and np.all(np.isfinite(image)) and 0 <= image.min() <= image.max() <= 1
    assert image.dtype == np.uint8 or (as_face and unit_float), f"{image.dtype} should have been refused"


@FAST
@given(image=images())
def test_detector_and_encoders_on_odd_images(rec, image):
    for name in ("face_detector", "frame_encoder", "face_encoder"):
        model = rec.models.get(name)
        call = model.detect if name == "face_detector" else model.encode
        one_line_error(call, image)


@FAST
@given(value=st.one_of(st.none(), st.integers(), st.text(max_size=5), st.lists(st.integers(0, 255), max_size=4),
                       st.binary(max_size=8)))
def test_predict_on_things_that_are_not_arrays(rec, value):
    if value is None:
        return
    for key in ("frame", "face", "audio"):
        one_line_error(rec.predict, **{key: value})


@settings(FAST, max_examples=15)
@given(camera=st.one_of(st.integers(-2, 2), st.text(max_size=3), st.floats(allow_nan=True)),
       microphone=st.one_of(st.none(), st.integers(-2, 2), st.text(max_size=3)),
       video=st.one_of(st.none(), st.text(max_size=5)))
def test_stream_arguments(rec, camera, microphone, video, monkeypatch):
    from ecmf_edge.capture import camera as camera_module

    monkeypatch.setattr(camera_module, "_default_opener", lambda api: (lambda index: None))  # no camera on this machine
    result = one_line_error(rec.stream, camera=camera, microphone=microphone, video=video)
    if not isinstance(result, EcmfError):  # only a real video file could have opened
        result.close()
        raise AssertionError(f"stream(camera={camera!r}, microphone={microphone!r}, video={video!r}) should fail here")


# ---------------------------------------------------------------- audio
SPECIAL = st.sampled_from([np.nan, np.inf, -np.inf, 0.0, 1e30, -1e30])


@st.composite
def audio_arrays(draw):
    n = draw(st.sampled_from([0, 1, 7, 400, 16000, 16000 * 3]))
    x = np.sin(np.arange(n, dtype=np.float32) * 0.05) * draw(st.floats(0, 2))
    if n and draw(st.booleans()):
        idx = draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=5))
        x[idx] = draw(SPECIAL)
    kind = draw(st.sampled_from(["float32", "float64", "int16", "int32", "uint8", "stereo", "column", "3d"]))
    if kind == "float64":
        return x.astype(np.float64)
    if kind in ("int16", "int32", "uint8"):
        with np.errstate(invalid="ignore", over="ignore"):
            return np.nan_to_num(x * 1000, posinf=0, neginf=0).astype(kind)
    if kind == "stereo":
        return np.stack([x, x], axis=1)
    if kind == "column":
        return x[:, None]
    if kind == "3d":
        return x.reshape(1, 1, -1)
    return x


RATES = st.one_of(st.sampled_from([16000, 8000, 44100, 48000, 1, 0, -16000, 10 ** 9]), st.integers(-5, 200_000),
                  st.floats(allow_nan=True), st.just("16000"), st.just(True))


@FAST
@given(pcm=audio_arrays(), rate=RATES)
def test_predict_on_odd_audio_and_rates(rec, pcm, rate):
    result = one_line_error(rec.predict, audio=pcm, sample_rate=rate)
    if isinstance(result, EcmfError):
        return
    check_event(result, rec.labels)
    finite = pcm.size == 0 or bool(np.all(np.isfinite(pcm.astype(np.float64))))
    assert finite or "audio" not in result.present, "non-finite samples must not give an audio feature"


@FAST
@given(pcm=audio_arrays(), rate=RATES)
def test_audio_models_on_odd_audio(rec, pcm, rate):
    encoder = rec.models.get("speech_encoder")
    one_line_error(encoder.encode, pcm, rate)
    from ecmf_edge.audio.prosody import prosody_features

    result = one_line_error(prosody_features, pcm, rate)
    if not isinstance(result, EcmfError):
        assert np.all(np.isfinite(result))


# ---------------------------------------------------------------- text
TEXTS = st.one_of(
    st.text(max_size=50), st.just(""), st.just("   \n\t "), st.just("\x00\x00"), st.just("a" * 200_000),
    st.just("hello " * 20_000), st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=30),
    st.integers(), st.binary(max_size=10), st.lists(st.text(max_size=5), max_size=3),
)


@FAST
@given(text=TEXTS)
def test_predict_on_odd_text(rec, text):
    started = time.monotonic()
    result = one_line_error(rec.predict, text=text)
    if isinstance(result, EcmfError):
        return
    check_event(result, rec.labels)
    assert isinstance(text, str), f"{type(text).__name__} should have been refused"
    if not text.strip():
        assert "text" not in result.present, "an empty text must not give a text feature"
    assert time.monotonic() - started < 10, "a huge text is truncated, not encoded whole"


# ---------------------------------------------------------------- files
def _corruptions():
    return st.one_of(
        st.binary(min_size=0, max_size=2048).map(lambda b: ("random", b)),
        st.integers(0, 400).map(lambda n: ("truncate", n)),
        st.tuples(st.integers(0, 10_000), st.integers(1, 255)).map(lambda t: ("flip", t)),
    )


def corrupt(original: bytes, how) -> bytes:
    kind, arg = how
    if kind == "random":
        return arg
    if kind == "truncate":
        return original[: min(arg, len(original) - 1)]
    pos, mask = arg
    data = bytearray(original)
    data[pos % len(data)] ^= mask
    return bytes(data)


@pytest.fixture(scope="module")
def bundle_copy(bundle_root, tmp_path_factory):
    """A bundle folder with links to the real files, so single files can be replaced."""
    root = tmp_path_factory.mktemp("bundle-copy")

    def fresh():
        target = root / f"b{len(list(root.iterdir()))}"
        target.mkdir()
        for item in bundle_root.iterdir():
            (target / item.name).symlink_to(item)
        return target

    return fresh


def _load_manifest(bundle_copy, write):
    from ecmf_edge.runtime.bundle import load_bundle

    target = bundle_copy()
    (target / "manifest.json").unlink()
    write(target / "manifest.json")
    result = one_line_error(load_bundle, target, build_if_missing=False)
    if isinstance(result, EcmfError):
        return
    for key in result.manifest.get("models", {}):  # what loaded must still verify and open
        one_line_error(result.verify, key)


@settings(FAST, max_examples=25)
@given(how=_corruptions())
def test_corrupt_manifest_bytes(bundle_root, bundle_copy, how):
    original = (bundle_root / "manifest.json").read_bytes()
    _load_manifest(bundle_copy, lambda path: path.write_bytes(corrupt(original, how)))


@settings(FAST, max_examples=20, report_multiple_bugs=False)
@given(draw=st.data(), value=st.sampled_from([None, "x", 3, [], {}]), whole=st.sampled_from([None, None, [1, 2], "m", 7]))
def test_manifest_of_the_wrong_shape(bundle_root, bundle_copy, draw, value, whole):
    data = json.loads((bundle_root / "manifest.json").read_text())
    if whole is not None:
        data = whole
    else:
        data[draw.draw(st.sampled_from(sorted(data)))] = value
    _load_manifest(bundle_copy, lambda path: path.write_text(json.dumps(data)))


@settings(FAST, max_examples=15)
@given(how=_corruptions(), name=st.sampled_from(["vad.onnx", "fusion_head.onnx", "face_pnet.onnx", "text_tokenizer.json",
                                                 "fusion_head.json"]))
def test_corrupt_model_files_are_refused_before_use(bundle_root, bundle_copy, how, name):
    from ecmf_edge.runtime.bundle import load_bundle

    target = bundle_copy()
    original = (bundle_root / name).read_bytes()
    (target / name).unlink()
    (target / name).write_bytes(corrupt(original, how))
    bundle = load_bundle(target, build_if_missing=False)
    key = next(k for k, spec in bundle.manifest["models"].items()
               if spec.get("file") == name or name in spec.get("extra_files", ()))
    result = one_line_error(bundle.verify, key)
    assert isinstance(result, EcmfError), "a changed file never passes verification"
    assert name in str(result) and "ecmf-edge export --force" in str(result)


@settings(FAST, max_examples=15)
@given(data=st.one_of(st.binary(max_size=1024), st.binary(max_size=64).map(lambda b: b"\x08\x07" + b)))
def test_random_bytes_as_an_onnx_model(tmp_path_factory, data):
    from ecmf_edge.runtime.sessions import create_session

    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    path.write_bytes(data)
    result = one_line_error(create_session, path)
    assert isinstance(result, EcmfError)


@settings(FAST, max_examples=15)
@given(data=st.one_of(st.binary(max_size=512), st.binary(max_size=512).map(lambda b: b"GGUF" + b),
                      st.binary(max_size=64).map(lambda b: b"GGUF\x03\x00\x00\x00" + b)))
def test_random_bytes_as_a_gguf(tmp_path_factory, data):
    pytest.importorskip("llama_cpp")
    from ecmf_edge.text.llm_context import ContextEnricher, LlmOptions

    path = tmp_path_factory.mktemp("gguf") / "model.gguf"
    path.write_bytes(data)
    result = one_line_error(ContextEnricher, LlmOptions(model_path=str(path)))
    assert isinstance(result, EcmfError)


@pytest.fixture(scope="module")
def media_bytes(face_video, speech_wav):
    return {"video": face_video.read_bytes(), "audio": speech_wav.read_bytes()}


@settings(FAST, max_examples=20)
@given(how=_corruptions(), suffix=st.sampled_from([".avi", ".mp4", ".mkv"]))
def test_corrupt_video_files(tmp_path_factory, media_bytes, how, suffix):
    from ecmf_edge.capture.files import VideoFileSource
    from ecmf_edge.capture.video import iter_video_frames

    path = tmp_path_factory.mktemp("video") / f"clip{suffix}"
    path.write_bytes(corrupt(media_bytes["video"], how))
    frames = one_line_error(lambda: list(iter_video_frames(path)))
    if not isinstance(frames, EcmfError):
        assert all(f.dtype == np.uint8 and f.ndim == 3 for _, f in frames)
    source = VideoFileSource(path, realtime=False) if not isinstance(one_line_error(VideoFileSource, path, realtime=False),
                                                                      EcmfError) else None
    if source is not None:
        one_line_error(source.open)
        source.close()


@settings(FAST, max_examples=20)
@given(how=_corruptions())
def test_corrupt_audio_files(tmp_path_factory, media_bytes, how):
    from ecmf_edge.audio.io import load_audio

    path = tmp_path_factory.mktemp("audio") / "speech.wav"
    path.write_bytes(corrupt(media_bytes["audio"], how))
    result = one_line_error(load_audio, path)
    if not isinstance(result, EcmfError):
        assert result.dtype == np.float32 and result.ndim == 1 and np.all(np.isfinite(result))


@settings(FAST, max_examples=10)
@given(how=_corruptions())
def test_corrupt_media_through_the_run_command(capsys, bundle_root, tmp_path_factory, media_bytes, how):
    from ecmf_edge.cli import main

    folder = tmp_path_factory.mktemp("run")
    video = folder / "clip.avi"
    video.write_bytes(corrupt(media_bytes["video"], how))
    code = main(["run", "--video", str(video), "--no-realtime", "--json", "--no-text", "--bundle", str(bundle_root)])
    out, err = capsys.readouterr()
    if code == 0:
        assert all(json.loads(line)["index"] >= 1 for line in out.splitlines())
    else:
        assert code == 2 and err.startswith("ecmf-edge: error: ") and err.count("\n") == 1, err


# ---------------------------------------------------------------- options
@FAST
@given(fusion_hz=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10, 1000)),
       queue_size=st.integers(-3, 5), max_age=st.floats(allow_nan=True, allow_infinity=True))
def test_stream_options(fusion_hz, queue_size, max_age):
    from ecmf_edge.stream.options import StreamOptions

    result = one_line_error(StreamOptions, fusion_hz=fusion_hz, queue_size=queue_size, max_age_s={"face": max_age})
    if not isinstance(result, EcmfError):
        assert 0.5 <= result.fusion_hz <= 120 and result.queue_size >= 1
        assert math.isfinite(result.max_age("face")) and result.max_age("face") > 0


@FAST
@given(index=st.one_of(st.integers(-3, 3), st.floats(allow_nan=True), st.text(max_size=3), st.none(), st.booleans()))
def test_camera_index(index):
    from ecmf_edge.capture import CameraSource, FakeCamera

    result = one_line_error(CameraSource, index, opener=FakeCamera([np.zeros((4, 4, 3), np.uint8)]))
    if not isinstance(result, EcmfError):
        assert isinstance(index, int) and not isinstance(index, bool) and index >= 0


@FAST
@given(rate=st.integers(-10, 200_000), supported=st.lists(st.integers(1, 96_000), max_size=3))
def test_microphone_rates(rate, supported):
    from ecmf_edge.capture import FakeMicrophone, MicrophoneOptions, MicrophoneSource

    fake = FakeMicrophone(np.zeros(1600, np.float32), 16000, supported_rates=supported or [16000],
                          default_rate=supported[0] if supported else 16000)
    source = one_line_error(MicrophoneSource, "default", MicrophoneOptions(sample_rate=rate), backend=fake)
    if isinstance(source, EcmfError):
        return
    result = one_line_error(source.open)
    if not isinstance(result, EcmfError):
        assert source.rate in supported or source.rate == 16000
    source.close()



@FAST
@given(chunk=audio_arrays())
def test_vad_on_odd_chunks(rec, chunk):
    from ecmf_edge.audio.vad import VoiceActivityDetector

    vad = VoiceActivityDetector.from_bundle(rec.bundle)
    result = one_line_error(vad.chunk_probability, chunk)
    if not isinstance(result, EcmfError):
        assert 0.0 <= result <= 1.0


@FAST
@given(texts=st.one_of(TEXTS, st.lists(st.one_of(st.text(max_size=20), st.none(), st.integers()), max_size=4)))
def test_text_encoder_on_odd_text(rec, texts):
    from ecmf_edge.text.text_encoder import TextEncoder

    encoder = TextEncoder.from_bundle(rec.bundle)
    result = one_line_error(encoder.encode, texts)
    if not isinstance(result, EcmfError):
        assert np.all(np.isfinite(result)) and np.allclose(np.linalg.norm(result, axis=-1), 1.0, atol=1e-3)


@FAST
@given(texts=st.one_of(TEXTS, st.lists(st.one_of(st.text(max_size=20), st.none(), st.integers()), max_size=4)))
def test_text_branch_on_odd_text(rec, texts):
    branch = rec.models.get("featurizer").branch
    items = texts if isinstance(texts, list) else [texts]
    for item in items:
        result = one_line_error(branch, item, ("and what happened next?",))
        if not isinstance(result, EcmfError):
            embedding, probs = result
            assert np.all(np.isfinite(embedding)) and np.isclose(float(probs.sum()), 1.0, atol=1e-4)


@settings(FAST, max_examples=10)
@given(how=_corruptions(), text=st.one_of(st.just(""), st.just(" "), st.text(min_size=1, max_size=20)))
def test_features_command_on_corrupt_audio_and_odd_text(capsys, bundle_root, tmp_path_factory, media_bytes, how, text):
    from ecmf_edge.cli import main

    folder = tmp_path_factory.mktemp("features")
    wav = folder / "speech.wav"
    wav.write_bytes(corrupt(media_bytes["audio"], how))
    code = main(["features", "--bundle", str(bundle_root), "--audio", str(wav), "--text", text, "--out", str(folder / "f.npz")])
    err = capsys.readouterr().err
    if code != 0:
        assert code == 2 and err.startswith("ecmf-edge: error: ") and err.count("\n") == 1, err
    else:
        with np.load(folder / "f.npz", allow_pickle=False) as data:
            assert all(np.all(np.isfinite(data[k])) for k in data.files if data[k].dtype.kind == "f")


@FAST
@given(backend=st.one_of(st.sampled_from(["auto", "onnxruntime", "cuda", "", "tensorrt"]), st.integers()),
       precision=st.one_of(st.sampled_from(["fp32", "int4", "FP32", ""]), st.none()),
       threads=st.one_of(st.integers(-2, 4), st.floats(allow_nan=True), st.booleans()))
def test_recognizer_options(bundle, backend, precision, threads):
    from ecmf_edge import Recognizer

    result = one_line_error(Recognizer, backend=backend, precision=precision, bundle=bundle, model_threads=threads,
                            text=False, use_llm=False)
    if not isinstance(result, EcmfError):
        result.close()
        assert backend in ("auto", "onnxruntime") and precision == "fp32"


# ---------------------------------------------------------------- safety audit of the package's own loaders
def test_no_pickle_based_loading_in_the_package():
    import ast
    from pathlib import Path

    import ecmf_edge

    offenders = []
    for path in sorted(Path(ecmf_edge.__file__).parent.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            where = f"{path.name}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) else [])
                if any(n and n.split(".")[0] in ("pickle", "cPickle", "dill", "joblib", "marshal", "shelve") for n in names):
                    offenders.append(f"{where} imports a pickle-like module")
            if not isinstance(node, ast.Call):
                continue
            name = ast.unparse(node.func)
            keywords = {k.arg: ast.unparse(k.value) for k in node.keywords}
            if name.endswith("torch.load") and keywords.get("weights_only") != "True":
                offenders.append(f"{where} calls torch.load without weights_only=True")
            if name.endswith("np.load") and keywords.get("allow_pickle", "False") != "False":
                offenders.append(f"{where} calls np.load with allow_pickle")
    assert not offenders, offenders
