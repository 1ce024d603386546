"""Test-time views of the face branch: the crop shifted by a few pixels and mirrored, whose outputs are
averaged. At inference the averaging is part of the exported ``face_encoder.onnx`` graph (see
:func:`ecmf_edge.build.face_encoder.export_face_branch`), so the runtime never builds views itself;
training and the benchmarks use the same functions on torch tensors.
"""
from __future__ import annotations

import numpy as np

__all__ = ["TTA_SHIFTS", "as_input", "tta_views", "mean_over_views"]


def as_input(torch, images: np.ndarray):
    """(N, 1, H, W) float tensor in [-1, 1] of uint8 (N, H, W) grey crops, as the network reads them."""
    return (torch.from_numpy(images).float().unsqueeze(1) / 255.0 - 0.5) / 0.5


# Views whose logits (and features) are averaged at inference, in the exported graph as in predict_fer7:
# the crop shifted by (dy, dx) pixels (circularly, on the 64x64 input), each with its mirror image: six views.
# Chosen by `benchmarks/face_views.py` on the branch's held-out *training* faces (2342, never trained on): the
# fewest views whose weighted F1 stays within 0.005 of the ten views used before (((0, 0), (0, ±3), (±3, 0))),
# for the branch (0.6802 vs 0.6805) and for the fusion head's face-only label (0.6659 vs 0.6682); crop + mirror
# alone keeps the branch (0.6800) but costs the fusion head, trained on ten-view features, 0.010. 2.1 vs 3.7 ms
# per face on one thread.
TTA_SHIFTS = ((0, 0), (0, 3), (0, -3))


def tta_views(torch, x, shifts=TTA_SHIFTS, mirror: bool = True):
    """(V * N, 1, H, W): the views of ``shifts`` (each with its mirror image when ``mirror``) of a (N, 1, H, W)
    batch, view-major."""
    views = []
    for dy, dx in shifts:
        view = x if (dy, dx) == (0, 0) else torch.roll(x, shifts=(dy, dx), dims=(2, 3))
        views += [view, torch.flip(view, dims=[3])] if mirror else [view]
    return torch.cat(views, 0)


def mean_over_views(y, batch: int, views: int = 2 * len(TTA_SHIFTS)):
    """(N, ...) per sample: the mean of a (V * N, ...) output of :func:`tta_views` input over its ``views`` views."""
    return y.reshape(views, batch, *y.shape[1:]).mean(0)
