"""Calibration sets: the recipe (default sources and the user's clips), the loader's checks,
and one batcher feeding ONNX Runtime and fixed-shape TensorRT calibration batches."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from ecmf_edge.build.calibration import CalibrationBatcher
from ecmf_edge.build.calibration_set import (
    build_calibration_set,
    default_calibration_set,
    is_calibration_set,
    load_calibration_set,
    sentences,
)
from ecmf_edge.cli import main
from ecmf_edge.errors import InputError
from ecmf_edge.text.text_encoder import TextEncoder


@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    """Keep the default sets of this module in a temporary engines folder."""
    import os

    root = tmp_path_factory.mktemp("engines")
    before = os.environ.get("ECMF_EDGE_ENGINES")
    os.environ["ECMF_EDGE_ENGINES"] = str(root)
    yield root
    if before is None:
        os.environ.pop("ECMF_EDGE_ENGINES", None)
    else:
        os.environ["ECMF_EDGE_ENGINES"] = before


@pytest.fixture(scope="module")
def default_set(engines):
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    return default_calibration_set("calibration")


def test_default_set_is_versioned_real_and_disjoint_from_held_out(default_set, engines):
    manifest = default_set.manifest
    assert manifest["format"] == "ecmf-edge-calibration" and manifest["version"] == 1
    assert default_set.root == engines / "calibration" / "calibration-v1"
    counts = manifest["counts"]
    assert counts["faces"] == 300 and counts["frames"] == 18 and counts["texts"] == len(sentences("calibration"))
    assert 60 <= counts["speech"] <= 120
    lengths = {round(len(w) / 16000) for w in default_set.speech}
    assert {1, 2, 4} <= lengths  # every window length is represented
    assert all(-50 < 10 * np.log10(np.mean(w ** 2)) for w in default_set.speech)  # speech, not silence
    held = default_calibration_set("held_out")
    assert not set(held.texts) & set(default_set.texts)
    assert not {f.tobytes() for f in held.faces} & {f.tobytes() for f in default_set.faces}
    assert is_calibration_set(default_set.root) and not is_calibration_set(engines)


def test_set_from_the_users_clips(bundle, face_video, speech_wav, tmp_path):
    texts = tmp_path / "texts.txt"
    texts.write_text("I am so glad you came.\n\nWhere did you put my keys?\n", encoding="utf-8")
    out = build_calibration_set(tmp_path / "mine-v1", videos=[face_video], audios=[speech_wav], texts=texts,
                                bundle=bundle, frames_per_video=6)
    loaded = load_calibration_set(out)
    assert len(loaded.frames) == 6 and len(loaded.faces) >= 5
    side = bundle.spec("face_encoder")["preprocessing"]["size"][0]  # crops are stored at the encoder's size
    assert loaded.faces[0].shape[:2] == (side, side)
    assert loaded.texts == ["I am so glad you came.", "Where did you put my keys?"]
    assert loaded.speech and all(len(w) >= 8000 for w in loaded.speech)
    assert loaded.manifest["sources"]["faces"] == f"video: {face_video.name}"
    # the runtime's face encoder reads every sampled crop
    batcher = CalibrationBatcher.from_set(bundle, "face_encoder", loaded)
    assert batcher.inputs.shape == (len(loaded.faces), 1, side, side)


def test_loader_rejects_changed_missing_or_foreign_sets(default_set, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(default_set.root, copy)
    (copy / "texts.txt").write_text("tampered\n", encoding="utf-8")
    with pytest.raises(InputError, match="sha256 mismatch") as err:
        load_calibration_set(copy)
    assert "\n" not in str(err.value) and "ecmf-edge calibrate" in str(err.value)
    (copy / "texts.txt").unlink()
    with pytest.raises(InputError, match="is missing"):
        load_calibration_set(copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["version"] = 99
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(InputError, match="version 99"):
        load_calibration_set(copy)
    (copy / "manifest.json").write_text("{not json")
    with pytest.raises(InputError, match="unreadable"):
        load_calibration_set(copy)
    with pytest.raises(InputError, match="no manifest.json"):
        load_calibration_set(tmp_path)


def test_bad_sources_are_one_line_errors(bundle, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n", encoding="utf-8")
    with pytest.raises(InputError, match="hold no sentence"):
        build_calibration_set(tmp_path / "a", texts=empty)
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00" * 100)
    with pytest.raises(InputError, match="cannot be read"):
        build_calibration_set(tmp_path / "b", videos=[broken], bundle=bundle)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_one_batcher_for_speech_and_text_and_fixed_tensorrt_batches(bundle, default_set):
    speech = CalibrationBatcher.from_set(bundle, "audio_encoder", default_set)
    feeds = list(speech.feeds())
    assert len(feeds) == len(default_set.speech) and all(f["mel"].shape[:2] == (1, 80) for f in feeds)
    fixed = list(speech.fixed_feeds({"mel": (1, 80, 400)}))
    assert len(fixed) == len(feeds) and all(f["mel"].shape == (1, 80, 400) for f in fixed)
    text = CalibrationBatcher.from_set(bundle, "text_encoder", default_set, batch_size=8)
    first = text.get_next()
    assert set(first) == {"input_ids", "attention_mask", "token_type_ids"} and first["input_ids"].shape[0] == 8
    # the batcher's token ids are the runtime encoder's own
    encoder = TextEncoder.from_bundle(bundle)
    np.testing.assert_allclose(bundle.session(bundle.spec("text_encoder")["file"]).run(["embedding"], first)[0][0],
                               encoder.encode(default_set.texts[0]), atol=1e-5)
    batches = list(text.fixed_feeds({"input_ids": (4, 32), "attention_mask": (4, 32), "token_type_ids": (4, 32)}))
    assert len(batches) == -(-len(default_set.texts) // 4)
    assert all(b["input_ids"].shape == (4, 32) and b["input_ids"].dtype == np.int64 for b in batches)
    assert batches[0]["attention_mask"][:, 20:].sum() == 0  # padding is masked, not edge-repeated


def test_cli_calibrate_writes_a_set(engines, tmp_path, capsys):
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    code = main(["calibrate", "--out", str(tmp_path / "cli-v1"), "--max-windows", "5"])
    out = capsys.readouterr().out
    assert code == 0 and "speech     5" in out and "faces    300" in out
    assert load_calibration_set(tmp_path / "cli-v1").manifest["counts"]["speech"] == 5
