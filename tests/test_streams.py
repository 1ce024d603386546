"""Several streams in one process: shared models, their own state, a stream id in every event, the CLI and
the web page with more than one source."""
from __future__ import annotations

import json
import shutil

import pytest
from headless_chromium import HeadlessChromium

from ecmf_edge import InputError, Recognizer
from ecmf_edge.cli import main
from ecmf_edge.stream.group import StreamGroup
from ecmf_edge.stream.server import EventServer


@pytest.fixture(scope="module")
def rec(bundle):
    with Recognizer(bundle=bundle, use_llm=False, text=False) as recognizer:
        yield recognizer


def _labels(events):
    return [(round(e.timestamp, 3), e.label, e.present) for e in events]


def test_two_streams_at_once_share_models_and_keep_their_own_state(rec, face_video, scene_video, speech_wav):
    alone_face = list(rec.stream(video=face_video, audio=speech_wav, realtime=False))
    alone_scene = list(rec.stream(video=scene_video, realtime=False))
    encoder = rec.models.get("face_encoder")
    sessions = len(rec.bundle._sessions) if hasattr(rec.bundle, "_sessions") else None
    a = rec.stream(video=face_video, audio=speech_wav, realtime=False, stream_id="desk")
    b = rec.stream(video=scene_video, realtime=False)
    assert a.models.face_encoder is b.models.face_encoder is encoder, "one copy of each model"
    assert a.models.vad is not b.models.vad or b.models.vad is None
    events = list(StreamGroup([a, b]))
    by = {sid: [e for e in events if e.stream == sid] for sid in ("desk", b.stream_id)}
    assert b.stream_id not in ("desk",) and len(by["desk"]) == len(alone_face) and len(by[b.stream_id]) == len(alone_scene)
    # Each stream gives what it gives alone: its own smoother, speaker statistics and tracks.
    assert _labels(by["desk"]) == _labels(alone_face) and _labels(by[b.stream_id]) == _labels(alone_scene)
    if sessions is not None:
        assert len(rec.bundle._sessions) == sessions, "no model was loaded a second time"
    assert all(json.loads(json.dumps(e.to_dict()))["stream"] == e.stream for e in events[:5])


def test_stream_ids_are_unique_while_running(rec, face_video):
    first = rec.stream(video=face_video, realtime=False, stream_id="cam")
    try:
        with pytest.raises(InputError, match="already running"):
            rec.stream(video=face_video, realtime=False, stream_id="cam")
    finally:
        first.close()
    again = rec.stream(video=face_video, realtime=False, stream_id="cam")  # a closed stream frees its id
    again.close()
    with pytest.raises(InputError, match="distinct ids"):
        StreamGroup([again, again])


def test_run_several_videos_prints_every_streams_events(capsys, bundle_root, face_video, scene_video):
    code = main(["run", "--video", str(face_video), "--video", str(scene_video), "--no-realtime", "--json", "--no-audio",
                 "--no-text", "--bundle", str(bundle_root)])
    out = capsys.readouterr()
    assert code == 0, out.err
    events = [json.loads(line) for line in out.out.splitlines()]
    face, scene = face_video.stem, scene_video.stem  # streams are named after their files
    assert {e["stream"] for e in events} == {face, scene}
    assert all(e["label"] is not None for e in events if e["stream"] == face)
    assert all(e["label"] is None for e in events if e["stream"] == scene), "the scene video has no face"


def test_default_stream_names_are_unique_across_recognizers_and_name_sets_them(capsys, bundle, bundle_root, face_video):
    with Recognizer(bundle=bundle, text=False) as one, Recognizer(bundle=bundle, text=False) as two:
        a = one.stream(video=face_video, realtime=False, video_audio=False)
        b = two.stream(video=face_video, realtime=False, video_audio=False)
        stem = face_video.stem  # (a stream another test left open may hold the bare name: then "-2", "-3")
        assert a.stream_id.split("-")[0] == stem and b.stream_id.startswith(f"{stem}-") and a.stream_id != b.stream_id
        assert {e.stream for e in a} == {a.stream_id} and {e.stream for e in b} == {b.stream_id}
        again = one.stream(video=face_video, realtime=False, video_audio=False)  # both ended: the name is free
        assert again.stream_id == a.stream_id
        again.close()
    code = main(["run", "--video", str(face_video), "--no-realtime", "--json", "--no-audio", "--no-text", "--bundle",
                 str(bundle_root), "--name", "desk", "--max-seconds", "0.5"])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert {json.loads(line)["stream"] for line in out.out.splitlines()} == {"desk"}


@pytest.mark.parametrize("argv, needle", [
    (["--camera", "0", "--camera", "0"], "camera 0 is given twice"),
    (["--video", "A", "--camera", "1"], "either --camera or --video"),
    (["--video", "A", "--audio", "x.wav", "--audio", "y.wav"], "2 --audio for 1 stream(s)"),
    (["--video", "A", "--video", "B", "--record", "out.mp4"], "--record writes one stream"),
])
def test_several_sources_bad_input_is_one_line(capsys, bundle_root, face_video, tmp_path, argv, needle):
    argv = [str(face_video) if a in ("A", "B") else str(tmp_path / a) if a.endswith((".wav", ".mp4")) else a for a in argv]
    code = main(["run", *argv, "--json", "--no-realtime", "--bundle", str(bundle_root)])
    err = capsys.readouterr().err
    assert code == 2 and needle in err and err.strip().count("\n") == 0, err


def test_the_page_shows_every_stream_in_headless_chromium(rec, face_video, scene_video, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (scripts/setup.sh installs Debian's chromium)")
    server = EventServer(port=0).start()
    browser = None
    try:
        streams = [rec.stream(video=face_video, realtime=False, on_event=server.publish, stream_id="left"),
                   rec.stream(video=scene_video, realtime=False, on_event=server.publish, stream_id="right")]
        for stream in streams:
            assert stream.run(timeout=60)
        assert {json.loads(d)["stream"] for d in server.latest_per_stream()} == {"left", "right"}
        browser = HeadlessChromium(chromium, str(tmp_path / "profile"), width=1000, height=700)
        browser.open(server.url)
        assert browser.wait_for('document.querySelectorAll(".stream").length === 2 && '
                                'document.getElementById("status").textContent.includes("2 stream(s)")'), \
            "the page did not show both streams within 30 s"
        assert browser.wait_for('[...document.querySelectorAll(".sid")].map(e => e.textContent).join(",") === '
                                '"stream left,stream right" || [...document.querySelectorAll(".sid")].map(e => '
                                'e.textContent).join(",") === "stream right,stream left"')
    finally:
        if browser is not None:
            browser.close()
        server.close()
