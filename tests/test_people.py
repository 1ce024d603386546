"""Several people in view: tracked faces with stable ids, a label per person, the focus person, and
face detection amortised by tracking. Clips are real photographs composited and moved
(:mod:`ecmf_edge.bench.people_clips`)."""
from __future__ import annotations

import csv
import json

import cv2
import numpy as np
import pytest
from conftest import make_video

from ecmf_edge import InputError, Recognizer, StreamOptions
from ecmf_edge.bench.people_clips import SCENARIOS, grid_clip, id_switches, moving_clip, person_of
from ecmf_edge.cli import main
from ecmf_edge.events import EmotionEvent, Person
from ecmf_edge.people import FRAME_ALONE_REASON
from ecmf_edge.stream.overlay import LABEL_COLOURS, draw_overlay
from ecmf_edge.vision.face_detector import FaceDetector
from ecmf_edge.vision.tracking import FaceTracker


@pytest.fixture(scope="module")
def detector(bundle):
    return FaceDetector.from_bundle(bundle, min_face_size=StreamOptions().min_face_size)


@pytest.fixture(scope="module")
def rec(bundle):
    with Recognizer(bundle=bundle, use_llm=False, text=False) as recognizer:
        yield recognizer


@pytest.fixture(scope="module")
def crossing_video(tmp_path_factory):
    clip = moving_clip("crossing")
    return make_video(tmp_path_factory.mktemp("people") / "crossing.avi", clip.frames, fps=30.0), clip


def _track(detector, clip, **options):
    tracker = FaceTracker(detector, **options)
    tracks = []
    for k, frame in enumerate(clip.frames):
        result = tracker.update(frame, k / clip.fps)
        tracks.append({tf.id: tf.face.box for tf in result.faces})
    return tracker, tracks


@pytest.mark.parametrize("faces", [0, 1, 2, 4])
def test_still_people_keep_their_ids_and_the_detector_runs_a_fraction_of_frames(detector, faces):
    clip = grid_clip(faces, frames=30)
    tracker, tracks = _track(detector, clip)
    assert [len(t) for t in tracks] == [faces] * 30
    assert len({tid for t in tracks for tid in t}) == faces
    assert tracker.detections <= 6, "detection is amortised: the first frame, every 10th, and little else"


def test_detect_every_frame_when_asked(detector):
    tracker, tracks = _track(detector, grid_clip(2, frames=12), detect_every=1)
    assert tracker.detections == 12 and all(len(t) == 2 for t in tracks)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_moving_crossing_leaving_people_keep_their_ids(detector, scenario):
    clip = moving_clip(scenario)
    _, tracks = _track(detector, clip)
    assert id_switches(tracks, clip.heads) == 0
    visible = sum(len(h) for h in clip.heads)
    found = sum(1 for boxes, truth in zip(tracks, clip.heads) for box in boxes.values() if person_of(box, truth) is not None)
    assert found >= 0.95 * visible
    people = {person_of(box, truth) for boxes, truth in zip(tracks, clip.heads) for box in boxes.values()} - {None}
    assert len({tid for t in tracks for tid in t}) == len(people), "one id per person, none made up"


def test_refine_replaces_a_face_and_loses_one_that_left(detector, astronaut_bgr):
    face = detector.detect(astronaut_bgr)[0]
    shifted = tuple(v + 6 for v in face.box)  # where a tracker might predict it
    refined = detector.refine(astronaut_bgr, [shifted])[0]
    assert refined is not None and refined.landmarks.shape == (5, 2)
    assert max(abs(a - b) for a, b in zip(refined.box, face.box)) < 0.15 * face.width
    grey = np.full_like(astronaut_bgr, 120)
    assert detector.refine(grey, [face.box]) == [None]
    assert detector.refine(astronaut_bgr, []) == []


def test_tracker_options_are_checked(detector):
    for bad in (dict(detect_every=0), dict(max_people=0), dict(buffer_frames=True), dict(max_shift=0)):
        with pytest.raises(InputError):
            FaceTracker(detector, **bad)
    for bad in (dict(focus="left"), dict(focus=0), dict(max_people=0), dict(detect_every=1.5), dict(face_encoder_hz=0),
                dict(people_encoder_hz=0)):
        with pytest.raises(InputError):
            StreamOptions(**bad)


def test_a_stream_reports_every_person_and_the_focus(rec, crossing_video):
    path, clip = crossing_video
    events = list(rec.stream(video=str(path), realtime=False))
    assert len(events) >= 25
    ids = {p.id for e in events for p in e.people}
    assert len(ids) == 2, f"two people, two ids: {ids}"
    for e in events:
        assert e.focus_id in {p.id for p in e.people} and e.face_box is not None
        assert [p.box for p in e.people] == sorted((p.box for p in e.people),
                                                   key=lambda b: -(b[2] - b[0]) * (b[3] - b[1]))
        assert all(p.label in rec.labels and abs(sum(p.probabilities.values()) - 1) < 1e-3 for p in e.people)
    both = [e for e in events if len(e.people) == 2]
    assert len(both) >= 15
    row = both[0].to_dict()
    assert json.loads(json.dumps(row))["people"][0].keys() >= {"id", "box", "label", "confidence", "probabilities",
                                                              "tracked_s"}
    assert both[-1].people[0].tracked_s > 1.0


def test_each_persons_label_is_what_the_face_alone_gives(rec):
    frame = grid_clip(3, frames=1).frames[0]
    event = rec.predict(frame=frame)
    assert [p.id for p in event.people] == [0, 1, 2] and event.focus_id == 0
    clip_one = grid_clip(1, frames=1).frames[0]
    scene = grid_clip(0, frames=1).frames[0]
    for person in event.people:
        x1, y1, x2, y2 = (int(v) for v in person.box)
        alone = scene.copy()
        cell = (slice(max(0, y1 - 60), y2 + 60), slice(max(0, x1 - 60), x2 + 60))
        alone[cell] = frame[cell]  # this person only, where it stands
        single = rec.predict(frame=alone)
        assert len(single.people) == 1
        assert single.people[0].label == person.label
        for name, p in person.probabilities.items():
            assert single.people[0].probabilities[name] == pytest.approx(p, abs=0.05)
    assert rec.predict(frame=clip_one).people[0].label == event.people[0].label


def test_max_people_keeps_the_largest_and_says_how_many_were_skipped(bundle):
    frame = grid_clip(4, frames=1).frames[0]
    with Recognizer(bundle=bundle, use_llm=False, text=False, options=StreamOptions(max_people=2)) as rec:
        event = rec.predict(frame=frame)
    assert len(event.people) == 2 and event.people_skipped == 2
    assert event.to_dict()["people_skipped"] == 2


def test_focus_on_a_track_id_leaves_the_face_absent_while_that_person_is_away(bundle, crossing_video):
    path, _ = crossing_video
    # Track 1 is the person walking behind the other one (first seen on the left, hidden while they cross).
    with Recognizer(bundle=bundle, use_llm=False, text=False, options=StreamOptions(focus=1)) as rec:
        events = list(rec.stream(video=str(path), realtime=False))
    with_focus = [e for e in events if e.focus_id == 1]
    away = [e for e in events if 1 not in {p.id for p in e.people} and e.people]
    assert with_focus and away
    assert all("face" in e.present and e.face_box == next(p.box for p in e.people if p.id == 1) for e in with_focus)
    assert all(e.absent.get("face") == "person 1 (the focus) is not in view" and e.focus_id is None for e in away)


def test_blank_tiny_and_faceless_frames_give_no_label(rec, coffee_bgr):
    for frame in (np.zeros((1, 1, 3), np.uint8), np.zeros((480, 640, 3), np.uint8), np.full((240, 320), 255, np.uint8)):
        event = rec.predict(frame=frame)
        assert event.label is None and event.people == () and "one colour" in event.absent["frame"]
    event = rec.predict(frame=coffee_bgr)
    assert event.label is None and event.present == () and event.absent["frame"] == FRAME_ALONE_REASON
    assert event.absent["face"] == "no face in the frame"
    with_voice = rec.predict(frame=coffee_bgr, text="I am so glad you came")
    assert with_voice.label is not None and "frame" in with_voice.present


def test_a_faceless_video_gives_events_without_a_label(rec, scene_video):
    events = list(rec.stream(video=str(scene_video), realtime=False))
    assert events and all(e.label is None and e.people == () for e in events)
    assert all(e.absent.get("frame") == FRAME_ALONE_REASON for e in events if "frame" in e.ages_s and
               e.ages_s["frame"] < 1.0)


def test_crowded_tiny_and_huge_faces_are_bounded_and_never_raise(rec, astronaut_bgr):
    head = astronaut_bgr[10:250, 110:430]
    crowd = np.concatenate([np.concatenate([cv2.resize(head, (80, 60))] * 8, axis=1)] * 8, axis=0)  # 64 small heads
    event = rec.predict(frame=crowd)
    assert len(event.people) <= 8 and event.people_skipped == max(0, len(event.people) + event.people_skipped - 8)
    edge = np.full((480, 640, 3), 90, np.uint8)
    edge[440:480, 610:640] = cv2.resize(head, (30, 40))  # a tiny face cut by the frame's corner
    assert rec.predict(frame=edge).label is None
    huge = cv2.resize(astronaut_bgr[40:200, 150:300], (640, 480))  # a face filling the frame
    event = rec.predict(frame=huge)
    assert event.label is not None


def test_the_window_draws_every_person_in_its_labels_colour():
    frame = np.full((480, 640, 3), 30, np.uint8)
    people = (Person(1, (50.0, 60.0, 150.0, 180.0), "happy", 0.9, {"happy": 0.9, "sad": 0.1}, 2.0),
              Person(2, (350.0, 80.0, 430.0, 190.0), "sad", 0.7, {"happy": 0.3, "sad": 0.7}, 1.0))
    event = EmotionEvent(1.0, "happy", 0.8, {"happy": 0.8, "sad": 0.2}, {"face": 1.0}, ("face",), {}, people=people,
                         focus_id=1, face_box=people[0].box)
    img = draw_overlay(frame, event)
    assert tuple(img[120, 50]) == LABEL_COLOURS["happy"] and tuple(img[130, 350]) == LABEL_COLOURS["sad"]


def test_run_prints_people_as_json_and_takes_focus(capsys, bundle_root, crossing_video):
    path, _ = crossing_video
    code = main(["run", "--video", str(path), "--no-realtime", "--json", "--no-audio", "--bundle", str(bundle_root),
                 "--max-seconds", "1.0", "--focus", "center", "--detect-every", "5"])
    out = capsys.readouterr()
    assert code == 0, out.err
    events = [json.loads(line) for line in out.out.splitlines()]
    assert all(len(e["people"]) == 2 and e["focus_id"] in {p["id"] for p in e["people"]} for e in events)
    with pytest.raises(SystemExit) as exit_:
        main(["run", "--video", str(path), "--focus", "left", "--bundle", str(bundle_root)])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "use largest, center or a track id" in err.splitlines()[-1]


def test_labelling_a_recording_writes_a_per_person_timeline(tmp_path, bundle_root, crossing_video):
    path, _ = crossing_video
    code = main(["label", str(path), "--out", str(tmp_path), "--no-plot", "--bundle", str(bundle_root), "--quiet"])
    assert code == 0
    with open(tmp_path / "crossing.avi.people.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["person"] for r in rows} == {"1", "2"}
    assert all(0 < float(r["seen"]) <= 1 and r["label"] for r in rows)
    assert sum(float(r["focus"]) for r in rows if r["start"] == "0.0") == pytest.approx(1.0)
