"""Text modality: Whisper ASR on espeak-ng speech, LLM context enrichment, and the async path."""
from __future__ import annotations

import logging
import time

import numpy as np
import pytest
from conftest import espeak

from ecmf_edge.audio.io import load_audio
from ecmf_edge.errors import DependencyError, InputError, ModelError
from ecmf_edge.text.asr import AsrOptions, SpeechRecognizer, cut_repeated_tail
from ecmf_edge.text.llm_context import ContextEnricher, LlmOptions, postprocess
from ecmf_edge.text.text_encoder import TextEncoder
from ecmf_edge.text.text_path import TEXT_FEATURE_DIM, TextFeaturizer, TextPath, build_text_path

llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (pip install 'ecmf-edge[llm]')")


@pytest.fixture(scope="module")
def recognizer(bundle):
    """Word times: faster-whisper's own loop over a 30 s window."""
    return SpeechRecognizer.from_bundle(bundle, AsrOptions(word_timestamps=True))


@pytest.fixture(scope="module")
def text_recognizer(bundle):
    """Text only over a window fitted to the speech (the live loop's default)."""
    return SpeechRecognizer.from_bundle(bundle, AsrOptions())


@pytest.fixture(scope="module")
def enricher():
    e = ContextEnricher(LlmOptions(time_limit_s=60.0))  # what the model says, not how fast: a busy machine is slow
    yield e
    e.close()


@pytest.fixture(scope="module")
def text_encoder(bundle):
    return TextEncoder.from_bundle(bundle)


def _words(text):
    text = text.lower().replace("i'm", "i am").replace("it's", "it is").replace("'re", " are")
    return {w.strip(".,!?") for w in text.split()}


# ---------------------------------------------------------------- ASR
def test_transcript_matches_what_was_said(recognizer, speech_wav):
    transcript = recognizer.transcribe(load_audio(speech_wav))
    said = _words("I am so happy that you came to visit me today.")
    assert len(said & _words(transcript.text)) >= len(said) - 1, transcript.text
    assert transcript.language == "en" and transcript.language_probability > 0.5
    words = [w for s in transcript.segments for w in s.words]
    assert words and all(a.start <= b.start for a, b in zip(words, words[1:]))
    assert 0 <= words[0].start < words[-1].end <= transcript.audio_seconds + 0.1
    assert transcript.real_time_factor > 0


def test_text_only_decoding_over_a_fitted_window_reads_the_same_words(text_recognizer, recognizer, speech_wav):
    pcm = load_audio(speech_wav)
    fast, full = text_recognizer.transcribe(pcm), recognizer.transcribe(pcm)
    said = _words("I am so happy that you came to visit me today.")
    assert len(said & _words(fast.text)) >= len(said) - 1, fast.text
    assert _words(fast.text) == _words(full.text), (fast.text, full.text)
    assert fast.language == "en" and fast.language_probability > 0.5
    assert fast.segments and all(not s.words for s in fast.segments)  # text only: no word times
    assert text_recognizer.decoded >= 1


@pytest.mark.parametrize("text, kept", [
    ("Kids are talking by the door door door door door", "Kids are talking by the door"),
    ("Dogs are sitting by the door. Dogs are sitting by the door. Dogs are sitting", "Dogs are sitting by the door."),
    ("No, no.", "No, no."),  # too short to be a loop
    ("I am so happy that you came.", "I am so happy that you came."),
    ("", ""),
])
def test_a_repeated_tail_is_cut_to_one_copy(text, kept):
    assert cut_repeated_tail(text) == kept


def test_the_encoder_window_fits_the_speech():
    options = AsrOptions()
    assert options.window_frames(0.5) == 100 * int(np.ceil(options.min_window_s))
    assert options.window_frames(3.2) == 100 * int(np.ceil(3.2 + options.window_margin_s))
    assert options.window_frames(29.5) == 3000
    assert AsrOptions(window="full").window_frames(1.0) == 3000
    with pytest.raises(InputError, match="window must be one of fit, full"):
        AsrOptions(window="half")
    with pytest.raises(InputError, match="min_window_s above 0"):
        AsrOptions(min_window_s=0)


def test_timestamps_are_relative_to_the_whole_clip(recognizer, padded_speech):
    pcm, start, end = padded_speech
    transcript = recognizer.transcribe(pcm)
    words = [w for s in transcript.segments for w in s.words]
    assert words[0].start >= start - 0.4 and words[-1].end <= end + 0.4


def test_no_speech_noise_and_blip_give_empty_transcripts_with_reasons(recognizer, speech_wav):
    silent = recognizer.transcribe(np.zeros(32000, np.float32))
    assert silent.is_empty and silent.empty_reason == "audio is silent"
    noise = recognizer.transcribe((0.05 * np.random.default_rng(2).standard_normal(48000)).astype(np.float32))
    assert noise.is_empty and noise.empty_reason == "no speech found by the VAD"
    x = load_audio(speech_wav)
    loud = np.flatnonzero(np.abs(x) > 0.05)[0]
    blip = np.concatenate([np.zeros(16000, np.float32), x[loud: loud + 3200], np.zeros(16000, np.float32)])
    result = recognizer.transcribe(blip)
    assert result.is_empty and ("of speech" in result.empty_reason or "no speech" in result.empty_reason)


@pytest.mark.parametrize("which", ["recognizer", "text_recognizer"])
def test_long_monologue_is_chunked(which, request, tmp_path):
    recognizer = request.getfixturevalue(which)
    line = load_audio(espeak("The weather was lovely and we walked along the river all afternoon.", tmp_path / "m.wav"))
    pause = np.zeros(12000, np.float32)
    monologue = np.concatenate([np.concatenate([line, pause])] * 8)  # about 40 s
    assert monologue.size / 16000 > 30
    chunks = recognizer._chunks(monologue)
    assert len(chunks) >= 2 and all(e - s <= 30.0 for s, e in chunks)
    transcript = recognizer.transcribe(monologue)
    assert transcript.text.lower().count("river") >= 6, transcript.text


@pytest.mark.parametrize("which", ["recognizer", "text_recognizer"])
def test_non_english_speech_is_detected_and_language_can_be_set(bundle, which, request, tmp_path):
    recognizer = request.getfixturevalue(which)
    german = load_audio(espeak("Guten Morgen. Heute scheint die Sonne und ich gehe mit meinem Hund im Park spazieren.",
                               tmp_path / "de.wav", voice="de"))
    transcript = recognizer.transcribe(german)
    assert transcript.language == "de", transcript
    assert "sonne" in transcript.text.lower()
    assert any("English-only" in n for n in transcript.notes)
    forced = SpeechRecognizer.from_bundle(bundle, AsrOptions(language="en", word_timestamps=recognizer.options.word_timestamps))
    transcript = forced.transcribe(german)
    assert transcript.language == "en" and not transcript.notes


def test_asr_bad_input(recognizer, tmp_path):
    with pytest.raises(InputError, match="8000 Hz but the models need 16000 Hz"):
        recognizer.transcribe(np.zeros(8000, np.float32), 8000)
    with pytest.raises(InputError, match="empty"):
        recognizer.transcribe(np.zeros(0, np.float32))
    with pytest.raises(ModelError, match="has no model.bin"):
        SpeechRecognizer(tmp_path)


# ---------------------------------------------------------------- LLM context
def test_llm_describes_an_emotional_utterance(enricher):
    result = enricher.enrich("We won! We actually won the championship!")
    assert result.used_llm, result
    assert result.context and result.context.lower() != "we won! we actually won the championship!"
    assert result.enriched.endswith("We won! We actually won the championship!")
    assert result.tokens > 0 and result.first_token_ms is not None and result.latency_ms >= result.first_token_ms


def test_history_goes_into_the_prompt(enricher):
    messages = enricher.messages("Fine.", history=["You forgot my birthday.", "Again."])
    assert "You forgot my birthday." in messages[-1]["content"] and "Fine." in messages[-1]["content"]


@pytest.mark.parametrize("answer, transcript, expect_reason", [
    ("", "I lost my keys", "no usable answer"),
    ("   \n ", "I lost my keys", "no usable answer"),
    ('"I lost my keys again."', "I lost my keys again.", "echoed"),
    ("The person said I lost my keys", "I lost my keys", "echoed"),
    ("The speaker sounds frustrated about losing something.", "I lost my keys", None),
])
def test_postprocess_rejects_empty_and_echo(answer, transcript, expect_reason):
    context, reason = postprocess(answer, transcript, 200)
    if expect_reason is None:
        assert reason is None and context
    else:
        assert context == "" and expect_reason in reason


def test_postprocess_bounds_a_rambling_answer():
    ramble = "The speaker is upset. " + "They keep talking about many other unrelated things " * 30
    context, reason = postprocess(ramble, "Leave me alone", 120)
    assert reason is None and len(context) <= 121


def test_llm_rambling_is_cut_by_tokens_and_time():
    rambler = ContextEnricher(LlmOptions(max_tokens=400, time_limit_s=0.3, few_shot=False,
                                         system_prompt="Write a very long story of at least five paragraphs about the sentence."))
    try:
        result = rambler.enrich("The cat sat on the mat.")
    finally:
        rambler.close()
    assert any("time limit" in n for n in result.notes)
    assert len(result.context) <= rambler.options.max_chars
    assert len(result.context) <= 200


def test_llm_with_no_room_to_answer_falls_back(enricher):
    mute = ContextEnricher(LlmOptions(max_tokens=1, time_limit_s=60.0))
    try:
        result = mute.enrich("I really can't stand this anymore.")
    finally:
        mute.close()
    assert not result.used_llm and result.enriched == "I really can't stand this anymore."
    assert result.fallback_reason == "the LLM gave no usable answer"


def test_corrupt_and_missing_gguf(tmp_path):
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"\x00" * 4096)
    with pytest.raises(ModelError, match="not a GGUF model file"):
        ContextEnricher(LlmOptions(model_path=str(junk)))
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + bytes(range(256)) * 4)
    with pytest.raises(ModelError, match="llama.cpp could not load truncated.gguf"):
        ContextEnricher(LlmOptions(model_path=str(truncated)))
    with pytest.raises(ModelError, match="does not exist"):
        ContextEnricher(LlmOptions(model_path=str(tmp_path / "none.gguf")))


def test_missing_llama_cpp_is_a_dependency_error(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "llama_cpp", None)
    with pytest.raises(DependencyError, match=r"pip install 'ecmf-edge\[llm\]'"):
        ContextEnricher(LlmOptions())


# ---------------------------------------------------------------- text feature and async path
def test_text_feature_keeps_enriched_and_original(text_encoder, enricher):
    featurizer = TextFeaturizer(text_encoder, enricher)
    feature = featurizer.featurize("I got the job! I start on Monday!")
    assert feature.vector.shape == (TEXT_FEATURE_DIM,)
    original = text_encoder.encode("I got the job! I start on Monday!")
    assert np.allclose(feature.vector[384:], original, atol=1e-5)
    assert np.allclose(feature.vector[:384], text_encoder.encode(feature.context.enriched), atol=1e-5)
    again = featurizer.featurize("I got the job! I start on Monday!")
    assert again.context is feature.context, "second call was not served from the cache"


def test_without_llm_the_transcript_is_embedded_twice(text_encoder):
    feature = TextFeaturizer(text_encoder, None).featurize("Hello there.")
    assert feature.context.fallback_reason == "no LLM loaded"
    assert np.allclose(feature.vector[:384], feature.vector[384:])


def test_text_path_runs_in_the_background_and_expires(bundle, speech_wav):
    path = build_text_path(bundle, use_llm=True, max_age_s=60.0)
    assert path is not None
    path.start()
    try:
        path.submit(load_audio(speech_wav))
        assert path.latest() is None  # submit returned before the work was done
        deadline = time.monotonic() + 60
        while path.latest() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        feature = path.latest()
        assert feature is not None and "happy" in feature.transcript.lower()
        assert {"asr", "llm", "text_encoder"} <= set(feature.latency_ms)
        assert path.latest(now=feature.created + 61.0) is None, "an old text feature must expire"
    finally:
        path.stop()


def test_full_queue_drops_the_oldest(text_encoder):
    class SlowRecognizer:
        def transcribe(self, pcm):
            time.sleep(0.2)
            raise InputError("not used")

    path = TextPath(SlowRecognizer(), TextFeaturizer(text_encoder), queue_size=2)
    for _ in range(5):
        path.submit(np.zeros(16000, np.float32))
    assert path.dropped == 3


def test_a_failing_stage_is_logged_once_and_the_worker_survives(text_encoder, caplog):
    class BrokenRecognizer:
        calls = 0

        def transcribe(self, pcm):
            BrokenRecognizer.calls += 1
            raise RuntimeError("decoder crashed")

    path = TextPath(BrokenRecognizer(), TextFeaturizer(text_encoder)).start()
    try:
        with caplog.at_level(logging.WARNING, logger="ecmf_edge"):
            for _ in range(3):
                path.submit(np.zeros(16000, np.float32))
                time.sleep(0.15)
        deadline = time.monotonic() + 5
        while BrokenRecognizer.calls < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert path.errors == 3 and path._thread.is_alive()
        assert sum("decoder crashed" in r.message for r in caplog.records) == 1
    finally:
        path.stop()


def test_missing_llm_degrades_with_one_warning(bundle, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "llama_cpp", None)
    with pytest.warns(RuntimeWarning, match="running without LLM context enrichment"):
        path = build_text_path(bundle, use_llm=True)
    assert path is not None and path.featurizer.enricher is None


def test_an_unsure_language_guess_is_reported_as_unsure_but_still_gates_the_text():
    from ecmf_edge.text.asr import LANGUAGE_SURE, reported_language

    assert reported_language("en", 0.97) == "en"
    assert reported_language("ko", LANGUAGE_SURE - 0.01) == "unsure"  # e.g. Mandarin guessed as Korean
    assert reported_language(None, 0.0) is None
