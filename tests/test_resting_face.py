"""Per-person resting-face calibration: the online prior, the explicit baseline, and where they act."""
from __future__ import annotations

import numpy as np
import pytest

from ecmf_edge.errors import InputError, ModelError
from ecmf_edge.vision.resting_face import MAX_VIEWS, RestingFace, RestingFaces, RestingFaceStats


def _stats(dim: int = 4, prior: float = 2.0) -> RestingFaceStats:
    return RestingFaceStats(np.zeros(dim, np.float32), np.full(dim, -1.0, np.float32), prior)


def test_first_view_is_read_as_it_is_then_the_person_mean_is_removed_with_shrinkage():
    state = RestingFace(_stats(prior=2.0))
    offset = np.array([1.0, 2.0, 0.0, -1.0], np.float32)
    first = state.correct(offset)
    assert np.allclose(first, offset)  # nothing seen before it
    second = state.correct(offset)
    # one view seen: w = 1 / (1 + 2)
    assert np.allclose(second, offset - offset / 3.0)
    for _ in range(200):
        late = state.correct(offset)
    # after many views the person's own mean is (almost) fully removed, and the count stays bounded
    assert np.allclose(late, offset * (state.stats.prior_views / (MAX_VIEWS + state.stats.prior_views)), atol=1e-4)
    assert state.views == MAX_VIEWS


def test_running_mean_forgets_old_views_in_a_long_session():
    state = RestingFace(_stats(prior=0.0))
    for _ in range(int(MAX_VIEWS)):
        state.observe(np.ones(4))
    for _ in range(int(MAX_VIEWS) * 3):
        state.observe(np.full(4, 5.0))
    assert np.allclose(state.offset(), 5.0, atol=0.3)


def test_explicit_baseline_maps_the_resting_face_onto_the_population_neutral_face():
    faces = RestingFaces(_stats())
    resting = np.array([3.0, 0.0, 1.0, 2.0], np.float32)
    faces.calibrate(0.5)
    assert faces.calibrating
    for k in range(7):  # 0.0 .. 0.6 s of the focus person looking neutral
        faces.correct(1, resting, t=0.1 * k, views=0.1, focus=True)
    assert faces.has_baseline and not faces.calibrating
    out = faces.correct(1, resting, t=1.0, views=0.1, focus=True)
    assert np.allclose(out, faces.stats.neutral_mean)
    # another person in view keeps the online prior, not the focus person's baseline
    other = faces.correct(2, resting, t=1.0, views=0.1, focus=False)
    assert np.allclose(other, resting)
    faces.forget({1})
    faces.reset()
    assert not faces.has_baseline


def test_disabled_or_missing_statistics_leave_tokens_alone():
    token = np.array([1.0, 2.0, 3.0, 4.0], np.float32)
    off = RestingFaces(_stats(), enabled=False)
    for t in range(5):
        assert np.allclose(off.correct(1, token, t, 1.0, True), token)
    none = RestingFaces(None)
    assert np.allclose(none.correct(1, token, 0.0, 1.0, True), token)
    with pytest.raises(InputError, match="export --force"):
        none.calibrate(3)


@pytest.mark.parametrize("seconds", [0, -1, "3", True, float("nan"), 10_000])
def test_bad_calibration_seconds_are_one_line_errors(seconds):
    with pytest.raises(InputError, match="seconds"):
        RestingFaces(_stats()).calibrate(seconds)


def test_malformed_manifest_entry_is_a_model_error():
    assert RestingFaceStats.from_spec({}) is None
    with pytest.raises(ModelError, match="export"):
        RestingFaceStats.from_spec({"resting_face": {"population_mean": [0.0, 1.0], "neutral_mean": [0.0], "prior_views": 2}})
    stats = _stats()
    assert RestingFaceStats.from_spec({"resting_face": stats.to_dict()}).prior_views == stats.prior_views


def test_shipped_face_encoder_carries_the_statistics(parts):
    stats = parts["face_encoder"].resting_face
    assert stats is not None
    assert stats.population_mean.shape == (parts["face_encoder"].feature_dim,) and stats.prior_views >= 0


def test_recognizer_calibration_reads_the_calibrated_face_as_neutral(bundle_root, astronaut_bgr):
    from ecmf_edge import Recognizer

    with Recognizer(bundle=bundle_root, text=False) as rec:
        before = rec.predict(frame=astronaut_bgr)
        assert rec.calibrate_face(frames=[astronaut_bgr]) == 1
        after = rec.predict(frame=astronaut_bgr)
        assert after.probabilities["neutral"] > before.probabilities["neutral"]
        rec.reset_face()
        again = rec.predict(frame=astronaut_bgr)
        assert again.probabilities == pytest.approx(before.probabilities, abs=1e-5)
        with pytest.raises(InputError, match="no face"):
            rec.calibrate_face(frames=[np.zeros((120, 160, 3), np.uint8) + 90])
        with pytest.raises(InputError, match="frames= .* or faces="):
            rec.calibrate_face()


def test_stream_records_the_focus_baseline_and_moves_the_face_towards_neutral(bundle, parts, face_video):
    from test_stream import run_files

    from ecmf_edge.stream.options import StreamOptions

    plain, _ = run_files(bundle, parts, video=face_video, options=StreamOptions(resting_face=False))
    calibrated, stream = run_files(bundle, parts, video=face_video,
                                   options=StreamOptions(resting_face=False, calibrate_s=0.3))
    assert stream.face_stage.path.resting.has_baseline
    late = [e for e in calibrated if e.timestamp > 0.6 and e.label is not None]
    same = [e for e in plain if e.timestamp > 0.6 and e.label is not None]
    assert late and same
    assert np.mean([e.probabilities["neutral"] for e in late]) > np.mean([e.probabilities["neutral"] for e in same])
    with pytest.raises(InputError, match="seconds"):
        StreamOptions(calibrate_s=-2)
