"""Sentence embeddings on ONNX Runtime: all-MiniLM-L6-v2 with its WordPiece tokenizer."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ecmf_edge.errors import InputError

__all__ = ["TextEncoder", "tokenize_batch", "MAX_TEXT_CHARS"]

# Longer inputs are cut before tokenizing (the model reads at most 256 tokens anyway).
MAX_TEXT_CHARS = 20_000


def tokenize_batch(tokenizer, texts: Sequence[str], max_tokens: int) -> dict[str, np.ndarray]:
    """Tokenize, truncate to ``max_tokens`` and pad to the longest text, as int64 arrays."""
    tokenizer.enable_truncation(max_length=max_tokens)
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
    encodings = tokenizer.encode_batch([t[:MAX_TEXT_CHARS] for t in texts])
    return {
        "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
        "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
    }


class TextEncoder:
    """Embeds text into L2-normalised 384-d vectors."""

    key = "text_encoder"

    def __init__(self, session, spec: dict, tokenizer_path) -> None:
        from tokenizers import Tokenizer

        self._session = session
        self._spec = spec
        self._tokenizer = Tokenizer.from_file(str(tokenizer_path))
        self.max_tokens = int(spec.get("attributes", {}).get("max_tokens", 256))
        self.dim = int(spec.get("attributes", {}).get("embedding_dim", 384))

    @classmethod
    def from_bundle(cls, bundle) -> TextEncoder:
        spec = bundle.spec(cls.key)
        return cls(bundle.session(spec["file"]), spec, bundle.path(spec["extra_files"][0]))

    def encode(self, texts: str | Sequence[str]) -> np.ndarray:
        """Embed one text (returns (384,)) or a list of texts (returns (N, 384)).

        Raises:
            InputError: a text is not a string or is empty after stripping whitespace.
        """
        single = isinstance(texts, str)
        if not single and not isinstance(texts, (list, tuple)):  # bytes, numbers, generators ...
            raise InputError(f"text must be str (or a list of str), got {type(texts).__name__}: pass the words as a "
                             "string (decode bytes with .decode('utf-8') first)")
        items = [texts] if isinstance(texts, str) else list(texts)  # isinstance, not `single`: mypy narrows it
        if not items:
            raise InputError("no text given: pass a non-empty string or list of strings")
        for item in items:
            if not isinstance(item, str):
                raise InputError(f"text must be str, got {type(item).__name__}: decode bytes with .decode('utf-8') first")
            if not item.strip():
                raise InputError("text is empty: pass at least one word (leave the text modality out instead)")
        batch = tokenize_batch(self._tokenizer, items, self.max_tokens)
        embedding = self._session.run(["embedding"], batch)[0].astype(np.float32)
        return embedding[0] if single else embedding
