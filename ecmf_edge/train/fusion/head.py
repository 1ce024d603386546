"""The ECMF fusion head in torch (training and ONNX export).

One token per modality (frame, face, audio, text) with a presence mask:

1. per-token input standardisation (training-set mean/std, stored in the model),
   projection LayerNorm -> Linear(d_m -> d) -> GELU -> Dropout;
2. a learned modality embedding, then self-attention across the tokens with absent
   tokens masked out as keys (dynamic modality weighting);
3. residual: token = projection + attention output, then LayerNorm (each modality keeps
   its own representation);
4. gated pooling: a softmax over the present tokens gives the modality weights (returned
   with every prediction), their weighted sum feeds the classifier;
5. modality dropout during training (in :mod:`.train`) so any subset works at run time.

The attention is written out (not ``nn.MultiheadAttention``) so the masking uses a finite
additive bias: an all-masked row cannot produce NaN, and the ONNX graph stays simple.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from ecmf_edge.build.common import require_torch
from ecmf_edge.modalities import MODALITIES, RAW_TOKEN_DIMS

__all__ = ["HeadConfig", "build_head"]

_MASKED = -1.0e4


@dataclass(frozen=True)
class HeadConfig:
    """Shape and switches of the fusion head."""

    # Input size of each modality token, in MODALITIES (training sets the bundle's own, Bundle.token_dims).
    dims: dict[str, int] = field(default_factory=lambda: dict(RAW_TOKEN_DIMS))
    # Number of output classes.
    num_classes: int = 6
    # Width of the shared token space.
    d_model: int = 128
    # Attention heads and layers.
    heads: int = 4
    layers: int = 1
    # Dropout inside projections, attention and classifier.
    dropout: float = 0.2
    # Ablation switches: cross-modal attention, residual connection.
    attention: bool = True
    residual: bool = True

    def to_dict(self) -> dict:
        return asdict(self)


def build_head(config: HeadConfig, stats: dict[str, tuple[np.ndarray, np.ndarray]] | None = None):
    """A fresh ``ECMFHead`` module; ``stats`` gives per-modality (mean, std) for input standardisation."""
    torch = require_torch()
    nn = torch.nn

    class Attention(nn.Module):
        def __init__(self, d: int, heads: int, dropout: float) -> None:
            super().__init__()
            self.heads, self.d_head = heads, d // heads
            self.qkv = nn.Linear(d, 3 * d)
            self.out = nn.Linear(d, d)
            self.drop = nn.Dropout(dropout)

        def forward(self, x, key_bias):
            b, t, d = x.shape
            qkv = self.qkv(x).view(b, t, 3, self.heads, self.d_head).permute(2, 0, 3, 1, 4)
            q, k, v = qkv[0], qkv[1], qkv[2]
            scores = q @ k.transpose(-1, -2) / (self.d_head ** 0.5) + key_bias[:, None, None, :]
            ctx = self.drop(scores.softmax(-1)) @ v
            return self.out(ctx.transpose(1, 2).reshape(b, t, d))

    class ECMFHead(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.config = config
            d = config.d_model
            self.proj = nn.ModuleDict({
                m: nn.Sequential(nn.LayerNorm(config.dims[m]), nn.Linear(config.dims[m], d), nn.GELU(), nn.Dropout(config.dropout))
                for m in MODALITIES
            })
            for m in MODALITIES:
                mean, std = (stats or {}).get(m, (np.zeros(config.dims[m]), np.ones(config.dims[m])))
                self.register_buffer(f"{m}_mean", torch.as_tensor(np.asarray(mean, dtype=np.float32)))
                self.register_buffer(f"{m}_std", torch.as_tensor(np.maximum(np.asarray(std, dtype=np.float32), 1e-6)))
            self.modality_embedding = nn.Parameter(torch.randn(len(MODALITIES), d) * 0.02)
            self.attn = nn.ModuleList(Attention(d, config.heads, config.dropout) for _ in range(config.layers))
            self.norms = nn.ModuleList(nn.LayerNorm(d) for _ in range(config.layers))
            self.gate = nn.Linear(d, 1)
            self.classifier = nn.Sequential(nn.LayerNorm(d), nn.Dropout(config.dropout), nn.Linear(d, config.num_classes))

        def tokens(self, frame, face, audio, text):
            inputs = {"frame": frame, "face": face, "audio": audio, "text": text}
            out = []
            for m in MODALITIES:
                x = (inputs[m] - getattr(self, f"{m}_mean")) / getattr(self, f"{m}_std")
                out.append(self.proj[m](x))
            return torch.stack(out, dim=1) + self.modality_embedding

        def forward(self, frame, face, audio, text, mask):
            present = mask.to(frame.dtype)
            h = self.tokens(frame, face, audio, text)
            if config.attention:
                key_bias = (1.0 - present) * _MASKED
                for attn, norm in zip(self.attn, self.norms):
                    a = attn(h, key_bias)
                    h = norm(h + a) if config.residual else norm(a)
            scores = self.gate(h).squeeze(-1) + (1.0 - present) * _MASKED
            weights = scores.softmax(-1) * present
            weights = weights / weights.sum(-1, keepdim=True).clamp(min=1e-6)
            pooled = (weights.unsqueeze(-1) * h).sum(1)
            logits = self.classifier(pooled)
            return logits, logits.softmax(-1), weights

    return ECMFHead()
