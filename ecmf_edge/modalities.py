"""Facts shared by every layer of the package, stated once.

The modality tokens and their order (the fusion head's inputs and the events' weights),
the audio sample rate every model reads, the backends and precisions a bundle can be
built for, and the commands and extras that build or install what is missing.
"""
from __future__ import annotations

__all__ = [
    "MODALITIES", "RAW_TOKEN_DIMS", "SAMPLE_RATE", "BACKENDS", "BACKEND_CHOICES", "PRECISIONS", "EXPORT_COMMAND", "REBUILD_COMMAND",
    "BUILD_EXTRA", "install_hint",
]

# The modality tokens of the ECMF fusion head, in the order of its inputs: whole frame, aligned face,
# speech audio, text. Events report presence and modality weights under these names.
MODALITIES: tuple[str, ...] = ("frame", "face", "audio", "text")

# The encoders' token sizes in bundles of this version, before any trained branch maps them: frame
# encoder 1280, face encoder 128, audio = Whisper layers 0-2 pooled (3072) + 16 prosody values, text =
# [embed(enriched); embed(transcript)] (2 x 384). A loaded bundle states its own sizes
# (Bundle.encoder_dims / Bundle.token_dims, from its manifest); this is for code that runs before a
# bundle exists (the fusion head's default shape, tests of the head on synthetic tokens).
RAW_TOKEN_DIMS: dict[str, int] = {"frame": 1280, "face": 128, "audio": 3088, "text": 768}

# Sample rate (Hz) of all audio the models read (VAD, Whisper, prosody); other rates are resampled.
SAMPLE_RATE = 16000

# Engines a bundle is built for; "auto" picks ONNX Runtime (CUDA when available).
BACKENDS: tuple[str, ...] = ("onnxruntime", "tensorrt")
BACKEND_CHOICES: tuple[str, ...] = ("auto", *BACKENDS)
PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "int8")

# The command that builds the default bundle, and the one that rebuilds a broken one.
EXPORT_COMMAND = "ecmf-edge export"
REBUILD_COMMAND = "ecmf-edge export --force"

# The extra that installs what `ecmf-edge export` needs (torch and the converters).
BUILD_EXTRA = "build"


def install_hint(extra: str) -> str:
    """The pip command that installs one of the package's extras."""
    return f"pip install 'ecmf-edge[{extra}]'"
