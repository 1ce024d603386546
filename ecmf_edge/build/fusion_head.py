"""The trained ECMF fusion head for the bundle, from the weights shipped in ``ecmf_edge/weights``.

``ecmf-edge train`` writes ``fusion_head.onnx`` + ``fusion_head.json`` +
``fusion_head_reference.npz``; the package ships the ones trained on the corpora named in
MODEL_CARD.md. Export copies them into the bundle after re-running the reference rows
through ONNX Runtime (parity with the torch model that was trained).
"""
from __future__ import annotations

import json
import logging
import shutil
from importlib.resources import files
from pathlib import Path

import numpy as np

from ecmf_edge.build.common import ExportedModel, check_parity
from ecmf_edge.errors import ModelError

__all__ = ["export_fusion_head", "shipped_head_dir"]

logger = logging.getLogger("ecmf_edge")
_FILES = ("fusion_head.onnx", "fusion_head.json", "fusion_head_reference.npz")


def shipped_head_dir() -> Path:
    return Path(str(files("ecmf_edge") / "weights"))


def export_fusion_head(out_dir: Path, source: Path | None = None) -> ExportedModel:
    """Copy a trained head into the bundle and check it on its reference rows.

    Raises:
        ModelError: the head files are missing, or ONNX Runtime disagrees with the recorded outputs.
    """
    import onnxruntime as ort

    source = Path(source) if source else shipped_head_dir()
    for name in _FILES:
        if not (source / name).is_file():
            raise ModelError(f"{source / name} is missing: train a head with `ecmf-edge train --out DIR` "
                             "and export with `ecmf-edge export --head DIR`")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in _FILES[:2]:
        shutil.copyfile(source / name, out_dir / name)
    record = json.loads((source / "fusion_head.json").read_text(encoding="utf-8"))
    reference = np.load(source / "fusion_head_reference.npz")
    session = ort.InferenceSession(str(out_dir / "fusion_head.onnx"), providers=["CPUExecutionProvider"])
    feeds = {name: reference[name] for name in (*record["modalities"], "mask")}
    probs = session.run(["probs"], feeds)[0]
    diff = check_parity("fusion_head (bundle copy vs training record)", reference["probs"], probs, 1e-4)
    parity = dict(record.get("parity", {}))
    parity["bundle_copy_max_abs_diff"] = diff
    return ExportedModel.from_onnx(
        "fusion_head", out_dir / "fusion_head.onnx",
        preprocessing={"tokens": record["token_sources"], "mask": "1 = modality present, 0 = absent (masked)"},
        provenance={"package": "ecmf-edge (trained by `ecmf-edge train`)", "version": record.get("version"),
                    "licence": "Apache-2.0 (weights); see MODEL_CARD.md for the training data licences",
                    "training_data": record.get("data"), "architecture": "ECMF fusion head", "file": "ecmf_edge/weights/fusion_head.onnx"},
        parity=parity,
        extra_files=["fusion_head.json"],
        attributes={"modalities": record["modalities"], "dims": record["dims"], "labels": record["labels"],
                    "config": record["config"], "metrics": record.get("metrics", {})},
    )
