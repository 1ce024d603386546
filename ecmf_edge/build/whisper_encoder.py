"""Exporter of the audio branch's speech encoder: the Whisper-base encoder as ONNX.

The weights are read from the CTranslate2 Whisper-base model (two registry packages,
see :mod:`.whisper_assets`) with :mod:`.ct2_reader`, loaded into a torch
re-implementation of the encoder and exported to ``audio_encoder.onnx``:

* input ``mel`` (1, 80, frames): Whisper log-mel, ``frames`` even and <= 3000;
* output ``states`` (1, frames/2, 512): encoder states, using the first frames/2
  positional embeddings (Whisper's own 30 s input is frames = 3000);
* output ``pooled`` (1, 1024): concat(mean, population std) of ``states`` over time;
* output ``pooled_mid`` (1, 3072): the same statistics of the residual stream after each of
  the encoder layers :data:`TOKEN_LAYERS` (0-based: the first three of six), concatenated.
  This is the speech branch's input: for emotion, the early layers carry more than the last
  one (the last is shaped for the decoder's words). Chosen by 5-fold speaker-independent
  cross-validation on the training speakers under the live protocol
  (``benchmarks/speech_choice.py``, see MODEL_CARD.md).

CT2 variable name -> torch module parameter (``i`` = layer index, 6 layers in base)::

    encoder/conv1/{weight,bias}                        -> conv1.{weight,bias}   (512, 80, 3)
    encoder/conv2/{weight,bias}                        -> conv2.{weight,bias}   (512, 512, 3), stride 2
    encoder/position_encodings/encodings               -> positions             (1500, 512)
    encoder/layer_i/self_attention/layer_norm/{gamma,beta} -> layers.i.attn_ln.{weight,bias}
    encoder/layer_i/self_attention/linear_0/{weight,bias}  -> layers.i.qkv.{weight,bias}  (fused q|k|v, 1536)
    encoder/layer_i/self_attention/linear_1/{weight,bias}  -> layers.i.attn_out.{weight,bias}
    encoder/layer_i/ffn/layer_norm/{gamma,beta}        -> layers.i.ffn_ln.{weight,bias}
    encoder/layer_i/ffn/linear_0/{weight,bias}         -> layers.i.fc1.{weight,bias}  (2048)
    encoder/layer_i/ffn/linear_1/{weight,bias}         -> layers.i.fc2.{weight,bias}
    encoder/layer_norm/{gamma,beta}                    -> ln_post.{weight,bias}
    encoder/num_heads                                  -> number of attention heads (8)

The parity check runs real speech (espeak-ng) through both this ONNX graph and
``ctranslate2.models.Whisper.encode`` (compute_type float32).
"""
from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import numpy as np

from ecmf_edge._resources import package_version
from ecmf_edge.build.common import ExportedModel, check_parity, onnx_export, require_torch
from ecmf_edge.build.ct2_reader import read_ct2_model
from ecmf_edge.build.whisper_assets import MODEL_FILES, assemble_whisper_model, whisper_provenance
from ecmf_edge.errors import ModelError, missing_dependency
from ecmf_edge.modalities import REBUILD_COMMAND, SAMPLE_RATE
from ecmf_edge.runtime.sessions import create_session

__all__ = [
    "export_audio_encoder",
    "build_whisper_encoder",
    "encoder_weights",
    "ct2_encode",
    "CT2_DIR",
    "ONNX_FILE",
    "TOKEN_FILE",
    "PARITY_TOLERANCE",
]

logger = logging.getLogger("ecmf_edge")

KEY = "audio_encoder"
ONNX_FILE = "audio_encoder.onnx"
# The encoder truncated after the last of TOKEN_LAYERS, with the audio token as its only output: what a stream runs
# per speech window (the full graph computes three more layers that the speech branch does not read).
TOKEN_FILE = "audio_encoder_token.onnx"
# CTranslate2 folder inside the bundle (also the faster-whisper ASR model).
CT2_DIR = "whisper-base-ct2"
N_MELS = 80
MAX_FRAMES = 3000
MIN_FRAMES = 100
RECOMMENDED_WINDOW_FRAMES = 400
STATE_DIM = 512
# Encoder layers (0-based) whose outputs are pooled into ``pooled_mid``, the speech branch's input.
# 5-fold CV on the training speakers, live protocol, logistic regression (RAVDESS / EmoDB weighted F1):
# layers 0+1+2 0.840 / 0.903, layer 1 alone (the earlier token) 0.807 / 0.887, 1+2 0.824 / 0.886,
# 0+1+2+3 0.832 / 0.902, the last layer 0.739 / 0.633.
TOKEN_LAYERS = (0, 1, 2)
TOKEN_DIM = 2 * STATE_DIM * len(TOKEN_LAYERS)
# Max abs difference of ONNX vs ctranslate2 float32 states (states reach |24|). Measured
# 7.4e-4 on 30 s padded espeak-ng speech and 2.8e-4 unpadded with the float16-stored
# model; both sides run the same weights in float32, only summation order differs. An
# int8-stored copy of the model gave 9.1e-4: CTranslate2 with compute_type float32
# dequantizes int8 weights exactly as ct2_reader does, so the quantization error is on
# both sides and the bound does not depend on the storage type. ~7x margin for other CPUs.
PARITY_TOLERANCE = 5e-3
# Pooled vectors of both implementations must agree at least this well (cosine).
MIN_POOLED_COSINE = 0.9999
_LAYER = re.compile(r"^encoder/layer_(\d+)/")


def encoder_weights(ct2_dir: Path) -> tuple[dict[str, np.ndarray], int, int, str]:
    """Encoder variables of the CT2 model mapped to module parameter names.

    Returns ``(state_dict, num_layers, num_heads, stored_dtype)``.

    Raises:
        ModelError: the model file is unreadable or lacks an encoder variable.
    """
    model = read_ct2_model(Path(ct2_dir) / "model.bin", select=lambda n: n.startswith("encoder/"))
    v = model.variables
    layers = sorted({int(m.group(1)) for m in map(_LAYER.match, v) if m})
    if not layers or layers != list(range(len(layers))):
        raise ModelError(f"{ct2_dir}/model.bin has no encoder layers: it is not a Whisper model, run `{REBUILD_COMMAND}`")
    heads = int(v["encoder/num_heads"]) if "encoder/num_heads" in v else 8
    mapping = {
        "encoder/conv1/weight": "conv1.weight",
        "encoder/conv1/bias": "conv1.bias",
        "encoder/conv2/weight": "conv2.weight",
        "encoder/conv2/bias": "conv2.bias",
        "encoder/position_encodings/encodings": "positions",
        "encoder/layer_norm/gamma": "ln_post.weight",
        "encoder/layer_norm/beta": "ln_post.bias",
    }
    per_layer = {
        "self_attention/layer_norm/gamma": "attn_ln.weight",
        "self_attention/layer_norm/beta": "attn_ln.bias",
        "self_attention/linear_0/weight": "qkv.weight",
        "self_attention/linear_0/bias": "qkv.bias",
        "self_attention/linear_1/weight": "attn_out.weight",
        "self_attention/linear_1/bias": "attn_out.bias",
        "ffn/layer_norm/gamma": "ffn_ln.weight",
        "ffn/layer_norm/beta": "ffn_ln.bias",
        "ffn/linear_0/weight": "fc1.weight",
        "ffn/linear_0/bias": "fc1.bias",
        "ffn/linear_1/weight": "fc2.weight",
        "ffn/linear_1/bias": "fc2.bias",
    }
    for i in layers:
        for src, dst in per_layer.items():
            mapping[f"encoder/layer_{i}/{src}"] = f"layers.{i}.{dst}"
    missing = [name for name in mapping if name not in v]
    if missing:
        raise ModelError(f"{ct2_dir}/model.bin lacks {missing[0]} (and {len(missing) - 1} more): run `{REBUILD_COMMAND}`")
    state = {dst: np.ascontiguousarray(v[src], dtype=np.float32) for src, dst in mapping.items()}
    return state, len(layers), heads, model.stored_dtypes.get("encoder/conv1/weight", "float32")


def build_whisper_encoder(state: dict[str, np.ndarray], num_layers: int, num_heads: int):
    """A torch ``nn.Module`` mel (1, 80, T) -> (states (1, T/2, 512), pooled (1, 1024), pooled_mid (1, 3072)).

    Raises:
        DependencyError: torch is not installed.
        ModelError: the weights do not fit the architecture.
    """
    torch = require_torch()
    nn = torch.nn
    F = torch.nn.functional
    width = state["conv1.weight"].shape[0]
    n_mels = state["conv1.weight"].shape[1]
    ffn = state["layers.0.fc1.weight"].shape[0]
    n_pos = state["positions"].shape[0]
    head_dim = width // num_heads

    class Layer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attn_ln = nn.LayerNorm(width, eps=1e-5)
            self.qkv = nn.Linear(width, 3 * width)
            self.attn_out = nn.Linear(width, width)
            self.ffn_ln = nn.LayerNorm(width, eps=1e-5)
            self.fc1 = nn.Linear(width, ffn)
            self.fc2 = nn.Linear(ffn, width)

        def forward(self, x):
            b, t = x.shape[0], x.shape[1]
            q, k, v = self.qkv(self.attn_ln(x)).chunk(3, dim=-1)
            q = q.reshape(b, t, num_heads, head_dim).transpose(1, 2)
            k = k.reshape(b, t, num_heads, head_dim).transpose(1, 2)
            v = v.reshape(b, t, num_heads, head_dim).transpose(1, 2)
            weights = torch.softmax(torch.matmul(q, k.transpose(-1, -2)) * (head_dim**-0.5), dim=-1)
            attn = torch.matmul(weights, v).transpose(1, 2).reshape(b, t, width)
            x = x + self.attn_out(attn)
            return x + self.fc2(F.gelu(self.fc1(self.ffn_ln(x))))

    class WhisperEncoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv1d(n_mels, width, 3, padding=1)
            self.conv2 = nn.Conv1d(width, width, 3, stride=2, padding=1)
            self.register_buffer("positions", torch.zeros(n_pos, width))
            self.layers = nn.ModuleList([Layer() for _ in range(num_layers)])
            self.ln_post = nn.LayerNorm(width, eps=1e-5)

        def forward(self, mel):
            x = F.gelu(self.conv1(mel))
            x = F.gelu(self.conv2(x)).transpose(1, 2)
            x = x + self.positions[: x.shape[1]]
            mids = []
            for i, layer in enumerate(self.layers):
                x = layer(x)
                if i in TOKEN_LAYERS:
                    mids.append(_mean_std(torch, x))
            states = self.ln_post(x)
            return states, _mean_std(torch, states), torch.cat(mids, dim=-1)

    module = WhisperEncoder()
    try:
        module.load_state_dict({k: torch.from_numpy(a) for k, a in state.items()}, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise ModelError(f"Whisper encoder weights do not fit the architecture ({first[:160]}): run `{REBUILD_COMMAND}`") from None
    return module.eval()


def _mean_std(torch, x):
    """concat(mean, population std) over time of (1, T, C)."""
    mean = x.mean(dim=1)
    std = torch.sqrt(((x - mean.unsqueeze(1)) ** 2).mean(dim=1))
    return torch.cat([mean, std], dim=-1)


def ct2_encode(ct2_dir: Path, mel: np.ndarray) -> np.ndarray:
    """Encoder states from ``ctranslate2.models.Whisper.encode`` in float32 on CPU.

    Raises:
        DependencyError: ctranslate2 is not installed.
        ModelError: ctranslate2 cannot load the folder or encode the input.
    """
    try:
        import ctranslate2
    except ImportError:
        raise missing_dependency("ctranslate2", "build") from None
    try:
        model = ctranslate2.models.Whisper(str(ct2_dir), device="cpu", compute_type="float32")
        out = model.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(mel, dtype=np.float32)), to_cpu=True)
    except (RuntimeError, ValueError) as exc:
        raise ModelError(f"ctranslate2 could not run {ct2_dir} ({str(exc)[:160]}): run `{REBUILD_COMMAND}`") from None
    return np.array(out, dtype=np.float32)


def _pooled(states: np.ndarray) -> np.ndarray:
    s = states.astype(np.float64)
    return np.concatenate([s.mean(axis=1), s.std(axis=1)], axis=-1)


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))


def _parity(onnx_path: Path, ct2_dir: Path) -> dict[str, Any]:
    """Compare ONNX and ctranslate2 states on the shipped speech clip, padded (3000) and unpadded."""
    from faster_whisper.audio import pad_or_trim
    from faster_whisper.feature_extractor import FeatureExtractor

    from ecmf_edge._assets import asset_path
    from ecmf_edge.audio.io import load_audio

    audio = load_audio(asset_path("speech_en.wav"))
    mel_full = FeatureExtractor(feature_size=N_MELS)(audio)
    session = create_session(onnx_path)  # the runtime's own session settings
    frames_actual = min(mel_full.shape[-1], MAX_FRAMES) // 2 * 2
    report: dict[str, Any] = {
        "reference": f"ctranslate2 {package_version('ctranslate2')} Whisper.encode, compute_type float32, CPU",
        "inputs": f"speech_en.wav (espeak-ng en-us speech, {audio.size / SAMPLE_RATE:.2f} s), "
        "log-mel by faster-whisper FeatureExtractor, padded to 3000 frames (and unpadded)",
        "tolerance": PARITY_TOLERANCE,
        "min_pooled_cosine": MIN_POOLED_COSINE,
    }
    for label, frames in (("padded_3000", MAX_FRAMES), ("unpadded", frames_actual)):
        mel = (pad_or_trim(mel_full) if frames == MAX_FRAMES else mel_full[:, :frames])[None].astype(np.float32)
        reference = ct2_encode(ct2_dir, mel)
        states, pooled = session.run(["states", "pooled"], {"mel": mel})
        diff = check_parity(f"{KEY} ({label}, {frames} frames)", reference, states, PARITY_TOLERANCE)
        cosine = _cosine(_pooled(reference), pooled)
        if cosine < MIN_POOLED_COSINE:
            raise ModelError(f"{KEY}: pooled vector cosine {cosine:.6f} < {MIN_POOLED_COSINE} vs ctranslate2: run `{REBUILD_COMMAND}`")
        report[label] = {"frames": frames, "max_abs_diff": diff, "pooled_cosine": cosine, "states_abs_max": float(np.abs(reference).max())}
    report["max_abs_diff"] = max(report["padded_3000"]["max_abs_diff"], report["unpadded"]["max_abs_diff"])
    report["pooled_cosine"] = min(report["padded_3000"]["pooled_cosine"], report["unpadded"]["pooled_cosine"])
    return report


def _mid_parity(module, onnx_path: Path) -> dict[str, Any]:
    """ONNX vs torch on ``pooled_mid`` (ctranslate2 exposes only the last layer's states)."""
    import torch

    from ecmf_edge._assets import asset_path
    from ecmf_edge.audio.io import load_audio
    from ecmf_edge.audio.speech_encoder import prepare_mel

    mel = prepare_mel(load_audio(asset_path("speech_en.wav")))
    with torch.no_grad():
        expected = module(torch.from_numpy(mel))[2].numpy()
    got = create_session(onnx_path).run(["pooled_mid"], {"mel": mel})[0]
    return {"reference": "torch re-implementation", "max_abs_diff": check_parity(f"{KEY} pooled_mid (ONNX vs torch)", expected, got, PARITY_TOLERANCE)}


def build_token_encoder(module):
    """The first ``max(TOKEN_LAYERS) + 1`` layers of a :func:`build_whisper_encoder` module, mel -> ``pooled_mid``
    (the same weights and operations as the full graph up to that layer)."""
    torch = require_torch()
    F = torch.nn.functional

    class TokenEncoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1, self.conv2, self.layers = module.conv1, module.conv2, module.layers[: max(TOKEN_LAYERS) + 1]
            self.register_buffer("positions", module.positions.clone())

        def forward(self, mel):
            x = F.gelu(self.conv1(mel))
            x = F.gelu(self.conv2(x)).transpose(1, 2)
            x = x + self.positions[: x.shape[1]]
            mids = []
            for i, layer in enumerate(self.layers):
                x = layer(x)
                if i in TOKEN_LAYERS:
                    mids.append(_mean_std(torch, x))
            return torch.cat(mids, dim=-1)

    return TokenEncoder().eval()


def _token_parity(full_path: Path, token_path: Path) -> dict[str, Any]:
    """Truncated vs full ONNX graph on ``pooled_mid`` for 1 s, 4 s and 30 s windows of real speech."""
    from ecmf_edge._assets import asset_path
    from ecmf_edge.audio.io import load_audio
    from ecmf_edge.audio.speech_encoder import prepare_mel

    audio = load_audio(asset_path("speech_en.wav"))
    full, token = create_session(full_path), create_session(token_path)
    diffs = {}
    for seconds in (1, 4, 30):
        mel = prepare_mel(np.resize(audio, seconds * SAMPLE_RATE))
        expected = full.run(["pooled_mid"], {"mel": mel})[0]
        got = token.run(["pooled_mid"], {"mel": mel})[0]
        diffs[f"{seconds}s"] = check_parity(f"{KEY} truncated graph vs full ({seconds} s)", expected, got, 1e-4)
    return {"reference": f"the full {ONNX_FILE} (its pooled_mid output)", "inputs": "speech_en.wav looped to 1, 4 and 30 s",
            "max_abs_diff": max(diffs.values()), "per_window": diffs, "tolerance": 1e-4}


def export_audio_encoder(out_dir: Path) -> ExportedModel:
    """Export the Whisper-base encoder to ``out_dir/audio_encoder.onnx`` and check it.

    Also assembles the CTranslate2 model in ``out_dir/whisper-base-ct2/`` (part of the
    bundle, listed in ``extra_files``; faster-whisper uses it for ASR).

    Raises:
        ModelError: a source package is missing, the weights are corrupt or parity fails.
        DependencyError: torch, onnx, ctranslate2, faster-whisper or espeak-ng is missing.
    """
    torch = require_torch()
    out_dir = Path(out_dir)
    ct2_dir = assemble_whisper_model(out_dir / CT2_DIR)
    state, num_layers, num_heads, stored = encoder_weights(ct2_dir)
    module = build_whisper_encoder(state, num_layers, num_heads)
    path = out_dir / ONNX_FILE
    example = torch.zeros(1, N_MELS, RECOMMENDED_WINDOW_FRAMES)
    onnx_export(
        module, (example,), path, ["mel"], ["states", "pooled", "pooled_mid"],
        dynamic_axes={"mel": {2: "frames"}, "states": {1: "states_frames"}},
    )
    onnx_export(build_token_encoder(module), (example,), out_dir / TOKEN_FILE, ["mel"], ["pooled_mid"],
                dynamic_axes={"mel": {2: "frames"}})
    parity = _parity(path, ct2_dir)
    parity["pooled_mid"] = _mid_parity(module, path)
    parity["token_graph"] = _token_parity(path, out_dir / TOKEN_FILE)
    logger.info("%s parity: max abs diff %.3g, pooled cosine %.6f", KEY, parity["max_abs_diff"], parity["pooled_cosine"])
    provenance = whisper_provenance()
    provenance["architecture"] = "whisper-base encoder"
    return ExportedModel.from_onnx(
        KEY, path,
        preprocessing={
            "sample_rate": SAMPLE_RATE,
            "channels": "mono",
            "features": "log-mel",
            "n_mels": N_MELS,
            "n_fft": 400,
            "hop_length": 160,
            "window": "hann (periodic)",
            "mel_scale": "slaney (librosa htk=False, norm='slaney')",
            "normalisation": "log10(clip(mel, 1e-10)); max(x, x.max() - 8); (x + 4) / 4",
            "frames": "even, <= max_frames; no 30 s padding",
            "max_frames": MAX_FRAMES,
            "min_frames": MIN_FRAMES,
            "pad_value": "silence: (max(log_max - 8, -10) + 4) / 4",
            "recommended_window_frames": RECOMMENDED_WINDOW_FRAMES,
        },
        provenance=provenance,
        parity=parity,
        extra_files=[TOKEN_FILE, *(f"{CT2_DIR}/{name}" for name in MODEL_FILES)],
        attributes={
            "state_dim": STATE_DIM,
            "pooled_dim": 2 * STATE_DIM,
            "pooled": "concat(mean, population std) of states over time",
            "pooled_mid": "concat over layers " + ", ".join(map(str, TOKEN_LAYERS))
                          + " of concat(mean, population std) over time of the residual stream after the layer",
            "token_output": "pooled_mid",
            "token_layers": list(TOKEN_LAYERS),
            "token_layer": max(TOKEN_LAYERS),  # the last layer the truncated token graph computes
            "token_dim": TOKEN_DIM,
            "token_file": TOKEN_FILE,
            "frames_per_state": 2,
            "num_layers": num_layers,
            "num_heads": num_heads,
            "weights_stored_as": stored,
            "ct2_model_dir": CT2_DIR,
        },
    )
