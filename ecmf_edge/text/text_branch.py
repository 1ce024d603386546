"""Runtime of the trained text branch: (utterance, conversational context) -> embedding + probs.

``text_branch.onnx`` is all-MiniLM-L6-v2 with its top layers fine-tuned on MELD
(trained by :mod:`ecmf_edge.train.branches.text`). It reads the utterance as the first segment and the
context (the LLM's sentence, when the bundle's branch was trained with it, then the
earlier utterances) as the second; the ``embedding`` is the text token of the fusion head.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ecmf_edge.errors import InputError, ModelError
from ecmf_edge.modalities import REBUILD_COMMAND

__all__ = ["TextBranch", "MODEL_KEY", "MAX_TOKENS", "context_text", "encode_pairs"]

MODEL_KEY = "text_branch"
# Longest (utterance, context) pair the branch reads, in tokens (longer pairs are truncated, longest segment first).
MAX_TOKENS = 128


def context_text(history: Sequence[str], llm_context: str = "") -> str:
    """The second segment: the LLM's context sentence (if any), then the earlier utterances."""
    parts = [llm_context.strip()] if llm_context and llm_context.strip() else []
    parts.extend(h.strip() for h in history if h and h.strip())
    return " ".join(parts)


def encode_pairs(tokenizer, utterances: Sequence[str], contexts: Sequence[str]) -> list:
    """Tokenize (utterance, context) pairs, truncated to :data:`MAX_TOKENS` (longest first), unpadded."""
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=MAX_TOKENS, strategy="longest_first")
    return [tokenizer.encode(u, c) if c else tokenizer.encode(u) for u, c in zip(utterances, contexts)]


class TextBranch:
    """Fine-tuned MiniLM text branch on ONNX Runtime."""

    def __init__(self, session: Any, spec: dict[str, Any], tokenizer_path: Any) -> None:
        from tokenizers import Tokenizer

        names = [i.name for i in session.get_inputs()]
        outputs = {o.name for o in session.get_outputs()}
        if names != ["input_ids", "attention_mask", "token_type_ids"] or not {"embedding", "probs"} <= outputs:
            raise ModelError(f"text branch has inputs {names} and outputs {sorted(outputs)}: run `{REBUILD_COMMAND}`")
        try:
            attrs = spec["attributes"]
            self.labels = tuple(attrs["labels"])
            self.dim = int(attrs["embedding_dim"])
            self.history = int(attrs["history"])
            self.uses_llm_context = bool(attrs["llm_context"])
            # Languages the branch was trained on (MiniLM fine-tuned on English dialogue).
            self.languages = tuple(attrs.get("languages", ("en",)))
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"text_branch manifest entry is incomplete ({exc!r}): run `{REBUILD_COMMAND}`") from None
        self._session = session
        self._tokenizer = Tokenizer.from_file(str(tokenizer_path))

    @classmethod
    def from_bundle(cls, bundle: Any) -> TextBranch | None:
        """The bundle's text branch, or None for bundles without one (older versions)."""
        if not bundle.has(MODEL_KEY):
            return None
        spec = bundle.spec(MODEL_KEY)
        return cls(bundle.session(spec["file"]), spec, bundle.path("text_tokenizer.json"))

    def context(self, history: Sequence[str] = (), llm_context: str = "") -> str:
        """The second segment this branch was trained with."""
        return context_text(list(history)[-self.history:] if self.history else (),
                            llm_context if self.uses_llm_context else "")

    def __call__(self, utterance: str, history: Sequence[str] = (), llm_context: str = "") -> tuple[np.ndarray, np.ndarray]:
        """(embedding (dim,), probs) of one utterance in its context.

        Raises:
            InputError: the utterance is not a non-empty string.
            ModelError: ONNX Runtime fails.
        """
        from ecmf_edge.text.text_encoder import MAX_TEXT_CHARS

        if not isinstance(utterance, str) or not utterance.strip():
            raise InputError("text is empty or not a string: pass at least one word (leave the text modality out instead)")
        encoding = encode_pairs(self._tokenizer, [utterance[:MAX_TEXT_CHARS]], [self.context(history, llm_context)[:MAX_TEXT_CHARS]])[0]
        feeds = {"input_ids": np.array([encoding.ids], np.int64),
                 "attention_mask": np.array([encoding.attention_mask], np.int64),
                 "token_type_ids": np.array([encoding.type_ids], np.int64)}
        try:
            embedding, probs = self._session.run(["embedding", "probs"], feeds)
        except Exception as exc:  # onnxruntime's own exception types
            raise ModelError(f"text branch failed in ONNX Runtime ({(str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]}): "
                             f"run `{REBUILD_COMMAND}`") from None
        return embedding[0].astype(np.float32), probs[0].astype(np.float32)
