"""VAD for the bundle: Silero VAD's ONNX file, copied from the ``silero-vad`` package.

Silero ships ONNX already, so "export" is a verified copy. Parity: our streaming
wrapper (:class:`ecmf_edge.audio.vad.VoiceActivityDetector`) must give the same
per-chunk probabilities as Silero's own ``OnnxWrapper`` on real speech when that
package's Python code can be imported (it needs torch), and it must find the speech.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from ecmf_edge._assets import asset_path
from ecmf_edge._resources import package_file, package_version
from ecmf_edge.build.common import ExportedModel, check_parity, package_provenance
from ecmf_edge.errors import ModelError
from ecmf_edge.modalities import REBUILD_COMMAND

__all__ = ["export_vad"]

SOURCE_FILE = "data/silero_vad.onnx"
TOLERANCE = 1e-4


def _reference_probabilities(source: Path, pcm: np.ndarray) -> np.ndarray | None:
    try:
        import torch
        from silero_vad.utils_vad import OnnxWrapper
    except Exception:  # silero-vad's Python side needs torch; parity then uses the speech-span check only
        return None
    wrapper = OnnxWrapper(str(source), force_onnx_cpu=True)
    return wrapper.audio_forward(torch.from_numpy(pcm), 16000).numpy().reshape(-1)


def export_vad(out_dir: Path) -> ExportedModel:
    """Copy ``silero_vad.onnx`` into the bundle and check our wrapper against Silero's.

    Raises:
        ModelError: the package is missing or the wrapper disagrees / finds no speech.
    """
    from ecmf_edge.audio.io import load_audio
    from ecmf_edge.audio.vad import VoiceActivityDetector
    from ecmf_edge.runtime.sessions import create_session

    source = package_file("silero_vad", SOURCE_FILE)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / "vad.onnx"
    shutil.copyfile(source, target)
    speech = load_audio(asset_path("speech_en.wav"))
    vad = VoiceActivityDetector(create_session(target))
    ours = vad.probabilities(speech)
    segments = vad.segments(speech)
    if not segments:
        raise ModelError(f"vad.onnx found no speech in the reference utterance: reinstall silero-vad and run `{REBUILD_COMMAND}`")
    parity = {
        "inputs": "speech_en.wav (4 s espeak-ng English speech)",
        "speech_segments": [[s.start, s.end] for s in segments],
        "tolerance": TOLERANCE,
    }
    reference = _reference_probabilities(source, speech)
    if reference is not None:
        parity["reference"] = f"silero_vad {package_version('silero-vad')} OnnxWrapper.audio_forward"
        parity["max_abs_diff"] = check_parity("vad (ours vs silero OnnxWrapper)", reference[: ours.size], ours[: reference.size], TOLERANCE)
    else:
        parity["reference"] = "byte-identical copy of the package's ONNX file (silero's wrapper not importable)"
    return ExportedModel.from_onnx(
        "vad", target,
        preprocessing={"sample_rate": 16000, "chunk_samples": 512, "context_samples": 64, "state": [2, 1, 128]},
        provenance=package_provenance("silero-vad", SOURCE_FILE, "MIT", "Silero VAD v6 (ONNX, as shipped)"),
        parity=parity,
    )
