"""Saving a trained fusion head: ONNX (opset 17) with a parity check, plus its record.

Written files, under ``out_dir``:

* ``fusion_head.onnx`` — inputs ``frame face audio text`` (batch, dim) and ``mask``
  (batch, 4; 1 = present), outputs ``logits probs weights``;
* ``fusion_head.json`` — labels, dims, head config, training options and data, metrics,
  the encoder files the features came from, and the parity figures;
* ``fusion_head_reference.npz`` — real feature rows with the probabilities torch gave,
  which ``ecmf-edge export`` re-checks whenever it copies the head into a bundle.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ecmf_edge.build.common import check_parity, json_default, onnx_export, require_torch
from ecmf_edge.modalities import MODALITIES
from ecmf_edge.train.corpus_features import FeatureTable

__all__ = ["save_head", "PARITY_TOLERANCE"]

PARITY_TOLERANCE = 1e-4


def save_head(model, out_dir: str | Path, record: dict, reference: FeatureTable) -> Path:
    """Export ``model`` to ONNX in ``out_dir`` and check ONNX Runtime against torch on ``reference`` rows."""
    torch = require_torch()
    import onnxruntime as ort

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.eval()
    rows = np.unique(np.linspace(0, len(reference) - 1, min(len(reference), 64)).astype(int))  # spread over corpora
    feats = {m: reference.features[m][rows] for m in MODALITIES}
    mask = reference.mask[rows]
    args = tuple(torch.from_numpy(feats[m]) for m in MODALITIES) + (torch.from_numpy(mask),)
    path = onnx_export(model, args, out / "fusion_head.onnx", input_names=[*MODALITIES, "mask"],
                       output_names=["logits", "probs", "weights"],
                       dynamic_axes={n: {0: "batch"} for n in (*MODALITIES, "mask", "logits", "probs", "weights")})
    with torch.no_grad():
        _, torch_probs, torch_weights = model(*args)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    onnx_probs, onnx_weights = session.run(["probs", "weights"], {**feats, "mask": mask})
    diff = max(check_parity("fusion_head probs (ONNX vs torch)", torch_probs.numpy(), onnx_probs, PARITY_TOLERANCE),
               check_parity("fusion_head weights (ONNX vs torch)", torch_weights.numpy(), onnx_weights, PARITY_TOLERANCE))
    np.savez_compressed(out / "fusion_head_reference.npz", mask=mask, probs=torch_probs.numpy(), **feats)
    record = {**record, "parity": {"reference": "torch ECMFHead", "inputs": f"{len(rows)} real feature rows",
                                   "max_abs_diff": diff, "tolerance": PARITY_TOLERANCE}}
    (out / "fusion_head.json").write_text(json.dumps(record, indent=2, default=json_default) + "\n", encoding="utf-8")
    return path

