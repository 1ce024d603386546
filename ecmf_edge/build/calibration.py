"""Calibration and held-out inputs for post-training quantization, from real images.

:class:`CalibrationBatcher` turns real pictures into the exact model inputs the runtime
feeds (through :meth:`FaceEncoder.preprocess` and :meth:`FrameEncoder.preprocess`) and
hands them to ``onnxruntime.quantization.quantize_static`` one feed at a time.

Offline sources: the LFW faces and photographs scikit-image ships, or a folder of the
user's own images (``--calibration DIR``). Calibration and held-out sets never share a
picture, so the accuracy gates of :mod:`ecmf_edge.build.quantize` measure on unseen data.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from onnxruntime.quantization import CalibrationDataReader

from ecmf_edge.errors import InputError
from ecmf_edge.modalities import REBUILD_COMMAND

__all__ = [
    "CalibrationBatcher", "IMAGE_SUFFIXES", "CALIBRATED_MODELS", "CALIBRATION_KINDS", "face_crops", "scene_frames", "load_image_dir",
]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
# Picture models: manifest key -> input name.
CALIBRATED_MODELS = {"face_encoder": "face", "frame_encoder": "image"}
# Every model this module builds inputs for: manifest key -> kind of calibration item.
CALIBRATION_KINDS = {"face_encoder": "faces", "frame_encoder": "frames", "audio_encoder": "speech", "text_encoder": "texts",
                     "text_branch": "texts"}
# skimage photographs used for calibration and, disjoint from them, for the held-out gate.
_CALIB_PHOTOS = ("astronaut", "chelsea", "coffee", "camera", "rocket", "immunohistochemistry", "colorwheel", "brick", "grass")
_HELD_OUT_PHOTOS = ("cat", "hubble_deep_field", "moon", "page", "retina", "text", "gravel", "logo")
_FIX = "pass --calibration DIR with readable .jpg/.png photos (faces for the face encoder)"


def face_crops(split: str) -> list[np.ndarray]:
    """Real grey uint8 face crops: ``calibration`` = LFW faces 0-49, as is and mirrored, each
    also 40 grey levels brighter and darker; ``held_out`` = LFW faces 50-99 and three
    astronaut crops, each as is, mirrored, and 40 grey levels brighter and darker.

    Raises:
        InputError: unknown split.
    """
    import cv2
    from skimage import data

    faces = [np.round(f * 255).astype(np.uint8) for f in data.lfw_subset()[:100]]  # the other 100 are not faces
    if split == "calibration":
        return [np.ascontiguousarray(np.clip(v.astype(np.int16) + shift, 0, 255).astype(np.uint8))
                for f in faces[:50] for v in (f, f[:, ::-1]) for shift in (0, 40, -40)]
    if split != "held_out":
        raise InputError(f"unknown calibration split '{split}': use 'calibration' or 'held_out'")
    astro = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2GRAY)
    base = faces[50:] + [astro[60:200, 160:260], astro[50:210, 140:280], astro[70:190, 170:250]]
    crops = []
    for crop in base:
        wide = crop.astype(np.int16)
        for variant in (wide, wide[:, ::-1], wide + 40, wide - 40):
            crops.append(np.ascontiguousarray(np.clip(variant, 0, 255).astype(np.uint8)))
    return crops


def scene_frames(split: str) -> list[np.ndarray]:
    """Real BGR uint8 photographs from scikit-image (as is and mirrored), disjoint per split.

    Raises:
        InputError: unknown split.
    """
    import cv2
    from skimage import data

    if split not in ("calibration", "held_out"):
        raise InputError(f"unknown calibration split '{split}': use 'calibration' or 'held_out'")
    frames = []
    for name in _CALIB_PHOTOS if split == "calibration" else _HELD_OUT_PHOTOS:
        image = getattr(data, name)()
        if image.dtype == bool:
            image = image.astype(np.uint8) * 255
        if image.ndim == 2:
            image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        elif image.shape[2] == 4:
            image = cv2.cvtColor(image, cv2.COLOR_RGBA2BGR)
        else:
            image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
        frames += [np.ascontiguousarray(image), np.ascontiguousarray(image[:, ::-1])]
    return frames


def load_image_dir(folder: str | Path) -> list[np.ndarray]:
    """Every image of a calibration folder, as BGR uint8 arrays (sorted by name).

    Raises:
        InputError: the folder is missing, holds no image, or an image cannot be decoded.
    """
    import cv2

    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"calibration folder {root} does not exist: {_FIX}")
    paths = sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise InputError(f"calibration folder {root} holds no image ({', '.join(IMAGE_SUFFIXES)}): {_FIX}")
    images = []
    for path in paths:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None or image.size == 0:
            raise InputError(f"calibration image {path} cannot be decoded: replace or remove it, or {_FIX}")
        images.append(image)
    return images


class CalibrationBatcher(CalibrationDataReader):
    """Per-model input feeds from real calibration items, as an ONNX Runtime ``CalibrationDataReader``.

    The items (face crops, frames, speech windows or sentences) go through the runtime's own
    preprocessing for the model. ``get_next`` returns ``{input_name: batch}`` until the set is
    spent and then None; ``rewind`` starts over (quantize_static may read the set more than
    once). :meth:`fixed_feeds` gives equal-shaped batches for TensorRT's INT8 calibrator
    (:mod:`ecmf_edge.runtime.tensorrt`), so one batcher feeds both.
    """

    def __init__(self, key: str, spec: dict[str, Any], items: Sequence[Any], batch_size: int = 8,
                 tokenizer_path: str | Path | None = None) -> None:
        """Preprocess ``items`` with the runtime's own code for the model ``key``.

        Args:
            key: manifest key, one of :data:`CALIBRATION_KINDS`.
            spec: the model's manifest entry (its preprocessing and input shape are used).
            items: face crops (face encoder) or frames (frame encoder) as uint8 grey/BGR,
                16 kHz float speech windows (audio encoder), or sentences (text encoder).
            batch_size: items per feed (the audio encoder reads one window per feed).
            tokenizer_path: the bundle's tokenizer file (text encoder only).

        Raises:
            InputError: unknown model, an empty set, an unusable item, or inputs whose shape
                does not match the manifest.
        """
        if key not in CALIBRATION_KINDS:
            raise InputError(f"no calibration inputs for model '{key}': calibrate one of {', '.join(CALIBRATION_KINDS)}")
        if len(items) == 0:
            raise InputError(f"the calibration set for {key} is empty: {_FIX}")
        self.key = key
        self.kind = CALIBRATION_KINDS[key]
        self.batch_size = 1 if key == "audio_encoder" else max(1, int(batch_size))
        self.input_names = [i["name"] for i in spec.get("inputs", [])] or [CALIBRATED_MODELS.get(key, "input")]
        self.input_name = self.input_names[0]
        self._batches: list[dict[str, np.ndarray]] = []
        if key in CALIBRATED_MODELS:  # pictures: one array for the whole set
            self.inputs = _preprocess(key, spec, items)
            _check_shape(key, spec, self.input_name, self.inputs)
            self._batches = [{self.input_name: self.inputs[s:s + self.batch_size]}
                             for s in range(0, len(self.inputs), self.batch_size)]
        elif key == "audio_encoder":
            self.inputs = [_mel(window, spec) for window in items]
            for mel in self.inputs:
                _check_shape(key, spec, "mel", mel)
            self._batches = [{"mel": mel} for mel in self.inputs]
        else:
            if tokenizer_path is None:
                raise InputError("the text encoder's calibration needs the bundle's tokenizer: use CalibrationBatcher.from_set")
            self.inputs = list(items)
            self._batches = _token_batches(self.inputs, spec, tokenizer_path, self.batch_size)
        self._iter: Iterator[dict[str, np.ndarray]] = iter(())
        self.rewind()

    @classmethod
    def from_set(cls, bundle: Any, key: str, calibration_set: Any, batch_size: int = 8) -> CalibrationBatcher:
        """The batcher of model ``key`` of ``bundle`` over the items of a :class:`CalibrationSet`."""
        if key not in CALIBRATION_KINDS:
            raise InputError(f"no calibration inputs for model '{key}': calibrate one of {', '.join(CALIBRATION_KINDS)}")
        spec = bundle.spec(key)
        tokenizer = bundle.path("text_tokenizer.json") if CALIBRATION_KINDS[key] == "texts" else None
        return cls(key, spec, calibration_set.items(CALIBRATION_KINDS[key]), batch_size, tokenizer_path=tokenizer)

    def __len__(self) -> int:
        """Number of feeds per pass."""
        return len(self._batches)

    def feeds(self) -> Iterator[dict[str, np.ndarray]]:
        """One pass over the set, batch by batch."""
        yield from self._batches

    def fixed_feeds(self, shapes: dict[str, Sequence[int]]) -> Iterator[dict[str, np.ndarray]]:
        """One pass in batches of exactly ``shapes`` (name -> full shape, batch first).

        Items are cropped or padded (with the model's own padding value: the silence floor
        of the mel, token 0 with a zero attention mask) along every non-batch axis, and
        batches are filled to the fixed batch size by cycling through the set, so every
        item is seen at least once.
        """
        rows: dict[str, list[np.ndarray]] = {name: [] for name in shapes}
        for feed in self._batches:
            for name in shapes:
                value = feed[name]
                rows[name].extend(_fit(value[i], shapes[name][1:]) for i in range(len(value)))
        total = len(next(iter(rows.values())))
        if total == 0:
            return
        batch = int(next(iter(shapes.values()))[0])
        for start in range(0, total, batch):
            index = [(start + i) % total for i in range(batch)]
            yield {name: np.stack([rows[name][i] for i in index]) for name in shapes}

    def get_next(self) -> dict[str, np.ndarray] | None:
        """The next feed, or None when the pass is over."""
        return next(self._iter, None)

    def rewind(self) -> None:
        """Start the next pass from the first feed."""
        self._iter = self.feeds()


def _fit(value: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Crop or pad ``value`` to ``shape`` (edge values for floats, zeros for integers)."""
    value = value[tuple(slice(0, int(n)) for n in shape)]
    pad = [(0, int(n) - size) for n, size in zip(shape, value.shape)]
    if any(after for _, after in pad):
        mode = "edge" if np.issubdtype(value.dtype, np.floating) else "constant"
        value = np.pad(value, pad, mode=mode)
    return np.ascontiguousarray(value)


def _mel(window: Any, spec: dict[str, Any]) -> np.ndarray:
    from ecmf_edge.audio.speech_encoder import MAX_FRAMES, MIN_FRAMES, _validate, prepare_mel

    pre = spec.get("preprocessing", {})
    try:
        audio = _validate(window, 16000)
    except InputError as exc:
        raise InputError(f"a calibration speech window is unusable ({exc}): {_FIX}") from None
    return prepare_mel(audio, int(pre.get("max_frames", MAX_FRAMES)), int(pre.get("min_frames", MIN_FRAMES)))


def _token_batches(texts: Sequence[Any], spec: dict[str, Any], tokenizer_path: str | Path,
                   batch_size: int) -> list[dict[str, np.ndarray]]:
    from tokenizers import Tokenizer

    from ecmf_edge.text.text_encoder import tokenize_batch

    bad = [t for t in texts if not isinstance(t, str) or not t.strip()]
    if bad:
        raise InputError(f"calibration texts must be non-empty strings, got {bad[0]!r}: {_FIX}")
    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    max_tokens = int(spec.get("attributes", {}).get("max_tokens", 256))
    return [tokenize_batch(tokenizer, list(texts[s:s + batch_size]), max_tokens) for s in range(0, len(texts), batch_size)]


def _preprocess(key: str, spec: dict[str, Any], pictures: Sequence[np.ndarray]) -> np.ndarray:
    from ecmf_edge.vision.face_encoder import FaceEncoder
    from ecmf_edge.vision.frame_encoder import FrameEncoder

    encoder_cls = FaceEncoder if key == "face_encoder" else FrameEncoder
    encoder = encoder_cls(_NoSession(CALIBRATED_MODELS[key]), spec)  # preprocessing only: no session is needed
    try:
        return encoder.preprocess(list(pictures))
    except InputError as exc:
        raise InputError(f"calibration set for {key} is unusable ({exc}): {_FIX}") from None


def _check_shape(key: str, spec: dict[str, Any], name: str, batch: np.ndarray) -> None:
    expected = next((i["shape"] for i in spec.get("inputs", []) if i.get("name") == name), None)
    if expected is None:
        return
    fixed = [(axis, int(size)) for axis, size in enumerate(expected) if isinstance(size, int)]
    if batch.ndim != len(expected) or any(batch.shape[axis] != size for axis, size in fixed):
        raise InputError(f"calibration inputs for {key} have shape {list(batch.shape)}, the model reads {expected}: "
                         f"rebuild the bundle with `{REBUILD_COMMAND}` or fix the calibration set")


class _NoSession:
    """Stands in for an ONNX Runtime session so an encoder can be built for preprocessing only."""

    def __init__(self, input_name: str) -> None:
        self._input = input_name

    def get_inputs(self) -> list[Any]:
        return [_Named(self._input)]

    def get_outputs(self) -> list[Any]:
        return [_Named(n) for n in ("features", "logits", "probs")]


class _Named:
    def __init__(self, name: str) -> None:
        self.name = name
