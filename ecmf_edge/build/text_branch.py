"""Export of the trained text branch: the package's MiniLM with the fine-tuned tensors of
``text_branch.npz`` on top -> ``text_branch.onnx`` (inputs ``input_ids``, ``attention_mask``,
``token_type_ids``; outputs ``embedding``, ``logits``, ``probs``), with a parity check against torch.

The network's top (the fine-tuned layers and the classifier) is defined here once; training
(:mod:`ecmf_edge.train.branches.text`) builds the same module.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ecmf_edge.build.common import check_parity, onnx_export, require_torch
from ecmf_edge.errors import ModelError
from ecmf_edge.text.text_branch import encode_pairs

__all__ = ["build_text_branch", "build_top", "load_package_minilm", "pad_encodings", "pack_tuned_tensors", "unpack_tuned_tensors",
           "WEIGHTS_FILE", "RECORD_FILE", "ONNX_FILE", "HIDDEN"]

WEIGHTS_FILE = "text_branch.npz"
RECORD_FILE = "text_branch.json"
ONNX_FILE = "text_branch.onnx"
HIDDEN = 384


def load_package_minilm():
    """(torch MiniLM with the package's weights, the package folder)."""
    from safetensors.numpy import load_file

    from ecmf_edge.build.minilm import _build_module, _source_dir

    src = _source_dir()
    config = json.loads((src / "config.json").read_text(encoding="utf-8"))
    return _build_module(config, load_file(str(src / "model.safetensors"))), src


def pad_encodings(torch, encodings):
    """(ids, type ids, attention mask) tensors of tokenizer encodings, zero-padded to the longest."""
    width = max(len(e.ids) for e in encodings)
    ids = torch.zeros(len(encodings), width, dtype=torch.long)
    types, mask = torch.zeros_like(ids), torch.zeros_like(ids)
    for k, e in enumerate(encodings):
        n = len(e.ids)
        ids[k, :n] = torch.tensor(e.ids)
        types[k, :n] = torch.tensor(e.type_ids)
        mask[k, :n] = 1
    return ids, types, mask


def build_top(torch, model, top: int, classes: int):
    """The fine-tuned part: MiniLM's top ``top`` layers, mean over the utterance's tokens, a linear classifier."""
    class Top(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layers = torch.nn.ModuleList(model.layers[len(model.layers) - top:])
            self.dropout = torch.nn.Dropout(0.1)
            self.classifier = torch.nn.Linear(HIDDEN, classes)

        def forward(self, x, mask, utterance):
            bias = (1.0 - mask)[:, None, None, :] * -1e4
            for layer in self.layers:
                x = layer(x, bias)
            embedding = (x * utterance[..., None]).sum(1) / utterance.sum(1, keepdim=True).clamp(min=1.0)
            return embedding, self.classifier(self.dropout(embedding))

    return Top()


def pack_tuned_tensors(tuned: dict[str, np.ndarray], package: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """What ``text_branch.npz`` stores: a matrix that ``package`` also has as its int8 difference from
    it (``<name>.delta_int8``) with a float32 scale per row (``<name>.delta_scale``); any other tensor
    as float16."""
    out = {}
    for name, value in tuned.items():
        value = np.asarray(value, np.float32)
        if value.ndim == 2 and name in package:
            delta = value - np.asarray(package[name], np.float32)
            scale = np.abs(delta).max(axis=1) / 127.0
            scale[scale == 0] = 1.0
            out[f"{name}.delta_int8"] = np.round(delta / scale[:, None]).astype(np.int8)
            out[f"{name}.delta_scale"] = scale.astype(np.float32)
        else:
            out[name] = value.astype(np.float16)
    return out


def unpack_tuned_tensors(stored: dict[str, np.ndarray], package: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Inverse of :func:`pack_tuned_tensors` (plain float16 tensors, as older files hold, load as they are)."""
    out = {}
    for name, value in stored.items():
        if name.endswith(".delta_scale"):
            continue
        if name.endswith(".delta_int8"):
            name = name[:-len(".delta_int8")]
            scale = stored[f"{name}.delta_scale"].astype(np.float32)
            out[name] = np.asarray(package[name], np.float32) + value.astype(np.float32) * scale[:, None]
        else:
            out[name] = value.astype(np.float32)
    return out


def build_text_branch(weights: Path, record: dict, out_path: Path) -> dict:
    """Package weights + fine-tuned tensors -> ``text_branch.onnx``; returns parity figures.

    Raises:
        ModelError: the weight file is missing, corrupt or does not fit the network.
    """
    torch = require_torch()
    model, src = load_package_minilm()
    top_layers = int(record["options"]["top_layers"])
    top = build_top(torch, model, top_layers, len(record["labels"]))
    try:
        package = {k: v.detach().numpy() for k, v in top.state_dict().items()}
        with np.load(weights, allow_pickle=False) as data:
            state = unpack_tuned_tensors({k: data[k] for k in data.files}, package)
        top.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True)
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise ModelError(f"{weights} does not fit the text branch ({str(exc).splitlines()[0][:120]}): "
                         "reinstall ecmf-edge or retrain with `ecmf-edge train --branch text`") from None
    bottom = len(model.layers) - top_layers

    class TextBranch(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.base, self.top = model, top

        def forward(self, input_ids, attention_mask, token_type_ids):
            pos = torch.arange(input_ids.shape[1]).unsqueeze(0)
            x = self.base.norm(self.base.words(input_ids) + self.base.positions(pos) + self.base.types(token_type_ids))
            mask = attention_mask.to(x.dtype)
            bias = (1.0 - mask)[:, None, None, :] * -1e4
            for layer in self.base.layers[:bottom]:
                x = layer(x, bias)
            utterance = mask * (token_type_ids == 0).to(x.dtype)
            embedding, logits = self.top(x, mask, utterance)
            return embedding, logits, torch.softmax(logits, dim=1)

    net = TextBranch().eval()
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(src / "tokenizer.json"))
    pairs = encode_pairs(tokenizer, ["Oh my God, you did it!", "I don't know what to do anymore.", "Fine."],
                         ["We won the game.", "", "Are you coming tonight? I made dinner for everyone."])
    ids, types, mask = pad_encodings(torch, pairs)
    onnx_export(net, (ids, mask, types), out_path, ["input_ids", "attention_mask", "token_type_ids"],
                ["embedding", "logits", "probs"],
                {"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"},
                 "token_type_ids": {0: "batch", 1: "tokens"}, "embedding": {0: "batch"}, "logits": {0: "batch"}, "probs": {0: "batch"}})
    import onnxruntime as ort

    with torch.no_grad():
        expected = net(ids, mask, types)[2].numpy()
    got = ort.InferenceSession(str(out_path), providers=["CPUExecutionProvider"]).run(
        ["probs"], {"input_ids": ids.numpy(), "attention_mask": mask.numpy(), "token_type_ids": types.numpy()})[0]
    return {"reference": "torch (package MiniLM + fine-tuned top layers)", "inputs": f"{len(pairs)} utterance/context pairs",
            "max_abs_diff": check_parity("text branch ONNX vs torch", expected, got, 1e-4), "tolerance": 1e-4}
