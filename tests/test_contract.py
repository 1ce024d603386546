"""The integration contract an application builds on: the event schema, label sets, the uncertain state, the
focus at run time, inputs never accepted silently, and serve's event stream across a reconnect."""
from __future__ import annotations

import dataclasses
import http.client
import json
import threading
import time
import warnings

import numpy as np
import pytest

from ecmf_edge import InputError, Recognizer, StreamOptions
from ecmf_edge.events import LATENCY_KEYS, SCHEMA_VERSION, UNCERTAIN, EmotionEvent, Person, event_schema
from ecmf_edge.labels import LabelView, parse_label_choice
from ecmf_edge.modalities import MODALITIES
from ecmf_edge.stream.server import EventServer
from ecmf_edge.text.asr import not_language

LABELS = ("neutral", "angry", "happy", "sad", "worried", "surprise")
VALENCE = {"neutral": "neutral", "happy": "positive", "surprise": "positive", "angry": "negative", "sad": "negative",
           "worried": "negative"}


@pytest.fixture(scope="module")
def rec(bundle):
    with Recognizer(bundle=bundle, text=False) as recognizer:
        yield recognizer


# -- the schema ---------------------------------------------------------------------------------------
def test_the_schema_names_every_field_and_the_docstrings_explain_each():
    schema = event_schema()
    fields = {f.name for f in dataclasses.fields(EmotionEvent)}
    assert set(schema["properties"]) == fields | {"schema_version"}
    assert set(schema["required"]) == set(schema["properties"]), "every key is always there"
    assert tuple(schema["properties"]["latency_ms"]["required"]) == LATENCY_KEYS
    assert tuple(schema["properties"]["modality_weights"]["required"]) == MODALITIES
    assert tuple(schema["properties"]["ages_s"]["required"]) == MODALITIES
    assert schema["properties"]["schema_version"]["pattern"].startswith("^" + SCHEMA_VERSION.split(".")[0])
    for cls in (EmotionEvent, Person):
        doc = cls.__doc__ or ""
        for name in (f.name for f in dataclasses.fields(cls)):
            assert f"\n        {name}: " in doc, f"{cls.__name__}.{name} is not explained in its docstring (help())"
    assert all(p.get("description") for p in schema["properties"].values())


def test_an_event_without_evidence_keeps_every_key(rec):
    event = rec.predict(text="")  # nothing to go on
    data = event.to_dict()
    assert data["label"] is None and data["schema_version"] == SCHEMA_VERSION
    assert data["probabilities"] == dict.fromkeys(LABELS, 0.0)
    assert data["modality_weights"] == dict.fromkeys(MODALITIES, 0.0)
    assert set(data["latency_ms"]) == set(LATENCY_KEYS) and set(data["ages_s"]) == set(MODALITIES)
    assert data["uncertain"] is False and data["relabelled"] is False and data["stream"] is None


# -- label sets and the uncertain state -----------------------------------------------------------------
def test_label_views_fold_and_renormalise():
    p = np.array([0.1, 0.2, 0.3, 0.1, 0.2, 0.1])
    same = LabelView(LABELS)
    assert not same.relabelled and np.allclose(same.apply(p), p)
    subset = LabelView(LABELS, ["happy", "sad", "neutral"])
    assert subset.labels == ("happy", "sad", "neutral") and subset.relabelled
    assert np.allclose(subset.apply(p), np.array([0.3, 0.1, 0.1]) / 0.5)
    valence = LabelView(LABELS, VALENCE)
    assert valence.labels == ("neutral", "negative", "positive")
    assert np.allclose(valence.apply(p), [0.1, 0.5, 0.4])
    dropped = LabelView(LABELS, {"happy": "yes", "sad": "no", "angry": None})
    assert dropped.labels == ("yes", "no") and np.allclose(dropped.apply(p), [0.75, 0.25])
    assert parse_label_choice("happy, sad,neutral") == ("happy", "sad", "neutral")
    assert parse_label_choice("sad=negative,happy=positive,angry=") == {"sad": "negative", "happy": "positive", "angry": None}


@pytest.mark.parametrize("choice, needle", [
    (["happy", "bored"], "'bored' not in the bundle's labels"),
    (["happy"], "keep at least two"),
    (["happy", "happy"], "repeats a label"),
    ({"happy": "x", "sad": "x"}, "keep at least two"),
])
def test_bad_label_choices_are_one_line_errors(choice, needle):
    with pytest.raises(InputError, match=needle):
        LabelView(LABELS, choice)


def test_options_refuse_bad_labels_and_confidence(bundle):
    with pytest.raises(InputError, match="min_confidence"):
        StreamOptions(min_confidence=1.5)
    with pytest.raises(InputError, match="list of labels"):
        StreamOptions(labels="happy,sad")
    with pytest.raises(InputError, match="not in the bundle's labels"):
        Recognizer(bundle=bundle, text=False, options=StreamOptions(labels=["happy", "joy"]))
    with pytest.raises(SystemExit):
        from ecmf_edge.cli import main

        main(["run", "--labels", "happy,sad=x", "--headless"])


def test_predict_reports_the_application_labels_and_uncertain(bundle, astronaut_bgr):
    options = StreamOptions(labels=VALENCE, min_confidence=0.999)
    with Recognizer(bundle=bundle, text=False, options=options) as rec:
        event = rec.predict(frame=astronaut_bgr)
    assert event.relabelled and set(event.probabilities) == {"neutral", "negative", "positive"}
    assert abs(sum(event.probabilities.values()) - 1) < 1e-4
    assert event.uncertain and event.label == UNCERTAIN and event.raw_label in event.probabilities
    assert event.people and set(event.people[0].probabilities) == {"neutral", "negative", "positive"}


def test_a_stream_reports_the_application_labels_and_holds_uncertain(bundle, face_video):
    with Recognizer(bundle=bundle, text=False) as rec:
        plain = list(rec.stream(video=face_video, realtime=False, video_audio=False))
        options = StreamOptions(labels=["happy", "neutral"], min_confidence=0.9)
        events = list(rec.stream(video=face_video, realtime=False, video_audio=False, options=options))
    labelled = [e for e in events if e.raw_label is not None]
    assert labelled and all(set(e.probabilities) == {"happy", "neutral"} and e.relabelled for e in labelled)
    assert all(e.uncertain == (e.label == UNCERTAIN) for e in events)
    assert all(e.label == UNCERTAIN for e in labelled if e.confidence < 0.9)
    assert all(e.label in ("happy", "neutral") for e in labelled if e.confidence >= 0.9)
    assert [e.present for e in events] == [e.present for e in plain], "the label set changes labels, not evidence"


# -- the focus at run time ---------------------------------------------------------------------------
def test_set_focus_while_a_stream_runs(bundle, face_video):
    streams = []

    def on_event(event):  # on the ticker thread, before the next tick: the face path is at most max_lead_s ahead
        if event.index == 5:
            streams[0].set_focus(7)  # nobody has track id 7

    with Recognizer(bundle=bundle, text=False) as rec:
        stream = rec.stream(video=face_video, realtime=False, video_audio=False, on_event=on_event)
        streams.append(stream)
        with pytest.raises(InputError, match="focus="):
            stream.set_focus("tallest")
        events = list(stream)
        assert stream.options.focus == 7
    assert events[2].focus_id is not None and "face" in events[2].present
    assert events[-1].focus_id is None and events[-1].absent["face"] == "person 7 (the focus) is not in view"
    with Recognizer(bundle=bundle, text=False) as rec, pytest.raises(InputError, match="no camera or video"):
        rec.stream(audio=__file__.replace("test_contract.py", "") + "../ecmf_edge/assets/speech_en.wav",
                   realtime=False).set_focus("center")


# -- inputs never accepted silently ----------------------------------------------------------------------
def test_stereo_and_rate_less_audio_warn(rec, speech):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mono = rec.predict(audio=speech, sample_rate=16000)
    stereo = np.stack([speech, speech], axis=1)
    with pytest.warns(UserWarning, match="2 channels .* averaged to mono"):
        both = rec.predict(audio=stereo, sample_rate=16000)
    with pytest.warns(UserWarning, match="2 channels"):
        rec.predict(audio=stereo.T.copy(), sample_rate=16000)
    assert both.raw_label == mono.raw_label
    with pytest.warns(UserWarning, match="without sample_rate: assuming 16000 Hz"):
        rec.predict(audio=speech)


def test_typed_text_in_another_language_is_absent_with_the_reason(bundle):
    with Recognizer(bundle=bundle) as rec:
        german = rec.predict(text="Ich bin heute sehr wütend, weil der Zug schon wieder ausgefallen ist.")
        english = rec.predict(text="I am really happy that you came to see me today.")
        short = rec.predict(text="ok")
    assert german.absent["text"] == "the text is de; the text branch reads English"
    assert german.transcript.startswith("Ich bin") and german.language == "de" and german.label is None
    assert english.present == ("text",) and english.language == "en" and english.transcript.startswith("I am")
    assert short.present == ("text",), "a text too short to tell is read as before"


def test_transcripts_that_are_not_language_are_dropped():
    for garbled in ("N-N-N-N-N-N", "the the the the the the", "...", "- - -"):
        assert not_language(garbled) is not None, garbled
    for speech in ("Oh, oh, oh, no!", "Yeah yeah yeah yeah yeah", "I I I I think so", "Kids are talking by the door"):
        assert not_language(speech) is None, speech


def test_a_rejected_transcript_leaves_text_absent_with_the_reason(bundle, speech):
    from ecmf_edge.text.asr import Transcript
    from ecmf_edge.text.text_path import TextFeaturizer, TextPath

    class GarbledAsr:  # what Whisper gave on a real clip of music (a recorded failure, replayed)
        def transcribe(self, pcm, sample_rate=16000):
            return Transcript("", "en", 0.91, (), 2.0, 0.1, empty_reason="speech recognition repeated 'n' 6 times: "
                              "not language", rejected=True)

    path = TextPath(GarbledAsr(), TextFeaturizer.from_bundle(bundle))
    assert path.process(speech, 1.0) is None
    assert path.last_gate_reason == "speech recognition repeated 'n' 6 times: not language"
    assert path.last_transcript is None and path.latest() is None


# -- serve: a real stream, a client that drops and comes back ----------------------------------------------
def _read_messages(resp, until_end: bool, limit: int) -> list[dict]:
    messages, message = [], {}
    while len(messages) < limit:
        line = resp.fp.readline()
        if not line:
            break
        line = line.rstrip(b"\n").decode()
        if not line:
            if "data" in message:
                messages.append(message)
                if until_end and message.get("event") == "end":
                    break
            message = {}
            continue
        key, _, value = line.partition(": ")
        message[key] = value
    return messages


def test_a_client_that_reconnects_mid_stream_gets_every_event_and_the_end(bundle, face_video):
    server = EventServer(port=0).start()
    got: list[dict] = []
    try:
        with Recognizer(bundle=bundle, text=False) as rec:
            stream = rec.stream(video=face_video, realtime=True, video_audio=False, stream_id="desk")
            server.attach(stream)
            connected = threading.Event()

            def client() -> None:
                conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
                conn.request("GET", "/events")
                resp = conn.getresponse()
                connected.set()
                got.extend(_read_messages(resp, until_end=True, limit=5))
                resp.close()
                conn.close()  # drops after five messages; the stream goes on
                conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
                conn.request("GET", "/events", headers={"Last-Event-ID": got[-1]["id"]})
                resp = conn.getresponse()
                got.extend(_read_messages(resp, until_end=True, limit=10_000))
                conn.close()

            reader = threading.Thread(target=client, daemon=True)
            reader.start()
            assert connected.wait(30)
            stream.run(timeout=60)
            stream.close()
            reader.join(30)
            assert not reader.is_alive(), "the client never saw the end message"
    finally:
        server.close()
    events = [json.loads(m["data"]) for m in got if "event" not in m]
    ids = [int(m["id"]) for m in got]
    assert ids == list(range(ids[0], ids[0] + len(ids))), "no message lost or repeated across the reconnect"
    assert [e["index"] for e in events] == list(range(events[0]["index"], events[0]["index"] + len(events)))
    assert got[-1]["event"] == "end"
    end = json.loads(got[-1]["data"])
    assert end["stream"] == "desk" and end["reason"] == "input ended" and end["events"] == events[-1]["index"]
    assert server.streams() == [{"name": "desk", "source": "face.avi", "events": end["events"],
                                 "timestamp": events[-1]["timestamp"], "ended": True, "reason": "input ended"}]


def test_the_node_robot_example_follows_a_stream_across_reconnects(bundle, face_video):
    import shutil
    import subprocess
    from pathlib import Path

    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (scripts/setup.sh installs Debian's nodejs)")
    script = Path(__file__).resolve().parents[1] / "examples" / "robot_events.mjs"
    server = EventServer(port=0, max_stream_s=0.4).start()  # every response ends after 0.4 s: the client must resume
    try:
        with Recognizer(bundle=bundle, text=False) as rec:
            stream = rec.stream(video=face_video, realtime=True, video_audio=False, stream_id="livingroom")
            server.attach(stream)
            client = subprocess.Popen([node, str(script), server.url, "--until-end"], stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True)
            deadline = time.monotonic() + 60  # a generous bound on node's start: the stream begins once it listens
            while not server.clients and time.monotonic() < deadline and client.poll() is None:
                time.sleep(0.05)
            assert server.clients, f"the node client never connected: {client.communicate(timeout=5)}"
            stream.run(timeout=60)
            stream.close()
            out, err = client.communicate(timeout=60)
    finally:
        server.close()
    assert client.returncode == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert lines[-1]["done"] and lines[-1]["connections"] >= 2, "the client reconnected at least once"
    assert int(lines[-1]["last_event_id"]) == server._next_id - 1, "it saw every message, up to the end"
    assert {"stream": "livingroom", "ended": "input ended", "events": server.streams()[0]["events"]} in lines
    reactions = [line for line in lines if "behaviour" in line]
    assert reactions and all(r["stream"] == "livingroom" for r in reactions)
    assert not any("gap" in line for line in lines)
