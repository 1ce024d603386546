"""The LLM as a label scorer: real GGUF inference (the default SmolLM2), the cached prefix, label words
from the labels, and the one-line errors for files and vocabularies it cannot use."""
from __future__ import annotations

import numpy as np
import pytest

from ecmf_edge import LABELS
from ecmf_edge.errors import InputError, ModelError
from ecmf_edge.text.llm_context import default_gguf
from ecmf_edge.text.llm_scorer import LlmScorer, ScorerOptions, _formatter

pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (pip install 'ecmf-edge[llm]')")


@pytest.fixture(scope="module")
def scorer():
    s = LlmScorer(LABELS, ScorerOptions(threads=1))
    yield s
    s.close()


def test_clear_utterances_get_their_label(scorer):
    cases = {"I am so happy you came, this is wonderful!": "happy", "Get out of my room, now!": "angry",
             "I'm scared of the exam tomorrow.": "worried", "My dog died yesterday.": "sad"}
    for text, label in cases.items():
        result = scorer.score(text, ["Hello.", "How are you?"])
        assert result.labels == LABELS and result.log_probs.shape == (len(LABELS),)
        assert float(np.logaddexp.reduce(result.log_probs.astype(np.float64))) == pytest.approx(0.0, abs=1e-4)
        assert 0.0 < result.coverage <= 1.0
        assert result.label == label, (text, result.log_probs)


def test_the_instruction_prefix_is_evaluated_once_and_results_do_not_depend_on_order(scorer):
    first = scorer.score("What? Really? You're kidding!", ["I got the job."])
    other = scorer.score("The meeting is at three.", [])
    again = scorer.score("What? Really? You're kidding!", ["I got the job."])
    assert other.tokens < len(scorer._llm.tokenize(scorer.prompt("The meeting is at three.").encode(), special=True))
    assert np.allclose(first.log_probs, again.log_probs, atol=1e-3)


def test_label_words_come_from_the_labels(scorer):
    two = LlmScorer(("calm", "excited"), ScorerOptions(threads=1))
    try:
        assert two.score("We won the final! I can't believe it!").label == "excited"
    finally:
        two.close()
    with pytest.raises(ModelError, match="no token that starts the label word") as info:
        LlmScorer(("happy", "zqxjvw"), ScorerOptions(threads=1))
    assert "\n" not in str(info.value)


def test_files_it_cannot_use_are_one_line_errors(tmp_path):
    text = tmp_path / "notes.gguf"
    text.write_text("not a model")
    truncated = tmp_path / "cut.gguf"
    truncated.write_bytes(default_gguf().read_bytes()[: 1 << 20])
    for path, needle in ((tmp_path / "missing.gguf", "does not exist"), (text, "not a GGUF"),
                         (truncated, "could not load")):
        with pytest.raises(ModelError, match=needle) as info:
            LlmScorer(LABELS, ScorerOptions(model_path=str(path)))
        assert "\n" not in str(info.value)


def test_chat_format_from_the_file_or_by_name(scorer):
    class NoTemplate:
        metadata = {}

    with pytest.raises(InputError, match="no chat template"):
        _formatter(NoTemplate(), None)
    with pytest.raises(InputError, match="not one llama-cpp-python knows"):
        _formatter(scorer._llm, "no-such-format")
    named = _formatter(scorer._llm, "chatml")([{"role": "user", "content": "hi"}])
    assert "<|im_start|>user" in named


def test_a_prompt_longer_than_the_context_is_cut_not_refused():
    small = LlmScorer(LABELS, ScorerOptions(threads=1, context_tokens=160))
    try:
        history = ["This is a long earlier sentence about many different things that happened. " * 3] * 2
        result = small.score("I really cannot stand this any longer, it is all going wrong. " * 6, history)
        assert result.log_probs.shape == (len(LABELS),)
        with pytest.raises(InputError):
            small.score("   ")
    finally:
        small.close()
