"""``ecmf-edge export``: build the default bundle offline from installed weight packages.

Each exporter converts one pretrained model to ONNX and checks parity with its source
framework on real inputs; this module runs them in order with a progress bar, hashes
every file and writes ``manifest.json``. The bundle is written to a sibling
``.partial`` folder first and moved into place only when everything succeeded, so a
failed export never leaves a half-built bundle behind.
"""
from __future__ import annotations

import importlib
import json
import logging
import platform
import shutil
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path

from ecmf_edge import __version__
from ecmf_edge.build.common import ExportedModel, json_default, require_torch
from ecmf_edge.errors import missing_dependency
from ecmf_edge.labels import MER2025_LABELS
from ecmf_edge.runtime.bundle import DEFAULT_BUNDLE, MANIFEST, MANIFEST_FORMAT, REBUILD_COMMAND, bundle_dir, sha256_file

__all__ = ["export_bundle", "EXPORTERS", "MODALITIES"]

logger = logging.getLogger("ecmf_edge")

# (manifest key, module, function) in the order they are built.
EXPORTERS: tuple[tuple[str, str, str], ...] = (
    ("face_detector", "ecmf_edge.build.mtcnn", "export_face_detector"),
    ("face_encoder", "ecmf_edge.build.face_encoder", "export_face_encoder"),
    ("frame_encoder", "ecmf_edge.build.efficientnet_lite", "export_frame_encoder"),
    ("vad", "ecmf_edge.build.silero_vad", "export_vad"),
    ("audio_encoder", "ecmf_edge.build.whisper_encoder", "export_audio_encoder"),
    ("text_encoder", "ecmf_edge.build.minilm", "export_text_encoder"),
    ("speech_head", "ecmf_edge.build.branches", "export_speech_head"),
    ("text_branch", "ecmf_edge.build.branches", "export_text_branch"),
    ("fusion_head", "ecmf_edge.build.fusion_head", "export_fusion_head"),
)
# Exporters that read trained files (default: the shipped ones in ecmf_edge/weights).
# key -> (which folder option, the file that must be in it); a folder without that file leaves the
# shipped one in use, so `--branches DIR` may hold one branch only.
_TRAINED = {"face_encoder": ("branches", "face_encoder_finetuned.npz"), "speech_head": ("branches", "speech_head.onnx"),
            "text_branch": ("branches", "text_branch.npz"), "fusion_head": ("head", "fusion_head.onnx")}

# The feature vector each modality token carries into the fusion head: model key and output.
MODALITIES: dict[str, dict[str, str]] = {
    "frame": {"model": "frame_encoder", "output": "features", "pooling": "mean over sampled frames"},
    "face": {"model": "face_encoder", "output": "features", "pooling": "mean over frames with a face"},
    "audio": {"model": "speech_head", "output": "embedding", "input": "audio_encoder.pooled_mid + prosody (16 statistics), "
              "speaker-normalised", "pooling": "speech segments found by the VAD"},
    "text": {"model": "text_branch", "output": "embedding",
             "pooling": "mean over the utterance's tokens, read with its conversational context"},
}


def _files_of(record: ExportedModel) -> list[str]:
    return [record.file, *record.extra_files]


def export_bundle(
    target: Path | None = None,
    *,
    force: bool = False,
    progress: bool = True,
    keys: Sequence[str] | None = None,
    on_step: Callable[[str], None] | None = None,
    head_dir: Path | None = None,
    branches_dir: Path | None = None,
) -> Path:
    """Export every model of the default bundle into ``target`` and write its manifest.

    Args:
        target: bundle folder; default ``<engines>/default/onnxruntime-fp32``.
        force: rebuild even when a complete bundle is already there.
        progress: show a progress bar on stderr.
        keys: export only these models (for development; the bundle is then partial).
        on_step: called with each model key before it is exported.
        head_dir: folder of a head trained with `ecmf-edge train` (default: the shipped head).
        branches_dir: folder with branches trained with `ecmf-edge train --branch ...` (face encoder,
            speech head, text branch; default: the shipped ones).

    Raises:
        ModelError: a source package is missing or a parity check failed.
        DependencyError: torch (the ``export`` extra) is not installed.
    """
    target = Path(target) if target is not None else bundle_dir(DEFAULT_BUNDLE)
    require_torch()  # fail before the progress bar, not in the middle of it
    try:
        import onnx  # noqa: F401  (every exporter checks its file with it)
    except ImportError:
        raise missing_dependency("onnx", "build") from None
    if (target / MANIFEST).is_file() and not force:
        logger.info("bundle already at %s (use force=True / --force to rebuild)", target)
        return target
    selected = [e for e in EXPORTERS if keys is None or e[0] in keys]
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    records: list[ExportedModel] = []
    timings: dict[str, float] = {}
    from tqdm import tqdm

    bar = tqdm(selected, desc="export", unit="model", disable=not progress, leave=True)
    try:
        for key, module_name, function in bar:
            bar.set_postfix_str(key)
            if on_step:
                on_step(key)
            start = time.perf_counter()
            exporter = getattr(importlib.import_module(module_name), function)
            option, needed = _TRAINED.get(key, ("", ""))
            source = {"head": head_dir, "branches": branches_dir}.get(option)
            if source is not None and option == "branches" and not (Path(source) / needed).is_file():
                source = None
            records.append(exporter(partial, source) if source else exporter(partial))
            timings[key] = round(time.perf_counter() - start, 2)
    except BaseException:
        bar.close()
        shutil.rmtree(partial, ignore_errors=True)
        raise
    bar.close()
    files: dict[str, dict] = {}
    for record in records:
        for relative in _files_of(record):
            path = partial / relative
            files[relative] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    manifest = {
        "format": MANIFEST_FORMAT,
        "name": DEFAULT_BUNDLE,
        "version": __version__,
        "backend": "onnxruntime",
        "precision": "fp32",
        "labels": list(MER2025_LABELS),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "created_with": {"ecmf_edge": __version__, "python": platform.python_version()},
        "rebuild": REBUILD_COMMAND,
        "modalities": {m: v for m, v in MODALITIES.items() if any(r.key == v["model"] for r in records)},
        "models": {
            r.key: {
                "file": r.file,
                "extra_files": r.extra_files,
                "inputs": r.inputs,
                "outputs": r.outputs,
                "preprocessing": r.preprocessing,
                "attributes": r.attributes,
                "precision": "fp32",
                "provenance": r.provenance,
                "parity": r.parity,
                "export_seconds": timings[r.key],
            }
            for r in records
        },
        "files": files,
    }
    (partial / MANIFEST).write_text(json.dumps(manifest, indent=2, default=json_default) + "\n", encoding="utf-8")
    if target.exists():
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial.rename(target)
    logger.info("bundle written to %s", target)
    return target

